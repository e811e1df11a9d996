"""What a task plugs into the training loop: processor, network with its head, examples, loss, evaluator."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn
from transformers import PreTrainedModel

from worker.training.run_spec import DataFile, RunSpec
from worker.training.speedups.model_pool import Template, TemplateKey

Batch = dict[str, torch.Tensor]


class Examples(Protocol):
    """A file's examples ready for the network; the loop only batches them by index."""

    def __len__(self) -> int: ...

    @property
    def lengths(self) -> torch.Tensor:
        """Per-example sizes (tokens), by which batches are grouped; also what `trained_tokens` counts."""
        ...

    def batch(self, indices: list[int]) -> Batch:
        """Examples `indices` collated into one batch of tensors, labels included."""
        ...


class Evaluator(Protocol):
    """A streaming metric: fed batch by batch during evaluation; keeps what the metric needs, never all logits."""

    def update(self, indices: list[int], batch: Batch, outputs: Any) -> None: ...

    def compute(self) -> dict[str, float]:
        """The metrics, by name without the `valid_` prefix (the loop adds it)."""
        ...


class EngineTask(Protocol):
    """One task's engine half. The loop calls these and branches on nothing else."""

    # Batch keys that hold targets: left out of inference-only passes (frozen features, probes).
    label_fields: tuple[str, ...]
    # Whether every token's state reaches the head (token classification, QA): then frozen features
    # are kept per token, and no probe for a first-token head is made.
    reads_every_token: bool

    def load_processor(self, spec: RunSpec) -> Any:
        """The tokenizer (or image processor, feature extractor) of the base model."""
        ...

    def template_key(self, spec: RunSpec, fingerprint: str) -> TemplateKey:
        """What the pretrained network with this task's head depends on (the model pool's key)."""
        ...

    def load_template(self, key: TemplateKey) -> Template:
        """The base model with this task's head (model_pool copies it per job)."""
        ...

    def prepare_network(self, network: PreTrainedModel, spec: RunSpec) -> None:
        """Write what the exported model must carry into the network's config (label names, say)."""
        ...

    def build_examples(self, data_file: DataFile, processor: Any, spec: RunSpec) -> Examples:
        """Read and encode a data file (already validated for this task at job creation)."""
        ...

    def loss_step(self, network: nn.Module, batch: Batch) -> tuple[torch.Tensor, Any]:
        """The training loss of one batch, and the network's outputs (which the evaluator reads)."""
        ...

    def evaluator(self, examples: Examples, spec: RunSpec) -> Evaluator:
        """A fresh evaluator over `examples` (the validation file's)."""
        ...

    def save_extras(self, folder: Path, network: nn.Module, processor: Any) -> None:
        """Write the files besides the weights that make the export load with plain transformers."""
        ...
