"""Job, event and checkpoint rows as the API shows them: one damaged stored row never breaks a response."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Sequence
from typing import Any, Protocol, TypeVar

from pydantic import BaseModel
from pydantic_core import PydanticSerializationError

from models.errors import GraftError
from models.services.checkpoints import checkpoint_model_name
from models.services.jobs import JobPlan
from models.storage.tables import Checkpoint, Job, JobEvent
from models.strategies.specs import parse_strategy
from models.wire.checkpoints import CheckpointRead
from models.wire.events import EventRead
from models.wire.jobs import HyperparametersRead, JobCreate, JobPreviewRead, JobRead

logger = logging.getLogger(__name__)

# What is stored is not always what a response can carry. JSON columns decode `"\ud800"` to a lone
# surrogate, which UTF-8 (and so a response body) cannot encode: such a row is shown with each one
# replaced by U+FFFD. A row written before a field existed lacks it, and no object can be built from
# it: a list leaves it out, a single read raises UnservableRow, and both log the fault.
ReadT = TypeVar("ReadT", bound=BaseModel)
_SURROGATE = re.compile("[\ud800-\udfff]")


class Row(Protocol):
    @property
    def id(self) -> str: ...


RowT = TypeVar("RowT", bound=Row)


class UnservableRow(GraftError):
    """A stored row no API object can be built from (a JSON column lacking a field, say): a server-side fault, 500."""


def job_read(job: Job) -> JobRead:
    """The JobRead of a row, safe to serialize. Raises UnservableRow."""
    return _servable(f"Job {job.id}", lambda: JobRead.from_row(job))


def job_body(job: Job) -> bytes:
    """The JSON body of `job_read(job)`; the common case costs one serialization. Raises UnservableRow."""
    try:
        return JobRead.from_row(job).model_dump_json().encode()
    except (ValueError, TypeError, PydanticSerializationError):
        # Rebuilt on the careful path, which says what is wrong (and logs it) or repairs it.
        return job_read(job).model_dump_json().encode()


def preview_read(spec: JobCreate, plan: JobPlan) -> JobPreviewRead:
    """The preview of a create request from what `jobs.plan_job` resolved."""
    storage = plan.storage
    return JobPreviewRead(
        model=plan.base_model.id,
        task=spec.task,
        strategy=parse_strategy(plan.strategy.model_dump(mode="json")),
        hyperparameters=HyperparametersRead(**plan.hyperparameters.as_dict()),
        labels=list(plan.task_settings.get("labels", [])),
        training_file=plan.training.id,
        validation_file=plan.validation.id if plan.validation else None,
        trainable_parameters=storage.trainable_parameters if storage else None,
        total_parameters=storage.total_parameters if storage else None,
        estimated_stored_bytes=storage.peak_bytes if storage else None,
    )


def event_read(event: JobEvent) -> EventRead:
    """The EventRead of a row, safe to serialize. Raises UnservableRow."""
    return _servable(f"Event {event.id} of job {event.job_id}", lambda: EventRead.from_row(event))


def checkpoint_read(job: Job, checkpoint: Checkpoint) -> CheckpointRead:
    """The CheckpointRead of a row, safe to serialize. Raises UnservableRow."""
    return _servable(
        f"Checkpoint {checkpoint.id} of job {job.id}",
        lambda: CheckpointRead.from_row(checkpoint, checkpoint_model_name(job, checkpoint)),
    )


def fill_page(
    fetch: Callable[[str | None, int], tuple[Sequence[RowT], bool]],
    build: Callable[[RowT], ReadT],
    *,
    after: str | None,
    limit: int,
) -> tuple[list[ReadT], bool]:
    """Up to `limit` objects built from the rows that `fetch(after, count)` pages through, and has_more.

    A row that raises UnservableRow is left out (`build` logged it) and the page is filled from the
    rows after it, so that a page is never cut short, or emptied, by damaged rows while more follow.
    """
    served: list[ReadT] = []
    while True:
        rows, has_more = fetch(after, limit - len(served))
        for row in rows:
            try:
                served.append(build(row))
            except UnservableRow:
                continue  # logged where it was raised; the rest of the list is still served
        if len(served) >= limit or not has_more or not rows:
            return served, has_more
        after = rows[-1].id


def _servable(what: str, build: Callable[[], ReadT]) -> ReadT:
    try:
        read = build()
    except (ValueError, TypeError) as error:  # pydantic's ValidationError is a ValueError
        # %a: the error may quote the very characters a log file cannot encode.
        logger.error("%s cannot be shown: its stored row is damaged: %a", what, str(error))
        raise UnservableRow(
            f"{what} cannot be shown: its stored record is damaged. Ask the server's administrator to "
            "repair it; the server's log says which field is at fault.",
        ) from error
    dumped = read.model_dump()
    if not _holds_surrogates(dumped):
        return read
    logger.warning("%s holds unpaired surrogates (not UTF-8); they are shown as U+FFFD", what)
    return type(read).model_validate(_replace_surrogates(dumped))


def _holds_surrogates(value: Any) -> bool:
    if isinstance(value, str):
        return not value.isascii() and _SURROGATE.search(value) is not None
    if isinstance(value, dict):
        return any(_holds_surrogates(key) or _holds_surrogates(item) for key, item in value.items())
    if isinstance(value, list | tuple):
        return any(_holds_surrogates(item) for item in value)
    return False


def _replace_surrogates(value: Any) -> Any:
    if isinstance(value, str):
        # A well-formed pair becomes its one character; an unpaired surrogate becomes U+FFFD.
        return value.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    if isinstance(value, dict):
        return {_replace_surrogates(key): _replace_surrogates(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_replace_surrogates(item) for item in value]
    return value
