"""`graft files …`: upload, list, show and delete your files on a Graft service."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from cli.output import moment, print_facts, print_json, print_table
from cli.service_client import ApiKeyOption, BaseUrlOption, JsonOption, service

files_app = typer.Typer(help="Your training and validation files (through the API).", no_args_is_help=True)
FILE_COLUMNS = ("id", "filename", "records", "tasks", "bytes", "status", "created")


def file_row(file: dict[str, Any]) -> list[Any]:
    tasks = ", ".join(file.get("task_summaries") or {}) or None
    return [
        file["id"],
        file["filename"],
        file["record_count"],
        tasks,
        file["bytes"],
        file["status"],
        moment(file["created_at"]),
    ]


@files_app.command("upload")
def upload_file(
    path: Annotated[Path, typer.Argument(exists=True, dir_okay=False, readable=True, help="A JSONL or CSV file.")],
    base_url: BaseUrlOption = None,
    api_key: ApiKeyOption = None,
    json_output: JsonOption = False,
) -> None:
    """Upload a file; it is validated as it arrives, and a bad line is named in the error."""
    with service(base_url, api_key) as client:
        created = client.upload(path)
    if json_output:
        print_json(created)
        return
    print_table(FILE_COLUMNS, [file_row(created)])


@files_app.command("list")
def list_files(
    limit: Annotated[int, typer.Option(min=1, max=100, help="Files to show, newest first.")] = 20,
    base_url: BaseUrlOption = None,
    api_key: ApiKeyOption = None,
    json_output: JsonOption = False,
) -> None:
    """Your files, newest first."""
    with service(base_url, api_key) as client:
        listing = client.call("GET", "/v1/files", params={"limit": limit})
    if json_output:
        print_json(listing)
        return
    print_table(FILE_COLUMNS, [file_row(file) for file in listing["data"]])


@files_app.command("get")
def get_file(
    file_id: str, base_url: BaseUrlOption = None, api_key: ApiKeyOption = None, json_output: JsonOption = False
) -> None:
    """One file: what validation found in it, per task it can train."""
    with service(base_url, api_key) as client:
        file = client.call("GET", f"/v1/files/{file_id}")
    if json_output:
        print_json(file)
        return
    facts: list[tuple[str, Any]] = [
        ("id", file["id"]),
        ("filename", file["filename"]),
        ("status", file["status"]),
        ("format", file["format"]),
        ("records", file["record_count"]),
        ("bytes", file["bytes"]),
        ("sha256", file["sha256"]),
        ("created", moment(file["created_at"])),
    ]
    for task, summary in (file.get("task_summaries") or {}).items():
        counts = {name: value for name, value in summary.items() if name.endswith("_counts")}
        facts.append((task, ", ".join(f"{name}: {value}" for name, value in counts.items()) or "valid"))
    print_facts(facts)


@files_app.command("delete")
def delete_file(
    file_id: str, base_url: BaseUrlOption = None, api_key: ApiKeyOption = None, json_output: JsonOption = False
) -> None:
    """Delete a file (refused while an unfinished job uses it)."""
    with service(base_url, api_key) as client:
        deleted = client.call("DELETE", f"/v1/files/{file_id}")
    if json_output:
        print_json(deleted)
        return
    typer.echo(f"deleted {deleted['id']}")
