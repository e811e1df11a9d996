"""Schemathesis against the app's own OpenAPI schema: no 5xx, and every response matches the schema."""

from __future__ import annotations

import json
import zlib
from typing import Any

import schemathesis
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from schemathesis.specs.openapi.checks import positive_data_acceptance
from schemathesis.transport.requests import REQUESTS_TRANSPORT, json_serializer

from api.main import create_app
from models.settings import Settings
from tests.conftest import make_tenant_key

FUZZ_EXAMPLES_PER_OPERATION = 25  # 15 operations × 25 ≈ 20 s on two cores


def test_no_operation_answers_5xx_or_off_schema(settings: Settings, minilm: str) -> None:
    headers = {"Authorization": f"Bearer {make_tenant_key(settings, 'fuzz')}"}
    schema = schemathesis.openapi.from_asgi("/openapi.json", create_app(settings))
    assert fuzz_every_operation(schema, headers, FUZZ_EXAMPLES_PER_OPERATION) >= 12


def fuzz_every_operation(schema: Any, headers: dict[str, str], examples: int) -> int:
    """Call every operation of `schema` with `examples` generated cases, validating each answer; returns
    how many operations there were."""
    operations = [result.ok() for result in schema.get_all_operations()]
    for operation in operations:

        @given(case=operation.as_strategy())
        @hypothesis_settings(
            max_examples=examples, deadline=None, suppress_health_check=list(HealthCheck), database=None
        )
        def fuzz(case: Any) -> None:
            # Schema-valid is not content-valid: a random upload is rarely a dataset, and random ids
            # name no object, so a 4xx for "valid" data is expected here and judged elsewhere.
            case.call_and_validate(headers=headers, excluded_checks=[positive_data_acceptance])

        fuzz()
    return len(operations)


HOSTILE_EXAMPLES_PER_OPERATION = 15
# Spliced into the strings of generated requests: unpaired surrogates (JSON bodies only: neither a
# URL nor a multipart form can carry one), control characters, bidirectional overrides and other
# format characters.
BODY_SPIKES = ["\ud800", "x\udfff", "\udbff\ud800", "\x00", "\x1b[2J", "\u202e", "\u2066", "\ufeff"]
TEXT_SPIKES = st.sampled_from(["\x00", "\x1b", "\u202e", "\ufeff", "\x7f"])


def spiked(value: Any, spike: str) -> Any:
    """`value` with `spike` appended to every string value in it (field names kept, or nothing would
    get past the unknown-field check), and to the keys of `metadata`, which are the user's own."""
    if isinstance(value, str):
        return value + spike
    if isinstance(value, dict):
        return {
            key: spiked(item, spike) if key != "metadata" or not isinstance(item, dict) else _spiked_keys(item, spike)
            for key, item in value.items()
        }
    if isinstance(value, list):
        return [spiked(item, spike) for item in value]
    return value


def _spiked_keys(mapping: dict[str, Any], spike: str) -> dict[str, Any]:
    return {key + spike: spiked(item, spike) for key, item in mapping.items()}


def spiking_json_serializer(_context: Any, value: Any) -> dict[str, Any]:
    """JSON bodies go out with a spike in every string, chosen from the body itself (so a failure replays).

    Spiked here, at serialization, because schemathesis validates a case's body with a JSON Schema
    library that cannot hold a lone surrogate; json.dumps escapes it (\\ud800) as any client must.
    """
    spike = BODY_SPIKES[zlib.crc32(repr(value).encode("utf-8", "backslashreplace")) % len(BODY_SPIKES)]
    return {"data": json.dumps(spiked(value, spike)).encode(), "headers": {"Content-Type": "application/json"}}


def test_no_operation_answers_5xx_to_strings_with_surrogates_or_control_characters(
    settings: Settings, minilm: str
) -> None:
    headers = {"Authorization": f"Bearer {make_tenant_key(settings, 'fuzz')}"}
    schema = schemathesis.openapi.from_asgi("/openapi.json", create_app(settings))

    @schema.hook("flatmap_case")
    def spike_query_and_form_strings(_context: Any, case: Any) -> Any:
        def spike(text_spike: str) -> Any:
            if case.query:
                case.query = spiked(case.query, text_spike)
            if (case.media_type or "").startswith("multipart/") and isinstance(case.body, dict):
                case.body = spiked(case.body, text_spike)
            return case

        return st.builds(spike, TEXT_SPIKES)

    REQUESTS_TRANSPORT.serializer("application/json")(spiking_json_serializer)
    try:
        fuzz_every_operation(schema, headers, HOSTILE_EXAMPLES_PER_OPERATION)
    finally:
        REQUESTS_TRANSPORT.serializer("application/json")(json_serializer)
