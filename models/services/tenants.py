"""Tenants and their API keys: keys are random, shown once, stored only as a hash."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import string
from datetime import datetime, timedelta
from typing import Protocol

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from models.errors import InvalidRequest, NotFound, Unauthorized
from models.ids import IdPrefix, new_id
from models.storage.tables import ApiKey, Tenant, utc_now

KEY_PREFIX = "sk-graft-"
_KEY_ALPHABET = string.ascii_letters + string.digits
KEY_USE_RESOLUTION = timedelta(minutes=1)
_LOOKUP_CHARS, _SECRET_CHARS = 12, 40  # 62^40 ≈ 2^238 bits of secret: a fast hash is enough at rest


def create_tenant(session: Session, name: str) -> Tenant:
    """Insert a tenant; raises InvalidRequest if the name is taken. Does not commit."""
    if session.scalar(select(Tenant).where(Tenant.name == name)) is not None:
        raise InvalidRequest(f"tenant {name!r} already exists", param="tenant")
    tenant = Tenant(id=new_id(IdPrefix.tenant), name=name)
    session.add(tenant)
    session.flush()
    return tenant


def find_tenant(session: Session, name: str) -> Tenant:
    tenant = session.scalar(select(Tenant).where(Tenant.name == name))
    if tenant is None:
        raise NotFound(f"no tenant named {name!r}", param="tenant")
    return tenant


def get_or_create_tenant(session: Session, name: str) -> Tenant:
    existing = session.scalar(select(Tenant).where(Tenant.name == name))
    return existing if existing is not None else create_tenant(session, name)


def create_api_key(session: Session, tenant: Tenant) -> tuple[ApiKey, str]:
    """A new key for `tenant`; returns the row and the plaintext, which is never stored. Does not commit."""
    lookup = _random_text(_LOOKUP_CHARS)
    secret = _random_text(_SECRET_CHARS)
    row = ApiKey(id=new_id(IdPrefix.api_key), tenant_id=tenant.id, lookup_prefix=lookup, secret_sha256=_digest(secret))
    session.add(row)
    session.flush()
    return row, f"{KEY_PREFIX}{lookup}_{secret}"


class StoredKey(Protocol):
    """The columns of an `api_keys` row that decide whether a presented key is valid."""

    @property
    def tenant_id(self) -> str: ...
    @property
    def secret_sha256(self) -> str: ...
    @property
    def revoked_at(self) -> datetime | None: ...


def authenticate(session: Session, presented_key: str) -> str:
    """The tenant id behind a bearer key; raises Unauthorized for a malformed, unknown or revoked key.

    Also notes the key's use (note_key_use), which the caller's commit records.
    """
    lookup, secret = split_key(presented_key)
    stored = session.scalar(select(ApiKey).where(ApiKey.lookup_prefix == lookup))
    tenant_id = tenant_of_key(stored, secret)
    assert stored is not None  # tenant_of_key refuses an unknown key
    note_key_use(stored)
    return tenant_id


def note_key_use(key: ApiKey) -> None:
    """Set the key's `last_used_at` to now, unless it was set less than KEY_USE_RESOLUTION ago.

    The coarse resolution keeps the write rare: at most one a minute per key, however busy it is.
    """
    if key_use_is_stale(key.last_used_at):
        key.last_used_at = utc_now()


def key_use_is_stale(last_used_at: datetime | None) -> bool:
    return last_used_at is None or utc_now() - last_used_at >= KEY_USE_RESOLUTION


def note_key_use_by_id(session: Session, key_id: str) -> None:
    """`note_key_use` for a key known by id (the job GET reads keys without an ORM session). No commit.

    One conditional UPDATE: racing requests of one key write it once.
    """
    now = utc_now()
    session.execute(
        update(ApiKey)
        .where(
            ApiKey.id == key_id,
            ApiKey.last_used_at.is_(None) | (ApiKey.last_used_at <= now - KEY_USE_RESOLUTION),
        )
        .values(last_used_at=now)
        .execution_options(synchronize_session=False)
    )


def list_api_keys(session: Session, tenant_name: str | None = None) -> list[tuple[ApiKey, str]]:
    """Every key (revoked ones too) with its tenant's name, oldest first; of one tenant if named. Reads only.

    Raises NotFound for an unknown tenant name.
    """
    query = select(ApiKey, Tenant.name).join(Tenant, Tenant.id == ApiKey.tenant_id)
    if tenant_name is not None:
        query = query.where(ApiKey.tenant_id == find_tenant(session, tenant_name).id)
    return [(key, name) for key, name in session.execute(query.order_by(ApiKey.created_at, ApiKey.id))]


def tenant_of_key(stored: StoredKey | None, secret: str) -> str:
    """The tenant of `stored` (the row found by the key's lookup part, read just now) if `secret` matches it.

    Raises Unauthorized for an unknown (`stored` is None) or revoked key, or a wrong secret. Callers
    read the row in the request that presents the key, so a revocation takes effect at once.
    """
    # Compare a digest even when the key is unknown, so timing does not reveal which lookups exist.
    expected = stored.secret_sha256 if stored is not None else _digest("")
    if not hmac.compare_digest(expected, _digest(secret)) or stored is None or stored.revoked_at is not None:
        raise Unauthorized("Incorrect API key provided.")
    return stored.tenant_id


def revoke_api_key(session: Session, key_id: str) -> None:
    row = session.get(ApiKey, key_id)
    if row is None:
        raise NotFound(f"no API key {key_id!r}", param="key_id")
    if row.revoked_at is None:
        row.revoked_at = utc_now()


def split_key(presented_key: str) -> tuple[str, str]:
    """(lookup, secret) of a presented key; raises Unauthorized for a key of the wrong shape."""
    body = presented_key.removeprefix(KEY_PREFIX)
    lookup, separator, secret = body.partition("_")
    if (
        not presented_key.startswith(KEY_PREFIX)
        or not separator
        or len(lookup) != _LOOKUP_CHARS
        or len(secret) != _SECRET_CHARS
    ):
        raise Unauthorized("Incorrect API key provided.")
    return lookup, secret


def _random_text(length: int) -> str:
    return "".join(secrets.choice(_KEY_ALPHABET) for _ in range(length))


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def has_any_tenant(session: Session) -> bool:
    return session.scalar(select(Tenant.id).limit(1)) is not None
