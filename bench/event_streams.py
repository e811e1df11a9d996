"""Live event streams on PostgreSQL: what 200 open streams cost the API, and how soon events reach them and the UI.

Run with ``python -m bench.event_streams``. It starts PostgreSQL, Redis and ``graft api`` itself on
spare loopback ports (as bench.api does) and stops them afterwards.

* Streams: N jobs are created (no worker runs, so they stay queued) and S streams opened on them
  (``GET …/events?stream=true``, round robin), from one asyncio client. Reported: the API process's
  resident memory and the server's connections before and with the streams open, the feed's polls,
  and, over several rounds of one event written to every job, the delay from the event's commit to
  its arrival on each stream (p50, p99, max).
* Dashboard (``--dashboard``): a worker trains a small MiniLM job while headless Chromium shows its
  page; each time the loss curve shows a new step, the page notes the time. The delay from the step's
  event (its ``created_at``, set as the reporter writes it) to the point on the curve is reported.

Results are printed and written to ``bench/results/event_streams.json``.
"""

# This module is a command-line benchmark: printing the report is its job.
# ruff: noqa: T201

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import platform
import random
import statistics
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import psycopg
from sqlalchemy import select

from bench.api import (
    SST2_TRAIN,
    Api,
    BenchError,
    Service,
    create_tenant_key,
    libpq_url,
    percentile,
    proc_status_kib,
    start_postgres,
    start_redis,
    upload_small_file,
    wait_until,
)
from models.services import events
from models.storage.database import session_scope
from models.storage.tables import JobEvent

REPO_ROOT = Path(__file__).resolve().parents[1]
RESULTS_PATH = REPO_ROOT / "bench" / "results" / "event_streams.json"
CHROMIUM = "/usr/bin/chromium"


def create_jobs(api: Api, key: str, file_id: str, count: int) -> list[str]:
    headers = {"Authorization": f"Bearer {key}"}
    job_ids = []
    with httpx.Client(base_url=api.base_url, headers=headers, timeout=60) as http:
        for _ in range(count):
            response = http.post("/v1/fine_tuning/jobs", json={"training_file": file_id})
            response.raise_for_status()
            job_ids.append(response.json()["id"])
    return job_ids


def server_connections(database_url: str) -> dict[str, int]:
    """The server's client connections: all of them (mostly idle in the processes' pools), and those in use."""
    with psycopg.connect(libpq_url(database_url), autocommit=True) as connection:
        row = connection.execute(
            "SELECT count(*), count(*) FILTER (WHERE state <> 'idle') FROM pg_stat_activity "
            "WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()"
        ).fetchone()
        assert row is not None
        return {"open": int(row[0]), "in_use": int(row[1])}


async def hold_streams(
    api: Api, key: str, job_ids: list[str], streams: int, rounds: int, database_url: str
) -> dict[str, Any]:
    """Open `streams` streams, measure what they hold, then time `rounds` events to every one of them."""
    arrivals: dict[str, list[float]] = {}  # marker → wall-clock arrival times, comparable with the commit time
    opened = asyncio.Event()
    ready = 0

    async def follow(client: httpx.AsyncClient, job_id: str) -> None:
        nonlocal ready
        async with client.stream("GET", f"/v1/fine_tuning/jobs/{job_id}/events?stream=true") as response:
            response.raise_for_status()
            ready += 1
            if ready == streams:
                opened.set()
            async for line in response.aiter_lines():
                if line.startswith("data:") and "bench marker" in line:
                    marker = json.loads(line.removeprefix("data:"))["message"]
                    arrivals.setdefault(marker, []).append(time.time())

    limits = httpx.Limits(max_connections=streams + 10, max_keepalive_connections=streams + 10)
    timeout = httpx.Timeout(30.0, read=None)
    async with httpx.AsyncClient(
        base_url=api.base_url, headers={"Authorization": f"Bearer {key}"}, limits=limits, timeout=timeout
    ) as client:
        tasks = [asyncio.create_task(follow(client, job_ids[index % len(job_ids)])) for index in range(streams)]
        await asyncio.wait_for(opened.wait(), timeout=120)
        await asyncio.sleep(3.0)  # every stream has read its history and waits on the feed
        held = {
            "api_rss_kib": proc_status_kib(api.process.pid, "VmRSS"),
            "server_connections": server_connections(database_url),
        }
        delays: list[float] = []
        for round_index in range(rounds):
            marker = f"bench marker {round_index}"
            written_at = write_marker(database_url, job_ids, marker)
            expected = streams
            deadline = time.monotonic() + 30
            while len(arrivals.get(marker, [])) < expected and time.monotonic() < deadline:
                await asyncio.sleep(0.02)
            got = arrivals.get(marker, [])
            if len(got) < expected:
                raise BenchError(f"{marker}: {len(got)} of {expected} streams got it within 30 s")
            delays += [arrival - written_at for arrival in got]
            # A random pause: an event written at a fixed time after a delivery would always meet the poll
            # at the same phase.
            await asyncio.sleep(random.uniform(0.5, 1.5))
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    return {**held, "delays": delays}


def write_marker(database_url: str, job_ids: list[str], marker: str) -> float:
    """One event on every job, committed in one transaction; returns the wall time of the commit."""
    with session_scope(database_url) as session:
        for job_id in job_ids:
            events.append_event(session, job_id, marker)
    return time.time()


def measure_streams(service: Service, args: argparse.Namespace) -> dict[str, Any]:
    _, key = create_tenant_key(service)
    with service.api("api-streams") as api:
        file_id = upload_small_file(api, key)
        job_ids = create_jobs(api, key, file_id, args.jobs)
        time.sleep(1.0)
        before = {
            "api_rss_kib": proc_status_kib(api.process.pid, "VmRSS"),
            "server_connections": server_connections(service.database_url),
        }
        held = asyncio.run(hold_streams(api, key, job_ids, args.streams, args.rounds, service.database_url))
        delays = held.pop("delays")
        with httpx.Client(base_url=api.base_url, headers={"Authorization": f"Bearer {key}"}, timeout=60) as http:
            for job_id in job_ids:  # free the tenant's job quota
                http.post(f"/v1/fine_tuning/jobs/{job_id}/cancel")
    return {
        "streams": args.streams,
        "jobs": args.jobs,
        "before": before,
        "with_streams": held,
        "api_rss_growth_kib": held["api_rss_kib"] - before["api_rss_kib"],
        "api_rss_kib_per_stream": (held["api_rss_kib"] - before["api_rss_kib"]) / args.streams,
        "connections_in_use_with_streams": held["server_connections"]["in_use"],
        "delivery_seconds": {
            "p50": statistics.median(delays),
            "p99": percentile(delays, 99),
            "max": max(delays),
            "samples": len(delays),
        },
    }


def measure_dashboard(service: Service, args: argparse.Namespace) -> dict[str, Any]:
    from playwright.sync_api import sync_playwright

    _, key = create_tenant_key(service)
    rows = SST2_TRAIN.read_bytes().splitlines()[: args.dashboard_rows]
    with service.worker(), service.api("api-dashboard") as api:
        headers = {"Authorization": f"Bearer {key}"}
        with httpx.Client(base_url=api.base_url, headers=headers, timeout=60) as http:
            file_id = http.post(
                "/v1/files", files={"file": ("train.jsonl", b"\n".join(rows) + b"\n")}, data={"purpose": "fine-tune"}
            ).json()["id"]
            body = {"training_file": file_id, "hyperparameters": {"n_epochs": 2, "batch_size": 8}}
            job_id = http.post("/v1/fine_tuning/jobs", json=body).json()["id"]
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
                page = browser.new_page(base_url=api.base_url)
                page.goto("/")
                page.evaluate(f"sessionStorage.setItem('graft.apiKey', {json.dumps(key)})")
                page.goto(f"/#/jobs/{job_id}")
                page.wait_for_selector("#loss-chart")
                page.evaluate(OBSERVE_NEW_STEPS)
                wait_until(
                    lambda: http.get(f"/v1/fine_tuning/jobs/{job_id}").json()["status"] in ("succeeded", "failed"),
                    timeout=args.dashboard_timeout,
                    what="the dashboard job to end",
                )
                time.sleep(1.0)
                shown: list[list[float]] = page.evaluate("window.graftBenchSteps")
                browser.close()
    written = step_event_times(service.database_url, job_id)
    delays = [at / 1000 - written[int(step)] for at, step in shown if int(step) in written]
    if not delays:
        raise BenchError("the dashboard showed no step of the job")
    return {
        "job": job_id,
        "points_timed": len(delays),
        "step_to_curve_seconds": {"p50": statistics.median(delays), "p99": percentile(delays, 99), "max": max(delays)},
    }


# Notes (time, step) each time the loss chart's legend names a new latest training step.
OBSERVE_NEW_STEPS = """
() => {
  window.graftBenchSteps = [];
  let last = null;
  const box = document.getElementById("loss-chart");
  new MutationObserver(() => {
    const item = [...box.querySelectorAll(".legend li")].find((li) => li.textContent.startsWith("train loss"));
    const match = item && item.textContent.match(/at step (\\d+)$/);
    if (match && match[1] !== last) {
      last = match[1];
      window.graftBenchSteps.push([Date.now(), Number(match[1])]);
    }
  }).observe(box, { childList: true, subtree: true });
}
"""


def step_event_times(database_url: str, job_id: str) -> dict[int, float]:
    """Each step event's `created_at`, as Unix seconds, by its step."""
    with session_scope(database_url) as session:
        rows = session.execute(
            select(JobEvent.created_at, JobEvent.data).where(
                JobEvent.job_id == job_id, JobEvent.event_type == "metrics"
            )
        ).all()
    return {
        int(data["step"]): created_at.astimezone(UTC).timestamp()
        for created_at, data in rows
        if data and "train_loss" in data
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", type=int, default=200)
    parser.add_argument("--jobs", type=int, default=8, help="at most the tenant quota (8 by default)")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--dashboard", action="store_true", help="also time a training step to the dashboard's curve")
    parser.add_argument("--dashboard-rows", type=int, default=400)
    parser.add_argument("--dashboard-timeout", type=float, default=900.0)
    args = parser.parse_args(argv)
    report: dict[str, Any] = {"when": datetime.now(UTC).isoformat(), "machine": platform.platform()}
    with tempfile.TemporaryDirectory(prefix="graft-bench-streams-") as folder, contextlib.ExitStack() as stack:
        root = Path(folder)
        root.chmod(0o755)  # the postgres user must reach its data folder inside
        service = Service(root, start_postgres(root, stack), start_redis(root, stack), "WARNING")
        service.graft("migrate")
        report["streams"] = measure_streams(service, args)
        streams = report["streams"]
        before, held = streams["before"], streams["with_streams"]
        print(
            f"{streams['streams']} streams on {streams['jobs']} jobs: API RSS {before['api_rss_kib'] / 1024:.1f} → "
            f"{held['api_rss_kib'] / 1024:.1f} MiB ({streams['api_rss_kib_per_stream']:.1f} KiB per stream); "
            f"server connections open {before['server_connections']['open']} → {held['server_connections']['open']} "
            f"(the pools' idle ones), in use {before['server_connections']['in_use']} → "
            f"{held['server_connections']['in_use']}"
        )
        delivery = streams["delivery_seconds"]
        print(
            f"event commit → every stream: p50 {delivery['p50'] * 1000:.0f} ms, p99 {delivery['p99'] * 1000:.0f} ms, "
            f"max {delivery['max'] * 1000:.0f} ms ({delivery['samples']} deliveries)"
        )
        if args.dashboard:
            report["dashboard"] = measure_dashboard(service, args)
            curve = report["dashboard"]["step_to_curve_seconds"]
            print(
                f"training step → dashboard curve: p50 {curve['p50'] * 1000:.0f} ms, p99 {curve['p99'] * 1000:.0f} ms, "
                f"max {curve['max'] * 1000:.0f} ms ({report['dashboard']['points_timed']} points)"
            )
    RESULTS_PATH.parent.mkdir(parents=True, exist_ok=True)
    RESULTS_PATH.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
