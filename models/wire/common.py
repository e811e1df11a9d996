"""What every wire shape shares: user text, strict request models, the error envelope and list pages."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Generic, Literal, TypeVar

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
)

from models.unicode_text import unstorable_text_fault

Auto = Literal["auto"]
T = TypeVar("T")
MAX_LIST_LIMIT = 100


def _refuse_unstorable_text(value: str) -> str:
    fault = unstorable_text_fault(value)
    if fault is not None:
        raise ValueError(fault)
    return value


# Every str of a request model is UserText (tests/models/test_schemas.py walks them all): text no
# database or response could carry is refused as a 400 naming its field, never met after a commit.
UserText = Annotated[str, AfterValidator(_refuse_unstorable_text)]


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ErrorBody(BaseModel):
    message: str
    type: str
    param: str | None
    code: str


class ErrorResponse(BaseModel):
    """OpenAI's error envelope, the body of every 4xx and 5xx."""

    error: ErrorBody


class ErrorRead(BaseModel):
    code: str
    message: str
    param: str | None = None


class ListPage(BaseModel, Generic[T]):
    object: Literal["list"] = "list"
    data: list[T]
    has_more: bool = False
    first_id: str | None = None
    last_id: str | None = None

    @classmethod
    def of(cls, data: list[T], has_more: bool = False) -> ListPage[T]:
        """A page whose first_id/last_id are its items' ids; clients pass last_id as the next `after`."""
        ids: list[str] = [item.id for item in data]  # type: ignore[attr-defined]
        return cls(data=data, has_more=has_more, first_id=ids[0] if ids else None, last_id=ids[-1] if ids else None)


def unix_seconds(moment: datetime) -> int:
    return int(moment.timestamp())
