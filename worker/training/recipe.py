"""The one training loop: set up a task network under a strategy, train, evaluate, checkpoint, export."""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader
from transformers import PreTrainedModel, PreTrainedTokenizerBase, get_linear_schedule_with_warmup

from models.errors import JobErrorCode
from models.storage import ArtifactStore
from worker.training.checkpoints import (
    checkpoint_key,
    load_checkpoint,
    restore_python_random_state,
    restore_random_generators,
    save_checkpoint,
)
from worker.training.config import TrainingConfig
from worker.training.export import ExportManifest, export_model_archive
from worker.training.heads import TASKS, EncodedExamples, TaskAdapter
from worker.training.reporting import StepProgress, TrainingFailure, TrainingReporter
from worker.training.strategies import (
    FreezePlan,
    optimizer_parameter_groups,
    plan_freezing,
    set_training_mode,
)

MAX_GRADIENT_NORM = 1.0


@dataclass(frozen=True)
class TrainingPosition:
    """Where training stands: epochs finished, batches done of the next one, optimiser steps, tokens."""

    epochs_done: int
    batches_into_epoch: int
    step: int
    trained_tokens: int


class CheckpointKind(StrEnum):
    epoch = "epoch"  # an epoch end, with validation metrics
    interval = "interval"  # mid-epoch, because checkpoint_interval_seconds passed
    stop = "stop"  # mid-epoch, because the run was asked to stop (pause, worker shutdown)


class TrainingStopped(Exception):
    """The run stopped on request after checkpointing; `step` is where a resumed run continues."""

    def __init__(self, step: int) -> None:
        super().__init__(f"stopped at step {step}")
        self.step = step


def never_stop() -> bool:
    return False


@dataclass(frozen=True)
class RunControl:
    """How the outside steers a run: the longest stretch between checkpoints, and a stop request."""

    checkpoint_interval_seconds: float = math.inf
    stop_requested: Callable[[], bool] = never_stop


EVAL_BATCH_SIZE = 128


class FineTuningRecipe:
    """torchtune's shape: `setup`, then `train` with the loop in plain sight, then `export`.

    The recipe knows nothing of databases or settings: it reads a TrainingConfig, writes blobs to
    the artifact store and tells a TrainingReporter what happened.
    """

    def __init__(
        self,
        config: TrainingConfig,
        store: ArtifactStore,
        reporter: TrainingReporter,
        control: RunControl | None = None,
    ) -> None:
        self.config = config
        self.store = store
        self.reporter = reporter
        self.control = control or RunControl()
        self.task: TaskAdapter = TASKS[config.task]
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")

    def setup(self) -> None:
        """Seed, load the base model with a new head, freeze per strategy, tokenise, build the optimiser."""
        self._seed_everything(self.config.seed)
        try:
            self.tokenizer: PreTrainedTokenizerBase = self.task.load_tokenizer(self.config)
            self.network: PreTrainedModel = self.task.load_network(self.config)
        except (OSError, ValueError) as error:
            raise TrainingFailure(
                JobErrorCode.base_model_unavailable,
                f"could not load base model from {self.config.base_model_location}: {error}",
            ) from error
        torch.nn.Module.to(self.network, self.device)
        self.plan: FreezePlan = plan_freezing(self.network, self.config.num_layers, self.config.strategy)
        self.training_examples = self.task.encode_file(self.config.training_file, self.tokenizer, self.config)
        self.validation_examples: EncodedExamples | None = (
            self.task.encode_file(self.config.validation_file, self.tokenizer, self.config)
            if self.config.validation_file
            else None
        )
        hyper = self.config.hyperparameters
        self.steps_per_epoch = math.ceil(len(self.training_examples) / hyper.batch_size)
        self.total_steps = self.steps_per_epoch * hyper.n_epochs
        self.optimizer = torch.optim.AdamW(
            optimizer_parameter_groups(self.plan, hyper.learning_rate, hyper.weight_decay),
            lr=hyper.learning_rate,
        )
        self.scheduler = get_linear_schedule_with_warmup(
            self.optimizer,
            num_warmup_steps=math.ceil(hyper.warmup_ratio * self.total_steps),
            num_training_steps=self.total_steps,
        )
        self.trainable_parameters = sum(p.numel() for p in self.network.parameters() if p.requires_grad)
        self.total_parameters = sum(p.numel() for p in self.network.parameters())
        self.position = TrainingPosition(epochs_done=0, batches_into_epoch=0, step=0, trained_tokens=0)
        self.last_checkpoint_step = 0
        self.reporter.run_started(
            trainable_parameters=self.trainable_parameters,
            total_parameters=self.total_parameters,
            total_steps=self.total_steps,
            examples=len(self.training_examples),
        )

    def resume(self, folder: Path) -> int:
        """Continue from a complete checkpoint (call after `setup`): weights, optimiser, schedule, RNG, position.

        Each epoch's batch order is a function of (seed, epoch), so a checkpoint taken mid-epoch
        continues with the very batches an uninterrupted run would have drawn next. Returns its step.
        """
        checkpoint = load_checkpoint(folder)
        trainable = {name for name, p in self.network.named_parameters() if p.requires_grad}
        if set(checkpoint.trainable_weights) != trainable:
            raise ValueError(f"checkpoint {folder.name} does not match this job's trainable parameters")
        self.network.load_state_dict(checkpoint.trainable_weights, strict=False)
        self.optimizer.load_state_dict(checkpoint.optimizer)
        self.scheduler.load_state_dict(checkpoint.state.scheduler)
        restore_random_generators(checkpoint.rng)
        restore_python_random_state(checkpoint.state.python_random_state)
        self.position = TrainingPosition(
            epochs_done=checkpoint.state.epoch,
            batches_into_epoch=checkpoint.state.batches_into_epoch,
            step=checkpoint.state.step,
            trained_tokens=checkpoint.state.trained_tokens,
        )
        self.last_checkpoint_step = checkpoint.state.step
        return checkpoint.state.step

    def epoch_batches(self, epoch: int, skip_batches: int = 0) -> DataLoader[Any]:
        """Epoch `epoch`'s batches in its own shuffled order, from batch `skip_batches` on.

        The order comes from a generator seeded with (seed, epoch), and the loader gets a generator
        of its own too: left without one it draws from torch's global RNG, which would shift the
        dropout masks of a run resumed mid-epoch.
        """
        order = torch.randperm(
            len(self.training_examples), generator=torch.Generator().manual_seed(self.config.seed + epoch)
        )
        batch_size = self.config.hyperparameters.batch_size
        return DataLoader(
            self.training_examples,
            batch_size=batch_size,
            sampler=order[skip_batches * batch_size :].tolist(),
            generator=torch.Generator().manual_seed(self.config.seed),
            collate_fn=self.task.collator(self.tokenizer),
        )

    def train(self) -> int:
        """Run every remaining epoch; returns the tokens trained on.

        Checkpoints at each epoch end (after validation), whenever `checkpoint_interval_seconds`
        of training passed since the last one, and when a stop is requested; the latter then
        raises TrainingStopped.
        """
        step, trained_tokens, samples_seen = self.position.step, self.position.trained_tokens, 0
        started = last_checkpoint = time.monotonic()
        skip_batches = self.position.batches_into_epoch
        for epoch in range(self.position.epochs_done + 1, self.config.hyperparameters.n_epochs + 1):
            set_training_mode(self.network, self.plan)
            for batch_index, batch in enumerate(self.epoch_batches(epoch, skip_batches), start=skip_batches):
                if self.control.stop_requested():
                    self._stop(step=step, epoch=epoch, batches_into_epoch=batch_index, trained_tokens=trained_tokens)
                batch = {name: tensor.to(self.device) for name, tensor in batch.items()}
                loss = self.network(**batch).loss
                if not torch.isfinite(loss):
                    raise TrainingFailure(
                        JobErrorCode.training_diverged,
                        f"training loss became {loss.item()} at step {step + 1}; "
                        "lower hyperparameters.learning_rate_multiplier",
                    )
                loss.backward()
                torch.nn.utils.clip_grad_norm_(
                    [p for p in self.network.parameters() if p.requires_grad], MAX_GRADIENT_NORM
                )
                self.optimizer.step()
                self.scheduler.step()
                self.optimizer.zero_grad(set_to_none=True)
                step += 1
                trained_tokens += int(batch["attention_mask"].sum().item())
                samples_seen += int(batch["labels"].shape[0])
                elapsed = max(time.monotonic() - started, 1e-9)
                self.reporter.step_finished(
                    StepProgress(
                        step=step,
                        total_steps=self.total_steps,
                        epoch=epoch,
                        train_loss=float(loss.item()),
                        learning_rate=float(self.scheduler.get_last_lr()[0]),
                        samples_per_second=samples_seen / elapsed,
                        tokens_per_second=(trained_tokens - self.position.trained_tokens) / elapsed,
                        trained_tokens=trained_tokens,
                    )
                )
                batches_done = batch_index + 1
                if (
                    batches_done < self.steps_per_epoch
                    and time.monotonic() - last_checkpoint >= self.control.checkpoint_interval_seconds
                ):
                    self.save_checkpoint(
                        CheckpointKind.interval,
                        step=step,
                        epoch=epoch - 1,
                        batches_into_epoch=batches_done,
                        metrics={},
                        trained_tokens=trained_tokens,
                    )
                    last_checkpoint = time.monotonic()
            skip_batches = 0
            metrics = self.evaluate() if self.validation_examples is not None else {}
            self.reporter.epoch_finished(epoch=epoch, step=step, metrics=metrics)
            self.save_checkpoint(
                CheckpointKind.epoch,
                step=step,
                epoch=epoch,
                batches_into_epoch=0,
                metrics=metrics,
                trained_tokens=trained_tokens,
            )
            last_checkpoint = time.monotonic()
        return trained_tokens

    def _stop(self, *, step: int, epoch: int, batches_into_epoch: int, trained_tokens: int) -> None:
        """Checkpoint where training stands (unless nothing was trained since the last one) and stop."""
        if step > self.last_checkpoint_step:
            self.save_checkpoint(
                CheckpointKind.stop,
                step=step,
                epoch=epoch - 1,
                batches_into_epoch=batches_into_epoch,
                metrics={},
                trained_tokens=trained_tokens,
            )
        raise TrainingStopped(step)

    @torch.inference_mode()
    def evaluate(self) -> dict[str, float]:
        """Validation loss and the task's metrics over the whole validation file."""
        assert self.validation_examples is not None
        self.network.eval()
        loader = DataLoader(
            self.validation_examples,
            batch_size=EVAL_BATCH_SIZE,
            collate_fn=self.task.collator(self.tokenizer),
        )
        all_logits, all_labels, loss_sum = [], [], 0.0
        for batch in loader:
            batch = {name: tensor.to(self.device) for name, tensor in batch.items()}
            output = self.network(**batch)
            loss_sum += float(output.loss.item()) * batch["labels"].shape[0]
            all_logits.append(output.logits.float().cpu())
            all_labels.append(batch["labels"].cpu())
        logits, labels = torch.cat(all_logits), torch.cat(all_labels)
        metrics = {f"valid_{name}": value for name, value in self.task.metrics(logits, labels).items()}
        metrics["valid_loss"] = loss_sum / len(labels)
        return metrics

    def save_checkpoint(
        self,
        kind: CheckpointKind,
        *,
        step: int,
        epoch: int,
        batches_into_epoch: int,
        metrics: dict[str, float],
        trained_tokens: int,
    ) -> None:
        """Publish a checkpoint; `epoch` counts finished epochs, `batches_into_epoch` the next one's done batches."""
        key = checkpoint_key(self.config.job_id, step, self.config.attempt)
        try:
            save_checkpoint(
                self.store,
                key,
                network=self.network,
                optimizer=self.optimizer,
                scheduler=self.scheduler,
                step=step,
                epoch=epoch,
                batches_into_epoch=batches_into_epoch,
                metrics=metrics,
                trained_tokens=trained_tokens,
            )
        except OSError as error:
            raise TrainingFailure(
                JobErrorCode.artifact_write_failed, f"could not write the checkpoint at step {step}: {error}"
            ) from error
        self.last_checkpoint_step = step
        self.reporter.checkpoint_saved(step=step, epoch=epoch, metrics=metrics, blob_key=key, kind=kind.value)

    def export(self, key: str) -> ExportManifest:
        """Publish the fine-tuned model; frozen parameters are exported too, so the folder is complete."""
        self.network.requires_grad_(True)
        self.network.eval()
        try:
            return export_model_archive(self.store, key, self.network.cpu(), self.tokenizer)
        except OSError as error:
            raise TrainingFailure(
                JobErrorCode.artifact_write_failed, f"could not write the fine-tuned model: {error}"
            ) from error

    @staticmethod
    def _seed_everything(seed: int) -> None:
        random.seed(seed)
        torch.manual_seed(seed)


def describe_run(config: TrainingConfig) -> dict[str, Any]:
    """The settings of a run as an event's data: what a user needs to reproduce it."""
    return {
        "strategy": config.strategy.as_dict(),
        "hyperparameters": config.hyperparameters.as_dict(),
        "seed": config.seed,
        "labels": [str(label) for label in config.label_names],
    }
