"""Damaged job rows on PostgreSQL, where the job GET reads through models.storage.read_pool rather than a thread.

The API tests of tests/api/test_unservable_rows.py run here again: the GET's pool path must repair
or refuse a row exactly as the threaded path does, and PostgreSQL's `json` columns keep the
"\\ud800" escapes that decode to lone surrogates, as SQLite's do.
"""

from __future__ import annotations

import pytest

from tests.api.test_unservable_rows import (  # noqa: F401 - collected here again, against PostgreSQL
    test_a_change_to_a_row_holding_lone_surrogates_is_committed_and_answered,
    test_job_get_of_a_row_that_cannot_be_built_names_the_job_and_the_remedy,
    test_job_get_serves_a_row_holding_lone_surrogates_with_them_replaced,
    test_jobs_list_leaves_out_a_row_that_cannot_be_built_and_logs_why,
    test_jobs_list_serves_rows_holding_lone_surrogates_with_them_replaced,
)
from tests.integration.test_job_reads_on_postgresql import (  # noqa: F401 - the pool-only API and its database
    client,
    no_threaded_reads,
    settings,
)

pytestmark = pytest.mark.integration
