"""The storage quota's accounting: what counts toward max_stored_bytes, and the check after each run output."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from models.services import checkpoints, jobs, quotas, runs, tenants
from models.services.quotas import Quota, StorageQuotaExceeded
from models.settings import Settings
from models.storage.database import session_scope
from models.storage.tables import Job


def tenant_of(settings: Settings, job_id: str) -> str:
    with session_scope(settings.database_url) as session:
        job = session.get(Job, job_id)
        assert job is not None
        return job.tenant_id


def stored(settings: Settings, tenant_id: str) -> int:
    with session_scope(settings.database_url) as session:
        return quotas.stored_bytes(session, tenant_id)


def claimed(settings: Settings, job_id: str) -> int:
    with session_scope(settings.database_url) as session:
        attempt = runs.claim_job(session, job_id, owner="w:1:t", lease_seconds=30)
    assert attempt is not None
    return attempt


def add_checkpoint(settings: Settings, job_id: str, attempt: int, *, step: int, size_bytes: int, kind: str) -> None:
    with session_scope(settings.database_url) as session:
        checkpoints.record_checkpoint(
            session,
            job_id,
            attempt,
            step=step,
            epoch=0,
            metrics={},
            blob_key=f"jobs/{job_id}/checkpoints/step-{step}",
            kind=kind,
            size_bytes=size_bytes,
        )


def test_stored_bytes_counts_the_checkpoints_of_unfinished_jobs_paused_ones_included(
    settings: Settings,
    new_job: Callable[[], str],
) -> None:
    job_id = new_job()
    tenant_id = tenant_of(settings, job_id)
    files_only = stored(settings, tenant_id)
    attempt = claimed(settings, job_id)
    add_checkpoint(settings, job_id, attempt, step=4, size_bytes=1000, kind="epoch")
    assert stored(settings, tenant_id) == files_only + 1000

    with session_scope(settings.database_url) as session:
        jobs.pause_job(session, tenant_id, job_id)
    with session_scope(settings.database_url) as session:
        assert runs.pause_run(session, job_id, attempt, step=4)
        assert session.get(Job, job_id).status == "paused"  # type: ignore[union-attr]
    assert stored(settings, tenant_id) == files_only + 1000
    with session_scope(settings.database_url) as session:
        usage = quotas.quota_usage(session, tenants.find_tenant(session, "acme"), settings)
    assert [line.in_use for line in usage if line.quota is Quota.max_stored_bytes] == [files_only + 1000]


def test_superseded_checkpoints_and_those_of_ended_jobs_do_not_count(
    settings: Settings,
    new_job: Callable[[], str],
) -> None:
    job_id = new_job()
    tenant_id = tenant_of(settings, job_id)
    files_only = stored(settings, tenant_id)
    attempt = claimed(settings, job_id)
    add_checkpoint(settings, job_id, attempt, step=2, size_bytes=500, kind="interval")
    add_checkpoint(settings, job_id, attempt, step=4, size_bytes=1000, kind="epoch")  # supersedes step 2
    assert stored(settings, tenant_id) == files_only + 1000

    with session_scope(settings.database_url) as session:
        jobs.cancel_job(session, tenant_id, job_id)
    # The rows stay until the sweep deletes the files; a cancelled job can never resume, so they no longer count.
    assert stored(settings, tenant_id) == files_only


def test_a_run_output_past_the_quota_is_refused_naming_its_size_the_total_and_the_quota(
    settings: Settings,
    new_job: Callable[[], str],
) -> None:
    job_id = new_job()
    tenant_id = tenant_of(settings, job_id)
    files_only = stored(settings, tenant_id)
    attempt = claimed(settings, job_id)
    with session_scope(settings.database_url) as session:
        quotas.set_tenant_quota(
            session, tenants.find_tenant(session, "acme"), Quota.max_stored_bytes, files_only + 1500
        )

    def record(step: int) -> None:
        with session_scope(settings.database_url) as session:
            checkpoints.record_checkpoint(
                session, job_id, attempt, step=step, epoch=step // 4, metrics={}, blob_key=f"k{step}", size_bytes=1000
            )
            quotas.ensure_run_output_fits(
                session,
                job_id,
                service_max_stored_bytes=settings.tenant_max_stored_bytes,
                output=f"the checkpoint at step {step}",
                size_bytes=1000,
            )

    record(4)  # files + 1000 fit in files + 1500
    with pytest.raises(StorageQuotaExceeded) as refused:
        record(8)
    assert refused.value.message == (
        f"storage quota exceeded: the checkpoint at step 8 (1000 bytes) would bring what you store to "
        f"{files_only + 2000} bytes, past your storage quota (max_stored_bytes={files_only + 1500} bytes; files, "
        "fine-tuned weights and the checkpoints of unfinished jobs count). It was deleted, and so were the job's "
        "checkpoints. Delete files you no longer need, cancel paused jobs you will not resume (their checkpoints "
        "count), or ask an administrator for a larger quota; then create the job again (fewer epochs or a "
        "strategy that trains fewer parameters stores less)."
    )
    assert stored(settings, tenant_id) == files_only + 1000  # the refused checkpoint's row was rolled back


def test_a_run_output_is_held_to_the_service_default_where_the_tenant_has_no_quota_of_its_own(
    settings: Settings,
    new_job: Callable[[], str],
) -> None:
    job_id = new_job()
    files_only = stored(settings, tenant_of(settings, job_id))
    claimed(settings, job_id)
    with session_scope(settings.database_url) as session:
        quotas.ensure_run_output_fits(
            session, job_id, service_max_stored_bytes=files_only, output="the fine-tuned weights", size_bytes=0
        )
        with pytest.raises(StorageQuotaExceeded, match=f"max_stored_bytes={files_only - 1} bytes"):
            quotas.ensure_run_output_fits(
                session, job_id, service_max_stored_bytes=files_only - 1, output="the fine-tuned weights", size_bytes=0
            )
