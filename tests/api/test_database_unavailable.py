"""A database hiccup during a request is a 503 the client may retry, never a bare 500."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.exc import IntegrityError, OperationalError

from models.services import jobs


def raising(error: Exception) -> object:
    def fail(*_: object, **__: object) -> None:
        raise error

    return fail


def test_a_dropped_database_connection_is_a_503_with_retry_after(
    client: TestClient, auth: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    dropped = OperationalError("SELECT 1", {}, ConnectionResetError("server closed the connection"))
    dropped.connection_invalidated = True
    monkeypatch.setattr(jobs, "list_jobs", raising(dropped))
    response = client.get("/v1/fine_tuning/jobs", headers=auth)
    assert response.status_code == 503
    assert response.headers["retry-after"] == "1"
    assert "x-should-retry" not in response.headers
    assert response.json()["error"]["code"] == "service_unavailable"
    assert "SELECT" not in response.text  # no statement leaks to the client


def test_a_database_error_that_is_not_transient_stays_a_500(
    client: TestClient, auth: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(jobs, "list_jobs", raising(IntegrityError("INSERT", {}, ValueError("duplicate key"))))
    with TestClient(client.app, raise_server_exceptions=False) as lenient:
        response = lenient.get("/v1/fine_tuning/jobs", headers=auth)
    assert response.status_code == 500
    assert response.json()["error"]["type"] == "server_error"
