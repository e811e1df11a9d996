"""A worker's heartbeat for operators: its row in `workers` renewed every few seconds, with its GPUs' memory.

GPU memory is read through NVML, which opens no CUDA context: the worker's own process must never
initialise CUDA (its training processes do), and NVML sees every process's allocations, the training
process's included. Without NVML (no NVIDIA driver, a CPU worker) the worker reports no GPUs.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from typing import Any

from sqlalchemy.orm import Session

from models.services import workers
from models.storage.database import run_transaction

logger = logging.getLogger(__name__)


def gpu_memory() -> list[dict[str, int]]:
    """Used and total memory of each GPU NVML sees; [] where there is no NVIDIA driver."""
    try:
        import pynvml
    except ImportError:
        return []
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError:
        return []
    try:
        found = []
        for index in range(pynvml.nvmlDeviceGetCount()):
            info = pynvml.nvmlDeviceGetMemoryInfo(pynvml.nvmlDeviceGetHandleByIndex(index))
            found.append({"index": index, "used_bytes": int(info.used), "total_bytes": int(info.total)})
        return found
    finally:
        pynvml.nvmlShutdown()


def worker_name() -> str:
    """Unique per worker process, also beside other workers on the same host."""
    return f"{socket.gethostname()}:{os.getpid()}"


def start_heartbeat(database_url: str, *, interval_seconds: float) -> threading.Event:
    """A daemon thread that records this worker alive every `interval_seconds`; set the event to stop it."""
    stop = threading.Event()
    name, hostname = worker_name(), socket.gethostname()

    def beat() -> None:
        while True:
            gpus: list[dict[str, Any]] = gpu_memory()

            def record(session: Session, gpus: list[dict[str, Any]] = gpus) -> None:
                workers.record_heartbeat(session, name, hostname=hostname, gpus=gpus)

            try:
                run_transaction(database_url, record)
            except Exception:  # a database hiccup: the next beat tries again
                logger.warning("worker heartbeat could not be recorded", exc_info=True)
            if stop.wait(interval_seconds):
                return

    threading.Thread(target=beat, name="graft-heartbeat", daemon=True).start()
    return stop
