"""What every strategy spec shares: strictness, "auto", the defaults it names, and the L2-SP regulariser."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, StrictFloat, field_validator

from models.errors import InvalidRequest
from models.hyperparameters import DEFAULT_BATCH_SIZE, DEFAULT_MAX_LENGTH
from models.strategies.names import RegularizationType

Auto = Literal["auto"]
DEFAULT_L2_SP_ALPHA = 0.01  # Li et al. (2018) use α = 0.01 beside weight decay on the new head


@dataclass(frozen=True)
class BodyParameters:
    """A base model's parameters by part (models.services.catalog reads them from its weights)."""

    embeddings: int
    layers: int  # all layers together
    top: int  # what sits above the layers: a final norm, a pooler
    num_layers: int

    @property
    def total(self) -> int:
        return self.embeddings + self.layers + self.top


@dataclass(frozen=True)
class StrategyDefaults:
    """A strategy's measured training defaults (README, "Defaults, by measurement")."""

    learning_rate: float
    n_epochs: int
    warmup_ratio: float
    weight_decay: float
    max_length: int = DEFAULT_MAX_LENGTH  # a task whose records run long (QA contexts) sets its own
    batch_size: int = DEFAULT_BATCH_SIZE  # at most the training file's records


class StrictSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")


class L2SPRegularization(StrictSpec):
    """L2-SP: α/2·‖θ − θ₀‖² over the pretrained parameters that train, added to the loss against forgetting."""

    type: Literal[RegularizationType.l2_sp] = RegularizationType.l2_sp
    alpha: StrictFloat | Auto = Field(default="auto", description="Strength of the pull toward θ₀; > 0 and ≤ 100.")

    @field_validator("alpha")
    @classmethod
    def _alpha_in_range(cls, value: float | str) -> float | str:
        if isinstance(value, float) and not 0.0 < value <= 100.0:
            raise ValueError("must be more than 0 and at most 100")
        return value

    def resolved(self) -> L2SPRegularization:
        return self.model_copy(update={"alpha": DEFAULT_L2_SP_ALPHA if self.alpha == "auto" else self.alpha})


class StrategySpecBase(StrictSpec):
    """A strategy as a job asks for it; `resolved` fills every "auto" for the model at hand."""

    defaults: ClassVar[StrategyDefaults]
    # Whether pretrained weights train (so L2-SP has something to hold back), and whether the
    # strategy must know the model's layer stack (so an unsplittable architecture cannot take it).
    trains_pretrained_weights: ClassVar[bool] = True
    needs_layers: ClassVar[bool] = True

    regularization: L2SPRegularization | None = Field(
        default=None, description='{"type": "l2_sp", "alpha": …}: pull the pretrained weights toward their start.'
    )

    def resolved(self, num_layers: int) -> Self:
        """This spec with every "auto" filled; raises InvalidRequest naming the field that does not fit."""
        spec = self._resolved_knobs(num_layers)
        if self.regularization is None:
            return spec
        if not self.trains_pretrained_weights:
            raise InvalidRequest(
                f"strategy.regularization: strategy type '{self.type_name()}' trains no pretrained weight, so "
                "there is nothing for L2-SP to hold back; remove it, or use a strategy that trains the body",
                param="strategy.regularization",
            )
        return spec.model_copy(update={"regularization": self.regularization.resolved()})

    def _resolved_knobs(self, num_layers: int) -> Self:
        return self

    def most_trained_parameters(self, body: BodyParameters) -> int:
        """The most pretrained parameters the strategy trains at once (what a checkpoint holds at most),
        counting layers as equal in size; the new head's few thousand are left out. Everything, unless
        the strategy says otherwise."""
        return body.total

    def type_name(self) -> str:
        return str(getattr(self, "type", ""))


def check_layer_decay(value: float | str | None) -> float | str | None:
    if isinstance(value, float) and not 0.0 < value <= 1.0:
        raise ValueError("must be more than 0 and at most 1")
    return value
