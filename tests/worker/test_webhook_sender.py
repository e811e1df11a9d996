"""The webhook sender against real receivers on loopback: signed, retried after a 500, never held up by a slow one."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Callable, Iterator

import openai
import pytest
from sqlalchemy import select

from models.services import runs, webhooks
from models.services.webhooks import RetryPolicy, WebhookEventType
from models.settings import Settings
from models.states import JobStatus
from models.storage.database import session_scope
from models.storage.tables import Job, JobEvent, WebhookDelivery
from tests.processes import wait_for
from tests.webhook_receiver import running_receiver
from worker.webhook_sender import SenderSettings, WebhookSender, start_webhook_sender


@pytest.fixture
def sender_settings(settings: Settings) -> SenderSettings:
    return SenderSettings(
        database_url=settings.database_url,
        timeout_seconds=1.0,
        poll_seconds=0.05,
        policy=RetryPolicy(max_attempts=3, base_delay_seconds=0.2),
    )


@pytest.fixture
def sender(sender_settings: SenderSettings) -> Iterator[WebhookSender]:
    running = start_webhook_sender(sender_settings)
    yield running
    running.stop()


def subscribe(settings: Settings, job_id: str, url: str) -> str:
    """Register `url` for every event of the job's tenant; returns the signing secret."""
    with session_scope(settings.database_url) as session:
        tenant_id = session.get_one(Job, job_id).tenant_id
        return webhooks.create_endpoint(session, tenant_id, url=url, event_types=list(WebhookEventType)).secret


def end_job(settings: Settings, job_id: str, status: JobStatus = JobStatus.cancelled) -> None:
    with session_scope(settings.database_url) as session:
        assert runs.transition_job(session, job_id, status)


def webhook_events(settings: Settings, job_id: str) -> list[str]:
    with session_scope(settings.database_url) as session:
        return list(
            session.scalars(
                select(JobEvent.message)
                .where(JobEvent.job_id == job_id, JobEvent.data["webhook"].as_string().is_not(None))
                .order_by(JobEvent.sequence)
            )
        )


def test_a_notification_is_signed_as_standard_webhooks_say_and_openais_sdk_accepts_it(
    settings: Settings, new_job: Callable[[], str], sender: WebhookSender
) -> None:
    job_id = new_job()
    with running_receiver() as receiver:
        secret = subscribe(settings, job_id, receiver.url)
        end_job(settings, job_id)
        wait_for(lambda: receiver.requests, timeout=10, what="the webhook")
    [request] = receiver.requests

    headers = request.headers
    key = base64.b64decode(secret.removeprefix("whsec_"))
    signed = f"{headers['webhook-id']}.{headers['webhook-timestamp']}.".encode() + request.body
    expected = "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    assert headers["webhook-signature"] == expected
    assert abs(int(headers["webhook-timestamp"]) - time.time()) < 60
    body = json.loads(request.body)
    assert body["type"] == "fine_tuning.job.cancelled" and body["data"] == {"id": job_id}
    assert body["id"] == headers["webhook-id"]
    event = openai.OpenAI(api_key="unused", webhook_secret=secret).webhooks.unwrap(request.body.decode(), headers)
    assert (event.type, event.data.id) == ("fine_tuning.job.cancelled", job_id)


def test_a_receiver_answering_500_gets_the_same_signed_body_again_until_it_answers_200(
    settings: Settings, new_job: Callable[[], str], sender: WebhookSender
) -> None:
    job_id = new_job()
    with running_receiver(statuses=[500, 503, 200]) as receiver:
        subscribe(settings, job_id, receiver.url)
        end_job(settings, job_id, JobStatus.failed)
        wait_for(lambda: len(receiver.requests) == 3, timeout=15, what="three attempts")
        wait_for(lambda: len(webhook_events(settings, job_id)) == 3, timeout=10, what="three recorded attempts")

    assert len({request.body for request in receiver.requests}) == 1
    assert len({request.headers["webhook-id"] for request in receiver.requests}) == 1
    gaps = [
        later.received_at - earlier.received_at
        for earlier, later in zip(receiver.requests[:-1], receiver.requests[1:], strict=True)
    ]
    assert gaps[0] >= 0.2 and gaps[1] >= 1.2  # base 0.2 s, then 6 × 0.2 s
    messages = webhook_events(settings, job_id)
    assert "failed (HTTP 500); attempt 1 of 3" in messages[0]
    assert "failed (HTTP 503); attempt 2 of 3" in messages[1]
    assert messages[2].startswith("Webhook fine_tuning.job.failed delivered to") and "(HTTP 200)" in messages[2]
    with session_scope(settings.database_url) as session:
        [delivery] = session.scalars(select(WebhookDelivery).where(WebhookDelivery.job_id == job_id))
        assert (delivery.status, delivery.attempts) == ("delivered", 3)


def test_a_dead_receiver_is_given_up_on_after_the_last_attempt(
    settings: Settings, new_job: Callable[[], str], sender: WebhookSender
) -> None:
    job_id = new_job()
    with running_receiver() as receiver:
        dead_url = receiver.url  # the port is closed once the receiver stops
    subscribe(settings, job_id, dead_url)
    end_job(settings, job_id)

    messages = wait_for(lambda: (found := webhook_events(settings, job_id)) and len(found) == 3 and found, timeout=15)
    assert "could not connect" in messages[0]
    assert messages[-1].endswith("gave up after 3 attempts")


def test_a_slow_receiver_does_not_hold_up_another_ones_notification(
    settings: Settings, new_job: Callable[[], str], sender: WebhookSender
) -> None:
    slow_job, quick_job = new_job(), new_job()
    with running_receiver(delay_seconds=3.0) as slow, running_receiver() as quick:
        with session_scope(settings.database_url) as session:
            tenant_id = session.get_one(Job, slow_job).tenant_id
            webhooks.create_endpoint(session, tenant_id, url=slow.url, event_types=[WebhookEventType.cancelled])
            webhooks.create_endpoint(session, tenant_id, url=quick.url, event_types=[WebhookEventType.failed])
        end_job(settings, slow_job)
        wait_for(lambda: slow.requests, timeout=10, what="the slow receiver to be called")
        started = time.monotonic()
        end_job(settings, quick_job, JobStatus.failed)
        wait_for(lambda: quick.requests, timeout=10, what="the quick receiver to be called")
        waited = time.monotonic() - started

    assert waited < 2.0, "the quick receiver waited for the slow one"
    timed_out = wait_for(lambda: webhook_events(settings, slow_job), timeout=10)
    assert "no answer in time" in timed_out[0]  # the 1 s timeout cut the 3 s answer short
