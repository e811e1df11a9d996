"""The state-machine races of tests/models/test_jobs.py, run again on PostgreSQL (row locks, not file locks)."""

from __future__ import annotations

import pytest

from models.settings import Settings
from tests.models.services.test_jobs import (  # noqa: F401 - collected here again, against PostgreSQL
    test_a_run_that_lost_its_job_can_no_longer_write,
    test_cancel_racing_completion_ends_in_exactly_one_final_state,
    test_two_workers_claiming_at_once_yield_exactly_one_run,
    test_writes_of_an_older_attempt_are_refused,
)

pytestmark = pytest.mark.integration


@pytest.fixture
def settings(production_settings: Settings) -> Settings:
    production_settings.data_dir.mkdir(parents=True, exist_ok=True)
    return production_settings
