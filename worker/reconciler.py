"""Bringing the queue in line with the database, at worker start and every sweep interval.

The database, not the broker, is the record of what must run. Two things can go wrong in the
broker: a run's worker dies (its message was taken, so nothing is left to redeliver), and queued
messages vanish (Redis restarted without persistence, or a stopping worker took the message of
a job it handed back). The sweep repairs both.
"""

from __future__ import annotations

import logging
import threading
from datetime import timedelta

from models.services import checkpoints, dispatch, files, runs
from models.storage import broker as queue
from models.storage.blob_keys import checkpoints_prefix
from models.storage.blobs import ArtifactStore
from models.storage.database import session_scope
from models.storage.tables import utc_now
from worker.training.speedups.data_cache import DerivedDataCache

logger = logging.getLogger(__name__)

STALE_TEMPORARY_SECONDS = 24 * 3600  # far longer than any upload or export takes


def reconcile_jobs(database_url: str, broker_url: str, *, max_attempts: int) -> None:
    """Re-queue runs whose worker died (lease expired) and send every `queued` job to the broker again.

    A job already waiting in the broker gets a second message; the claim's compare-and-set makes
    the duplicate a no-op. The database, not the broker, is the record of what must run.
    """
    recovered = set(recover_lost_runs(database_url, broker_url, max_attempts=max_attempts))
    with session_scope(database_url) as session:
        queued = [job_id for job_id in dispatch.queued_job_ids(session) if job_id not in recovered]
    for job_id in queued:
        queue.enqueue_job_run(broker_url, job_id)
    with session_scope(database_url) as session:
        dispatch.mark_enqueued(session, queued)
    if queued:
        logger.info("re-sent %d queued job(s) to the broker", len(queued))


def resend_lost_queued_jobs(database_url: str, broker_url: str, *, older_than_seconds: float) -> list[str]:
    """Send again the queued jobs the broker seems to have lost; returns their ids.

    Each queued job should have a message waiting. When fewer messages wait than jobs are queued,
    some were lost, but a broker queue cannot say which; so every job sent more than
    `older_than_seconds` ago is sent again (a message is taken and its job claimed within a poll,
    so an old one still waiting is rare). A duplicate costs one no-op delivery (the claim's
    compare-and-set drops it), and the duplicates make the counts agree, so re-sends stop: at most
    one per job per loss, not one per sweep. `claim_resend` lets one worker of many do it.
    """
    cutoff = utc_now() - timedelta(seconds=older_than_seconds)
    with session_scope(database_url) as session:
        candidates = dispatch.queued_job_ids_sent_before(session, cutoff)
        queued = dispatch.queued_job_count(session) if candidates else 0
    if not candidates or queue.waiting_message_count(broker_url) >= queued:
        return []
    resent = []
    for job_id in candidates:
        with session_scope(database_url) as session:
            if not dispatch.claim_resend(session, job_id, cutoff):
                continue
        queue.enqueue_job_run(broker_url, job_id)
        resent.append(job_id)
    if resent:
        logger.warning("the broker had lost %d queued job(s); sent them again", len(resent))
    return resent


def recover_lost_runs(database_url: str, broker_url: str, *, max_attempts: int) -> list[str]:
    """Re-queue runs whose lease expired and send each of them to the broker; returns their ids."""
    with session_scope(database_url) as session:
        recovered = runs.recover_lost_runs(session, max_attempts=max_attempts)
    for job_id in recovered:
        logger.warning("job %s: its worker was lost; returned to the queue", job_id)
        queue.enqueue_job_run(broker_url, job_id)
    return recovered


def remove_checkpoints_of_ended_jobs(database_url: str, store: ArtifactStore) -> list[str]:
    """Delete the checkpoints of failed and cancelled jobs (a cancel through the API, a failed run):
    they can never be resumed. Files first, then rows, so a crash in between is retried next sweep."""
    with session_scope(database_url) as session:
        ended = checkpoints.ended_jobs_with_checkpoints(session)
    for job_id in ended:
        store.delete(checkpoints_prefix(job_id))
        with session_scope(database_url) as session:
            checkpoints.forget_checkpoints(session, job_id)
    return ended


def purge_derived_data(database_url: str, cache: DerivedDataCache) -> list[str]:
    """Delete the cached tokens and features of files no longer stored (deleted by their owner).

    Token ids can be turned back into the text, so they go with the file. Also clears staging
    folders that killed training processes left in the cache.
    """
    with session_scope(database_url) as session:
        live = files.stored_sha256s(session)
    purged = cache.purge_files_except(live)
    cache.remove_stale_staging(STALE_TEMPORARY_SECONDS)
    if purged:
        logger.info("purged the cached data of %d deleted file(s)", len(purged))
    return purged


def start_sweeper(
    database_url: str,
    broker_url: str,
    *,
    max_attempts: int,
    interval_seconds: float,
    requeue_after_seconds: float,
    store: ArtifactStore,
    cache: DerivedDataCache | None = None,
) -> threading.Event:
    """A daemon thread that, every `interval_seconds`, recovers lost runs, re-sends lost queued jobs,
    clears the checkpoints of jobs that failed or were cancelled and the cached data of deleted files.

    Every worker runs one: compare-and-sets on the job row let exactly one of them act on a given
    job, so a job whose worker died is taken over by a live worker within a lease plus an
    interval, and a job the broker lost is sent again, without waiting for a worker to start.
    Set the returned event to stop it.
    """
    stop = threading.Event()

    def sweep() -> None:
        while not stop.wait(interval_seconds):
            try:
                recover_lost_runs(database_url, broker_url, max_attempts=max_attempts)
                resend_lost_queued_jobs(database_url, broker_url, older_than_seconds=requeue_after_seconds)
                remove_checkpoints_of_ended_jobs(database_url, store)
                if cache is not None:
                    purge_derived_data(database_url, cache)
            except Exception:  # a database or broker hiccup: log it and try again next interval
                logger.exception("sweep failed")

    threading.Thread(target=sweep, name="graft-sweeper", daemon=True).start()
    return stop


def remove_stale_temporaries(store: ArtifactStore) -> None:
    """Clear leftovers of killed uploads, checkpoints and exports from the store's temporary area."""
    removed = store.remove_stale_temporaries(STALE_TEMPORARY_SECONDS)
    if removed:
        logger.info("removed %d stale temporary file(s) from the artifact store", removed)
