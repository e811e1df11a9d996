"""The one training loop: set up a task network under a strategy, train, evaluate, checkpoint, export."""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from enum import StrEnum
from functools import cached_property
from pathlib import Path
from typing import Any

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase, get_linear_schedule_with_warmup

from models.errors import JobErrorCode
from models.storage.blobs import ArtifactStore
from worker.training.accelerator import Accelerator
from worker.training.batching import length_grouped_batches, length_sorted_batches
from worker.training.checkpoints import (
    checkpoint_key,
    load_checkpoint,
    restore_python_random_state,
    restore_random_generators,
    save_checkpoint,
)
from worker.training.config import DataFile, TrainingConfig
from worker.training.examples import Batch, TokenisedExamples
from worker.training.export import ExportManifest, export_model_archive
from worker.training.heads import TASKS, TaskAdapter
from worker.training.reporting import StepProgress, TrainingFailure, TrainingReporter
from worker.training.speedups.collector import long_lived_objects_frozen
from worker.training.speedups.frozen_features import BoundaryFeatures, FeaturePath, FrozenPrefix
from worker.training.speedups.model_pool import ModelPool, TemplateKey, job_network
from worker.training.speedups.prepared_data import (
    CacheOptions,
    PreparedFeatures,
    frozen_features,
    model_fingerprint,
    tokenised_file,
)
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


EVAL_BATCH_SIZE = 64


class FineTuningRecipe:
    """torchtune's shape: `setup`, then `train` with the loop in plain sight, then `export`.

    The recipe knows nothing of databases or settings: it reads a TrainingConfig, writes blobs to
    the artifact store and tells a TrainingReporter what happened. Data derived from the files
    (token ids, frozen features) goes through the cache in `cache_options`, when there is one.
    """

    def __init__(
        self,
        config: TrainingConfig,
        store: ArtifactStore,
        reporter: TrainingReporter,
        control: RunControl | None = None,
        cache_options: CacheOptions | None = None,
        accelerator: Accelerator | None = None,
        model_pool: ModelPool | None = None,
        started: float | None = None,
    ) -> None:
        self.config = config
        self.store = store
        self.reporter = reporter
        self.control = control or RunControl()
        self.cache_options = cache_options or CacheOptions()
        self.accelerator = accelerator or Accelerator.pick()
        self.model_pool = model_pool
        self.task: TaskAdapter = TASKS[config.task]
        self.device = self.accelerator.device
        self.started = time.monotonic() if started is None else started  # time to first step counts from here

    def setup(self) -> None:
        """Seed, load the base model with a new head, freeze per strategy, tokenise, build the optimiser."""
        self._seed_everything(self.config.seed)
        self.accelerator.configure()
        self.accelerator.reset_peak_memory()
        self.fingerprint = model_fingerprint(self.config.base_model_location)
        try:
            self.tokenizer: PreTrainedTokenizerBase = self.task.load_tokenizer(self.config)
            self.network: PreTrainedModel = self._load_network()
        except (OSError, ValueError) as error:
            raise TrainingFailure(
                JobErrorCode.base_model_unavailable,
                f"could not load base model from {self.config.base_model_location}: {error}",
            ) from error
        torch.nn.Module.to(self.network, self.device)
        self.plan: FreezePlan = plan_freezing(self.network, self.config.num_layers, self.config.strategy)
        self.training_examples = self._tokenised(self.config.training_file)
        self.validation_examples: TokenisedExamples | None = (
            self._tokenised(self.config.validation_file) if self.config.validation_file else None
        )
        hyper = self.config.hyperparameters
        self.steps_per_epoch = math.ceil(len(self.training_examples) / hyper.batch_size)
        self.total_steps = self.steps_per_epoch * hyper.n_epochs
        self.optimizer = self.accelerator.optimizer(
            optimizer_parameter_groups(self.plan, hyper.learning_rate, hyper.weight_decay),
            hyper.learning_rate,
            head_only=self.plan.frozen_layers == len(self.plan.layers),
        )
        self.scheduler = get_linear_schedule_with_warmup(
            self.optimizer,
            num_warmup_steps=math.ceil(hyper.warmup_ratio * self.total_steps),
            num_training_steps=self.total_steps,
        )
        self.step_network = self.accelerator.maybe_compile(self.network)
        self.trainable = [p for p in self.network.parameters() if p.requires_grad]
        self.trainable_parameters = sum(p.numel() for p in self.trainable)
        self.total_parameters = sum(p.numel() for p in self.network.parameters())
        self.position = TrainingPosition(epochs_done=0, batches_into_epoch=0, step=0, trained_tokens=0)
        self.last_checkpoint_step = 0
        self.prefix = (
            FrozenPrefix(self.network, self.plan.layers, self.plan.frozen_layers)
            if self.plan.frozen_layers > 0
            else None
        )
        self.training_features: BoundaryFeatures | None = None
        self.validation_features: BoundaryFeatures | None = None
        self.feature_path = FeaturePath.not_applicable
        self.last_progress: StepProgress | None = None
        self.reporter.run_started(
            trainable_parameters=self.trainable_parameters,
            total_parameters=self.total_parameters,
            total_steps=self.total_steps,
            examples=len(self.training_examples),
        )

    def _load_network(self) -> PreTrainedModel:
        """The task network from the pool's template (loading it on a miss), its head initialised from the seed.

        The seed is set again right before the head's initialisation, so whether the template
        was loaded now (drawing random numbers for a head that is then replaced) or came from the
        pool, the job's network and every random draw after it are the same.
        """
        key = self.template_key
        pool = self.model_pool
        template = pool.get(key) if pool is not None else None
        self.model_from_pool = template is not None
        if template is None:
            template = self.task.load_template(key)
            if pool is not None:
                pool.add(key, template)
        self._seed_everything(self.config.seed)
        network = job_network(template, keep_template=pool is not None and key in pool)
        self.task.label_network(network, self.config)
        return network

    @property
    def template_key(self) -> TemplateKey:
        return TemplateKey(
            task=self.config.task.value,
            location=self.config.base_model_location,
            fingerprint=self.fingerprint,
            num_labels=len(self.config.label_names),
            trust_remote_code=self.config.trust_remote_code,
        )

    def _tokenised(self, data_file: DataFile) -> TokenisedExamples:
        examples, _ = tokenised_file(
            self.task,
            data_file,
            self.tokenizer,
            self.config,
            cache=self.cache_options.cache,
            fingerprint=self.fingerprint,
        )
        return examples

    def prepare_frozen_features(self) -> None:
        """Run the frozen prefix once over the training file (or find its output in the cache)."""
        if self.prefix is None or self.training_features is not None or self.feature_path is FeaturePath.recomputed:
            return
        prepared = self._frozen_features(self.training_examples, self.config.training_file, "training")
        self.feature_path = prepared.path
        self.training_features = prepared.features
        self._report_features(prepared, "training")

    def prepare_validation_features(self) -> None:
        """The same for the validation file, before the first evaluation; its path follows the training file's."""
        if self.prefix is None or self.validation_examples is None or self.config.validation_file is None:
            return
        if self.validation_features is not None or self.feature_path is FeaturePath.recomputed:
            return
        prepared = self._frozen_features(self.validation_examples, self.config.validation_file, "validation")
        if prepared.features is not None:
            self.validation_features = prepared.features
        self._report_features(prepared, "validation")

    def _frozen_features(self, examples: TokenisedExamples, data_file: DataFile, file_role: str) -> PreparedFeatures:
        assert self.prefix is not None

        def computed(seconds: float) -> None:
            self.reporter.message(
                f"Frozen features of the {file_role} file complete: the frozen layers ran over it once, "
                f"in {seconds:.1f} s",
                data={"frozen_features_computed": file_role, "seconds": round(seconds, 3)},
            )

        return frozen_features(
            self.prefix,
            examples,
            data_file,
            first_token_only=lambda: self._first_token_only,
            options=self.cache_options,
            key_parts={
                "model": self.fingerprint,
                "max_length": self.config.hyperparameters.max_length,
                "precision": self.accelerator.precision,
            },
            device=self.device,
            autocast=self.accelerator.autocast,
            on_computed=computed,
        )

    @cached_property
    def _first_token_only(self) -> bool:
        """Whether the head reads only the first token's state: possible only when every layer is frozen."""
        assert self.prefix is not None
        if self.prefix.depth != len(self.plan.layers):
            return False
        return self.prefix.head_reads_first_token_only(self.training_examples, self.device)

    def _report_features(self, prepared: PreparedFeatures, file_role: str) -> None:
        assert self.prefix is not None
        self.reporter.message(
            _describe_features(prepared, self.prefix.depth, file_role),
            data={
                "frozen_features": prepared.path.value,
                "file": file_role,
                "frozen_layers": self.prefix.depth,
                "first_token_only": prepared.features.first_token_only if prepared.features else None,
                "from_cache": prepared.from_cache,
                "size_bytes": prepared.size_bytes,
            },
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

    def epoch_batches(self, epoch: int, skip_batches: int = 0) -> list[list[int]]:
        """Epoch `epoch`'s batches of example indices, length-grouped, from batch `skip_batches` on.

        The order is a pure function of (seed, epoch) and the examples' lengths, and draws from a
        generator of its own: the global RNG, which drives dropout, is left alone.
        """
        return length_grouped_batches(
            self.training_examples.lengths,
            self.config.hyperparameters.batch_size,
            seed=self.config.seed,
            epoch=epoch,
        )[skip_batches:]

    def _inputs(self, indices: list[int], features: BoundaryFeatures | None, examples: TokenisedExamples) -> Batch:
        """The batch on the device; with cached features, the prefix is primed with the batch's states."""
        if features is None:
            return self.accelerator.to_device(examples.batch(indices))
        assert self.prefix is not None
        batch, self.prefix.pending = features.batch(indices, self.device, pin_memory=self.accelerator.pin_memory)
        return batch

    def _frozen_prefix_replaced(self, features: BoundaryFeatures | None) -> AbstractContextManager[None]:
        return self.prefix.replaced() if self.prefix is not None and features is not None else nullcontext()

    def train(self) -> int:
        """Run every remaining epoch; returns the tokens trained on.

        Checkpoints at each epoch end (after validation), whenever `checkpoint_interval_seconds`
        of training passed since the last one, and when a stop is requested; the latter then
        raises TrainingStopped.
        """
        with long_lived_objects_frozen():
            return self._train()

    def _train(self) -> int:
        self.prepare_frozen_features()
        step, trained_tokens, samples_seen = self.position.step, self.position.trained_tokens, 0
        started = last_checkpoint = time.monotonic()
        first_step_at: float | None = None
        skip_batches = self.position.batches_into_epoch
        lengths = self.training_examples.lengths
        for epoch in range(self.position.epochs_done + 1, self.config.hyperparameters.n_epochs + 1):
            set_training_mode(self.network, self.plan)
            with (
                self._frozen_prefix_replaced(self.training_features),
                self.accelerator.cpu_threads(1 if self._head_only_on_cached_vectors() else None),
            ):
                for batch_index, indices in enumerate(self.epoch_batches(epoch, skip_batches), start=skip_batches):
                    if self.control.stop_requested():
                        self._stop(
                            step=step, epoch=epoch, batches_into_epoch=batch_index, trained_tokens=trained_tokens
                        )
                    batch = self._inputs(indices, self.training_features, self.training_examples)
                    with self.accelerator.autocast():
                        loss = self.step_network(**batch).loss
                    if not torch.isfinite(loss):
                        raise TrainingFailure(
                            JobErrorCode.training_diverged,
                            f"training loss became {loss.item()} at step {step + 1}; "
                            "lower hyperparameters.learning_rate_multiplier",
                        )
                    loss.backward()
                    torch.nn.utils.clip_grad_norm_(self.trainable, MAX_GRADIENT_NORM)
                    self.optimizer.step()
                    self.scheduler.step()
                    self.optimizer.zero_grad(set_to_none=True)
                    step += 1
                    if first_step_at is None:
                        first_step_at = time.monotonic()
                    trained_tokens += int(lengths[indices].sum())
                    samples_seen += len(indices)
                    elapsed = max(time.monotonic() - started, 1e-9)
                    self.last_progress = StepProgress(
                        step=step,
                        total_steps=self.total_steps,
                        epoch=epoch,
                        train_loss=float(loss.item()),
                        learning_rate=float(self.scheduler.get_last_lr()[0]),
                        samples_per_second=samples_seen / elapsed,
                        tokens_per_second=(trained_tokens - self.position.trained_tokens) / elapsed,
                        trained_tokens=trained_tokens,
                        seconds_to_first_step=first_step_at - self.started,
                        peak_memory_bytes=self.accelerator.peak_memory_bytes(),
                        frozen_features=self.feature_path.value,
                    )
                    self.reporter.step_finished(self.last_progress)
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

    def _head_only_on_cached_vectors(self) -> bool:
        """Whether a step is only the head on one cached vector per example (tiny operations).

        Decided by the job alone, never by what the cache held, so a run computes the same numbers
        on a cold and a warm cache and when resumed (features still filling in use all threads).
        """
        features = self.training_features
        return features is not None and features.first_token_only

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

    def evaluate(self) -> dict[str, float]:
        """Validation loss and the task's metrics over the whole validation file, in length-sorted batches."""
        self.prepare_validation_features()
        return self._evaluate()

    @torch.inference_mode()
    def _evaluate(self) -> dict[str, float]:
        assert self.validation_examples is not None
        self.network.eval()
        all_logits, all_labels, loss_sum = [], [], 0.0
        with self._frozen_prefix_replaced(self.validation_features):
            for indices in length_sorted_batches(self.validation_examples.lengths, EVAL_BATCH_SIZE):
                batch = self._inputs(indices, self.validation_features, self.validation_examples)
                with self.accelerator.autocast():
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
            size_bytes = save_checkpoint(
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
        self.reporter.checkpoint_saved(
            step=step, epoch=epoch, metrics=metrics, blob_key=key, kind=kind.value, size_bytes=size_bytes
        )

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


def _describe_features(prepared: PreparedFeatures, depth: int, file_role: str) -> str:
    size = prepared.size_bytes / 1024**2
    if prepared.features is None:
        return (
            f"Frozen layers run at every step: the {file_role} file's states after layer {depth} ({size:.0f} MB) "
            "fit neither the memory limit nor the disk cache"
        )
    what = "first-token states" if prepared.features.first_token_only else "hidden states"
    source = "reused from the cache" if prepared.from_cache else "computed once, as training first reads each example"
    where = "in memory" if prepared.path is FeaturePath.cached else "memory-mapped from disk"
    return f"Frozen features of the {file_role} file ({what} after layer {depth}): {source}, {size:.1f} MB {where}"


def describe_run(config: TrainingConfig) -> dict[str, Any]:
    """The settings of a run as an event's data: what a user needs to reproduce it."""
    return {
        "strategy": config.strategy.as_dict(),
        "hyperparameters": config.hyperparameters.as_dict(),
        "seed": config.seed,
        "labels": [str(label) for label in config.label_names],
    }
