"""`graft jobs …`: create, list, show, follow, steer and download your fine-tuning jobs on a Graft service."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from cli.job_watch import watch_job
from cli.output import moment, print_facts, print_json, print_table, strategy_name
from cli.service_client import ApiKeyOption, BaseUrlOption, JsonOption, service

jobs_app = typer.Typer(help="Your fine-tuning jobs (through the API).", no_args_is_help=True)
JOB_COLUMNS = ("id", "status", "model", "task", "strategy", "progress", "created", "finished")
JobId = Annotated[str, typer.Argument(help="The job's id (ftjob-…).")]


def job_row(job: dict[str, Any]) -> list[Any]:
    progress = job.get("progress")
    shown = f"{progress['step']}/{progress['total_steps']} ({progress['percent']:.0f}%)" if progress else None
    return [
        job["id"],
        job["status"],
        job["model"],
        job["task"],
        strategy_name(job["strategy"]),
        shown,
        moment(job["created_at"]),
        moment(job["finished_at"]),
    ]


def print_job(job: dict[str, Any]) -> None:
    error = job.get("error")
    print_facts(
        [
            ("id", job["id"]),
            ("status", job["status"]),
            ("model", job["model"]),
            ("task", job["task"]),
            ("strategy", job["strategy"]),
            ("hyperparameters", job["hyperparameters"]),
            ("training file", job["training_file"]),
            ("validation file", job["validation_file"]),
            ("progress", job_row(job)[5]),
            ("trainable parameters", job.get("trainable_parameters")),
            ("fine-tuned model", job.get("fine_tuned_model")),
            ("error", f"{error['code']}: {error['message']}" if error else None),
            ("created", moment(job["created_at"])),
            ("finished", moment(job["finished_at"])),
        ]
    )


@jobs_app.command("create")
def create_job(
    training_file: Annotated[str, typer.Option(help="The training file's id (file-…).")],
    validation_file: Annotated[str | None, typer.Option(help="A validation file's id; every epoch is scored.")] = None,
    model: Annotated[str | None, typer.Option(help="The base model (default: the service's, MiniLM).")] = None,
    task: Annotated[str | None, typer.Option(help="text-classification (default), token-classification, …")] = None,
    strategy: Annotated[str | None, typer.Option(help="feature_extraction, partial, full (default), …")] = None,
    epochs: Annotated[int | None, typer.Option(help="Epochs (default: the measured default).")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Examples per step (default: the measured default).")] = None,
    learning_rate_multiplier: Annotated[float | None, typer.Option(help="Scales the default learning rate.")] = None,
    suffix: Annotated[str | None, typer.Option(help="Part of the fine-tuned model's name.")] = None,
    seed: Annotated[int | None, typer.Option(help="For a reproducible run.")] = None,
    watch: Annotated[bool, typer.Option("--watch", help="Follow the job until it ends, like `jobs watch`.")] = False,
    base_url: BaseUrlOption = None,
    api_key: ApiKeyOption = None,
    json_output: JsonOption = False,
) -> None:
    """Create a job; with --watch, follow it to the end and exit non-zero unless it succeeded."""
    body: dict[str, Any] = {"training_file": training_file}
    optional: dict[str, Any] = {"validation_file": validation_file, "model": model, "task": task}
    optional |= {"strategy": strategy, "suffix": suffix, "seed": seed}
    body |= {name: value for name, value in optional.items() if value is not None}
    hyperparameters: dict[str, Any] = {"n_epochs": epochs, "batch_size": batch_size}
    hyperparameters["learning_rate_multiplier"] = learning_rate_multiplier
    if any(value is not None for value in hyperparameters.values()):
        body["hyperparameters"] = {name: value for name, value in hyperparameters.items() if value is not None}
    with service(base_url, api_key) as client:
        job = client.call("POST", "/v1/fine_tuning/jobs", json=body)
        if json_output and not watch:
            print_json(job)
            return
        typer.echo(f"created {job['id']} ({job['status']})")
        if watch:
            raise typer.Exit(code=int(watch_job(client, job["id"])))


@jobs_app.command("list")
def list_jobs(
    status: Annotated[list[str] | None, typer.Option(help="Only jobs in this status (repeatable).")] = None,
    limit: Annotated[int, typer.Option(min=1, max=100, help="Jobs to show, newest first.")] = 20,
    base_url: BaseUrlOption = None,
    api_key: ApiKeyOption = None,
    json_output: JsonOption = False,
) -> None:
    """Your jobs, newest first."""
    with service(base_url, api_key) as client:
        listing = client.call("GET", "/v1/fine_tuning/jobs", params={"limit": limit, "status": status or []})
    if json_output:
        print_json(listing)
        return
    print_table(JOB_COLUMNS, [job_row(job) for job in listing["data"]])


@jobs_app.command("get")
def get_job(
    job_id: JobId, base_url: BaseUrlOption = None, api_key: ApiKeyOption = None, json_output: JsonOption = False
) -> None:
    """One job: its status, settings and progress."""
    with service(base_url, api_key) as client:
        job = client.call("GET", f"/v1/fine_tuning/jobs/{job_id}")
    if json_output:
        print_json(job)
        return
    print_job(job)


@jobs_app.command("events")
def list_events(
    job_id: JobId,
    limit: Annotated[int, typer.Option(min=1, max=1000, help="The newest events to show.")] = 20,
    base_url: BaseUrlOption = None,
    api_key: ApiKeyOption = None,
    json_output: JsonOption = False,
) -> None:
    """The job's newest events, oldest of them first."""
    with service(base_url, api_key) as client:
        listing = client.call("GET", f"/v1/fine_tuning/jobs/{job_id}/events", params={"limit": limit})
    if json_output:
        print_json(listing)
        return
    events = list(reversed(listing["data"]))
    print_table(("time", "level", "message"), [(moment(e["created_at"]), e["level"], e["message"]) for e in events])


def _control(action: str, job_id: str, base_url: str | None, api_key: str | None, json_output: bool) -> None:
    with service(base_url, api_key) as client:
        job = client.call("POST", f"/v1/fine_tuning/jobs/{job_id}/{action}")
    if json_output:
        print_json(job)
        return
    typer.echo(f"{job['id']}: {job['status']}")


@jobs_app.command("cancel")
def cancel_job(
    job_id: JobId, base_url: BaseUrlOption = None, api_key: ApiKeyOption = None, json_output: JsonOption = False
) -> None:
    """Cancel a job that has not ended; a running one stops within seconds and publishes nothing."""
    _control("cancel", job_id, base_url, api_key, json_output)


@jobs_app.command("pause")
def pause_job(
    job_id: JobId, base_url: BaseUrlOption = None, api_key: ApiKeyOption = None, json_output: JsonOption = False
) -> None:
    """Pause a job: a running one checkpoints and frees its worker."""
    _control("pause", job_id, base_url, api_key, json_output)


@jobs_app.command("resume")
def resume_job(
    job_id: JobId, base_url: BaseUrlOption = None, api_key: ApiKeyOption = None, json_output: JsonOption = False
) -> None:
    """Resume a paused job from the checkpoint it paused at."""
    _control("resume", job_id, base_url, api_key, json_output)


@jobs_app.command("download")
def download_weights(
    job_id: JobId,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Where to write the tar (default: JOB_ID.tar).")
    ] = None,
    base_url: BaseUrlOption = None,
    api_key: ApiKeyOption = None,
) -> None:
    """Download a succeeded job's model: a tar of a Hugging Face folder (`tar -xf`, then from_pretrained)."""
    target = output or Path(f"{job_id}.tar")
    with service(base_url, api_key) as client:
        written = client.download(f"/v1/fine_tuning/jobs/{job_id}/weights", target)
    typer.echo(f"wrote {written} bytes to {target}")


@jobs_app.command("watch")
def watch(job_id: JobId, base_url: BaseUrlOption = None, api_key: ApiKeyOption = None) -> None:
    """Follow a job live until it ends; exit 0 if it succeeded, 1 if it failed or was cancelled, 3 if paused."""
    with service(base_url, api_key) as client:
        code = watch_job(client, job_id)
    raise typer.Exit(code=int(code))
