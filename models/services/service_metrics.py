"""What operators watch, read from the database at scrape time: jobs, queue, throughput, durations, uploads, workers.

Read from the database rather than counted in one process, so every API process reports the same
numbers, and a restart loses none of them. The histograms count every job that ever started (jobs
are never deleted, so they only grow, as Prometheus expects), from the jobs' timestamps.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Connection, func, select

from models.states import JobStatus
from models.storage.tables import File, Job, Worker, utc_now

# Upper bounds of the job-duration and queue-wait histograms, in seconds: a minute to a day.
DURATION_BUCKETS_SECONDS = (60.0, 300.0, 900.0, 1800.0, 3600.0, 7200.0, 14400.0, 28800.0, 86400.0)
QUEUE_WAIT_BUCKETS_SECONDS = (1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 3600.0, 14400.0)


@dataclass(frozen=True)
class Histogram:
    """Cumulative bucket counts (one per upper bound, then +Inf), and the sum of the observed values."""

    buckets: list[tuple[float, int]]
    count: int
    total: float


@dataclass(frozen=True)
class WorkerSeen:
    name: str
    seconds_since_seen: float
    gpus: list[dict[str, int]]


@dataclass(frozen=True)
class ServiceSnapshot:
    jobs_by_status: dict[str, int]
    queue_depth: int
    oldest_queued_seconds: float
    queue_wait: Histogram  # from creation to the first start, over every job that started
    job_duration: dict[str, Histogram]  # from the first start to the end, per end status
    training_samples_per_second: float  # summed over running jobs
    training_tokens_per_second: float
    uploaded_bytes: int  # every file ever uploaded, deleted ones included
    uploaded_files: int
    workers: list[WorkerSeen]


def read_snapshot(connection: Connection) -> ServiceSnapshot:
    """Every metric at once. Reads only."""
    now = utc_now()
    by_status = {status.value: 0 for status in JobStatus}
    for status, count in connection.execute(select(Job.status, func.count()).group_by(Job.status)):
        by_status[status] = int(count)
    oldest = connection.scalar(select(func.min(Job.created_at)).where(Job.status == JobStatus.queued.value))
    samples = tokens = 0.0
    for (performance,) in connection.execute(select(Job.performance).where(Job.status == JobStatus.running.value)):
        samples += float((performance or {}).get("samples_per_second") or 0.0)
        tokens += float((performance or {}).get("tokens_per_second") or 0.0)
    uploaded = connection.execute(
        select(func.coalesce(func.sum(File.size_bytes), 0), func.count()).select_from(File)
    ).one()
    waits = [
        (started - created).total_seconds()
        for created, started in connection.execute(
            select(Job.created_at, Job.started_at).where(Job.started_at.is_not(None))
        )
        if started is not None
    ]
    durations: dict[str, list[float]] = {}
    for status, started, finished in connection.execute(
        select(Job.status, Job.started_at, Job.finished_at).where(
            Job.started_at.is_not(None), Job.finished_at.is_not(None)
        )
    ):
        if started is not None and finished is not None:
            durations.setdefault(status, []).append((finished - started).total_seconds())
    workers = [
        WorkerSeen(name, (now - seen).total_seconds(), list(gpus or []))
        for name, seen, gpus in connection.execute(select(Worker.name, Worker.last_seen_at, Worker.gpus))
    ]
    return ServiceSnapshot(
        jobs_by_status=by_status,
        queue_depth=by_status[JobStatus.queued.value],
        oldest_queued_seconds=(now - oldest).total_seconds() if oldest is not None else 0.0,
        queue_wait=histogram(waits, QUEUE_WAIT_BUCKETS_SECONDS),
        job_duration={status: histogram(values, DURATION_BUCKETS_SECONDS) for status, values in durations.items()},
        training_samples_per_second=samples,
        training_tokens_per_second=tokens,
        uploaded_bytes=int(uploaded[0]),
        uploaded_files=int(uploaded[1]),
        workers=workers,
    )


def histogram(values: list[float], bounds: tuple[float, ...]) -> Histogram:
    return Histogram(
        buckets=[(bound, sum(1 for value in values if value <= bound)) for bound in bounds],
        count=len(values),
        total=float(sum(values)),
    )
