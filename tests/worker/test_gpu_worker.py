"""On a GPU machine: the worker process never touches CUDA, and each job's GPU memory goes with its process."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from models.settings import Settings
from tests.faults.test_worker_faults import create_job, wait_for_status
from tests.processes import running_worker

pytestmark = pytest.mark.gpu


def gpu_process_ids() -> set[int]:
    listing = subprocess.run(
        ["nvidia-smi", "--query-compute-apps=pid", "--format=csv,noheader"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return {int(line) for line in listing.split() if line.strip().isdigit()}


def test_two_jobs_back_to_back_on_one_gpu_succeed_and_leave_no_gpu_memory_behind(
    client: TestClient, auth: dict[str, str], tiny_bert: str, settings: Settings, files: tuple[str, str], tmp_path: Path
) -> None:
    before = gpu_process_ids()
    with running_worker(settings, tmp_path / "worker.log") as worker:
        for _ in range(2):
            job_id = create_job(client, auth, tiny_bert, files, n_epochs=2)
            wait_for_status(client, auth, job_id, "succeeded")
            assert worker.pid not in gpu_process_ids()  # the parent never initialises CUDA
        assert gpu_process_ids() <= before  # each training process took its memory with it
