"""Sending work to the workers: the message names a task and carries only a job id."""

from __future__ import annotations

import sqlite3
from enum import StrEnum
from functools import lru_cache
from pathlib import Path
from typing import Any

from celery import Celery
from kombu.exceptions import OperationalError
from sqlalchemy.engine import make_url

# The embedded broker is kombu's SQLAlchemy transport on a SQLite file (bench/broker.py: the
# filesystem transport lost messages under concurrent producers; SQLite in WAL mode did not).
EMBEDDED_BROKER_SCHEME = "sqla+sqlite"
SQLITE_BROKER_LOCK_WAIT_SECONDS = 30


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
        broker_transport_options=broker_transport_options(broker_url),
    )
    return app


def is_embedded_broker(broker_url: str) -> bool:
    return broker_url.startswith(f"{EMBEDDED_BROKER_SCHEME}:")


def broker_transport_options(broker_url: str) -> dict[str, Any]:
    """Options both producer and worker must share. The SQLAlchemy transport hands them to create_engine."""
    if is_embedded_broker(broker_url):
        return {"connect_args": {"timeout": SQLITE_BROKER_LOCK_WAIT_SECONDS}}
    return {}


def prepare_embedded_broker(broker_url: str) -> None:
    """Put the embedded broker's SQLite file in WAL mode (persistent), so producers don't block the worker."""
    if not is_embedded_broker(broker_url):
        return
    database = make_url(broker_url.removeprefix("sqla+")).database
    if not database or database == ":memory:":
        return
    Path(database).parent.mkdir(parents=True, exist_ok=True)
    with sqlite3.connect(database, timeout=SQLITE_BROKER_LOCK_WAIT_SECONDS) as connection:
        connection.execute("PRAGMA journal_mode=WAL")


class QueueUnavailable(Exception):
    """The broker could not be reached; the message was not sent."""


def enqueue_job_run(broker_url: str, job_id: str) -> None:
    """Ask a worker to run `job_id`. Call only after the job's row is committed as `queued`.

    Raises QueueUnavailable when the broker cannot be reached.
    """
    try:
        _producer(broker_url).send_task(
            TaskName.run_job.value, kwargs={"job_id": job_id}, queue=QueueName.training.value
        )
    except (OSError, OperationalError) as error:
        raise QueueUnavailable(str(error)) from error


def waiting_message_count(broker_url: str) -> int:
    """How many messages wait in the training queue (taken ones not counted). Raises QueueUnavailable."""
    try:
        with _producer(broker_url).connection_for_write() as connection:
            channel = connection.default_channel
            declared = channel.queue_declare(queue=QueueName.training.value, durable=True, auto_delete=False)
            return int(declared.message_count)
    except (OSError, OperationalError) as error:
        raise QueueUnavailable(str(error)) from error
