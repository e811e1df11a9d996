"""The webhook endpoint on the wire: what a tenant registers, and what it reads back (the secret only once)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from models.services.webhooks import WebhookEventType
from models.storage.tables import WebhookEndpoint
from models.wire.common import StrictModel, UserText, unix_seconds


class WebhookCreate(StrictModel):
    url: UserText = Field(min_length=1, description="An http or https URL that accepts POST requests.")
    events: list[WebhookEventType] = Field(
        min_length=1,
        description="The events to send: fine_tuning.job.succeeded, .failed, .cancelled, and Graft's .paused.",
    )


class WebhookRead(BaseModel):
    object: Literal["webhook_endpoint"] = "webhook_endpoint"
    id: str
    url: str
    events: list[WebhookEventType]
    created_at: int
    secret: str | None = Field(
        default=None,
        description="The signing secret (Standard Webhooks, `whsec_…`): in the answer to the create request only.",
    )

    @classmethod
    def from_row(cls, row: WebhookEndpoint, *, with_secret: bool = False) -> WebhookRead:
        return cls(
            id=row.id,
            url=row.url,
            events=[WebhookEventType(event) for event in row.events],
            created_at=unix_seconds(row.created_at),
            secret=row.secret if with_secret else None,
        )


class WebhookDeleted(BaseModel):
    object: Literal["webhook_endpoint"] = "webhook_endpoint"
    id: str
    deleted: bool
