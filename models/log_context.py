"""Log lines that say which request and which job they belong to, as plain text (the default) or as JSON.

The request id and the job id live in context variables: the API sets them per request
(api.request_ids), the runner and the training process per job. With GRAFT_LOG_FORMAT=json every
line is one JSON object carrying both (null where there is none).
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from enum import StrEnum

from pythonjsonlogger.json import JsonFormatter

request_id_var: ContextVar[str | None] = ContextVar("graft_request_id", default=None)
job_id_var: ContextVar[str | None] = ContextVar("graft_job_id", default=None)


class LogFormat(StrEnum):
    text = "text"
    json = "json"


class LogContextFilter(logging.Filter):
    """Puts the current request id and job id on every record that passes the handler."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id_var.get()
        record.job_id = getattr(record, "job_id", None) or job_id_var.get()
        return True


@contextmanager
def job_log_context(job_id: str) -> Iterator[None]:
    """Lines logged in this block name `job_id`."""
    token = job_id_var.set(job_id)
    try:
        yield
    finally:
        job_id_var.reset(token)


def configure_json_logging(*, level: str, process: str) -> None:
    """Every line of this process to stderr as JSON: time, level, logger, message, request_id, job_id, process.

    Replaces the root logger's handlers; loggers that propagate (uvicorn's, Celery's, ours) all go through it.
    """
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(LogContextFilter())
    handler.setFormatter(
        JsonFormatter(
            "{asctime}{levelname}{name}{message}{request_id}{job_id}",
            style="{",
            rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
            static_fields={"process": process},
            timestamp=False,
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access", "celery"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
