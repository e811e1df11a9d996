"""The `graft` command line: start the service or its halves, migrate, manage keys, tenant quotas and base models."""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from typing import Annotated

import typer
from rich.console import Console
from rich.measure import Measurement
from rich.table import Table
from sqlalchemy import make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from cli.files_commands import files_app
from cli.jobs_commands import jobs_app
from cli.output import print_json
from cli.service_client import ApiKeyOption, BaseUrlOption, JsonOption, service
from cli.webhooks_commands import webhooks_app
from models.errors import GraftError
from models.log_context import LogFormat, configure_json_logging
from models.services import catalog, quotas, tenants
from models.services.quotas import Quota
from models.settings import Settings, get_settings
from models.storage.broker import prepare_embedded_broker
from models.storage.database import session_scope
from models.storage.tables import Tenant

app = typer.Typer(help="Graft: fine-tuning jobs behind an OpenAI-compatible API.", no_args_is_help=True)
keys_app = typer.Typer(help="API keys.", no_args_is_help=True)
models_app = typer.Typer(help="The base-model catalog.", no_args_is_help=True)
tenants_app = typer.Typer(help="Tenants and their quotas.", no_args_is_help=True)
app.add_typer(files_app, name="files")
app.add_typer(jobs_app, name="jobs")
app.add_typer(webhooks_app, name="webhooks")
app.add_typer(keys_app, name="keys")
app.add_typer(models_app, name="models")
app.add_typer(tenants_app, name="tenants")
console = Console()
DEFAULT_TENANT = "default"
STOP_MARGIN_SECONDS = 10.0
HostOption = Annotated[str | None, typer.Option(help="Interface to bind (default: GRAFT_HOST, else 127.0.0.1).")]
PortOption = Annotated[int | None, typer.Option(help="Port to listen on (default: GRAFT_PORT, else 8000).")]


def _fail(error: GraftError) -> None:
    console.print(f"[red]error:[/red] {error.message}", soft_wrap=True)
    raise typer.Exit(code=2)


def _require_current_schema(settings: Settings) -> None:
    """Exit with one line, not a traceback, when the database is not migrated to this code's schema."""
    from migrations.apply import schema_revisions

    where = make_url(settings.database_url).render_as_string(hide_password=True)
    try:
        current, newest = schema_revisions(settings.database_url)
    except SQLAlchemyError as error:
        console.print(
            f"[red]error:[/red] cannot open the database {where} ({type(error).__name__}); check it is up",
            soft_wrap=True,
        )
        raise typer.Exit(code=2) from None
    if current == newest:
        return
    state = "has no Graft schema yet" if not current else "has an older schema than this version of Graft"
    console.print(
        f"[red]error:[/red] the database {where} {state}; run `graft migrate` (or `graft up`) first", soft_wrap=True
    )
    raise typer.Exit(code=2)


def _print_table(table: Table) -> None:
    """Print `table` at its natural width, so no id or path is cut, however narrow the terminal or pipe."""
    natural = Measurement.get(console, console.options.update_width(10_000), table).maximum
    Console(width=max(console.width, natural)).print(table)


@app.command()
def migrate() -> None:
    """Bring the database to the newest schema and register the default base model."""
    from migrations.apply import upgrade_to_head

    settings = get_settings()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    upgrade_to_head(settings.database_url)
    prepare_embedded_broker(settings.broker_url)
    if settings.register_default_model:
        with session_scope(settings.database_url) as session:
            catalog.ensure_default_base_model(session)
    console.print("database is at the newest revision")


@app.command()
def api(host: HostOption = None, port: PortOption = None) -> None:
    """Serve the HTTP API (uvicorn)."""
    from api.server import serve

    settings = get_settings()
    serve(settings, host or settings.host, port or settings.port)


@app.command()
def worker() -> None:
    """Run one Celery worker process that trains one job at a time."""
    from worker.celery_app import celery_app

    settings = get_settings()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    if settings.log_format is LogFormat.json:
        configure_json_logging(level=settings.log_level, process="worker")
    celery_app.worker_main(
        [
            "worker",
            f"--loglevel={settings.log_level}",
            # solo: the task runs in the worker's main process, so it sees the shutdown flag and
            # hands its job back; training itself runs in a separate process (worker.runner).
            "--pool=solo",
            "--concurrency=1",
            "--without-gossip",
            "--without-mingle",
        ]
    )


@app.command()
def up(
    host: HostOption = None,
    port: PortOption = None,
) -> None:
    """Migrate, then run the API and one worker in the foreground; Ctrl-C stops both."""
    from cli.supervisor import run_together

    settings = get_settings()
    migrate()
    with session_scope(settings.database_url) as session:
        if not tenants.has_any_tenant(session):
            tenant = tenants.create_tenant(session, DEFAULT_TENANT)
            row, key = tenants.create_api_key(session, tenant)
            console.print(
                f"First start: created tenant '{DEFAULT_TENANT}' and API key {row.id} "
                f"(`graft keys revoke {row.id}` revokes it). The key, shown once:"
            )
            typer.echo(key)
    entry = [sys.executable, "-m", "cli.main"]
    api_command = [*entry, "api", "--host", host or settings.host, "--port", str(port or settings.port)]
    console.print(f"Graft is starting on http://{host or settings.host}:{port or settings.port} (Ctrl-C stops it)")
    # The worker's own stop (checkpoint, hand back) takes up to stop_grace_seconds plus a heartbeat.
    grace = settings.stop_grace_seconds + settings.heartbeat_seconds + STOP_MARGIN_SECONDS
    raise typer.Exit(code=run_together({"api": api_command, "worker": [*entry, "worker"]}, stop_grace_seconds=grace))


@keys_app.command("create")
def create_key(tenant: Annotated[str, typer.Option(help="Tenant name; created if new.")]) -> None:
    """Create an API key for TENANT and print it once."""
    settings = get_settings()
    _require_current_schema(settings)
    with session_scope(settings.database_url) as session:
        row, key = tenants.create_api_key(session, tenants.get_or_create_tenant(session, tenant))
    console.print(f"key id {row.id} for tenant '{tenant}' (the key is not stored; keep it now):")
    typer.echo(key)


@keys_app.command("list")
def list_keys(
    tenant: Annotated[str | None, typer.Option(help="Only this tenant's keys.", show_default=False)] = None,
) -> None:
    """List API keys: id, tenant, when created, when last used, whether revoked. Never the secret."""
    settings = get_settings()
    _require_current_schema(settings)
    table = Table("id", "tenant", "created", "last used", "revoked")
    try:
        with session_scope(settings.database_url) as session:
            for key, tenant_name in tenants.list_api_keys(session, tenant):
                table.add_row(
                    key.id,
                    tenant_name,
                    _moment(key.created_at),
                    _moment(key.last_used_at) if key.last_used_at else "never",
                    _moment(key.revoked_at) if key.revoked_at else "-",
                )
    except GraftError as error:
        _fail(error)
    _print_table(table)


def _moment(moment: datetime) -> str:
    """A UTC timestamp to the second, as `2026-12-03 10:45:00Z`."""
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ")


@keys_app.command("revoke")
def revoke_key(key_id: str) -> None:
    """Revoke a key by its id (see `graft keys list`); it stops working at once."""
    settings = get_settings()
    _require_current_schema(settings)
    try:
        with session_scope(settings.database_url) as session:
            tenants.revoke_api_key(session, key_id)
    except GraftError as error:
        _fail(error)
    console.print(f"revoked {key_id}")


@tenants_app.command("set-quota")
def set_quota(
    name: str,
    max_active_jobs: Annotated[
        int | None, typer.Option(min=0, show_default=False, help="Queued + running jobs at once.")
    ] = None,
    max_stored_bytes: Annotated[
        int | None,
        typer.Option(
            min=0, show_default=False, help="Bytes kept: files, fine-tuned weights and checkpoints of unfinished jobs."
        ),
    ] = None,
    max_upload_bytes: Annotated[
        int | None,
        typer.Option(min=0, show_default=False, help="Bytes of one upload; never above GRAFT_MAX_UPLOAD_BYTES."),
    ] = None,
) -> None:
    """Set tenant NAME's quotas. An option left out keeps its value; 0 resets it to the service default."""
    changes = {
        Quota.max_active_jobs: max_active_jobs,
        Quota.max_stored_bytes: max_stored_bytes,
        Quota.max_upload_bytes: max_upload_bytes,
    }
    settings = get_settings()
    _require_current_schema(settings)
    try:
        with session_scope(settings.database_url) as session:
            tenant = tenants.find_tenant(session, name)
            for quota, limit in changes.items():
                if limit is not None:
                    quotas.set_tenant_quota(session, tenant, quota, limit or None)
            _print_quotas(session, tenant, settings)
    except GraftError as error:
        _fail(error)


@tenants_app.command("show")
def show_tenant(name: str) -> None:
    """Show tenant NAME's effective quotas, which of them it has of its own, and its current usage."""
    settings = get_settings()
    _require_current_schema(settings)
    try:
        with session_scope(settings.database_url) as session:
            _print_quotas(session, tenants.find_tenant(session, name), settings)
    except GraftError as error:
        _fail(error)


def _print_quotas(session: Session, tenant: Tenant, settings: Settings) -> None:
    table = Table("quota", "limit", "set by", "in use", title=f"tenant '{tenant.name}' ({tenant.id})")
    for line in quotas.quota_usage(session, tenant, settings):
        table.add_row(
            line.quota.value,
            str(line.limit),
            _set_by(line.own_limit, line.limit),
            "-" if line.in_use is None else str(line.in_use),
        )
    _print_table(table)


def _set_by(own_limit: int | None, limit: int) -> str:
    if own_limit is None:
        return "service default"
    return "tenant" if own_limit == limit else f"tenant ({own_limit}, capped by the service)"


@models_app.command("add")
def add_model(
    name: str,
    path: str,
    trust_remote_code: Annotated[
        bool,
        typer.Option(
            "--trust-remote-code",
            help="Allow a model whose config.json has an auto_map: workers will import and run the Python "
            "code in the model repository, with the workers' access. Only for code you have read and trust.",
        ),
    ] = False,
) -> None:
    """Register a local Hugging Face model folder (safetensors) or a hub id as base model NAME."""
    settings = get_settings()
    _require_current_schema(settings)
    try:
        with session_scope(settings.database_url) as session:
            row = catalog.register_base_model(session, name, path, trust_remote_code=trust_remote_code)
            console.print(f"registered {row.id}: {row.model_type}, {row.num_layers} layers, from {row.location}")
            if row.trust_remote_code:
                console.print(f"[yellow]warning:[/yellow] workers will run the Python code in {row.location}")
    except GraftError as error:
        _fail(error)


@models_app.command("list")
def list_models(base_url: BaseUrlOption = None, api_key: ApiKeyOption = None, json_output: JsonOption = False) -> None:
    """With an API key (--api-key, GRAFT_API_KEY): the models you can use, base and fine-tuned, from the API.
    Without one: the base-model catalog in this machine's database, with where each model lives (admin)."""
    if api_key:
        with service(base_url, api_key) as client:
            listing = client.call("GET", "/v1/models")
        if json_output:
            print_json(listing)
            return
        table = Table("id", "owned by", "layers", "fine-tuning job")
        for model in listing["data"]:
            table.add_row(
                model["id"],
                model["owned_by"],
                str(model.get("num_layers") or "—"),
                model.get("fine_tuning_job_id") or "—",
            )
        _print_table(table)
        return
    settings = get_settings()
    _require_current_schema(settings)
    table = Table("id", "type", "layers", "max tokens", "source", "location")
    with session_scope(settings.database_url) as session:
        for row in catalog.list_base_models(session):
            table.add_row(
                row.id,
                row.model_type,
                str(row.num_layers),
                str(row.max_sequence_length),
                row.source,
                row.location,
            )
    _print_table(table)


if __name__ == "__main__":
    app()
