"""The sweep's re-send of queued jobs the broker lost: once per loss, never a flood."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

from sqlalchemy import update

from models import queue
from models.db import session_scope
from models.settings import Settings
from models.tables import Job, utc_now
from tests.models.test_jobs import new_job  # noqa: F401  (fixture)
from worker.reconciler import resend_lost_queued_jobs


def sent_long_ago(settings: Settings, job_id: str) -> None:
    with session_scope(settings.database_url) as session:
        session.execute(update(Job).where(Job.id == job_id).values(enqueued_at=utc_now() - timedelta(hours=1)))


def drain(settings: Settings) -> None:
    """Empty the embedded broker's queue, as a Redis restart without persistence would."""
    import sqlite3

    path = settings.broker_url.removeprefix("sqla+sqlite:///")
    with sqlite3.connect(path) as connection:
        connection.execute("DELETE FROM kombu_message")


def test_a_queued_job_missing_from_the_broker_is_sent_again_once(
    settings: Settings,
    new_job: Callable[[], str],  # noqa: F811
) -> None:
    job_id = new_job()
    drain(settings)
    assert queue.waiting_message_count(settings.broker_url) == 0
    assert resend_lost_queued_jobs(settings.database_url, settings.broker_url, older_than_seconds=60) == []  # too young

    sent_long_ago(settings, job_id)
    assert resend_lost_queued_jobs(settings.database_url, settings.broker_url, older_than_seconds=60) == [job_id]
    assert queue.waiting_message_count(settings.broker_url) == 1
    assert resend_lost_queued_jobs(settings.database_url, settings.broker_url, older_than_seconds=60) == []


def test_nothing_is_sent_again_while_the_broker_holds_a_message_per_queued_job(
    settings: Settings,
    new_job: Callable[[], str],  # noqa: F811
) -> None:
    waiting = [new_job(), new_job()]
    for job_id in waiting:
        sent_long_ago(settings, job_id)
    assert queue.waiting_message_count(settings.broker_url) == 2
    assert resend_lost_queued_jobs(settings.database_url, settings.broker_url, older_than_seconds=60) == []


def test_when_some_messages_were_lost_every_long_queued_job_is_sent_again(
    settings: Settings,
    new_job: Callable[[], str],  # noqa: F811
) -> None:
    old, young = new_job(), new_job()
    sent_long_ago(settings, old)
    drain(settings)
    queue.enqueue_job_run(settings.broker_url, young)  # one message for two queued jobs
    assert resend_lost_queued_jobs(settings.database_url, settings.broker_url, older_than_seconds=60) == [old]
