"""The fine-tuning job state machine: statuses, legal moves, and which states are final."""

from __future__ import annotations

from enum import StrEnum


class JobStatus(StrEnum):
    """OpenAI's job statuses; the values are the API strings."""

    validating_files = "validating_files"
    queued = "queued"
    running = "running"
    paused = "paused"
    succeeded = "succeeded"
    failed = "failed"
    cancelled = "cancelled"


TERMINAL_STATUSES: frozenset[JobStatus] = frozenset({JobStatus.succeeded, JobStatus.failed, JobStatus.cancelled})

# Every legal move. A terminal status has no way out; everything else may be cancelled.
# running → queued hands back a run whose worker stopped or was lost; paused → queued is a resume.
ALLOWED_TRANSITIONS: dict[JobStatus, frozenset[JobStatus]] = {
    JobStatus.validating_files: frozenset({JobStatus.queued, JobStatus.failed, JobStatus.cancelled}),
    JobStatus.queued: frozenset({JobStatus.running, JobStatus.paused, JobStatus.failed, JobStatus.cancelled}),
    JobStatus.running: frozenset(
        {JobStatus.succeeded, JobStatus.failed, JobStatus.cancelled, JobStatus.queued, JobStatus.paused}
    ),
    JobStatus.paused: frozenset({JobStatus.queued, JobStatus.cancelled, JobStatus.failed}),
    JobStatus.succeeded: frozenset(),
    JobStatus.failed: frozenset(),
    JobStatus.cancelled: frozenset(),
}


def can_transition(current: JobStatus, target: JobStatus) -> bool:
    return target in ALLOWED_TRANSITIONS[current]


def sources_of(target: JobStatus) -> frozenset[JobStatus]:
    """The statuses from which `target` may be reached: the WHERE clause of a compare-and-set."""
    return frozenset(source for source, targets in ALLOWED_TRANSITIONS.items() if target in targets)
