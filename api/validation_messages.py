"""Pydantic's validation errors in plain English: the field at fault, and what it takes."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from types import UnionType
from typing import Annotated, Any, Union, get_args, get_origin

from fastapi import Request
from pydantic import BaseModel

from models.strategies.names import StrategyType
from models.unicode_text import unstorable_text_fault

_LOCATION_ROOTS = {"body", "query", "path", "header"}
_TYPE_TAGS = {"int", "float", "str", "bool", "dict", "list", "none"}
# The member a tagged union (`strategy`, told apart by `type`) was validated as: pydantic puts its tag
# in the location, after the field; the user's field path has no such part.
_UNION_TAGS = {kind.value for kind in StrategyType}


def field_path(location: Sequence[int | str]) -> str | None:
    """`hyperparameters.n_epochs` from pydantic's location, without its request part and union-member tags.

    Pydantic adds the member type it tried (`int`, `literal['auto']`, `function-after[...]`) to a
    union field's location; the user's field is what precedes it. A dict key at fault (`[key]`) is
    named by its dict: the key itself is the user's text, not a field.
    """
    parts: list[str] = []
    for part in location:
        if isinstance(part, int) or part in _LOCATION_ROOTS:
            continue
        if part == "[key]":
            del parts[-1:]
            break
        if part in _TYPE_TAGS or "[" in part or "(" in part:
            break
        if part in _UNION_TAGS:
            continue
        parts.append(part)
    return ".".join(parts) or None


_NUMBER_ERRORS = {"int_type": "an integer", "int_parsing": "an integer", "int_from_float": "an integer"}
_NUMBER_ERRORS |= {"float_type": "a number", "float_parsing": "a number", "finite_number": "a finite number"}
_BOUND_WORDS = {
    "greater_than_equal": ("ge", "at least"),
    "greater_than": ("gt", "more than"),
    "less_than_equal": ("le", "at most"),
    "less_than": ("lt", "less than"),
}
_OBJECT_ERRORS = {"dict_type", "model_type", "model_attributes_type", "mapping_type"}


def describe_validation_error(
    errors: Sequence[Mapping[str, Any]], body_model: type[BaseModel] | None = None
) -> tuple[str | None, str]:
    """(param, message) for the first of pydantic's errors, in plain English; the message starts with the field.

    A union field (`int | "auto"`) fails once per member: those errors are read together, so the
    message says every form the field takes. `body_model` names the fields an unknown one could be.
    """
    first = errors[0]
    location = tuple(first.get("loc", ()))
    error_type = str(first.get("type", ""))
    if error_type == "json_invalid":
        position = location[1] if len(location) > 1 else 0
        return None, (
            "the request body must be a JSON object, and what was sent is not valid JSON "
            f"(the first error is at character {position})"
        )
    param = field_path(location)
    if error_type in ("union_tag_invalid", "union_tag_not_found") and param is not None:
        # The object's `type` names no member of the union (or is not a string).
        tags = str((first.get("ctx") or {}).get("expected_tags", "")).split(", ")
        expected = tags[0] if len(tags) == 1 else f"{', '.join(tags[:-1])} or {tags[-1]}"
        given = first.get("input")
        tag = given.get("type") if isinstance(given, Mapping) else given
        return f"{param}.type", f"{param}.type: must be one of {expected}, not {_json_kind(tag)}"
    in_body = location[:1] == ("body",)
    if error_type == "string_unicode" and in_body and _model_at(body_model, location[1:]) is not None:
        # pydantic could not read a field name of this object: the name is the user's text, not a field.
        fault = unstorable_text_fault(str(first.get("input", ""))) or "holds text that is not valid Unicode"
        return param, f"{param or 'the request body'}: a field name {fault}"
    if param is None:
        if error_type == "missing":
            return None, 'the request body is empty; send a JSON object such as {"training_file": "file-…"}'
        if isinstance(first.get("input"), (bytes, bytearray)):  # FastAPI reads no JSON from another content type
            return None, "the request body must be a JSON object, sent with Content-Type: application/json"
        return None, f"the request body must be a JSON object, not {_json_kind(first.get('input'))}"
    together = [error for error in errors if field_path(tuple(error.get("loc", ()))) == param]
    message = _describe_field_error(first, together, location, body_model)
    if "[key]" in location:
        message = f"a key {message}"
    return param, f"{param}: {message}"


def _describe_field_error(
    first: Mapping[str, Any],
    together: list[Mapping[str, Any]],
    location: tuple[int | str, ...],
    body_model: type[BaseModel] | None,
) -> str:
    error_type = str(first.get("type", ""))
    context: Mapping[str, Any] = first.get("ctx") or {}
    received = _json_kind(first.get("input"))
    types = {str(error.get("type")) for error in together}
    allows_auto = any(
        error.get("type") == "literal_error" and (error.get("ctx") or {}).get("expected") == "'auto'"
        for error in together
    )
    numbers = [_NUMBER_ERRORS[kind] for kind in types if kind in _NUMBER_ERRORS]
    if numbers:
        wanted = "an integer" if "an integer" in numbers else numbers[0]
        alternative = ' or "auto"' if allows_auto else ""
        return f"must be {wanted}{alternative}, not {received}"
    if error_type == "missing":
        return "missing required field"
    if error_type == "string_unicode":  # a str with length bounds: pydantic refuses an unpaired surrogate itself
        return unstorable_text_fault(str(first.get("input", ""))) or "holds text that is not valid Unicode"
    if error_type == "extra_forbidden":
        name = str(location[-1])
        owner = _union_member_with_field(body_model, location)
        if owner is not None:
            union, tag = owner
            return f"applies only to {union} type '{tag}'; remove it, or set {union}.type to '{tag}'"
        accepted = _accepted_fields(body_model, location)
        advice = f"this API accepts {', '.join(accepted)}" if accepted else "remove it"
        return f"unknown field {json.dumps(name)}; {advice}"
    if error_type in ("literal_error", "enum"):
        return f"must be one of {context.get('expected', '')}, not {received}"
    if error_type in ("bool_type", "bool_parsing"):
        return f"must be true or false, not {received}"
    if error_type == "string_type":
        return f"must be a string, not {received}"
    if error_type == "string_too_short":
        minimum = context.get("min_length", 1)
        return "must not be empty" if minimum == 1 else f"must be at least {minimum} characters long"
    if error_type == "string_too_long":
        return f"must be at most {context.get('max_length')} characters long"
    if error_type in _BOUND_WORDS:
        key, words = _BOUND_WORDS[error_type]
        return f"must be {words} {context.get(key)}"
    if error_type in _OBJECT_ERRORS:
        return f"must be a JSON object, not {received}"
    if error_type == "list_type":
        return f"must be a JSON array, not {received}"
    return str(first.get("msg", "is not valid")).removeprefix("Value error, ")


def _json_kind(value: Any) -> str:
    """What a JSON value is, in words; short strings are quoted (json.dumps escapes any surrogate)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return json.dumps(value) if abs(value) < 1e15 else "a number"
    if isinstance(value, str):
        return f"the string {json.dumps(value)}" if len(value) <= 20 else "a string"
    if isinstance(value, (list, tuple)):
        return "an array"
    return "an object"


def _union_member_with_field(
    body_model: type[BaseModel] | None, location: tuple[int | str, ...]
) -> tuple[str, str] | None:
    """For a field unknown to the union member the object was read as, the union field and the tag of a
    member that has it (`("strategy", "partial")`); None when no union tag is in the location or no member has it."""
    if len(location) < 3 or location[-2] not in _UNION_TAGS:
        return None
    union_model = _model_at(body_model, location[1:-3])
    field = union_model.model_fields.get(str(location[-3])) if union_model is not None else None
    members = _models_in(field.annotation) if field is not None else []
    for member in members:
        tag = member.model_fields.get("type")
        if str(location[-1]) in member.model_fields and tag is not None:
            return str(location[-3]), str(tag.default)
    return None


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    if get_origin(annotation) in (Union, UnionType, Annotated):
        return [found for member in get_args(annotation) for found in _models_in(member)]
    return []


def _accepted_fields(body_model: type[BaseModel] | None, location: tuple[int | str, ...]) -> list[str]:
    """The fields of the model holding `location`'s last part; [] when that model is unknown."""
    model = _model_at(body_model, location[1:-1])
    return list(model.model_fields) if model is not None else []


def _model_at(body_model: type[BaseModel] | None, names: Sequence[int | str]) -> type[BaseModel] | None:
    """The model found by following the field `names` down from `body_model`; None if they lead to none.

    A union member's tag among the names picks that member (`strategy`, `partial` → PartialSpec).
    """
    model = body_model
    annotation: Any = None
    for name in names:
        if isinstance(name, int):
            continue
        if name in _UNION_TAGS and annotation is not None:
            model = _model_in(annotation, tag=name)
            continue
        field = model.model_fields.get(name) if model is not None else None
        annotation = field.annotation if field is not None else None
        model = _model_in(annotation)
    return model


def _model_in(annotation: Any, tag: str | None = None) -> type[BaseModel] | None:
    """The pydantic model inside `annotation` (`Spec | None`, `Annotated[Spec, …]`), if there is one;
    with `tag`, the union member whose `type` defaults to it."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        if tag is None:
            return annotation
        field = annotation.model_fields.get("type")
        return annotation if field is not None and field.default == tag else None
    if get_origin(annotation) in (Union, UnionType, Annotated):
        for member in get_args(annotation):
            found = _model_in(member, tag)
            if found is not None:
                return found
    return None


def body_model_of(request: Request) -> type[BaseModel] | None:
    """The model of the matched route's JSON body, if it has one."""
    body_field = getattr(request.scope.get("route"), "body_field", None)
    annotation = getattr(getattr(body_field, "field_info", None), "annotation", None)
    return _model_in(annotation)
