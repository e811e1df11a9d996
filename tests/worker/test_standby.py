"""The standby training process: started ahead of its job, it waits, takes one job, or goes away when told."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from models.settings import Settings
from models.storage.database import session_scope
from models.storage.tables import File
from tests.conftest import jsonl_bytes, upload_file
from tests.processes import wait_for
from tests.worker.training.conftest import sentiment_rows
from worker import runner
from worker.allocator import TRAINING_ALLOCATOR_ENVIRONMENT
from worker.reconciler import purge_derived_data
from worker.run_protocol import Failed, RunRequest, TemplateRecord, read_report
from worker.training.speedups.data_cache import DerivedDataCache
from worker.training_process import EXIT_FAILED, EXIT_STOPPED


@pytest.fixture
def runner_settings(settings: Settings) -> Iterator[runner.RunnerSettings]:
    yield runner.RunnerSettings.from_settings(settings)
    runner.stop_standby()


def started_standby(runner_settings: runner.RunnerSettings) -> subprocess.Popen[bytes]:
    runner.start_standby(runner_settings)
    process = runner._standby
    assert process is not None
    return process


@pytest.mark.parametrize("wait_seconds", [0.2, 8.0])  # while it imports torch; once it waits for its job
def test_an_idle_standby_leaves_promptly_on_sigterm(
    runner_settings: runner.RunnerSettings, wait_seconds: float
) -> None:
    process = started_standby(runner_settings)
    time.sleep(wait_seconds)
    process.send_signal(signal.SIGTERM)
    started = time.monotonic()
    assert process.wait(timeout=30) in (EXIT_STOPPED, -signal.SIGTERM)
    assert time.monotonic() - started < 5


def test_a_training_process_starts_with_the_allocator_settings_unless_the_operator_chose_others(
    runner_settings: runner.RunnerSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", "12345")
    process = started_standby(runner_settings)
    variables = dict(
        entry.split("=", 1) for entry in Path(f"/proc/{process.pid}/environ").read_text().split("\0") if "=" in entry
    )
    assert variables["MALLOC_MMAP_THRESHOLD_"] == TRAINING_ALLOCATOR_ENVIRONMENT["MALLOC_MMAP_THRESHOLD_"]
    assert variables["MALLOC_TRIM_THRESHOLD_"] == "12345"


def job_request(report: Path) -> RunRequest:
    """A job that does not exist: the run fails, and its report proves which process took it."""
    return RunRequest(job_id="ftjob-nosuchjob", attempt=1, report_path=report, handed_over_at=time.time())


def test_a_standby_whose_worker_closes_its_stdin_leaves(runner_settings: runner.RunnerSettings) -> None:
    process = started_standby(runner_settings)
    assert process.stdin is not None
    process.stdin.close()
    assert process.wait(timeout=60) == EXIT_STOPPED


def test_a_job_goes_to_the_waiting_standby_which_then_trains_under_the_jobs_name(
    runner_settings: runner.RunnerSettings, tmp_path: Path
) -> None:
    standby = started_standby(runner_settings)
    report = tmp_path / "report.json"
    process = runner.hand_job_to_training_process(job_request(report), runner_settings)
    assert process is standby and runner._standby is None
    wait_for(
        lambda: b"ftjob-nosuchjob" in Path(f"/proc/{process.pid}/cmdline").read_bytes() or process.poll() is not None,
        timeout=60,
        what="the standby to take the job's name",
    )
    # The job does not exist, so the run fails; the report proves this process took that job.
    assert process.wait(timeout=60) == EXIT_FAILED
    outcome = read_report(report).outcome
    assert isinstance(outcome, Failed) and "ftjob-nosuchjob" in outcome.message


def test_a_standby_that_died_is_replaced_by_a_fresh_process_for_the_job(
    runner_settings: runner.RunnerSettings, tmp_path: Path
) -> None:
    dead = started_standby(runner_settings)
    dead.kill()
    dead.wait()
    report = tmp_path / "report.json"
    process = runner.hand_job_to_training_process(job_request(report), runner_settings)
    assert process is not dead
    assert process.wait(timeout=60) == EXIT_FAILED
    assert isinstance(read_report(report).outcome, Failed)


def test_the_standby_preloads_the_most_recent_templates_first_and_no_more_than_the_pool_holds() -> None:
    runner._recent_templates.clear()
    first, second, third = (
        TemplateRecord(
            task="text-classification", location=name, fingerprint="f", head="labels=2", trust_remote_code=False
        )
        for name in ("a", "b", "c")
    )
    for template in (first, second, third, first):
        runner.remember_template(template, capacity=2)
    assert runner._recent_templates == [first, third]
    runner.remember_template(None, capacity=2)
    assert runner._recent_templates == [first, third]
    runner._recent_templates.clear()


def test_the_sweep_purges_the_cached_data_of_deleted_files_only(
    settings: Settings, client: TestClient, auth: dict[str, str], tmp_path: Path
) -> None:
    kept = upload_file(client, auth, jsonl_bytes(sentiment_rows(8)))
    deleted = upload_file(client, auth, jsonl_bytes(sentiment_rows(6)))
    assert client.delete(f"/v1/files/{deleted}", headers=auth).status_code == 200
    with session_scope(settings.database_url) as session:
        sha = {row.id: row.sha256 for row in session.scalars(select(File).where(File.id.in_([kept, deleted])))}
    cache = DerivedDataCache(tmp_path / "cache", max_bytes=1024**3)
    for file_id in (kept, deleted):
        (cache.root / sha[file_id] / "tokens-x").mkdir(parents=True)
    assert purge_derived_data(settings.database_url, cache) == [sha[deleted]]
    assert [path.name for path in cache.root.iterdir()] == [sha[kept]]


if sys.platform != "linux":  # /proc, PDEATHSIG
    pytestmark = pytest.mark.skip(reason="Linux only")
