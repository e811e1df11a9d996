"""Webhook notifications as an outbox: written with the status change, claimed once, retried, given up on."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import timedelta

import pytest
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from models.errors import InvalidRequest
from models.services import runs, tenants, webhooks
from models.services.webhooks import AttemptOutcome, DeliveryStatus, RetryPolicy, WebhookEventType
from models.settings import Settings
from models.states import JobStatus
from models.storage.database import session_scope
from models.storage.tables import Job, JobEvent, WebhookDelivery, utc_now

POLICY = RetryPolicy(max_attempts=3, base_delay_seconds=5.0)


def tenant_of(settings: Settings, job_id: str) -> str:
    with session_scope(settings.database_url) as session:
        return session.get_one(Job, job_id).tenant_id


def add_endpoint(
    settings: Settings, tenant_id: str, *events: WebhookEventType, url: str = "http://127.0.0.1:9/h"
) -> str:
    with session_scope(settings.database_url) as session:
        return webhooks.create_endpoint(session, tenant_id, url=url, event_types=list(events)).id


def deliveries(settings: Settings, job_id: str) -> list[WebhookDelivery]:
    with session_scope(settings.database_url) as session:
        rows = list(session.scalars(select(WebhookDelivery).where(WebhookDelivery.job_id == job_id)))
        session.expunge_all()
        return rows


def cancel(settings: Settings, job_id: str) -> bool:
    with session_scope(settings.database_url) as session:
        return runs.transition_job(session, job_id, JobStatus.cancelled)


def test_a_status_change_writes_one_delivery_per_endpoint_that_asked_for_it(
    settings: Settings, new_job: Callable[[], str]
) -> None:
    job_id = new_job()
    tenant_id = tenant_of(settings, job_id)
    wants_cancel = add_endpoint(settings, tenant_id, WebhookEventType.cancelled, WebhookEventType.succeeded)
    add_endpoint(settings, tenant_id, WebhookEventType.succeeded)
    with session_scope(settings.database_url) as session:
        other_tenant = tenants.create_tenant(session, "globex").id
    add_endpoint(settings, other_tenant, WebhookEventType.cancelled)

    assert cancel(settings, job_id)

    [delivery] = deliveries(settings, job_id)
    assert (delivery.endpoint_id, delivery.event_type, delivery.status) == (
        wants_cancel,
        "fine_tuning.job.cancelled",
        "pending",
    )
    body = json.loads(delivery.body)
    assert body == {
        "id": delivery.id,
        "object": "event",
        "created_at": body["created_at"],
        "type": "fine_tuning.job.cancelled",
        "data": {"id": job_id},
    }


def test_a_change_that_did_not_happen_writes_no_delivery(settings: Settings, new_job: Callable[[], str]) -> None:
    job_id = new_job()
    add_endpoint(settings, tenant_of(settings, job_id), *WebhookEventType)
    assert cancel(settings, job_id)

    assert not cancel(settings, job_id)  # already cancelled: the compare-and-set changes nothing

    assert len(deliveries(settings, job_id)) == 1


def test_a_rolled_back_change_leaves_no_delivery(settings: Settings, new_job: Callable[[], str]) -> None:
    job_id = new_job()
    add_endpoint(settings, tenant_of(settings, job_id), *WebhookEventType)
    with session_scope(settings.database_url) as session:
        assert runs.transition_job(session, job_id, JobStatus.cancelled)
        session.rollback()

    assert deliveries(settings, job_id) == []


def test_a_due_delivery_is_claimed_by_one_sender_until_its_hold_ends(
    settings: Settings, new_job: Callable[[], str]
) -> None:
    job_id = new_job()
    add_endpoint(settings, tenant_of(settings, job_id), WebhookEventType.cancelled)
    cancel(settings, job_id)
    with session_scope(settings.database_url) as session:
        [first] = webhooks.claim_due_deliveries(session, limit=10, hold_seconds=60)
    with session_scope(settings.database_url) as session:
        assert webhooks.claim_due_deliveries(session, limit=10, hold_seconds=60) == []
        session.execute(update(WebhookDelivery).values(claimed_until=utc_now() - timedelta(seconds=1)))
    with session_scope(settings.database_url) as session:
        [again] = webhooks.claim_due_deliveries(session, limit=10, hold_seconds=60)

    assert (first.id, first.attempt, first.url) == (again.id, 1, "http://127.0.0.1:9/h")
    assert first.secret.startswith("whsec_")


def record(settings: Settings, session_work: Callable[[Session], None]) -> None:
    with session_scope(settings.database_url) as session:
        session_work(session)


def test_a_failed_attempt_is_retried_later_and_the_last_one_gives_up_saying_so(
    settings: Settings, new_job: Callable[[], str]
) -> None:
    job_id = new_job()
    add_endpoint(settings, tenant_of(settings, job_id), WebhookEventType.cancelled)
    cancel(settings, job_id)
    waits = []
    for attempt in range(1, POLICY.max_attempts + 1):
        with session_scope(settings.database_url) as session:
            session.execute(update(WebhookDelivery).values(next_attempt_at=utc_now() - timedelta(seconds=1)))
        with session_scope(settings.database_url) as session:
            [delivery] = webhooks.claim_due_deliveries(session, limit=1, hold_seconds=60)
            assert delivery.attempt == attempt
            webhooks.record_attempt(session, delivery, AttemptOutcome(500, "HTTP 500"), POLICY)
            session.flush()
            row = session.get_one(WebhookDelivery, delivery.id)
            waits.append(round((row.next_attempt_at - utc_now()).total_seconds()))
    [row] = deliveries(settings, job_id)
    with session_scope(settings.database_url) as session:
        messages = list(
            session.scalars(select(JobEvent.message).where(JobEvent.data["webhook"].as_string().is_not(None)))
        )

    assert waits[:2] == [5, 30]  # base × 6^(n-1)
    assert (row.status, row.attempts, row.last_status_code) == (DeliveryStatus.failed.value, 3, 500)
    assert messages[-1].endswith("gave up after 3 attempts")
    assert "attempt 1 of 3, next in 5 s" in messages[0]


def test_a_2xx_answer_delivers(settings: Settings, new_job: Callable[[], str]) -> None:
    job_id = new_job()
    add_endpoint(settings, tenant_of(settings, job_id), WebhookEventType.cancelled)
    cancel(settings, job_id)
    with session_scope(settings.database_url) as session:
        [delivery] = webhooks.claim_due_deliveries(session, limit=1, hold_seconds=60)
        webhooks.record_attempt(session, delivery, AttemptOutcome(204, None), POLICY)

    [row] = deliveries(settings, job_id)
    assert (row.status, row.attempts, row.delivered_at is not None) == ("delivered", 1, True)


def test_deleting_an_endpoint_drops_its_pending_deliveries(settings: Settings, new_job: Callable[[], str]) -> None:
    job_id = new_job()
    tenant_id = tenant_of(settings, job_id)
    endpoint_id = add_endpoint(settings, tenant_id, WebhookEventType.cancelled)
    cancel(settings, job_id)
    with session_scope(settings.database_url) as session:
        webhooks.delete_endpoint(session, tenant_id, endpoint_id)
    with session_scope(settings.database_url) as session:
        assert webhooks.claim_due_deliveries(session, limit=10, hold_seconds=60) == []


@pytest.mark.parametrize(
    "url",
    [
        "ftp://example.com/h",
        "example.com/h",
        "http:///nohost",
        "https://user:pw@example.com/h",
        "http://x/" + "a" * 3000,
    ],
)
def test_an_endpoint_needs_an_http_url_with_a_host_and_no_credentials(settings: Settings, url: str) -> None:
    with session_scope(settings.database_url) as session:
        tenant_id = tenants.create_tenant(session, "acme").id
        with pytest.raises(InvalidRequest) as refused:
            webhooks.create_endpoint(session, tenant_id, url=url, event_types=[WebhookEventType.succeeded])
    assert refused.value.param == "url"
