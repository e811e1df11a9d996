"""The fine-tuning job's wire shapes: the create request and the job object, OpenAI's fields plus Graft's."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    Field,
    GetJsonSchemaHandler,
    StrictFloat,
    StrictInt,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema

from models.states import JobStatus
from models.storage.tables import Job
from models.strategies.names import StrategyType
from models.tasks.names import Task
from models.wire.common import Auto, ErrorRead, StrictModel, UserText, unix_seconds

SUFFIX_PATTERN = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
MAX_METADATA_KEYS, MAX_METADATA_KEY_CHARS, MAX_METADATA_VALUE_CHARS = 16, 64, 512


class StrategySpec(StrictModel):
    """How much of the pretrained body learns again. Omitted knobs get the strategy's defaults.

    A bare type name is shorthand for the object of that type alone: `"partial"` reads as
    `{"type": "partial"}`.
    """

    type: StrategyType = StrategyType.full
    trainable_layers: StrictInt | Auto | None = Field(
        default=None, description="partial only: how many of the top transformer layers train."
    )
    layer_decay: StrictFloat | Auto | None = Field(
        default=None, description="layerwise_lr only: learning-rate factor per layer toward the input."
    )

    @model_validator(mode="before")
    @classmethod
    def _type_name_is_shorthand(cls, value: Any) -> Any:
        if isinstance(value, str):
            return {"type": value}
        if not isinstance(value, (dict, StrategySpec)):
            raise ValueError('must be a strategy type such as "partial", or an object such as {"type": "partial"}')
        return value

    @field_validator("trainable_layers")
    @classmethod
    def _layers_belong_to_partial(cls, value: int | str | None, info: ValidationInfo) -> int | str | None:
        if value is not None and info.data.get("type") is not StrategyType.partial:
            raise ValueError("applies only to strategy type 'partial'; remove it, or set strategy.type to 'partial'")
        if isinstance(value, int) and value < 1:
            raise ValueError("must be at least 1 (to freeze every layer, use strategy type 'feature_extraction')")
        return value

    @field_validator("layer_decay")
    @classmethod
    def _decay_belongs_to_layerwise(cls, value: float | str | None, info: ValidationInfo) -> float | str | None:
        if value is not None and info.data.get("type") is not StrategyType.layerwise_lr:
            raise ValueError(
                "applies only to strategy type 'layerwise_lr'; remove it, or set strategy.type to 'layerwise_lr'"
            )
        if isinstance(value, float) and not 0.0 < value <= 1.0:
            raise ValueError("must be more than 0 and at most 1")
        return value


class _StrategyShorthandSchema:
    """Documents the bare type name StrategySpec accepts beside the object, so the schema tells the truth."""

    @classmethod
    def __get_pydantic_json_schema__(cls, core_schema: CoreSchema, handler: GetJsonSchemaHandler) -> JsonSchemaValue:
        shorthand = {
            "type": "string",
            "enum": [strategy.value for strategy in StrategyType],
            "description": 'A strategy type alone, short for {"type": <it>}.',
        }
        return {"anyOf": [handler(core_schema), shorthand]}


class HyperparametersSpec(StrictModel):
    """Training knobs: JSON numbers, or "auto" for the strategy's default. Booleans and numeric strings are refused."""

    n_epochs: StrictInt | Auto = Field(default="auto", description="Passes over the training file, 1 to 100.")
    batch_size: StrictInt | Auto = Field(default="auto", description="Examples per optimiser step, 1 to 1024.")
    learning_rate_multiplier: StrictFloat | Auto = Field(
        default="auto", description="Scales the strategy's measured default learning rate; > 0 and ≤ 100."
    )
    warmup_ratio: StrictFloat | Auto = Field(
        default="auto", description="Fraction of steps spent warming up, 0 to 0.5."
    )
    max_length: StrictInt | Auto = Field(default="auto", description="Tokens kept per example, 8 to the model's limit.")

    @field_validator("n_epochs")
    @classmethod
    def _epochs_in_range(cls, value: int | str) -> int | str:
        if isinstance(value, int) and not 1 <= value <= 100:
            raise ValueError("must be between 1 and 100")
        return value

    @field_validator("batch_size")
    @classmethod
    def _batch_in_range(cls, value: int | str) -> int | str:
        if isinstance(value, int) and not 1 <= value <= 1024:
            raise ValueError("must be between 1 and 1024")
        return value

    @field_validator("learning_rate_multiplier")
    @classmethod
    def _multiplier_positive(cls, value: float | str) -> float | str:
        if isinstance(value, float) and not 0.0 < value <= 100.0:
            raise ValueError("must be more than 0 and at most 100")
        return value

    @field_validator("warmup_ratio")
    @classmethod
    def _warmup_in_range(cls, value: float | str) -> float | str:
        if isinstance(value, float) and not 0.0 <= value <= 0.5:
            raise ValueError("must be between 0 and 0.5")
        return value

    @field_validator("max_length")
    @classmethod
    def _length_floor(cls, value: int | str) -> int | str:
        if isinstance(value, int) and value < 8:
            raise ValueError("must be at least 8")
        return value


class SupervisedMethod(StrictModel):
    hyperparameters: HyperparametersSpec | None = None


class MethodSpec(StrictModel):
    """OpenAI's newer `method` field; only supervised fine-tuning exists here."""

    type: Literal["supervised"] = "supervised"
    supervised: SupervisedMethod | None = None


class JobCreate(StrictModel):
    model: UserText = Field(default="sentence-transformers/all-MiniLM-L6-v2", min_length=1, max_length=256)
    training_file: UserText = Field(min_length=1, max_length=64)
    validation_file: UserText | None = Field(default=None, max_length=64)
    hyperparameters: HyperparametersSpec | None = None
    method: MethodSpec | None = None
    suffix: UserText | None = None
    seed: StrictInt | None = Field(default=None, ge=0, le=2**31 - 1)
    metadata: dict[UserText, UserText] | None = None
    integrations: list[dict[UserText, Any]] | None = None
    task: Task = Task.text_classification
    strategy: Annotated[StrategySpec, _StrategyShorthandSchema] = Field(default_factory=StrategySpec)

    @field_validator("suffix")
    @classmethod
    def _suffix_is_safe(cls, value: str | None) -> str | None:
        if value is not None and not SUFFIX_PATTERN.fullmatch(value):
            raise ValueError("must be 1 to 64 characters of letters, digits, '-' and '_'")
        return value

    @field_validator("metadata")
    @classmethod
    def _metadata_is_bounded(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        if value is None:
            return None
        if len(value) > MAX_METADATA_KEYS:
            raise ValueError(f"holds {len(value)} keys; at most {MAX_METADATA_KEYS} are allowed")
        for key, item in value.items():
            if len(key) > MAX_METADATA_KEY_CHARS:
                raise ValueError(
                    f"key {key[:20]!r}… is {len(key)} characters long; keys hold at most {MAX_METADATA_KEY_CHARS}"
                )
            if len(item) > MAX_METADATA_VALUE_CHARS:
                raise ValueError(
                    f"the value of {key!r} is {len(item)} characters long; values hold at most "
                    f"{MAX_METADATA_VALUE_CHARS}"
                )
        return value

    @field_validator("integrations")
    @classmethod
    def _no_integrations(cls, value: list[dict[str, Any]] | None) -> list[dict[str, Any]] | None:
        if value:
            raise ValueError("are not supported by this server; send an empty list or leave the field out")
        return value

    @field_validator("method")
    @classmethod
    def _one_place_for_hyperparameters(cls, value: MethodSpec | None, info: ValidationInfo) -> MethodSpec | None:
        nested = value.supervised.hyperparameters if value and value.supervised else None
        if nested is not None and info.data.get("hyperparameters") is not None:
            raise ValueError(
                "hyperparameters are given both at the top level and in method.supervised; give them in one place"
            )
        return value

    def requested_hyperparameters(self) -> HyperparametersSpec:
        if self.method and self.method.supervised and self.method.supervised.hyperparameters:
            return self.method.supervised.hyperparameters
        return self.hyperparameters or HyperparametersSpec()


class HyperparametersRead(BaseModel):
    n_epochs: int
    batch_size: int
    learning_rate_multiplier: float
    learning_rate: float
    warmup_ratio: float
    max_length: int
    weight_decay: float


class StrategyRead(BaseModel):
    type: StrategyType
    trainable_layers: int | None = None
    layer_decay: float | None = None


class ProgressRead(BaseModel):
    step: int
    total_steps: int
    epoch: int
    percent: float


class PerformanceRead(BaseModel):
    """How fast the latest run trains and what it holds; a Graft addition to the job object."""

    samples_per_second: float | None = Field(None, description="Training examples per second since the run began.")
    tokens_per_second: float | None = Field(None, description="Training tokens (padding excluded) per second.")
    seconds_to_first_step: float | None = Field(
        None, description="From the training process taking the job to its first optimiser step."
    )
    peak_memory_bytes: int | None = Field(
        None, description="Peak GPU memory allocated by tensors on CUDA; the training process's peak RSS on CPU."
    )
    frozen_features: str | None = Field(
        None,
        description="How the frozen layers ran: computed once and held in memory (`cached`), in a file "
        "(`memory_mapped`), at every step (`recomputed`), or `not_applicable` (nothing frozen).",
    )


class JobRead(BaseModel):
    object: Literal["fine_tuning.job"] = "fine_tuning.job"
    id: str
    created_at: int
    error: ErrorRead | None
    fine_tuned_model: str | None
    finished_at: int | None
    hyperparameters: HyperparametersRead
    method: dict[str, Any]
    model: str
    organization_id: str
    result_files: list[str]
    seed: int
    status: JobStatus
    trained_tokens: int | None
    training_file: str
    validation_file: str | None
    estimated_finish: int | None = None
    integrations: list[dict[str, Any]] = Field(default_factory=list)
    metadata: dict[str, str] | None
    suffix: str | None
    task: Task
    strategy: StrategyRead
    labels: list[str | int]
    trainable_parameters: int | None
    total_parameters: int | None
    progress: ProgressRead | None
    performance: PerformanceRead | None = None
    attempt: int

    @classmethod
    def from_row(cls, job: Job) -> JobRead:
        hyperparameters = HyperparametersRead(**job.hyperparameters)
        error = (
            ErrorRead(code=job.error_code, message=job.error_message or "", param=job.error_param)
            if job.error_code
            else None
        )
        return cls(
            id=job.id,
            created_at=unix_seconds(job.created_at),
            error=error,
            fine_tuned_model=job.fine_tuned_model,
            finished_at=unix_seconds(job.finished_at) if job.finished_at else None,
            hyperparameters=hyperparameters,
            method={"type": "supervised", "supervised": {"hyperparameters": hyperparameters.model_dump()}},
            model=job.base_model_id,
            organization_id=job.tenant_id,
            result_files=list(job.result_files or []),
            seed=job.seed,
            status=JobStatus(job.status),
            trained_tokens=job.trained_tokens,
            training_file=job.training_file_id,
            validation_file=job.validation_file_id,
            metadata=job.user_metadata,
            suffix=job.suffix,
            task=Task(job.task),
            strategy=StrategyRead(**job.strategy),
            labels=list(job.label_names),
            trainable_parameters=job.trainable_parameters,
            total_parameters=job.total_parameters,
            progress=ProgressRead(**job.progress) if job.progress else None,
            performance=PerformanceRead(**job.performance) if job.performance else None,
            attempt=job.attempt,
        )
