"""Real service processes for tests: a Celery worker started like production, stopped for sure."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

from models.settings import Settings

T = TypeVar("T")
REPO_ROOT = Path(__file__).resolve().parents[1]


def wait_for(probe: Callable[[], T | None], *, timeout: float, interval: float = 0.1, what: str = "condition") -> T:
    """Poll `probe` until it returns something truthy; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def service_environment(settings: Settings) -> dict[str, str]:
    environment = {key: value for key, value in os.environ.items() if not key.startswith("GRAFT_")}
    environment.update(
        {
            "GRAFT_DATA_DIR": str(settings.data_dir),
            "GRAFT_DATABASE_URL": settings.database_url,
            "GRAFT_BROKER_URL": settings.broker_url,
            "GRAFT_ARTIFACT_ROOT": str(settings.artifacts),
            "GRAFT_LEASE_SECONDS": str(settings.lease_seconds),
            "GRAFT_HEARTBEAT_SECONDS": str(settings.heartbeat_seconds),
            "GRAFT_STOP_GRACE_SECONDS": str(settings.stop_grace_seconds),
            "GRAFT_CHECKPOINT_INTERVAL_SECONDS": str(settings.checkpoint_interval_seconds),
            "GRAFT_REQUEUE_AFTER_SECONDS": str(settings.requeue_after_seconds),
            "GRAFT_SWEEP_INTERVAL_SECONDS": str(settings.sweep_interval_seconds),
            "GRAFT_TENANT_MAX_ACTIVE_JOBS": str(settings.tenant_max_active_jobs),
            "GRAFT_TENANT_MAX_STORED_BYTES": str(settings.tenant_max_stored_bytes),
            "GRAFT_MAX_UPLOAD_BYTES": str(settings.max_upload_bytes),
            "GRAFT_MAX_ATTEMPTS": str(settings.max_attempts),
            "GRAFT_REGISTER_DEFAULT_MODEL": "false",
            "HF_HUB_OFFLINE": "1",
            "PYTHONPATH": str(REPO_ROOT),
        }
    )
    return environment


@contextmanager
def running_worker(
    settings: Settings, log_path: Path, extra_environment: dict[str, str] | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    """`graft worker` as a subprocess; yields once Celery says it is ready, stops it on exit."""
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "cli.main", "worker"],
            env={**service_environment(settings), **(extra_environment or {})},
            cwd=REPO_ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            wait_for(
                lambda: process.poll() is not None or b" ready." in log_path.read_bytes(),
                timeout=60,
                what="the Celery worker to be ready",
            )
            assert process.poll() is None, log_path.read_text(errors="replace")
            yield process
        finally:
            stop_process(process)


def stop_process(process: subprocess.Popen[bytes], timeout: float = 20.0) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def training_processes(job_id: str) -> list[int]:
    """Pids of live `worker.training_process` processes training `job_id`."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ")
            status = (entry / "stat").read_text().split()[2]
        except OSError:
            continue
        # A standby training process renames itself to `… worker.training_process JOB_ID …` when it takes its job.
        if b"worker.training_process" in command and job_id.encode() in command and status != "Z":
            pids.append(int(entry.name))
    return pids
