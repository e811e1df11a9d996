"""Request dependencies: settings, a database session, the artifact store and the caller's tenant."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

import anyio.to_thread
from anyio import CapacityLimiter
from fastapi import Depends, Header, Request
from sqlalchemy.orm import Session

from models.errors import Unauthorized
from models.services import tenants
from models.settings import Settings
from models.storage.blobs import ArtifactStore
from models.storage.database import session_factory
from models.tasks.text_classification import DataLimits


async def get_app_settings(request: Request) -> Settings:
    """The settings `create_app` was built with (async: no threadpool round trip for a lookup)."""
    settings: Settings = request.app.state.settings
    return settings


SettingsDep = Annotated[Settings, Depends(get_app_settings)]


async def get_session(settings: SettingsDep) -> AsyncIterator[Session]:
    """A session per request. Creating one does no I/O; handlers usually end it themselves (api.routing)."""
    session = session_factory(settings.database_url)()
    try:
        yield session
    finally:
        if session.in_transaction():
            # Rolling back is I/O: off the event loop, on a limiter of its own so that a full
            # threadpool never delays handing a connection back (FastAPI does the same for its exits).
            await anyio.to_thread.run_sync(session.close, limiter=CapacityLimiter(1))
        else:
            session.close()


# scope="function": the session closes when the handler returns, before the response is sent, so
# no transaction (on SQLite: no write lock) outlives the handler while a slow client reads.
SessionDep = Annotated[Session, Depends(get_session, scope="function")]


def get_store(settings: SettingsDep) -> ArtifactStore:
    return ArtifactStore(settings.artifacts)


StoreDep = Annotated[ArtifactStore, Depends(get_store)]


def get_data_limits(settings: SettingsDep) -> DataLimits:
    """The bounds every uploaded or trained-on file's labels keep (Settings.max_label_chars, max_labels)."""
    return DataLimits(max_label_chars=settings.max_label_chars, max_labels=settings.max_labels)


DataLimitsDep = Annotated[DataLimits, Depends(get_data_limits)]


MISSING_KEY_MESSAGE = "You didn't provide an API key. Send it as 'Authorization: Bearer YOUR_KEY'."


def bearer_key_of(authorization: str | None) -> str | None:
    """The key of an `Authorization: Bearer <key>` header value, not yet checked; None if it carries none."""
    scheme, _, key = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not key.strip():
        return None
    return key.strip()


async def get_bearer_key(authorization: Annotated[str | None, Header(include_in_schema=False)] = None) -> str:
    """The key of `Authorization: Bearer <key>`, not yet checked; 401 if there is none (async: no I/O)."""
    key = bearer_key_of(authorization)
    if key is None:
        raise Unauthorized(MISSING_KEY_MESSAGE)
    return key


BearerKeyDep = Annotated[str, Depends(get_bearer_key)]


def get_tenant_id(session: SessionDep, key: BearerKeyDep) -> str:
    """The tenant behind `Authorization: Bearer <key>`; 401 for a missing, malformed or revoked key."""
    tenant_id = tenants.authenticate(session, key)
    session.commit()  # end the read transaction; SQLite holds its lock until then
    return tenant_id


TenantDep = Annotated[str, Depends(get_tenant_id)]
