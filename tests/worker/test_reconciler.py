"""The sweep's re-send of queued jobs the broker lost: once per loss, never a flood."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

from sqlalchemy import update

from models.services import checkpoints, jobs, runs
from models.settings import Settings
from models.storage import broker as queue
from models.storage.blobs import ArtifactStore
from models.storage.database import session_scope
from models.storage.tables import Job, utc_now
from worker.reconciler import remove_checkpoints_of_ended_jobs, resend_lost_queued_jobs


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
    new_job: Callable[[], str],
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
    new_job: Callable[[], str],
) -> None:
    waiting = [new_job(), new_job()]
    for job_id in waiting:
        sent_long_ago(settings, job_id)
    assert queue.waiting_message_count(settings.broker_url) == 2
    assert resend_lost_queued_jobs(settings.database_url, settings.broker_url, older_than_seconds=60) == []


def test_when_some_messages_were_lost_every_long_queued_job_is_sent_again(
    settings: Settings,
    new_job: Callable[[], str],
) -> None:
    old, young = new_job(), new_job()
    sent_long_ago(settings, old)
    drain(settings)
    queue.enqueue_job_run(settings.broker_url, young)  # one message for two queued jobs
    assert resend_lost_queued_jobs(settings.database_url, settings.broker_url, older_than_seconds=60) == [old]


def checkpoint_a_run(settings: Settings, job_id: str) -> str:
    """Claim the job and record one published checkpoint, as a run would; returns its blob key."""
    key = f"jobs/{job_id}/checkpoints/step-00000004-attempt-1"
    (settings.artifacts / key).mkdir(parents=True)
    (settings.artifacts / key / "COMPLETE").write_text("")
    with session_scope(settings.database_url) as session:
        assert runs.claim_job(session, job_id, owner="w:1:t", lease_seconds=30) == 1
        checkpoints.record_checkpoint(session, job_id, 1, step=4, epoch=0, metrics={}, blob_key=key, kind="stop")
    return key


def test_the_checkpoints_of_a_cancelled_job_are_cleared_and_a_paused_jobs_are_kept(
    settings: Settings,
    new_job: Callable[[], str],
) -> None:
    cancelled, paused = new_job(), new_job()
    cancelled_key, paused_key = checkpoint_a_run(settings, cancelled), checkpoint_a_run(settings, paused)
    with session_scope(settings.database_url) as session:
        tenant_id = session.get(Job, cancelled).tenant_id  # type: ignore[union-attr]
        jobs.cancel_job(session, tenant_id, cancelled)
        assert runs.pause_run(session, paused, 1, step=4)
    store = ArtifactStore(settings.artifacts)
    assert remove_checkpoints_of_ended_jobs(settings.database_url, store) == [cancelled]
    assert not store.exists(cancelled_key) and store.exists(paused_key)
    assert remove_checkpoints_of_ended_jobs(settings.database_url, store) == []  # nothing left to do
