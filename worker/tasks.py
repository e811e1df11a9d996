"""Celery tasks: each decodes its message and hands the work to the runner."""

from __future__ import annotations

from models.queue import TaskName
from models.settings import get_settings
from worker import runner
from worker.celery_app import celery_app


@celery_app.task(name=TaskName.run_job.value, acks_late=False, ignore_result=True)
def run_job(*, job_id: str) -> None:
    runner.run_job(job_id, runner.RunnerSettings.from_settings(get_settings()))
