"""/v1/webhooks: register a URL (its secret shown once), list, retrieve, delete; each tenant sees its own."""

from __future__ import annotations

from fastapi.testclient import TestClient


def register(client: TestClient, auth: dict[str, str], **body: object) -> dict[str, object]:
    response = client.post(
        "/v1/webhooks",
        headers=auth,
        json={"url": "https://hooks.example.com/graft", "events": ["fine_tuning.job.succeeded"], **body},
    )
    assert response.status_code == 200, response.text
    created: dict[str, object] = response.json()
    return created


def test_registering_answers_the_secret_once_and_never_again(client: TestClient, auth: dict[str, str]) -> None:
    created = register(client, auth, events=["fine_tuning.job.failed", "fine_tuning.job.succeeded"])

    assert str(created["secret"]).startswith("whsec_")
    assert created["events"] == ["fine_tuning.job.failed", "fine_tuning.job.succeeded"]
    assert created["object"] == "webhook_endpoint"
    listed = client.get("/v1/webhooks", headers=auth).json()["data"]
    assert [(item["id"], item["secret"]) for item in listed] == [(created["id"], None)]
    retrieved = client.get(f"/v1/webhooks/{created['id']}", headers=auth).json()
    assert retrieved == {**created, "secret": None}


def test_another_tenants_endpoint_is_404_to_read_and_to_delete(
    client: TestClient, auth: dict[str, str], other_auth: dict[str, str]
) -> None:
    created = register(client, auth)

    for method in ("GET", "DELETE"):
        response = client.request(method, f"/v1/webhooks/{created['id']}", headers=other_auth)
        assert response.status_code == 404
        assert response.json()["error"]["param"] == "webhook_id"
    assert client.get("/v1/webhooks", headers=other_auth).json()["data"] == []


def test_a_deleted_endpoint_is_gone(client: TestClient, auth: dict[str, str]) -> None:
    created = register(client, auth)

    response = client.delete(f"/v1/webhooks/{created['id']}", headers=auth)

    assert response.json() == {"object": "webhook_endpoint", "id": created["id"], "deleted": True}
    assert client.get(f"/v1/webhooks/{created['id']}", headers=auth).status_code == 404


def test_an_unknown_event_or_no_event_is_a_400_naming_events(client: TestClient, auth: dict[str, str]) -> None:
    for events in (["fine_tuning.job.exploded"], []):
        response = client.post("/v1/webhooks", headers=auth, json={"url": "https://x.example/h", "events": events})
        assert response.status_code == 400, response.text
        assert response.json()["error"]["param"].startswith("events")


def test_a_url_that_is_not_http_is_a_400_naming_url(client: TestClient, auth: dict[str, str]) -> None:
    response = client.post(
        "/v1/webhooks", headers=auth, json={"url": "file:///etc/passwd", "events": ["fine_tuning.job.succeeded"]}
    )

    assert response.status_code == 400
    assert response.json()["error"]["param"] == "url"


def test_the_eleventh_endpoint_is_refused_until_one_is_deleted(client: TestClient, auth: dict[str, str]) -> None:
    for _ in range(10):
        register(client, auth)

    response = client.post(
        "/v1/webhooks", headers=auth, json={"url": "https://x.example/h", "events": ["fine_tuning.job.failed"]}
    )

    assert response.status_code == 400
    assert response.json()["error"]["param"] == "webhooks"
