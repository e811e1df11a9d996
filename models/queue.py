"""Sending work to the workers: the message names a task and carries only a job id."""

from __future__ import annotations

from enum import StrEnum
from functools import lru_cache

from celery import Celery


class TaskName(StrEnum):
    run_job = "graft.run_job"


class QueueName(StrEnum):
    training = "training"


@lru_cache(maxsize=4)
def _producer(broker_url: str) -> Celery:
    """A send-only Celery app: the API needs no task code, only the broker and the task's name."""
    app = Celery("graft-producer", broker=broker_url)
    app.conf.update(
        task_serializer="json",
        accept_content=["json"],
        broker_connection_retry_on_startup=True,
        broker_connection_max_retries=3,
        task_default_queue=QueueName.training.value,
    )
    return app


def enqueue_job_run(broker_url: str, job_id: str) -> None:
    """Ask a worker to run `job_id`. Call only after the job's row is committed as `queued`."""
    _producer(broker_url).send_task(
        TaskName.run_job.value, kwargs={"job_id": job_id}, queue=QueueName.training.value
    )
