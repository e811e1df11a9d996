"""The user commands' way to a Graft service over HTTP: its URL and key, and its errors as one line each."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer
from httpx_sse import connect_sse
from rich.markup import escape

from cli.output import error_console
from models.settings import get_settings

REQUEST_TIMEOUT_SECONDS = 60.0
# An event stream sends a heartbeat at least every GRAFT_EVENT_STREAM_HEARTBEAT_SECONDS (15 s by default);
# a minute of silence means the connection is gone.
STREAM_READ_TIMEOUT_SECONDS = 60.0
END_EVENT = "end"
RECONNECT_ATTEMPTS = 5
# The user commands' own variables: where the service is and whose key to use (not service settings).
BASE_URL_VARIABLE, API_KEY_VARIABLE = "GRAFT_BASE_URL", "GRAFT_API_KEY"
CLIENT_VARIABLES = (BASE_URL_VARIABLE, API_KEY_VARIABLE)


def local_service_url() -> str:
    """The service `graft up` starts here: GRAFT_HOST and GRAFT_PORT, else 127.0.0.1:8000."""
    settings = get_settings()
    return f"http://{settings.host}:{settings.port}"


BaseUrlOption = Annotated[
    str | None,
    typer.Option(
        "--base-url",
        envvar=BASE_URL_VARIABLE,
        help="The Graft service (default: GRAFT_BASE_URL, else the local service at GRAFT_HOST:GRAFT_PORT).",
        show_default=False,
    ),
]
ApiKeyOption = Annotated[
    str | None,
    typer.Option(
        "--api-key", envvar=API_KEY_VARIABLE, help="Your API key (default: GRAFT_API_KEY).", show_default=False
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print the API's JSON instead of a table, for scripts.")]


class ServiceError(Exception):
    """The service refused the request, or could not be reached; `message` says why in one line."""

    def __init__(self, message: str, *, status_code: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status_code = status_code


@dataclass(frozen=True)
class StreamMessage:
    """One message of a job's event stream: an event, or the `end` with the job's final status."""

    kind: str  # "event" or END_EVENT
    data: dict[str, Any]
    event_id: str | None


class ServiceClient:
    def __init__(self, base_url: str | None, api_key: str | None) -> None:
        if not api_key:
            raise ServiceError(
                "no API key: pass --api-key or set GRAFT_API_KEY (an admin creates one with `graft keys create`)"
            )
        self.base_url = (base_url or local_service_url()).rstrip("/")
        self._http = httpx.Client(
            base_url=self.base_url,
            headers={"Authorization": f"Bearer {api_key}"},
            timeout=REQUEST_TIMEOUT_SECONDS,
        )

    def __enter__(self) -> ServiceClient:
        return self

    def __exit__(self, *_: object) -> None:
        self._http.close()

    def call(self, method: str, path: str, **kwargs: Any) -> Any:
        """The JSON body of a successful answer; raises ServiceError with the service's own message."""
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.TransportError as error:
            raise self._unreachable(error) from None
        _raise_for_error(response)
        return response.json()

    def upload(self, path: Path) -> Any:
        with path.open("rb") as content:
            return self.call("POST", "/v1/files", files={"file": (path.name, content)}, data={"purpose": "fine-tune"})

    def download(self, path: str, output: Path) -> int:
        """Stream `path` into `output` (through a `.part` file, renamed once complete); returns the bytes written."""
        partial = output.with_name(output.name + ".part")
        written = 0
        try:
            with self._http.stream("GET", path) as response:
                if response.status_code >= 400:
                    response.read()
                    _raise_for_error(response)
                with partial.open("wb") as sink:
                    for chunk in response.iter_bytes():
                        sink.write(chunk)
                        written += len(chunk)
        except httpx.TransportError as error:
            partial.unlink(missing_ok=True)
            raise self._unreachable(error) from None
        partial.replace(output)
        return written

    def job_events(self, job_id: str) -> Iterator[StreamMessage]:
        """The job's events as they happen, oldest first, then its END_EVENT; reconnects after a dropped
        connection, continuing after the last event received (Last-Event-ID)."""
        last_event_id: str | None = None
        timeout = httpx.Timeout(REQUEST_TIMEOUT_SECONDS, read=STREAM_READ_TIMEOUT_SECONDS)
        failures = 0
        while True:
            headers = {"Last-Event-ID": last_event_id} if last_event_id else {}
            try:
                with connect_sse(
                    self._http,
                    "GET",
                    f"/v1/fine_tuning/jobs/{job_id}/events?stream=true",
                    headers=headers,
                    timeout=timeout,
                ) as source:
                    if source.response.status_code >= 400:
                        source.response.read()
                        _raise_for_error(source.response)
                    for message in source.iter_sse():
                        if not message.data:
                            continue  # a heartbeat comment
                        failures = 0
                        if message.event == END_EVENT:
                            yield StreamMessage(END_EVENT, json.loads(message.data), None)
                            return
                        last_event_id = message.id or last_event_id
                        yield StreamMessage("event", json.loads(message.data), message.id)
            except httpx.TransportError as error:
                failures += 1
                if failures > RECONNECT_ATTEMPTS:
                    raise self._unreachable(error) from None
            time.sleep(min(2**failures, 10))  # the connection dropped (or the server restarted): reconnect

    def _unreachable(self, error: httpx.TransportError) -> ServiceError:
        return ServiceError(
            f"cannot reach the Graft service at {self.base_url} ({type(error).__name__}); check --base-url "
            "or GRAFT_BASE_URL, and that the service is up"
        )


@contextmanager
def service(base_url: str | None, api_key: str | None) -> Iterator[ServiceClient]:
    """A client whose refusals end the command with the service's message and exit code 2."""
    try:
        with ServiceClient(base_url, api_key) as client:
            yield client
    except ServiceError as error:
        error_console.print(f"[red]error:[/red] {escape(error.message)}", soft_wrap=True, highlight=False)
        raise typer.Exit(code=2) from None


def _raise_for_error(response: httpx.Response) -> None:
    if response.status_code < 400:
        return
    try:
        error = response.json()["error"]
        message = error["message"]
    except (ValueError, KeyError, TypeError):
        message = f"the service answered {response.status_code}: {response.text[:200]}"
    raise ServiceError(message, status_code=response.status_code)
