"""The Celery application of the workers: JSON only, one job at a time, early acknowledgement.

Ack policy: the message is acknowledged when a worker takes it (Celery's default early ack). The
database decides whether a job runs: a worker claims the job row by compare-and-set and holds a
lease renewed by heartbeats. With late acks, Redis would redeliver any job running longer than the
visibility timeout (an hour by default; fine-tuning runs for hours) and, with
task_reject_on_worker_lost, loop a poison job forever. A message lost with a killed worker is
recovered from the database instead: each worker, when it starts and every sweep interval,
re-queues `running` jobs whose lease expired (failing those out of attempts) and re-sends `queued`
jobs the broker lost (worker.reconciler).
"""

from __future__ import annotations

import logging

from celery import Celery
from celery.signals import worker_ready

from models.settings import Settings, get_settings
from models.storage.blobs import ArtifactStore
from models.storage.broker import QueueName, broker_transport_options, is_embedded_broker
from worker import runner
from worker.liveness import start_heartbeat
from worker.reconciler import reconcile_jobs, remove_stale_temporaries, start_sweeper
from worker.training.speedups.data_cache import DerivedDataCache
from worker.webhook_sender import SenderSettings, start_webhook_sender

EMBEDDED_BROKER_POLL_SECONDS = 0.2
logger = logging.getLogger(__name__)


def create_celery_app(settings: Settings) -> Celery:
    app = Celery("graft", broker=settings.broker_url, include=["worker.tasks"])
    app.conf.update(
        task_serializer="json",
        accept_content=["json"],  # never pickle: workers trust what the broker hands them
        result_serializer="json",
        task_ignore_result=True,
        task_acks_late=False,
        worker_prefetch_multiplier=1,
        worker_concurrency=1,
        task_default_queue=QueueName.training.value,
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
        broker_transport_options=broker_transport_options(settings.broker_url),
    )
    if is_embedded_broker(settings.broker_url):
        # The SQLAlchemy transport passes broker_transport_options to create_engine, so its poll
        # interval (1 s by default) can only be set on the transport class.
        from kombu.transport.sqlalchemy import Transport

        Transport.polling_interval = EMBEDDED_BROKER_POLL_SECONDS
    return app


@worker_ready.connect
def _reconcile_on_start(**_: object) -> None:
    """Start the sweeper first: a database or broker hiccup at start must not leave this worker without one."""
    settings = get_settings()
    start_sweeper(
        settings.database_url,
        settings.broker_url,
        max_attempts=settings.max_attempts,
        interval_seconds=settings.sweep_interval_seconds,
        requeue_after_seconds=settings.requeue_after_seconds,
        store=ArtifactStore(settings.artifacts),
        cache=DerivedDataCache(settings.worker_cache, settings.cache_max_bytes),
    )
    try:
        reconcile_jobs(settings.database_url, settings.broker_url, max_attempts=settings.max_attempts)
    except Exception:  # the sweeper repairs the same things within an interval
        logger.exception("reconciling at start failed; the sweeper will catch up")
    remove_stale_temporaries(ArtifactStore(settings.artifacts))
    start_webhook_sender(SenderSettings.from_settings(settings))
    start_heartbeat(settings.database_url, interval_seconds=settings.worker_heartbeat_seconds)
    # The first job's training process imports torch and loads models while the worker waits.
    runner.start_standby(runner.RunnerSettings.from_settings(settings))


celery_app = create_celery_app(get_settings())
