"""`graft webhooks …`: the URLs told when your jobs succeed, fail, are cancelled or pause."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from cli.output import moment, print_json, print_table
from cli.service_client import ApiKeyOption, BaseUrlOption, JsonOption, service

webhooks_app = typer.Typer(help="Notifications when your jobs end (through the API).", no_args_is_help=True)
ALL_EVENTS = ["fine_tuning.job.succeeded", "fine_tuning.job.failed", "fine_tuning.job.cancelled"]


def webhook_row(endpoint: dict[str, Any]) -> list[Any]:
    return [endpoint["id"], endpoint["url"], ", ".join(endpoint["events"]), moment(endpoint["created_at"])]


@webhooks_app.command("add")
def add_webhook(
    url: Annotated[str, typer.Argument(help="An http or https URL that accepts POST requests.")],
    event: Annotated[
        list[str] | None,
        typer.Option(help="An event to send (repeatable); default: succeeded, failed and cancelled."),
    ] = None,
    base_url: BaseUrlOption = None,
    api_key: ApiKeyOption = None,
    json_output: JsonOption = False,
) -> None:
    """Register URL; prints the signing secret, which is shown this once."""
    with service(base_url, api_key) as client:
        created = client.call("POST", "/v1/webhooks", json={"url": url, "events": event or ALL_EVENTS})
    if json_output:
        print_json(created)
        return
    print_table(("id", "url", "events", "created"), [webhook_row(created)])
    typer.echo(f"signing secret (shown once; verify the webhook-signature header with it): {created['secret']}")


@webhooks_app.command("list")
def list_webhooks(
    base_url: BaseUrlOption = None, api_key: ApiKeyOption = None, json_output: JsonOption = False
) -> None:
    """Your webhook endpoints."""
    with service(base_url, api_key) as client:
        listing = client.call("GET", "/v1/webhooks")
    if json_output:
        print_json(listing)
        return
    print_table(("id", "url", "events", "created"), [webhook_row(endpoint) for endpoint in listing["data"]])


@webhooks_app.command("delete")
def delete_webhook(
    webhook_id: str, base_url: BaseUrlOption = None, api_key: ApiKeyOption = None, json_output: JsonOption = False
) -> None:
    """Stop sending to an endpoint."""
    with service(base_url, api_key) as client:
        deleted = client.call("DELETE", f"/v1/webhooks/{webhook_id}")
    if json_output:
        print_json(deleted)
        return
    typer.echo(f"deleted {deleted['id']}")
