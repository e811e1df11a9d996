"""SQLAlchemy tables: the database is the source of truth for every object the API shows."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    TypeDecorator,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


def utc_now() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC timestamp on every backend (SQLite stores naive values)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given; use models.storage.tables.utc_now()")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


# An integer primary key that autoincrements on SQLite (INTEGER) and PostgreSQL (BIGINT).
AutoIncrementingKey = BigInteger().with_variant(Integer(), "sqlite")


class Base(DeclarativeBase):
    type_annotation_map = {datetime: UTCDateTime, dict[str, Any]: JSON, list[Any]: JSON}


class Tenant(Base):
    __tablename__ = "tenants"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utc_now)
    # Quotas; None means the service-wide default from Settings.
    max_active_jobs: Mapped[int | None] = mapped_column(Integer, default=None)
    max_stored_bytes: Mapped[int | None] = mapped_column(BigInteger, default=None)
    max_upload_bytes: Mapped[int | None] = mapped_column(BigInteger, default=None)


class ApiKey(Base):
    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"), index=True)
    lookup_prefix: Mapped[str] = mapped_column(String(32), unique=True)
    secret_sha256: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=utc_now)
    revoked_at: Mapped[datetime | None] = mapped_column(default=None)
    # Refreshed at most once a minute per key (models.services.tenants.note_key_use): `graft keys list` shows it.
    last_used_at: Mapped[datetime | None] = mapped_column(default=None)


class File(Base):
    __tablename__ = "files"
    __table_args__ = (Index("ix_files_tenant_created", "tenant_id", "created_at"),)

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"))
    filename: Mapped[str] = mapped_column(String(256))
    purpose: Mapped[str] = mapped_column(String(32))
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16))
    status_details: Mapped[str | None] = mapped_column(Text, default=None)
    blob_key: Mapped[str] = mapped_column(String(512))
    data_format: Mapped[str | None] = mapped_column(String(16), default=None)
    record_count: Mapped[int] = mapped_column(Integer, default=0)
    # What validation learned, per task whose format the file satisfies (models/tasks/<task>.py `summarize`):
    # {"text-classification": {"record_count", "label_counts", …}}. Its keys are the tasks it can train.
    task_summaries: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utc_now)
    deleted_at: Mapped[datetime | None] = mapped_column(default=None)


class BaseModel(Base):
    """A pretrained model that jobs may start from: a local Hugging Face directory or a hub id."""

    __tablename__ = "base_models"

    id: Mapped[str] = mapped_column(String(256), primary_key=True)
    source: Mapped[str] = mapped_column(String(16))
    location: Mapped[str] = mapped_column(Text)
    model_type: Mapped[str] = mapped_column(String(64))
    num_layers: Mapped[int] = mapped_column(Integer)
    max_sequence_length: Mapped[int] = mapped_column(Integer)
    trust_remote_code: Mapped[bool] = mapped_column(Boolean, default=False)
    # Parameter counts read from the safetensors headers at registration (models.services.catalog.count_parameters),
    # from which a job's storage is estimated; None when the weights were not at hand.
    embedding_parameters: Mapped[int | None] = mapped_column(BigInteger, default=None)
    layer_parameters: Mapped[int | None] = mapped_column(BigInteger, default=None)
    top_parameters: Mapped[int | None] = mapped_column(BigInteger, default=None)
    created_at: Mapped[datetime] = mapped_column(default=utc_now)


class Job(Base):
    __tablename__ = "jobs"
    __table_args__ = (
        Index("ix_jobs_tenant_created_id", "tenant_id", "created_at", "id"),
        Index("ix_jobs_status", "status"),
    )

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"))
    base_model_id: Mapped[str] = mapped_column(ForeignKey("base_models.id"))
    training_file_id: Mapped[str] = mapped_column(ForeignKey("files.id"))
    validation_file_id: Mapped[str | None] = mapped_column(ForeignKey("files.id"), default=None)
    task: Mapped[str] = mapped_column(String(64))
    strategy: Mapped[dict[str, Any]] = mapped_column()
    hyperparameters: Mapped[dict[str, Any]] = mapped_column()
    # The task's own part of the job, from its files (models/tasks/<task>.py `job_settings`): label names, say.
    task_settings: Mapped[dict[str, Any]] = mapped_column(default=dict)
    seed: Mapped[int] = mapped_column(BigInteger)
    suffix: Mapped[str | None] = mapped_column(String(64), default=None)
    user_metadata: Mapped[dict[str, Any] | None] = mapped_column(default=None)
    status: Mapped[str] = mapped_column(String(32))
    error_code: Mapped[str | None] = mapped_column(String(64), default=None)
    error_message: Mapped[str | None] = mapped_column(Text, default=None)
    error_param: Mapped[str | None] = mapped_column(String(128), default=None)
    fine_tuned_model: Mapped[str | None] = mapped_column(String(512), default=None, unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utc_now)
    started_at: Mapped[datetime | None] = mapped_column(default=None)
    finished_at: Mapped[datetime | None] = mapped_column(default=None)
    # The run that owns the job: each claim bumps `attempt`, and every write of a run is fenced by it.
    attempt: Mapped[int] = mapped_column(Integer, default=0)
    lease_owner: Mapped[str | None] = mapped_column(String(256), default=None)
    lease_expires_at: Mapped[datetime | None] = mapped_column(default=None)
    # Runs lost with their worker (lease expired): the poison-job bound counts these, not pauses or hand-backs.
    lost_runs: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    # When the job's message was last handed to the broker; the sweeper re-sends long-queued jobs it lost.
    enqueued_at: Mapped[datetime | None] = mapped_column(default=None)
    # Set by POST /pause on a running job: its run checkpoints, stops, and the job becomes `paused`.
    pause_requested_at: Mapped[datetime | None] = mapped_column(default=None)
    trained_tokens: Mapped[int | None] = mapped_column(BigInteger, default=None)
    trainable_parameters: Mapped[int | None] = mapped_column(BigInteger, default=None)
    total_parameters: Mapped[int | None] = mapped_column(BigInteger, default=None)
    progress: Mapped[dict[str, Any] | None] = mapped_column(default=None)
    # The latest run's speed and footprint (models.wire.jobs.PerformanceRead), written with its progress.
    performance: Mapped[dict[str, Any] | None] = mapped_column(default=None)
    # What trains in the latest run's current epoch, unit by unit (worker.training.freeze_plan): {"epoch", "units"}.
    freeze_plan: Mapped[dict[str, Any] | None] = mapped_column(default=None)
    result_files: Mapped[list[Any]] = mapped_column(default=list)
    # With early stopping, the epoch whose weights were delivered: {"epoch", "step", "metrics"}.
    best_checkpoint: Mapped[dict[str, Any] | None] = mapped_column(default=None)


class JobEvent(Base):
    __tablename__ = "job_events"
    __table_args__ = (Index("ix_job_events_job_sequence", "job_id", "sequence"),)

    # `sequence` orders events exactly; timestamps can tie.
    sequence: Mapped[int] = mapped_column(AutoIncrementingKey, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(64), unique=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id"))
    created_at: Mapped[datetime] = mapped_column(default=utc_now)
    level: Mapped[str] = mapped_column(String(8))
    event_type: Mapped[str] = mapped_column(String(16))
    message: Mapped[str] = mapped_column(Text)
    data: Mapped[dict[str, Any] | None] = mapped_column(default=None)


class Checkpoint(Base):
    __tablename__ = "checkpoints"
    __table_args__ = (Index("ix_checkpoints_job_step", "job_id", "step"),)

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id"))
    attempt: Mapped[int] = mapped_column(Integer)
    step: Mapped[int] = mapped_column(Integer)
    epoch: Mapped[int] = mapped_column(Integer)
    # "epoch" (an epoch end, kept until the job ends) or "interval"/"stop" (mid-epoch; only the newest is kept).
    kind: Mapped[str] = mapped_column(String(16), default="epoch", server_default="epoch")
    metrics: Mapped[dict[str, Any]] = mapped_column()
    blob_key: Mapped[str] = mapped_column(String(512))
    # What the checkpoint's files take in the store; counts toward its tenant's max_stored_bytes while the job lives.
    size_bytes: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    created_at: Mapped[datetime] = mapped_column(default=utc_now)


class ResultArtifact(Base):
    """A published output of a succeeded job, e.g. the weights archive; immutable once written."""

    __tablename__ = "result_artifacts"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id"), index=True)
    kind: Mapped[str] = mapped_column(String(32))
    blob_key: Mapped[str] = mapped_column(String(512))
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=utc_now)


class WebhookEndpoint(Base):
    """A URL of a tenant's that is told when its jobs end (or pause), for the events it chose."""

    __tablename__ = "webhook_endpoints"
    __table_args__ = (Index("ix_webhook_endpoints_tenant_created", "tenant_id", "created_at"),)

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"))
    url: Mapped[str] = mapped_column(Text)
    events: Mapped[list[Any]] = mapped_column()
    # The signing key, shown to the tenant once; the sender needs it whole to sign (HMAC), so it is kept as given.
    secret: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(default=utc_now)
    deleted_at: Mapped[datetime | None] = mapped_column(default=None)


class WebhookDelivery(Base):
    """One notification to one endpoint, sent until it is answered 2xx or runs out of attempts.

    Written in the transaction that changes the job's status (an outbox), so a notification is never
    lost nor sent for a change that was rolled back; the workers' sender sends it.
    """

    __tablename__ = "webhook_deliveries"
    __table_args__ = (Index("ix_webhook_deliveries_due", "status", "next_attempt_at"),)

    id: Mapped[str] = mapped_column(String(64), primary_key=True)  # the event id: `webhook-id` and the body's id
    endpoint_id: Mapped[str] = mapped_column(ForeignKey("webhook_endpoints.id"), index=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id"), index=True)
    event_type: Mapped[str] = mapped_column(String(64))
    body: Mapped[str] = mapped_column(Text)  # the JSON sent, fixed once, so every attempt signs the same bytes
    status: Mapped[str] = mapped_column(String(16))  # pending, delivered, failed
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(default=utc_now)
    # While a sender holds it: no other sender takes it before then (a sender that died lets go this way).
    claimed_until: Mapped[datetime | None] = mapped_column(default=None)
    last_status_code: Mapped[int | None] = mapped_column(Integer, default=None)
    last_error: Mapped[str | None] = mapped_column(Text, default=None)
    created_at: Mapped[datetime] = mapped_column(default=utc_now)
    delivered_at: Mapped[datetime | None] = mapped_column(default=None)


class Worker(Base):
    """A worker process that is, or was, alive: it renews `last_seen_at` while it runs (worker.liveness)."""

    __tablename__ = "workers"

    name: Mapped[str] = mapped_column(String(256), primary_key=True)  # Celery's node name, unique per process
    hostname: Mapped[str] = mapped_column(String(256))
    started_at: Mapped[datetime] = mapped_column(default=utc_now)
    last_seen_at: Mapped[datetime] = mapped_column(default=utc_now, index=True)
    # Per GPU the worker sees, read through NVML (no CUDA context): [{"index", "used_bytes", "total_bytes"}].
    gpus: Mapped[list[Any]] = mapped_column(default=list)
