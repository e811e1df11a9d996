"""Prometheus metrics at /metrics, for operators (GRAFT_METRICS_ENABLED): the service's state and the API's latency.

Jobs, queue, throughput, durations, uploads and workers are read from the database at each scrape
(models.services.service_metrics), so they agree across API processes. Request latency is this
process's own: the time from a request's arrival to its response's headers, by method, route
template and status; a long download or event stream counts the time to its first byte.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

from fastapi import FastAPI
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Gauge, Histogram, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from models.services import service_metrics
from models.services.service_metrics import Histogram as CountedHistogram
from models.storage.database import run_read

# A worker renews its row every GRAFT_WORKER_HEARTBEAT_SECONDS; three missed beats and it counts as gone.
MISSED_BEATS_BEFORE_GONE = 3
LATENCY_BUCKETS_SECONDS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class ServiceCollector(Collector):
    """The service's state, read from the database when Prometheus scrapes."""

    def __init__(self, database_url: str, *, worker_heartbeat_seconds: float) -> None:
        self._database_url = database_url
        self._gone_after_seconds = MISSED_BEATS_BEFORE_GONE * worker_heartbeat_seconds

    def collect(self) -> Iterator[Metric]:
        snapshot = run_read(self._database_url, service_metrics.read_snapshot)
        jobs = GaugeMetricFamily("graft_jobs", "Jobs by status.", labels=["status"])
        for status, count in snapshot.jobs_by_status.items():
            jobs.add_metric([status], count)
        yield jobs
        yield GaugeMetricFamily("graft_queue_depth", "Jobs queued, waiting for a worker.", value=snapshot.queue_depth)
        yield GaugeMetricFamily(
            "graft_queue_oldest_job_age_seconds",
            "How long the oldest queued job has waited (0 with none queued).",
            value=snapshot.oldest_queued_seconds,
        )
        wait = HistogramMetricFamily(
            "graft_job_queue_wait_seconds", "From a job's creation to its first start, over every job that started."
        )
        wait.add_metric([], *_histogram(snapshot.queue_wait))
        yield wait
        duration = HistogramMetricFamily(
            "graft_job_duration_seconds", "From a job's first start to its end, by end status.", labels=["status"]
        )
        for status, counted in snapshot.job_duration.items():
            duration.add_metric([status], *_histogram(counted))
        yield duration
        yield GaugeMetricFamily(
            "graft_training_samples_per_second",
            "Training examples per second, summed over the running jobs.",
            value=snapshot.training_samples_per_second,
        )
        yield GaugeMetricFamily(
            "graft_training_tokens_per_second",
            "Training tokens per second (padding excluded), summed over the running jobs.",
            value=snapshot.training_tokens_per_second,
        )
        yield CounterMetricFamily("graft_upload_bytes", "Bytes of every file uploaded.", value=snapshot.uploaded_bytes)
        yield CounterMetricFamily("graft_uploads", "Files uploaded.", value=snapshot.uploaded_files)
        alive = GaugeMetricFamily("graft_worker_up", "1 while the worker renews its heartbeat.", labels=["worker"])
        seen = GaugeMetricFamily(
            "graft_worker_last_seen_age_seconds", "Seconds since the worker's last heartbeat.", labels=["worker"]
        )
        used = GaugeMetricFamily("graft_gpu_memory_used_bytes", "GPU memory in use (NVML).", labels=["worker", "gpu"])
        total = GaugeMetricFamily("graft_gpu_memory_total_bytes", "GPU memory in all (NVML).", labels=["worker", "gpu"])
        for worker in snapshot.workers:
            alive.add_metric([worker.name], 1.0 if worker.seconds_since_seen <= self._gone_after_seconds else 0.0)
            seen.add_metric([worker.name], worker.seconds_since_seen)
            for gpu in worker.gpus:
                used.add_metric([worker.name, str(gpu["index"])], gpu["used_bytes"])
                total.add_metric([worker.name, str(gpu["index"])], gpu["total_bytes"])
        yield from (alive, seen, used, total)


def _histogram(counted: CountedHistogram) -> tuple[list[tuple[str, float]], float]:
    buckets = [(str(bound), float(count)) for bound, count in counted.buckets] + [("+Inf", float(counted.count))]
    return buckets, counted.total


class RequestLatency:
    """ASGI middleware observing each HTTP request's time to its response's headers."""

    def __init__(self, app: ASGIApp, histogram: Histogram) -> None:
        self.app = app
        self.histogram = histogram

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()

        async def send_timing_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                route = scope.get("route")
                template = getattr(route, "path", None) or "unmatched"
                self.histogram.labels(scope["method"], template, str(message["status"])).observe(
                    time.perf_counter() - started
                )
            await send(message)

        await self.app(scope, receive, send_timing_headers)


def install_metrics(app: FastAPI, database_url: str, *, worker_heartbeat_seconds: float) -> None:
    """Serve /metrics (no key: bind it to the operators' network) and time every request of `app`."""
    registry = CollectorRegistry()
    registry.register(ServiceCollector(database_url, worker_heartbeat_seconds=worker_heartbeat_seconds))
    latency = Histogram(
        "graft_http_request_duration_seconds",
        "Time from a request's arrival to its response's headers.",
        ["method", "route", "status"],
        buckets=LATENCY_BUCKETS_SECONDS,
        registry=registry,
    )
    streams = Gauge("graft_event_streams_open", "Event streams open on this API process.", registry=registry)
    streams.set_function(lambda: app.state.event_feed.subscriber_count)
    app.add_middleware(RequestLatency, histogram=latency)

    def metrics(_: Request) -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    app.add_route("/metrics", metrics, include_in_schema=False)
