"""Sending the webhook notifications that jobs' status changes wrote: signed, retried with backoff, recorded.

Each worker runs one sender (threads of its own, beside the job it supervises): a receiver that is
slow or down costs a sending thread at most `timeout` per attempt, never a training step or an API
request. Deliveries are claimed in the database (models.services.webhooks.claim_due_deliveries),
so any number of workers share them and each attempt is made once.

Signed as the Standard Webhooks specification says (the `standardwebhooks` package, which OpenAI's
SDK verifies too): `webhook-id`, `webhook-timestamp` and `webhook-signature: v1,<base64 HMAC-SHA256
of "id.timestamp.body" keyed with the secret's bytes>`.
"""

from __future__ import annotations

import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime

import httpx
from sqlalchemy.exc import SQLAlchemyError
from standardwebhooks import Webhook

from models.services import webhooks
from models.services.webhooks import AttemptOutcome, DueDelivery, RetryPolicy
from models.settings import Settings
from models.storage.database import run_transaction, session_scope

logger = logging.getLogger(__name__)

SENDING_THREADS = 4
USER_AGENT = "Graft-Webhooks/1"


@dataclass(frozen=True)
class SenderSettings:
    database_url: str
    timeout_seconds: float
    poll_seconds: float
    policy: RetryPolicy

    @classmethod
    def from_settings(cls, settings: Settings) -> SenderSettings:
        return cls(
            database_url=settings.database_url,
            timeout_seconds=settings.webhook_timeout_seconds,
            poll_seconds=settings.webhook_poll_seconds,
            policy=RetryPolicy(
                max_attempts=settings.webhook_max_attempts, base_delay_seconds=settings.webhook_retry_base_seconds
            ),
        )


def signed_request_headers(delivery: DueDelivery, sent_at: datetime) -> dict[str, str]:
    signature = Webhook(delivery.secret).sign(msg_id=delivery.id, timestamp=sent_at, data=delivery.body)
    return {
        "content-type": "application/json",
        "user-agent": USER_AGENT,
        "webhook-id": delivery.id,
        "webhook-timestamp": str(int(sent_at.timestamp())),
        "webhook-signature": signature,
    }


def send(http: httpx.Client, delivery: DueDelivery) -> AttemptOutcome:
    """One attempt: POST the body, signed now; any 2xx answer is a delivery."""
    try:
        response = http.post(
            delivery.url, content=delivery.body.encode(), headers=signed_request_headers(delivery, datetime.now(UTC))
        )
    except httpx.TimeoutException:
        return AttemptOutcome(None, "no answer in time")
    except httpx.HTTPError as error:
        return AttemptOutcome(None, f"could not connect ({type(error).__name__})")
    return AttemptOutcome(response.status_code, None if response.is_success else f"HTTP {response.status_code}")


class WebhookSender:
    """Claims due deliveries and sends them on SENDING_THREADS threads, until `stop`."""

    def __init__(self, settings: SenderSettings) -> None:
        self._settings = settings
        self._stopping = threading.Event()
        # Redirects are not followed: the signed body goes to the registered URL only.
        self._http = httpx.Client(timeout=settings.timeout_seconds, follow_redirects=False)
        self._pool = ThreadPoolExecutor(SENDING_THREADS, thread_name_prefix="webhook")
        self._in_flight = threading.Semaphore(SENDING_THREADS)

    def run(self) -> None:
        while not self._stopping.is_set():
            try:
                sent = self.send_due()
            except SQLAlchemyError as error:
                logger.warning("webhook sender: database unavailable (%s); retrying", type(error).__name__)
                sent = 0
            if sent == 0:
                self._stopping.wait(self._settings.poll_seconds)

    def send_due(self) -> int:
        """Claim what is due (as many as there are free threads) and start sending it; returns how many."""
        free = 0
        while self._in_flight.acquire(blocking=False):
            free += 1
        if free == 0:
            self._stopping.wait(0.05)
            return 0
        # A claim outlasts the longest attempt, so no other sender takes a delivery being sent.
        hold = 2 * self._settings.timeout_seconds + 30
        with session_scope(self._settings.database_url) as session:
            claimed = webhooks.claim_due_deliveries(session, limit=free, hold_seconds=hold)
        for _ in range(free - len(claimed)):
            self._in_flight.release()
        for delivery in claimed:
            self._pool.submit(self._attempt, delivery)
        return len(claimed)

    def _attempt(self, delivery: DueDelivery) -> None:
        try:
            outcome = send(self._http, delivery)
            run_transaction(
                self._settings.database_url,
                lambda session: webhooks.record_attempt(session, delivery, outcome, self._settings.policy),
            )
        except Exception:  # the claim lapses and the delivery is tried again; the sender goes on
            logger.exception("webhook %s to %s: could not record the attempt", delivery.id, delivery.url)
        finally:
            self._in_flight.release()

    def stop(self) -> None:
        self._stopping.set()
        self._pool.shutdown(wait=True)
        self._http.close()


def start_webhook_sender(settings: SenderSettings) -> WebhookSender:
    """A sender on a daemon thread of this process, for a worker's lifetime."""
    sender = WebhookSender(settings)
    threading.Thread(target=sender.run, name="webhook-sender", daemon=True).start()
    return sender
