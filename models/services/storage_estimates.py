"""What a fine-tuning job will keep in the artifact store, estimated before it runs from its base model and strategy."""

from __future__ import annotations

from dataclasses import dataclass

from models.hyperparameters import ResolvedHyperparameters
from models.storage.tables import BaseModel
from models.strategies.common import BodyParameters, StrategySpecBase
from models.strategies.names import StrategyType

# Training and export hold every parameter in float32, whatever the base model's files use.
BYTES_PER_PARAMETER = 4
# A checkpoint holds the trainable weights and AdamW's two moments of each: three float32 copies.
CHECKPOINT_COPIES = 3
# RNG states (5 kB) and the trainer state with Python's random state (8 kB), measured on tiny BERT;
# the per-tensor headers of safetensors and pickle (about 0.4 kB a tensor) are left out, so the
# estimate stays below the real size: a job is refused only when it surely does not fit.
CHECKPOINT_FIXED_BYTES = 12 * 1024


@dataclass(frozen=True)
class JobStorageEstimate:
    """The bytes a job stores at its peak: its epoch checkpoints (kept until it succeeds), or its weights after.

    A run keeps one checkpoint per epoch end plus the newest mid-epoch one, which the next epoch
    end supersedes: `n_epochs` checkpoints at most (models.services.checkpoints). When the job succeeds
    they are deleted and the weights archive (every parameter, plus tokenizer files not counted
    here) stays.
    """

    base_model_id: str
    strategy: StrategyType
    trainable_parameters: int
    total_parameters: int
    checkpoints_kept: int

    @property
    def checkpoint_bytes(self) -> int:
        return CHECKPOINT_COPIES * BYTES_PER_PARAMETER * self.trainable_parameters + CHECKPOINT_FIXED_BYTES

    @property
    def weights_bytes(self) -> int:
        return BYTES_PER_PARAMETER * self.total_parameters

    @property
    def peak_bytes(self) -> int:
        return max(self.checkpoints_kept * self.checkpoint_bytes, self.weights_bytes)

    def describe(self) -> str:
        """How the peak comes about, for a refusal message."""
        return (
            f"{self.checkpoints_kept} epoch checkpoint(s) of {self.checkpoint_bytes} bytes each while it runs "
            f"(strategy {self.strategy.value} trains {self.trainable_parameters} of {self.base_model_id}'s "
            f"{self.total_parameters} parameters; a checkpoint holds them with AdamW's two moments), "
            f"then {self.weights_bytes} bytes of fine-tuned weights"
        )


def estimate_job_storage(
    base_model: BaseModel, strategy: StrategySpecBase, hyperparameters: ResolvedHyperparameters
) -> JobStorageEstimate | None:
    """The job's storage from the catalog's parameter counts; None when the catalog has none for the model.

    The new task head (hidden size × labels) is left out: a few thousand parameters.
    """
    embeddings, layers, top = base_model.embedding_parameters, base_model.layer_parameters, base_model.top_parameters
    if embeddings is None or layers is None or top is None:
        return None
    body = BodyParameters(embeddings=embeddings, layers=layers, top=top, num_layers=base_model.num_layers)
    return JobStorageEstimate(
        base_model_id=base_model.id,
        strategy=StrategyType(strategy.type_name()),
        trainable_parameters=strategy.most_trained_parameters(body),
        total_parameters=body.total,
        checkpoints_kept=hyperparameters.n_epochs,
    )
