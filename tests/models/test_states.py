from __future__ import annotations

import pytest

from models.states import ALLOWED_TRANSITIONS, TERMINAL_STATUSES, JobStatus, can_transition, sources_of


def test_every_status_has_a_transition_entry() -> None:
    assert set(ALLOWED_TRANSITIONS) == set(JobStatus)


@pytest.mark.parametrize("terminal", sorted(TERMINAL_STATUSES))
def test_terminal_statuses_are_immutable(terminal: JobStatus) -> None:
    assert all(not can_transition(terminal, target) for target in JobStatus)


@pytest.mark.parametrize("status", [JobStatus.validating_files, JobStatus.queued, JobStatus.running])
def test_every_unfinished_status_can_be_cancelled(status: JobStatus) -> None:
    assert can_transition(status, JobStatus.cancelled)


def test_only_a_running_job_can_succeed() -> None:
    assert sources_of(JobStatus.succeeded) == {JobStatus.running}


def test_a_job_runs_only_from_the_queue() -> None:
    assert sources_of(JobStatus.running) == {JobStatus.queued}


def test_queued_cannot_skip_to_succeeded() -> None:
    assert not can_transition(JobStatus.queued, JobStatus.succeeded)
