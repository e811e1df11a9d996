"""Request dependencies: settings, a database session, the artifact store and the caller's tenant."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Header
from sqlalchemy.orm import Session

from models import tenants
from models.db import session_factory
from models.errors import Unauthorized
from models.settings import Settings, get_settings
from models.storage import ArtifactStore

SettingsDep = Annotated[Settings, Depends(get_settings)]


def get_session(settings: SettingsDep) -> Iterator[Session]:
    session = session_factory(settings.database_url)()
    try:
        yield session
    finally:
        session.close()


# scope="function": the session closes when the handler returns, before the response is sent, so
# no transaction (on SQLite: no write lock) outlives the handler while a slow client reads.
SessionDep = Annotated[Session, Depends(get_session, scope="function")]


def get_store(settings: SettingsDep) -> ArtifactStore:
    return ArtifactStore(settings.artifacts)


StoreDep = Annotated[ArtifactStore, Depends(get_store)]


def get_tenant_id(
    session: SessionDep, authorization: Annotated[str | None, Header(include_in_schema=False)] = None
) -> str:
    """The tenant behind `Authorization: Bearer <key>`; 401 for a missing, malformed or revoked key."""
    scheme, _, key = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not key.strip():
        raise Unauthorized("You didn't provide an API key. Send it as 'Authorization: Bearer YOUR_KEY'.")
    tenant_id = tenants.authenticate(session, key.strip())
    session.commit()  # end the read transaction; SQLite holds its lock until then
    return tenant_id


TenantDep = Annotated[str, Depends(get_tenant_id)]
