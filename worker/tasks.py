"""Celery tasks: each decodes its message and hands the work to the runner."""

from __future__ import annotations

from celery.worker import state as worker_state

from models.settings import get_settings
from models.storage.broker import TaskName
from worker import runner
from worker.celery_app import celery_app


def worker_is_stopping() -> bool:
    """True once Celery began a warm or cold shutdown (its flags hold an exit code, 0 included)."""
    return worker_state.should_stop is not None or worker_state.should_terminate is not None


@celery_app.task(name=TaskName.run_job.value, acks_late=False, ignore_result=True)
def run_job(*, job_id: str) -> None:
    runner.run_job(job_id, runner.RunnerSettings.from_settings(get_settings()), stop_requested=worker_is_stopping)
