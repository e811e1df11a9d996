from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, inspect, text

from api.main import create_app
from migrations.apply import alembic_config, downgrade_to_base, upgrade_to_head
from models.ids import IdPrefix, new_id
from models.services import tenants
from models.settings import Settings
from models.storage.database import close_engine, get_engine, session_scope
from models.storage.tables import Base, Tenant
from worker.run_specs import load_run_spec

TABLES = {
    "tenants",
    "api_keys",
    "files",
    "base_models",
    "jobs",
    "job_events",
    "checkpoints",
    "result_artifacts",
}


def assert_schema_matches_the_models(url: str) -> None:
    with get_engine(url).connect() as connection:
        differences = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    assert differences == []


def migrate_down_and_up(url: str) -> None:
    upgrade_to_head(url)
    assert set(inspect(get_engine(url)).get_table_names()) >= TABLES
    assert_schema_matches_the_models(url)
    downgrade_to_base(url)
    assert not TABLES & set(inspect(get_engine(url)).get_table_names())
    upgrade_to_head(url)
    assert_schema_matches_the_models(url)


@pytest.mark.integration
def test_migrations_build_the_models_schema_on_postgresql(postgres_url: str) -> None:
    migrate_down_and_up(postgres_url)


def test_migrations_build_the_models_schema_on_sqlite(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'graft.db'}"
    migrate_down_and_up(url)
    close_engine(url)


PREVIOUS_REVISION = "abcdf98dace8"  # before task-neutral files and jobs


def populate_previous_revision(url: str) -> dict[str, str]:
    """A tenant with a text-classification file, a succeeded job with events and a checkpoint, written
    as the previous revision's schema holds them (label columns on files, label_names on jobs)."""
    command.upgrade(alembic_config(url), PREVIOUS_REVISION)
    ids = {"tenant": "tenant-old", "file": new_id(IdPrefix.file), "job": new_id(IdPrefix.job)}
    now = datetime(2026, 12, 1, tzinfo=UTC)
    statements = [
        ("INSERT INTO tenants (id, name, created_at) VALUES (:tenant, 'old', :now)", {}),
        (
            "INSERT INTO files (id, tenant_id, filename, purpose, size_bytes, sha256, status, blob_key, data_format,"
            " record_count, has_text_pair, label_kind, label_counts, created_at) VALUES (:file, :tenant,"
            " 'sst2.jsonl', 'fine-tune', 100, 'ab', 'processed', 'files/x', 'jsonl', 4, false, 'str', :counts, :now)",
            {"counts": json.dumps({"neg": 2, "pos": 2})},
        ),
        (
            "INSERT INTO base_models (id, source, location, model_type, num_layers, max_sequence_length,"
            " trust_remote_code, created_at) VALUES ('old-model', 'local', '/nowhere', 'bert', 2, 64, false, :now)",
            {},
        ),
        (
            "INSERT INTO jobs (id, tenant_id, base_model_id, training_file_id, task, strategy, hyperparameters,"
            " label_names, seed, status, created_at, finished_at, attempt, lost_runs, result_files,"
            " fine_tuned_model) VALUES (:job, :tenant, 'old-model', :file, 'text-classification', :strategy,"
            " :hyper, :labels, 7, 'succeeded', :now, :now, 1, 0, '[]', :model)",
            {
                "strategy": json.dumps({"type": "partial", "trainable_layers": 1, "layer_decay": None}),
                "hyper": json.dumps(
                    {
                        "n_epochs": 1,
                        "batch_size": 2,
                        "learning_rate_multiplier": 1.0,
                        "learning_rate": 1e-4,
                        "warmup_ratio": 0.0,
                        "max_length": 32,
                        "weight_decay": 0.0,
                    }
                ),
                "labels": json.dumps(["neg", "pos"]),
                "model": f"ft:old-model::{ids['job']}",
            },
        ),
        (
            "INSERT INTO job_events (id, job_id, created_at, level, event_type, message) VALUES"
            " ('ftevent-old1', :job, :now, 'info', 'message', 'Job queued')",
            {},
        ),
        (
            "INSERT INTO checkpoints (id, job_id, attempt, step, epoch, kind, metrics, blob_key, size_bytes,"
            " created_at) VALUES ('ftckpt-old1', :job, 1, 2, 1, 'epoch', :metrics, 'jobs/x/c', 10, :now)",
            {"metrics": json.dumps({"valid_accuracy": 0.5})},
        ),
    ]
    engine = create_engine(url)
    try:
        with engine.begin() as connection:
            for statement, values in statements:
                connection.execute(text(statement), {**ids, "now": now, **values})
    finally:
        engine.dispose()
    return ids


def assert_upgraded_rows_are_served(url: str, ids: dict[str, str], tmp_path: Path) -> None:
    upgrade_to_head(url)
    assert_schema_matches_the_models(url)
    settings = Settings(data_dir=tmp_path / "var", database_url=url, broker_url=f"sqla+sqlite:///{tmp_path}/b.db")
    with session_scope(url) as session:
        tenant = session.get(Tenant, ids["tenant"])
        assert tenant is not None
        _, key = tenants.create_api_key(session, tenant)
    auth = {"Authorization": f"Bearer {key}"}
    with TestClient(create_app(settings)) as client:
        job = client.get(f"/v1/fine_tuning/jobs/{ids['job']}", headers=auth).json()
        assert (job["status"], job["labels"], job["best_checkpoint"]) == ("succeeded", ["neg", "pos"], None)
        assert job["strategy"] == {"type": "partial", "trainable_layers": 1, "regularization": None}
        listed = client.get("/v1/fine_tuning/jobs", headers=auth).json()["data"]
        assert [listed_job["id"] for listed_job in listed] == [ids["job"]]
        events = client.get(f"/v1/fine_tuning/jobs/{ids['job']}/events", headers=auth).json()["data"]
        assert [event["message"] for event in events] == ["Job queued"]
        checkpoints = client.get(f"/v1/fine_tuning/jobs/{ids['job']}/checkpoints", headers=auth).json()["data"]
        assert [(c["step_number"], c["metrics"]) for c in checkpoints] == [(2, {"valid_accuracy": 0.5})]
        file = client.get(f"/v1/files/{ids['file']}", headers=auth).json()
        assert file["label_counts"] == {"neg": 2, "pos": 2}
        assert file["task_summaries"] == {
            "text-classification": {
                "record_count": 4,
                "label_counts": {"neg": 2, "pos": 2},
                "label_kind": "str",
                "has_text_pair": False,
            }
        }
    spec = load_run_spec(url, ids["job"], 2, settings.artifacts)
    assert (spec.task_settings, spec.strategy.type_name()) == ({"labels": ["neg", "pos"]}, "partial")


def test_a_sqlite_database_of_the_previous_revision_upgrades_and_its_jobs_and_files_are_served(
    tmp_path: Path,
) -> None:
    url = f"sqlite:///{tmp_path / 'old.db'}"
    ids = populate_previous_revision(url)
    assert_upgraded_rows_are_served(url, ids, tmp_path)
    close_engine(url)


@pytest.mark.integration
def test_a_postgresql_database_of_the_previous_revision_upgrades_and_its_jobs_and_files_are_served(
    postgres_url: str, tmp_path: Path
) -> None:
    downgrade_to_base(postgres_url)
    ids = populate_previous_revision(postgres_url)
    assert_upgraded_rows_are_served(postgres_url, ids, tmp_path)
