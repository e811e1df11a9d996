"""Bringing the queue in line with the database: lost runs, at start and periodically, and unsent jobs."""

from __future__ import annotations

import logging
import threading

from models import jobs, queue
from models.db import session_scope
from models.storage import ArtifactStore

logger = logging.getLogger(__name__)

STALE_TEMPORARY_SECONDS = 24 * 3600  # far longer than any upload or export takes


def reconcile_jobs(database_url: str, broker_url: str, *, max_attempts: int) -> None:
    """Re-queue runs whose worker died (lease expired) and send every `queued` job to the broker again.

    A job already waiting in the broker gets a second message; the claim's compare-and-set makes
    the duplicate a no-op. The database, not the broker, is the record of what must run.
    """
    recover_lost_runs(database_url, broker_url, max_attempts=max_attempts)
    with session_scope(database_url) as session:
        queued = jobs.queued_job_ids(session)
    for job_id in queued:
        queue.enqueue_job_run(broker_url, job_id)
    if queued:
        logger.info("re-sent %d queued job(s) to the broker", len(queued))


def recover_lost_runs(database_url: str, broker_url: str, *, max_attempts: int) -> list[str]:
    """Re-queue runs whose lease expired and send each of them to the broker; returns their ids."""
    with session_scope(database_url) as session:
        recovered = jobs.recover_lost_runs(session, max_attempts=max_attempts)
    for job_id in recovered:
        logger.warning("job %s: its worker was lost; returned to the queue", job_id)
        queue.enqueue_job_run(broker_url, job_id)
    return recovered


def start_lost_run_sweeper(
    database_url: str, broker_url: str, *, max_attempts: int, interval_seconds: float
) -> threading.Event:
    """A daemon thread that recovers lost runs every `interval_seconds`; set the returned event to stop it.

    Every worker runs one: the compare-and-set on the job row lets exactly one of them re-queue a
    given run, so a job whose worker died is taken over by a live worker within a lease plus an
    interval, not only when a worker next starts.
    """
    stop = threading.Event()

    def sweep() -> None:
        while not stop.wait(interval_seconds):
            try:
                recover_lost_runs(database_url, broker_url, max_attempts=max_attempts)
            except Exception:  # a database or broker hiccup: log it and try again next interval
                logger.exception("lost-run sweep failed")

    threading.Thread(target=sweep, name="graft-lost-run-sweeper", daemon=True).start()
    return stop


def remove_stale_temporaries(store: ArtifactStore) -> None:
    """Clear leftovers of killed uploads, checkpoints and exports from the store's temporary area."""
    removed = store.remove_stale_temporaries(STALE_TEMPORARY_SECONDS)
    if removed:
        logger.info("removed %d stale temporary file(s) from the artifact store", removed)
