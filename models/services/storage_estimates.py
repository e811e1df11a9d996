"""What a fine-tuning job will keep in the artifact store, estimated before it runs from its base model and strategy."""

from __future__ import annotations

from dataclasses import dataclass

from models.hyperparameters import ResolvedHyperparameters, ResolvedStrategy
from models.storage.tables import BaseModel
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
    base_model: BaseModel, strategy: ResolvedStrategy, hyperparameters: ResolvedHyperparameters
) -> JobStorageEstimate | None:
    """The job's storage from the catalog's parameter counts; None when the catalog has none for the model.

    The new task head (hidden size × labels) is left out: a few thousand parameters.
    """
    embeddings, layers, top = base_model.embedding_parameters, base_model.layer_parameters, base_model.top_parameters
    if embeddings is None or layers is None or top is None:
        return None
    return JobStorageEstimate(
        base_model_id=base_model.id,
        strategy=strategy.type,
        trainable_parameters=trainable_parameters(strategy, base_model.num_layers, embeddings, layers, top),
        total_parameters=embeddings + layers + top,
        checkpoints_kept=hyperparameters.n_epochs,
    )


def trainable_parameters(strategy: ResolvedStrategy, num_layers: int, embeddings: int, layers: int, top: int) -> int:
    """What each strategy trains (worker.training.strategies), counted with layers of equal size.

    feature_extraction: the head above the layers (BERT's pooler); partial: its top layers and that
    head; full and layerwise_lr: everything.
    """
    if strategy.type is StrategyType.feature_extraction:
        return top
    if strategy.type is StrategyType.partial:
        assert strategy.trainable_layers is not None
        return layers * strategy.trainable_layers // max(num_layers, 1) + top
    return embeddings + layers + top
