"""Training checkpoints: everything a resumed run needs, written to a temporary folder and published whole."""

from __future__ import annotations

import json
import random
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from worker.training.blob_store import BlobStore

TRAINABLE_WEIGHTS = "trainable.safetensors"
OPTIMIZER_STATE = "optimizer.pt"
RNG_STATE = "rng.safetensors"
TRAINER_STATE = "trainer_state.json"
COMPLETE_MARKER = "COMPLETE"


@dataclass(frozen=True)
class TrainerState:
    """Where the run stood: `epoch` epochs finished and `batches_into_epoch` batches of the next one done."""

    step: int
    epoch: int
    batches_into_epoch: int
    metrics: dict[str, float]
    python_random_state: list[Any]
    scheduler: dict[str, Any]
    trained_tokens: int
    # The early-stopping tracker's state (worker.training.early_stopping), when the job stops early.
    early_stopping: dict[str, Any] | None = None


@dataclass(frozen=True)
class LoadedCheckpoint:
    trainable_weights: dict[str, torch.Tensor]
    optimizer: dict[str, Any]
    rng: dict[str, torch.Tensor]
    state: TrainerState


def save_checkpoint(
    store: BlobStore,
    key: str,
    *,
    network: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    step: int,
    epoch: int,
    batches_into_epoch: int,
    metrics: dict[str, float],
    trained_tokens: int,
    early_stopping: dict[str, Any] | None = None,
) -> int:
    """Write only trainable weights (frozen ones equal the base model's), optimiser, scheduler and RNG.

    The folder is written under a temporary name and renamed into place with a COMPLETE marker
    inside, so a reader never mistakes a half-written checkpoint for a usable one. Returns the
    bytes it published (the sum of its files), which count toward the tenant's storage quota.
    """
    folder = store.new_temporary_path()
    folder.mkdir(parents=True)
    trainable = {name: p.detach().contiguous().cpu() for name, p in network.named_parameters() if p.requires_grad}
    save_file(trainable, str(folder / TRAINABLE_WEIGHTS))
    torch.save(optimizer.state_dict(), folder / OPTIMIZER_STATE)
    save_file(_random_generator_states(), str(folder / RNG_STATE))
    state = TrainerState(
        step=step,
        epoch=epoch,
        batches_into_epoch=batches_into_epoch,
        metrics=metrics,
        python_random_state=_jsonable_random_state(),
        scheduler=scheduler.state_dict(),
        trained_tokens=trained_tokens,
        early_stopping=early_stopping,
    )
    (folder / TRAINER_STATE).write_text(json.dumps(asdict(state)), encoding="utf-8")
    (folder / COMPLETE_MARKER).write_text("", encoding="utf-8")
    size_bytes = sum(path.stat().st_size for path in folder.iterdir())
    store.publish(folder, key)
    return size_bytes


def load_trainable_weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(str(folder / TRAINABLE_WEIGHTS))


def load_checkpoint(folder: Path) -> LoadedCheckpoint:
    """Read a complete checkpoint; tensors from safetensors, the optimiser with weights_only (no pickle code)."""
    if not is_complete(folder):
        raise ValueError(f"{folder} is not a complete checkpoint")
    state = json.loads((folder / TRAINER_STATE).read_text(encoding="utf-8"))
    state.setdefault("batches_into_epoch", 0)  # checkpoints written before mid-epoch ones existed
    return LoadedCheckpoint(
        trainable_weights=load_trainable_weights(folder),
        optimizer=torch.load(folder / OPTIMIZER_STATE, weights_only=True),
        rng=load_file(str(folder / RNG_STATE)),
        state=TrainerState(**state),
    )


def _random_generator_states() -> dict[str, torch.Tensor]:
    """torch's CPU generator and, on a GPU machine, each device's: dropout draws from the latter there."""
    states = {"torch_cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        for index, state in enumerate(torch.cuda.get_rng_state_all()):
            states[f"cuda_{index}"] = state
    return states


def restore_random_generators(states: dict[str, torch.Tensor]) -> None:
    torch.set_rng_state(states["torch_cpu"])
    cuda_states = [states[f"cuda_{index}"] for index in range(len(states)) if f"cuda_{index}" in states]
    if cuda_states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda_states)


def restore_python_random_state(state: list[Any]) -> None:
    version, internal, gauss = state
    random.setstate((version, tuple(internal), gauss))


def is_complete(folder: Path) -> bool:
    return (folder / COMPLETE_MARKER).is_file()


def _jsonable_random_state() -> list[Any]:
    version, internal, gauss = random.getstate()
    return [version, list(internal), gauss]
