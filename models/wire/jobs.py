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
)
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema

from models.states import JobStatus
from models.storage.tables import Job
from models.strategies.full import FullSpec
from models.strategies.names import StrategyType
from models.strategies.specs import StrategySpec, parse_strategy
from models.tasks.names import Task
from models.wire.common import Auto, ErrorRead, StrictModel, UserText, unix_seconds

SUFFIX_PATTERN = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
MAX_METADATA_KEYS, MAX_METADATA_KEY_CHARS, MAX_METADATA_VALUE_CHARS = 16, 64, 512


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


class EarlyStoppingSpec(StrictModel):
    """Stop when a validation metric has stopped improving; the delivered weights are the best epoch's."""

    metric: UserText | Auto = Field(
        default="auto",
        description="A validation metric the task reports, e.g. valid_loss or valid_macro_f1; "
        '"auto" is the task\'s main metric.',
    )
    patience: StrictInt = Field(default=2, description="Epochs without improvement before stopping, 1 to 100.")
    min_delta: StrictFloat = Field(default=0.0, description="The least change that counts as improvement, ≥ 0.")

    @field_validator("patience")
    @classmethod
    def _patience_in_range(cls, value: int) -> int:
        if not 1 <= value <= 100:
            raise ValueError("must be between 1 and 100")
        return value

    @field_validator("min_delta")
    @classmethod
    def _delta_not_negative(cls, value: float) -> float:
        if value < 0:
            raise ValueError("must be at least 0")
        return value


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
    early_stopping: EarlyStoppingSpec | None = Field(
        default=None,
        description="Needs a validation_file: stop when the metric stops improving, and deliver the best epoch.",
    )

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
    strategy: Annotated[StrategySpec, _StrategyShorthandSchema] = Field(default_factory=FullSpec)

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


class EarlyStoppingRead(BaseModel):
    metric: str
    patience: int
    min_delta: float


class HyperparametersRead(BaseModel):
    n_epochs: int
    batch_size: int
    learning_rate_multiplier: float
    learning_rate: float
    warmup_ratio: float
    max_length: int
    weight_decay: float
    early_stopping: EarlyStoppingRead | None = None


class BestCheckpointRead(BaseModel):
    """The epoch whose weights a job delivered, when it stopped early; a Graft addition to the job object."""

    epoch: int
    step: int
    metrics: dict[str, float]


class ProgressRead(BaseModel):
    step: int
    total_steps: int
    epoch: int
    percent: float


class FreezePlanUnitRead(BaseModel):
    name: str = Field(description='"embeddings", "layer 0" … "layer N-1", "body top" or "head".')
    part: Literal["embeddings", "layers", "body_top", "head"]
    state: Literal["frozen", "trainable", "partly_trainable", "new"] = Field(
        description="`new`: the task head, initialised for this job; `partly_trainable`: some of its weights train."
    )
    parameters: int
    trainable_parameters: int
    learning_rate: float | None = Field(description="Peak learning rate of its training weights; null when frozen.")


class FreezePlanRead(BaseModel):
    """What trains in the current epoch, bottom to top; a Graft addition to the job object."""

    epoch: int
    units: list[FreezePlanUnitRead]


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


class JobPreviewRead(BaseModel):
    """What POST /v1/fine_tuning/jobs would create from the same body: the values training would use.

    A Graft addition: nothing is stored, and the same body is refused with the same errors.
    """

    object: Literal["fine_tuning.job.preview"] = "fine_tuning.job.preview"
    model: str
    task: Task
    strategy: StrategySpec
    hyperparameters: HyperparametersRead
    labels: list[str | int]
    training_file: str
    validation_file: str | None
    trainable_parameters: int | None = Field(description="Parameters the strategy trains at most; null if unknown.")
    total_parameters: int | None
    estimated_stored_bytes: int | None = Field(
        description="The job's peak storage (checkpoints while it runs, then the weights); null if unknown."
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
    strategy: StrategySpec
    labels: list[str | int]
    trainable_parameters: int | None
    total_parameters: int | None
    progress: ProgressRead | None
    performance: PerformanceRead | None = None
    attempt: int
    best_checkpoint: BestCheckpointRead | None = None
    freeze_plan: FreezePlanRead | None = None

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
            strategy=parse_strategy(job.strategy),
            labels=list(job.task_settings.get("labels", [])),
            best_checkpoint=BestCheckpointRead(**job.best_checkpoint) if job.best_checkpoint else None,
            trainable_parameters=job.trainable_parameters,
            total_parameters=job.total_parameters,
            progress=ProgressRead(**job.progress) if job.progress else None,
            estimated_finish=(job.progress or {}).get("estimated_finish") if job.status == JobStatus.running else None,
            freeze_plan=FreezePlanRead(**job.freeze_plan) if job.freeze_plan else None,
            performance=PerformanceRead(**job.performance) if job.performance else None,
            attempt=job.attempt,
        )
