from __future__ import annotations

from typing import Annotated, Any, get_args, get_origin, get_type_hints

import pytest
from pydantic import AfterValidator, BaseModel, ValidationError

from models.strategies.common import L2SPRegularization, StrictSpec
from models.strategies.names import StrategyType
from models.strategies.partial import PartialSpec
from models.strategies.specs import SPEC_CLASSES, parse_strategy
from models.wire import common
from models.wire.common import StrictModel, UserText
from models.wire.jobs import HyperparametersSpec, JobCreate


def request_models() -> list[type[BaseModel]]:
    """Every request model: the wire's StrictModel, the strategies' StrictSpec, and their subclasses, however deep."""
    found: list[type[BaseModel]] = []
    pending: list[type[BaseModel]] = [StrictModel, StrictSpec]
    while pending:
        model = pending.pop()
        found.append(model)
        pending.extend(model.__subclasses__())
    return found


def plain_str_fields(annotation: Any, path: str) -> list[str]:
    """The places in `annotation` where a str is not UserText."""
    if get_origin(annotation) is Annotated:
        base, *metadata = get_args(annotation)
        if base is str and any(getattr(item, "func", None) is common._refuse_unstorable_text for item in metadata):
            return []
        return plain_str_fields(base, path)
    if annotation is str:
        return [path]
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        hints = get_type_hints(annotation, include_extras=True)
        return [found for name in annotation.model_fields for found in plain_str_fields(hints[name], f"{path}.{name}")]
    return [found for member in get_args(annotation) for found in plain_str_fields(member, f"{path}[]")]


def test_no_request_model_has_a_plain_str_field() -> None:
    models = request_models()
    assert {HyperparametersSpec, PartialSpec, L2SPRegularization, JobCreate} <= set(models)
    assert [path for model in models for path in plain_str_fields(model, model.__name__)] == []


def test_the_walk_finds_a_plain_str_wherever_it_hides() -> None:
    class Careless(BaseModel):
        name: str
        tags: dict[UserText, list[str | None]]
        note: Annotated[str, AfterValidator(str.strip)]

    assert plain_str_fields(Careless, "Careless") == ["Careless.name", "Careless.tags[][][]", "Careless.note"]


TEXT_FIELDS: list[tuple[dict[str, Any], str]] = [
    ({"model": "mini\ud800lm"}, "model"),
    ({"training_file": "file-\udfff"}, "training_file"),
    ({"validation_file": "file-\ud800"}, "validation_file"),
    ({"suffix": "my\ud800"}, "suffix"),
    ({"metadata": {"team": "\ud800"}}, "metadata.team"),
    ({"metadata": {"te\ud800am": "x"}}, "metadata"),
    ({"integrations": [{"\ud800": 1}]}, "integrations"),
    ({"model": "mini\x00lm"}, "model"),
]


@pytest.mark.parametrize(("fields", "field"), TEXT_FIELDS)
def test_every_request_string_refuses_text_that_cannot_be_stored(fields: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationError) as caught:
        JobCreate.model_validate({"training_file": "file-abc", **fields})
    [error] = caught.value.errors()
    # A str with length bounds is refused by pydantic's own check (string_unicode), before UserText's.
    assert error["type"] in ("string_unicode", "value_error")
    assert ".".join(str(part) for part in error["loc"]).startswith(field)


NUMERIC_FIELDS = ["n_epochs", "batch_size", "learning_rate_multiplier", "warmup_ratio", "max_length"]


@pytest.mark.parametrize("value", [True, False, "3", "0.5", "", None, [1], {"n": 1}])
@pytest.mark.parametrize("field", NUMERIC_FIELDS)
def test_hyperparameters_take_json_numbers_or_auto_only(field: str, value: Any) -> None:
    with pytest.raises(ValidationError):
        HyperparametersSpec.model_validate({field: value})


@pytest.mark.parametrize(
    ("strategy", "value"), [("partial", True), ("partial", "2"), ("layerwise_lr", True), ("layerwise_lr", "0.9")]
)
def test_strategy_knobs_take_json_numbers_or_auto_only(strategy: str, value: Any) -> None:
    knob = "trainable_layers" if strategy == "partial" else "layer_decay"
    with pytest.raises(ValidationError):
        parse_strategy({"type": strategy, knob: value})


def test_seed_takes_an_integer_only() -> None:
    for value in (True, "7", 7.0):
        with pytest.raises(ValidationError):
            JobCreate.model_validate({"training_file": "file-abc", "seed": value})
    assert JobCreate.model_validate({"training_file": "file-abc", "seed": 7}).seed == 7


def test_float_fields_accept_integers_as_floats() -> None:
    spec = HyperparametersSpec.model_validate({"learning_rate_multiplier": 2, "warmup_ratio": 0})
    assert (spec.learning_rate_multiplier, spec.warmup_ratio) == (2.0, 0.0)
    assert isinstance(spec.learning_rate_multiplier, float)
    assert parse_strategy({"type": "layerwise_lr", "layer_decay": 1}).layer_decay == 1.0


def test_auto_is_still_accepted_for_every_knob() -> None:
    assert HyperparametersSpec.model_validate(dict.fromkeys(NUMERIC_FIELDS, "auto")) == HyperparametersSpec()
    assert parse_strategy({"type": "partial", "trainable_layers": "auto"}).trainable_layers == "auto"


@pytest.mark.parametrize("strategy", list(StrategyType))
def test_a_bare_strategy_type_is_shorthand_for_the_object(strategy: StrategyType) -> None:
    spec = JobCreate.model_validate({"training_file": "file-abc", "strategy": strategy.value}).strategy
    assert spec == SPEC_CLASSES[strategy]()


def test_the_schema_documents_the_bare_strategy_type() -> None:
    [spec, shorthand] = JobCreate.model_json_schema()["properties"]["strategy"]["anyOf"]
    assert spec == {"oneOf": [{"$ref": f"#/$defs/{SPEC_CLASSES[kind].__name__}"} for kind in StrategyType]}
    assert shorthand["type"] == "string"
    assert shorthand["enum"] == [strategy.value for strategy in StrategyType]
