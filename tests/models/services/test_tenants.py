"""Keys note when they were last used, coarsely enough that a busy key does not write on every request."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy.orm import Session

from models.services import tenants
from models.storage.tables import ApiKey, utc_now


def test_authenticating_notes_the_keys_use_at_most_once_a_minute(session: Session) -> None:
    row, key = tenants.create_api_key(session, tenants.create_tenant(session, "acme"))
    assert row.last_used_at is None
    tenants.authenticate(session, key)
    first_use = row.last_used_at
    assert first_use is not None and utc_now() - first_use < timedelta(seconds=5)
    tenants.authenticate(session, key)
    assert row.last_used_at == first_use
    row.last_used_at = utc_now() - tenants.KEY_USE_RESOLUTION
    tenants.authenticate(session, key)
    assert row.last_used_at is not None and utc_now() - row.last_used_at < timedelta(seconds=5)


def test_list_api_keys_gives_every_key_with_its_tenant_revoked_ones_too(session: Session) -> None:
    acme = tenants.create_tenant(session, "acme")
    first, _ = tenants.create_api_key(session, acme)
    second, _ = tenants.create_api_key(session, tenants.create_tenant(session, "globex"))
    tenants.revoke_api_key(session, first.id)
    listed = tenants.list_api_keys(session)
    assert [(key.id, name) for key, name in listed] == [(first.id, "acme"), (second.id, "globex")]
    assert isinstance(listed[0][0], ApiKey) and listed[0][0].revoked_at is not None
    assert [key.id for key, _ in tenants.list_api_keys(session, "globex")] == [second.id]
