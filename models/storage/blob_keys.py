"""Every blob key the service writes, named in one place."""

from __future__ import annotations


def run_outputs_prefix(job_id: str, attempt: int) -> str:
    """Where one run publishes its outputs: per attempt, so a run that lost its job never touches the winner's."""
    return f"jobs/{job_id}/attempt-{attempt}"


def weights_blob_key(job_id: str, attempt: int) -> str:
    return f"{run_outputs_prefix(job_id, attempt)}/weights.tar"


def results_blob_key(job_id: str, attempt: int) -> str:
    return f"{run_outputs_prefix(job_id, attempt)}/results.csv"


def file_blob_key(tenant_id: str, file_id: str) -> str:
    return f"files/{tenant_id}/{file_id}"


def checkpoint_key_pattern(job_id: str, attempt: int) -> str:
    """The keys of a run's checkpoints, with a `{step}` field for the step: each run writes under its own
    names, so a run that lost its lease can never overwrite another's."""
    return f"{checkpoints_prefix(job_id)}/step-{{step:08d}}-attempt-{attempt}"


def checkpoints_prefix(job_id: str) -> str:
    return f"jobs/{job_id}/checkpoints"
