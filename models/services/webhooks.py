"""Webhooks: a tenant's endpoints, the notifications its jobs' status changes write, and their delivery state.

A notification is written in the same transaction as the status change it announces (an outbox:
`record_job_notifications`, called by runs.transition_job), so it is sent exactly for the changes
that happened, and survives any crash; the workers' sender (worker.webhook_sender) claims due
deliveries, sends them signed, and records each attempt here.
"""

from __future__ import annotations

import base64
import json
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from urllib.parse import urlsplit

from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session

from models.errors import InvalidRequest, NotFound
from models.ids import IdPrefix, is_well_formed, new_id
from models.services import events
from models.services.events import EventLevel
from models.states import JobStatus
from models.storage.tables import Job, WebhookDelivery, WebhookEndpoint, utc_now

MAX_ENDPOINTS_PER_TENANT = 10
MAX_URL_CHARS = 2048
SECRET_PREFIX = "whsec_"
SECRET_BYTES = 32


class WebhookEventType(StrEnum):
    """OpenAI's fine-tuning webhook events, and Graft's `paused`."""

    succeeded = "fine_tuning.job.succeeded"
    failed = "fine_tuning.job.failed"
    cancelled = "fine_tuning.job.cancelled"
    paused = "fine_tuning.job.paused"


EVENT_OF_STATUS = {
    JobStatus.succeeded: WebhookEventType.succeeded,
    JobStatus.failed: WebhookEventType.failed,
    JobStatus.cancelled: WebhookEventType.cancelled,
    JobStatus.paused: WebhookEventType.paused,
}


class DeliveryStatus(StrEnum):
    pending = "pending"
    delivered = "delivered"
    failed = "failed"  # out of attempts


@dataclass(frozen=True)
class RetryPolicy:
    """Attempt n (1-based) that fails is retried after base × 6^(n-1), at most `max_delay_seconds`: with
    base 5 s about 5 s, 30 s, 3 min, 18 min, 1.8 h, then 10 h, as the Standard Webhooks schedule spaces them."""

    max_attempts: int = 8
    base_delay_seconds: float = 5.0
    max_delay_seconds: float = 10 * 3600.0

    def delay_after(self, attempt: int) -> float:
        return float(min(self.base_delay_seconds * 6 ** (attempt - 1), self.max_delay_seconds))


def create_endpoint(
    session: Session, tenant_id: str, *, url: str, event_types: list[WebhookEventType]
) -> WebhookEndpoint:
    """Register `url` for `event_types`; the row holds the new secret. Raises InvalidRequest. Does not commit."""
    _check_url(url)
    if not event_types:
        raise InvalidRequest("events: name at least one event, e.g. fine_tuning.job.succeeded", param="events")
    if len(list_endpoints(session, tenant_id)) >= MAX_ENDPOINTS_PER_TENANT:
        # A 400, not a 429: waiting frees nothing, deleting an endpoint does.
        raise InvalidRequest(
            f"You have {MAX_ENDPOINTS_PER_TENANT} webhook endpoints, the most allowed; delete one first "
            "(DELETE /v1/webhooks/{id})",
            param="webhooks",
        )
    endpoint = WebhookEndpoint(
        id=new_id(IdPrefix.webhook),
        tenant_id=tenant_id,
        url=url,
        events=sorted({event.value for event in event_types}),
        secret=SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode(),
    )
    session.add(endpoint)
    session.flush()
    return endpoint


def list_endpoints(session: Session, tenant_id: str) -> list[WebhookEndpoint]:
    """The tenant's endpoints, oldest first (there are at most MAX_ENDPOINTS_PER_TENANT)."""
    return list(
        session.scalars(
            select(WebhookEndpoint)
            .where(WebhookEndpoint.tenant_id == tenant_id, WebhookEndpoint.deleted_at.is_(None))
            .order_by(WebhookEndpoint.created_at, WebhookEndpoint.id)
        )
    )


def get_endpoint(session: Session, tenant_id: str, endpoint_id: str) -> WebhookEndpoint:
    """The tenant's endpoint; another tenant's is NotFound, exactly like a missing one."""
    endpoint = session.get(WebhookEndpoint, endpoint_id) if is_well_formed(endpoint_id, IdPrefix.webhook) else None
    if endpoint is None or endpoint.tenant_id != tenant_id or endpoint.deleted_at is not None:
        raise NotFound(
            f"No webhook endpoint {endpoint_id} exists for your API key (GET /v1/webhooks lists yours)",
            param="webhook_id",
        )
    return endpoint


def delete_endpoint(session: Session, tenant_id: str, endpoint_id: str) -> WebhookEndpoint:
    """Stop sending to the endpoint; deliveries not yet made to it are dropped. Does not commit."""
    endpoint = get_endpoint(session, tenant_id, endpoint_id)
    endpoint.deleted_at = utc_now()
    session.execute(
        update(WebhookDelivery)
        .where(WebhookDelivery.endpoint_id == endpoint.id, WebhookDelivery.status == DeliveryStatus.pending.value)
        .values(status=DeliveryStatus.failed.value, last_error="the endpoint was deleted")
    )
    return endpoint


def record_job_notifications(session: Session, job_id: str, status: JobStatus) -> int:
    """Write a delivery of the status change to each of the job's tenant's endpoints that asked for it.

    Call in the transaction that made the change; returns how many were written. Does not commit.
    """
    event_type = EVENT_OF_STATUS.get(status)
    if event_type is None:
        return 0
    tenant_id = session.scalar(select(Job.tenant_id).where(Job.id == job_id))
    if tenant_id is None:
        return 0
    endpoints = [endpoint for endpoint in list_endpoints(session, tenant_id) if event_type.value in endpoint.events]
    if not endpoints:
        return 0
    created_at = utc_now()
    for endpoint in endpoints:
        event_id = new_id(IdPrefix.webhook_event)  # one per endpoint: each receiver deduplicates on its own
        # OpenAI's webhook body: the event, and the job it is about (read it with GET /v1/fine_tuning/jobs/{id}).
        body = {
            "id": event_id,
            "object": "event",
            "created_at": int(created_at.timestamp()),
            "type": event_type.value,
            "data": {"id": job_id},
        }
        session.add(
            WebhookDelivery(
                id=event_id,
                endpoint_id=endpoint.id,
                job_id=job_id,
                event_type=event_type.value,
                body=json.dumps(body),
                status=DeliveryStatus.pending.value,
                next_attempt_at=created_at,
                created_at=created_at,
            )
        )
    return len(endpoints)


@dataclass(frozen=True)
class DueDelivery:
    """What a sender needs to send one delivery, read when it claimed it."""

    id: str
    job_id: str
    event_type: str
    url: str
    secret: str
    body: str
    attempt: int  # this attempt's number, 1-based


def claim_due_deliveries(session: Session, *, limit: int, hold_seconds: float) -> list[DueDelivery]:
    """Take up to `limit` pending deliveries whose time has come, each for `hold_seconds`.

    Each is claimed by compare-and-set on `claimed_until`, so two senders never send the same
    attempt; one whose sender died is taken again once its hold ends. Does not commit.
    """
    now = utc_now()
    due = session.execute(
        select(WebhookDelivery, WebhookEndpoint)
        .join(WebhookEndpoint, WebhookEndpoint.id == WebhookDelivery.endpoint_id)
        .where(
            WebhookDelivery.status == DeliveryStatus.pending.value,
            WebhookDelivery.next_attempt_at <= now,
            or_(WebhookDelivery.claimed_until.is_(None), WebhookDelivery.claimed_until < now),
        )
        .order_by(WebhookDelivery.next_attempt_at)
        .limit(limit)
    ).all()
    claimed = []
    for delivery, endpoint in due:
        taken = session.execute(
            update(WebhookDelivery)
            .where(
                WebhookDelivery.id == delivery.id,
                WebhookDelivery.status == DeliveryStatus.pending.value,
                or_(WebhookDelivery.claimed_until.is_(None), WebhookDelivery.claimed_until < now),
            )
            .values(claimed_until=now + timedelta(seconds=hold_seconds))
            .execution_options(synchronize_session=False)
        )
        if taken.rowcount == 1:  # type: ignore[attr-defined]
            claimed.append(
                DueDelivery(
                    id=delivery.id,
                    job_id=delivery.job_id,
                    event_type=delivery.event_type,
                    url=endpoint.url,
                    secret=endpoint.secret,
                    body=delivery.body,
                    attempt=delivery.attempts + 1,
                )
            )
    return claimed


@dataclass(frozen=True)
class AttemptOutcome:
    status_code: int | None  # None when no answer came (refused, timed out)
    error: str | None  # why it failed, in a few words; None on success

    @property
    def delivered(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


def record_attempt(session: Session, delivery: DueDelivery, outcome: AttemptOutcome, policy: RetryPolicy) -> None:
    """Record one attempt and what follows: delivered, retried later, or given up. Writes an event on the job.

    Does not commit.
    """
    now = utc_now()
    values: dict[str, object] = {
        "attempts": delivery.attempt,
        "claimed_until": None,
        "last_status_code": outcome.status_code,
        "last_error": outcome.error,
    }
    answer = f"HTTP {outcome.status_code}" if outcome.status_code is not None else outcome.error
    if outcome.delivered:
        values |= {"status": DeliveryStatus.delivered.value, "delivered_at": now}
        message, level = f"Webhook {delivery.event_type} delivered to {delivery.url} ({answer})", EventLevel.info
    elif delivery.attempt >= policy.max_attempts:
        values["status"] = DeliveryStatus.failed.value
        message = (
            f"Webhook {delivery.event_type} to {delivery.url} failed ({answer}); gave up after "
            f"{delivery.attempt} attempts"
        )
        level = EventLevel.warn
    else:
        delay = policy.delay_after(delivery.attempt)
        values["next_attempt_at"] = now + timedelta(seconds=delay)
        message = (
            f"Webhook {delivery.event_type} to {delivery.url} failed ({answer}); attempt {delivery.attempt} of "
            f"{policy.max_attempts}, next in {_duration(delay)}"
        )
        level = EventLevel.warn
    session.execute(
        update(WebhookDelivery)
        .where(WebhookDelivery.id == delivery.id)
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    events.append_event(
        session,
        delivery.job_id,
        message,
        level=level,
        data={
            "webhook": {
                "id": delivery.id,
                "url": delivery.url,
                "attempt": delivery.attempt,
                "status_code": outcome.status_code,
            }
        },
    )


def next_due_at(session: Session) -> datetime | None:
    """When the next pending delivery falls due (None when none waits): how long a sender may sleep."""
    return session.scalar(
        select(WebhookDelivery.next_attempt_at)
        .where(WebhookDelivery.status == DeliveryStatus.pending.value)
        .order_by(WebhookDelivery.next_attempt_at)
        .limit(1)
    )


def _check_url(url: str) -> None:
    if len(url) > MAX_URL_CHARS:
        raise InvalidRequest(f"url: is {len(url)} characters long; at most {MAX_URL_CHARS} are allowed", param="url")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidRequest(
            f"url: {url[:100]!r} is not an http or https URL with a host, e.g. https://example.com/graft-hooks",
            param="url",
        )
    if parts.username or parts.password:
        raise InvalidRequest("url: must not hold a user name or password; the signature authenticates us", param="url")


def _duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:g} s"
    if seconds < 3600:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"
