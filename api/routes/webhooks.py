"""HTTP routes for /v1/webhooks: register, list, retrieve and delete the tenant's notification endpoints."""

from __future__ import annotations

from fastapi import APIRouter

from api.deps import SessionDep, TenantDep
from api.routing import SessionReleasingRoute
from models.services import webhooks
from models.wire.common import ListPage
from models.wire.webhooks import WebhookCreate, WebhookDeleted, WebhookRead

router = APIRouter(prefix="/v1/webhooks", tags=["webhooks"], route_class=SessionReleasingRoute)


@router.post("")
def create_webhook(spec: WebhookCreate, tenant_id: TenantDep, session: SessionDep) -> WebhookRead:
    """Register a URL; the answer carries the signing secret, which is never shown again."""
    endpoint = webhooks.create_endpoint(session, tenant_id, url=spec.url, event_types=spec.events)
    created = WebhookRead.from_row(endpoint, with_secret=True)
    session.commit()
    return created


@router.get("")
def list_webhooks(tenant_id: TenantDep, session: SessionDep) -> ListPage[WebhookRead]:
    return ListPage[WebhookRead].of([WebhookRead.from_row(row) for row in webhooks.list_endpoints(session, tenant_id)])


@router.get("/{webhook_id}")
def retrieve_webhook(webhook_id: str, tenant_id: TenantDep, session: SessionDep) -> WebhookRead:
    return WebhookRead.from_row(webhooks.get_endpoint(session, tenant_id, webhook_id))


@router.delete("/{webhook_id}")
def delete_webhook(webhook_id: str, tenant_id: TenantDep, session: SessionDep) -> WebhookDeleted:
    """Stop sending to the endpoint; notifications not yet delivered to it are dropped."""
    endpoint = webhooks.delete_endpoint(session, tenant_id, webhook_id)
    deleted = WebhookDeleted(id=endpoint.id, deleted=True)
    session.commit()
    return deleted
