"""`graft jobs watch`: a job's live progress (step, epoch, loss, metric, ETA) from its event stream, then its result."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

from cli.output import console
from cli.service_client import END_EVENT, ServiceClient


class WatchExit(IntEnum):
    """The exit code of `watch` (and `create --watch`): what became of the job."""

    succeeded = 0
    failed = 1  # failed or cancelled
    paused = 3  # resume it to continue; `watch` again to follow it


@dataclass
class WatchState:
    step: int = 0
    total_steps: int | None = None
    epoch: int | None = None
    n_epochs: int | None = None
    train_loss: float | None = None
    metric: tuple[str, float] | None = None
    estimated_finish: int | None = None
    metrics_by_epoch: list[dict[str, Any]] = field(default_factory=list)

    def take(self, data: dict[str, Any]) -> None:
        """Fold in one event's data: a step's loss and position, or an epoch's validation metrics."""
        if "train_loss" in data and "step" in data:
            self.step = int(data["step"])
            self.total_steps = data.get("total_steps", self.total_steps)
            self.epoch = data.get("epoch", self.epoch)
            self.train_loss = float(data["train_loss"])
            self.estimated_finish = data.get("estimated_finish", self.estimated_finish)
        elif "epoch" in data and "step" in data:
            scores = {name: value for name, value in data.items() if name.startswith("valid_")}
            if scores:
                self.metrics_by_epoch.append({"epoch": data["epoch"], **scores})
                self.metric = main_metric(scores)
        elif "total_steps" in data:  # the run's start
            self.total_steps = int(data["total_steps"])

    def describe(self) -> str:
        parts = []
        if self.epoch is not None:
            parts.append(f"epoch {self.epoch}" + (f"/{self.n_epochs}" if self.n_epochs else ""))
        if self.train_loss is not None:
            parts.append(f"loss {self.train_loss:.4f}")
        if self.metric is not None:
            parts.append(f"{self.metric[0]} {self.metric[1]:.4f}")
        if self.estimated_finish is not None and self.step != self.total_steps:
            parts.append(f"ETA {format_remaining(self.estimated_finish - time.time())}")
        return " · ".join(parts) or "waiting for the first step"


def main_metric(scores: dict[str, float]) -> tuple[str, float]:
    """The score people watch: the first task metric the epoch reported, else the validation loss."""
    for name, value in scores.items():
        if name != "valid_loss" and "threshold" not in name:
            return name, float(value)
    return "valid_loss", float(scores["valid_loss"])


def format_remaining(seconds: float) -> str:
    if seconds <= 0:
        return "any moment"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def watch_job(client: ServiceClient, job_id: str, *, out: Console = console) -> WatchExit:
    """Follow the job until it ends (or pauses), drawing a progress bar; print the result; return the exit code."""
    job = client.call("GET", f"/v1/fine_tuning/jobs/{job_id}")
    state = WatchState(n_epochs=job["hyperparameters"]["n_epochs"])
    if job["status"] == "paused":
        return print_result(job, state, out)  # a paused job's stream waits for a resume; there is nothing to watch
    if job.get("progress"):
        state.total_steps = job["progress"]["total_steps"]
    columns = (
        TextColumn("[bold]{task.fields[status]}[/bold]"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("steps"),
        TextColumn("{task.fields[details]}"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=out, transient=False) as progress:
        bar = progress.add_task("training", total=state.total_steps, status=job["status"], details="")
        for message in client.job_events(job_id):
            if message.kind == END_EVENT:
                break
            data = message.data.get("data") or {}
            state.take(data)
            if message.data.get("type") == "message":
                out.print(f"[dim]{escape(message.data['message'])}[/dim]", highlight=False)
                job = client.call("GET", f"/v1/fine_tuning/jobs/{job_id}")
                if job["status"] == "paused":
                    _update(progress, bar, state, job["status"])
                    break
            _update(progress, bar, state, job["status"])
    job = client.call("GET", f"/v1/fine_tuning/jobs/{job_id}")
    return print_result(job, state, out)


def _update(progress: Progress, bar: TaskID, state: WatchState, status: str) -> None:
    progress.update(bar, total=state.total_steps, completed=state.step, status=status, details=state.describe())


def print_result(job: dict[str, Any], state: WatchState, out: Console) -> WatchExit:
    status = job["status"]
    if status == "succeeded":
        out.print(f"[green]succeeded[/green]: {escape(job['fine_tuned_model'] or '')}", highlight=False)
        for scores in state.metrics_by_epoch[-1:]:
            out.print(
                "final validation: "
                + ", ".join(f"{name} {value:.4f}" for name, value in scores.items() if name != "epoch"),
                highlight=False,
            )
        out.print(f"download: graft jobs download {job['id']}", highlight=False)
        return WatchExit.succeeded
    if status == "paused":
        out.print(f"[yellow]paused[/yellow]; continue with: graft jobs resume {job['id']}", highlight=False)
        return WatchExit.paused
    error = job.get("error") or {}
    reason = f": {error.get('code')}: {error.get('message')}" if error else ""
    out.print(f"[red]{status}[/red]{escape(reason)}", highlight=False)
    return WatchExit.failed
