"""`graft up`: the API and one worker as two real processes, started and stopped together."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from types import FrameType

POLL_SECONDS = 0.5


def run_together(commands: dict[str, list[str]], *, stop_grace_seconds: float) -> int:
    """Start every command; when one exits or Ctrl-C arrives, stop the rest. Returns an exit status.

    Each gets SIGTERM and `stop_grace_seconds` before SIGKILL: enough for a worker's running job
    to write its stop checkpoint and be handed back.
    """
    processes = {name: subprocess.Popen(command) for name, command in commands.items()}
    stopping = False

    def _request_stop(signum: int, _frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    previous = {sig: signal.signal(sig, _request_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        while not stopping and all(process.poll() is None for process in processes.values()):
            time.sleep(POLL_SECONDS)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        _stop_all(processes, stop_grace_seconds)
    failed = [name for name, process in processes.items() if process.returncode not in (0, -signal.SIGTERM)]
    if not stopping and failed:
        sys.stderr.write(f"graft up: {', '.join(failed)} exited; stopped the rest\n")
        return 1
    return 0


def _stop_all(processes: dict[str, subprocess.Popen[bytes]], grace_seconds: float) -> None:
    for process in processes.values():
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + grace_seconds
    for process in processes.values():
        try:
            process.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
