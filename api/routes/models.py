"""HTTP routes for /v1/models: the base-model catalog and the tenant's fine-tuned models."""

from __future__ import annotations

from fastapi import APIRouter

from api.deps import SessionDep, TenantDep
from api.routing import SessionReleasingRoute
from models.errors import NotFound
from models.services import catalog, fine_tuned_models
from models.wire.common import ListPage
from models.wire.model_objects import ModelRead

router = APIRouter(prefix="/v1/models", tags=["models"], route_class=SessionReleasingRoute)


@router.get("")
def list_models(tenant_id: TenantDep, session: SessionDep) -> ListPage[ModelRead]:
    base = [ModelRead.from_base_model(row) for row in catalog.list_base_models(session)]
    tuned = [ModelRead.from_fine_tuned_job(job) for job in fine_tuned_models.list_fine_tuned_models(session, tenant_id)]
    return ListPage[ModelRead].of(base + tuned)


@router.get("/{model_id:path}")
def retrieve_model(model_id: str, tenant_id: TenantDep, session: SessionDep) -> ModelRead:
    if model_id.startswith("ft:"):
        return ModelRead.from_fine_tuned_job(fine_tuned_models.get_fine_tuned_model(session, tenant_id, model_id))
    try:
        return ModelRead.from_base_model(catalog.get_base_model(session, model_id))
    except NotFound:
        raise NotFound(
            f"The model '{model_id}' does not exist; GET /v1/models lists the models you can use", param="model"
        ) from None
