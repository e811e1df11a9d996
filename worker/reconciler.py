"""Bringing the queue in line with the database when a worker starts: lost runs and unsent jobs."""

from __future__ import annotations

import logging

from models import jobs, queue
from models.db import session_scope

logger = logging.getLogger(__name__)


def reconcile_jobs(database_url: str, broker_url: str, *, max_attempts: int) -> None:
    """Re-queue runs whose worker died (lease expired) and send every `queued` job to the broker again.

    A job already waiting in the broker gets a second message; the claim's compare-and-set makes
    the duplicate a no-op. The database, not the broker, is the record of what must run.
    """
    with session_scope(database_url) as session:
        recovered = jobs.recover_lost_runs(session, max_attempts=max_attempts)
        queued = jobs.queued_job_ids(session)
    for job_id in recovered:
        logger.warning("job %s: its worker was lost; returned to the queue", job_id)
    for job_id in queued:
        queue.enqueue_job_run(broker_url, job_id)
    if queued:
        logger.info("re-sent %d queued job(s) to the broker", len(queued))
