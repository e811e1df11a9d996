"""The interactive docs work offline, and their Authorize button takes the bearer key."""

from __future__ import annotations

import re
from html.parser import HTMLParser

import pytest
from fastapi.testclient import TestClient

EXTERNAL_URL = re.compile(r"(?:https?:)?//[a-z0-9.-]+", re.IGNORECASE)


class ReferenceCollector(HTMLParser):
    """Every URL an HTML page loads or links: src and href attributes, and `spec-url` (ReDoc's)."""

    def __init__(self) -> None:
        super().__init__()
        self.references: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.references += [value for name, value in attrs if name in ("src", "href", "spec-url") and value]


def references_of(html: str) -> list[str]:
    collector = ReferenceCollector()
    collector.feed(html)
    return collector.references


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_a_docs_page_references_no_external_host(client: TestClient, page: str) -> None:
    response = client.get(page)
    assert response.status_code == 200
    assert EXTERNAL_URL.findall(response.text) == []  # in attributes and inline script alike
    assert references_of(response.text), "the page loads nothing: the check above would be empty"


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_every_asset_a_docs_page_references_is_served_by_the_app(client: TestClient, page: str) -> None:
    references = references_of(client.get(page).text)
    assert any(reference.endswith(".js") for reference in references)
    for reference in references:
        response = client.get(reference)
        assert (reference, response.status_code) == (reference, 200)
        assert response.content, reference


def test_swagger_ui_is_given_the_openapi_document_and_no_validator_badge(client: TestClient) -> None:
    page = client.get("/docs").text
    assert "url: '/openapi.json'" in page
    assert '"validatorUrl": null' in page  # else Swagger UI fetches a badge from validator.swagger.io


def test_the_openapi_document_declares_the_bearer_key_for_every_operation(client: TestClient) -> None:
    schema = client.get("/openapi.json").json()
    assert schema["components"]["securitySchemes"] == {
        "bearerAuth": {
            "type": "http",
            "scheme": "bearer",
            "description": "An API key from `graft keys create`, sent as `Authorization: Bearer YOUR_KEY`.",
        }
    }
    assert schema["security"] == [{"bearerAuth": []}]
    operations = [operation for path in schema["paths"].values() for operation in path.values()]
    assert len(operations) >= 12
    assert all("security" not in operation for operation in operations)  # none opts out of the global one
    assert "/healthz" not in schema["paths"]
