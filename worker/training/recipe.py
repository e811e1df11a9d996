"""The one training loop: set up a task network under a strategy, train, evaluate, checkpoint, export."""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import get_linear_schedule_with_warmup

from models.checkpoint_kinds import CheckpointKind
from models.errors import JobErrorCode
from worker.training.accelerator import Accelerator
from worker.training.anatomy import Anatomy, UnsplittableArchitecture, find_anatomy
from worker.training.batching import length_grouped_batches, length_sorted_batches
from worker.training.blob_store import BlobStore
from worker.training.checkpoints import (
    load_checkpoint,
    load_trainable_weights,
    restore_python_random_state,
    restore_random_generators,
    save_checkpoint,
)
from worker.training.early_stopping import BestEpoch, BestEpochTracker
from worker.training.export import ExportManifest, export_model_archive
from worker.training.freeze_plan import FreezePlan, freeze_plan
from worker.training.reporting import Reporter, StepProgress, TrainingFailure
from worker.training.run_spec import DataFile, RunSpec
from worker.training.speedups.collector import long_lived_objects_frozen
from worker.training.speedups.feature_reuse import FeatureSource, FileRole, FrozenLayerFeatures
from worker.training.speedups.model_pool import ModelPool, TemplateKey, job_network
from worker.training.speedups.prepared_data import CacheOptions, encoded_file, model_fingerprint
from worker.training.strategies.parameter_groups import optimizer_parameter_groups
from worker.training.strategies.protocol import NetworkLayout, Strategy
from worker.training.strategies.registry import build_strategy
from worker.training.tasks.protocol import Batch, EngineTask, Examples
from worker.training.tasks.registry import engine_task

MAX_GRADIENT_NORM = 1.0
EVAL_BATCH_SIZE = 64


@dataclass(frozen=True)
class TrainingPosition:
    """Where training stands: epochs finished, batches done of the next one, optimiser steps, tokens."""

    epochs_done: int
    batches_into_epoch: int
    step: int
    trained_tokens: int


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


class FineTuningRecipe:
    """torchtune's shape: `setup`, then `train` with the loop in plain sight, then `export`.

    The recipe knows nothing of databases or settings: it reads a RunSpec, writes blobs to a
    BlobStore and tells a Reporter what happened. What varies between jobs is the task
    (EngineTask: processor, head, examples, loss, evaluator) and the strategy (Strategy: what
    trains, when, any penalty); the loop calls them and branches on neither.
    """

    def __init__(
        self,
        spec: RunSpec,
        store: BlobStore,
        reporter: Reporter,
        control: RunControl | None = None,
        cache_options: CacheOptions | None = None,
        accelerator: Accelerator | None = None,
        model_pool: ModelPool | None = None,
        started: float | None = None,
    ) -> None:
        self.spec = spec
        self.store = store
        self.reporter = reporter
        self.control = control or RunControl()
        self.cache_options = cache_options or CacheOptions()
        self.accelerator = accelerator or Accelerator.pick()
        self.model_pool = model_pool
        self.task: EngineTask = engine_task(spec.task)
        self.strategy: Strategy = build_strategy(spec.strategy)
        rule = spec.hyperparameters.early_stopping
        self.early_stopping = BestEpochTracker(rule) if rule is not None else None
        self.device = self.accelerator.device
        self.started = time.monotonic() if started is None else started  # time to first step counts from here

    def setup(self) -> None:
        """Seed, load the base model with the task's head, apply the strategy, encode the files, build the optimiser."""
        self._seed_everything(self.spec.seed)
        self.accelerator.configure()
        self.accelerator.reset_peak_memory()
        self.fingerprint = model_fingerprint(self.spec.base_model_location)
        try:
            self.processor: Any = self.task.load_processor(self.spec)
            self.network: nn.Module = self._load_network()
        except (OSError, ValueError) as error:
            raise TrainingFailure(
                JobErrorCode.base_model_unavailable,
                f"could not load base model from {self.spec.base_model_location}: {error}",
            ) from error
        nn.Module.to(self.network, self.device)
        try:
            anatomy = find_anatomy(self.network)
        except UnsplittableArchitecture as error:
            if self.spec.strategy.needs_layers:  # job creation refuses these; a changed model folder is left
                raise TrainingFailure(JobErrorCode.invalid_training_data, str(error)) from error
            anatomy = Anatomy(embeddings=[], layers=[], body_top=[], head=[self.network])  # `full` needs no split
        self.layout = NetworkLayout(anatomy, self.new_parameter_names)
        groups = self.strategy.apply(self.network, self.layout)
        self.training_examples = self._encoded(self.spec.training_file)
        self.validation_examples: Examples | None = (
            self._encoded(self.spec.validation_file) if self.spec.validation_file else None
        )
        hyper = self.spec.hyperparameters
        self.steps_per_epoch = math.ceil(len(self.training_examples) / hyper.batch_size)
        self.total_steps = self.steps_per_epoch * hyper.n_epochs
        self.trainable = [parameter for group in groups for parameter in group.parameters]
        self.optimizer = self.accelerator.optimizer(
            optimizer_parameter_groups(self.network, groups, hyper.learning_rate, hyper.weight_decay),
            hyper.learning_rate,
        )
        self.scheduler = get_linear_schedule_with_warmup(
            self.optimizer,
            num_warmup_steps=math.ceil(hyper.warmup_ratio * self.total_steps),
            num_training_steps=self.total_steps,
        )
        self.step_network = self.accelerator.maybe_compile(self.network)
        self.position = TrainingPosition(epochs_done=0, batches_into_epoch=0, step=0, trained_tokens=0)
        self.last_checkpoint_step = 0
        self.features = self._frozen_layer_features(anatomy.layers)
        self.features.use_depth(self.strategy.frozen_layers())
        self.last_progress: StepProgress | None = None
        self.plan: FreezePlan | None = None
        self.reporter.run_started(
            trainable_parameters=self.trainable_parameters,
            total_parameters=sum(p.numel() for p in self.network.parameters()),
            total_steps=self.total_steps,
            examples=len(self.training_examples),
        )

    @property
    def trainable_parameters(self) -> int:
        """Parameters training now (a schedule may change it between epochs)."""
        return sum(p.numel() for p in self.network.parameters() if p.requires_grad)

    def _load_network(self) -> nn.Module:
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
        self._seed_everything(self.spec.seed)
        network = job_network(template, keep_template=pool is not None and key in pool)
        self.new_parameter_names = frozenset(
            name
            for name, _ in network.named_parameters()
            if any(name.startswith(module + ".") for module in template.new_modules)
        )
        self.task.prepare_network(network, self.spec)
        return network

    @property
    def template_key(self) -> TemplateKey:
        return self.task.template_key(self.spec, self.fingerprint)

    def _encoded(self, data_file: DataFile) -> Examples:
        examples, _ = encoded_file(
            self.task,
            data_file,
            self.processor,
            self.spec,
            cache=self.cache_options.cache,
            fingerprint=self.fingerprint,
        )
        return examples

    def _frozen_layer_features(self, layers: list[nn.Module]) -> FrozenLayerFeatures:
        sources = {FileRole.training: FeatureSource(self.training_examples, self.spec.training_file)}
        if self.validation_examples is not None and self.spec.validation_file is not None:
            sources[FileRole.validation] = FeatureSource(self.validation_examples, self.spec.validation_file)
        return FrozenLayerFeatures(
            self.network,
            layers,
            sources,
            reads_every_token=self.task.reads_every_token,
            label_fields=self.task.label_fields,
            options=self.cache_options,
            key_parts={
                "model": self.fingerprint,
                "task": self.spec.task.value,
                "max_length": self.spec.hyperparameters.max_length,
                "precision": self.accelerator.precision,
            },
            device=self.device,
            autocast=self.accelerator.autocast,
            pin_memory=self.accelerator.pin_memory,
            report=lambda text, data: self.reporter.message(text, data=data),
        )

    def resume(self, folder: Path) -> int:
        """Continue from a complete checkpoint (call after `setup`): weights, optimiser, schedule, RNG, position.

        The strategy is first set to the epoch the checkpoint was written in, whose trainable
        parameters the checkpoint holds. Each epoch's batch order is a function of (seed, epoch),
        so a checkpoint taken mid-epoch continues with the very batches an uninterrupted run would
        have drawn next. Returns its step.
        """
        checkpoint = load_checkpoint(folder)
        state = checkpoint.state
        self.strategy.on_epoch_start(state.epoch if state.batches_into_epoch == 0 else state.epoch + 1)
        trainable = {name for name, p in self.network.named_parameters() if p.requires_grad}
        if set(checkpoint.trainable_weights) != trainable:
            raise ValueError(f"checkpoint {folder.name} does not match this job's trainable parameters")
        self.network.load_state_dict(checkpoint.trainable_weights, strict=False)
        self.optimizer.load_state_dict(checkpoint.optimizer)
        self.scheduler.load_state_dict(state.scheduler)
        restore_random_generators(checkpoint.rng)
        restore_python_random_state(state.python_random_state)
        if self.early_stopping is not None and state.early_stopping is not None:
            self.early_stopping.restore(state.early_stopping)
        self.position = TrainingPosition(
            epochs_done=state.epoch,
            batches_into_epoch=state.batches_into_epoch,
            step=state.step,
            trained_tokens=state.trained_tokens,
        )
        self.last_checkpoint_step = state.step
        return state.step

    def epoch_batches(self, epoch: int, skip_batches: int = 0) -> list[list[int]]:
        """Epoch `epoch`'s batches of example indices, length-grouped, from batch `skip_batches` on.

        The order is a pure function of (seed, epoch) and the examples' lengths, and draws from a
        generator of its own: the global RNG, which drives dropout, is left alone.
        """
        return length_grouped_batches(
            self.training_examples.lengths,
            self.spec.hyperparameters.batch_size,
            seed=self.spec.seed,
            epoch=epoch,
        )[skip_batches:]

    def _batch(self, role: FileRole, examples: Examples, indices: list[int]) -> Batch:
        """The batch on the device: served from the frozen layers' states when kept, else collated whole."""
        served = self.features.batch(role, indices)
        return served if served is not None else self.accelerator.to_device(examples.batch(indices))

    def start_epoch(self, epoch: int) -> None:
        """Let the strategy set what trains (and report it when it changed), then serve the frozen layers'
        states for its frozen depth."""
        self.strategy.on_epoch_start(epoch)
        plan = freeze_plan(epoch, self.network, self.layout.anatomy, self.optimizer)
        if not plan.same_layout_as(self.plan):
            self.plan = plan
            self.reporter.freeze_plan_changed(plan)
        self.features.use_depth(self.strategy.frozen_layers())
        self.features.prepare(FileRole.training)
        self.network.train()
        for module in self.strategy.frozen_modules():
            module.eval()  # frozen parts keep their pretrained dropout and norms

    def train(self) -> int:
        """Run every remaining epoch; returns the tokens trained on.

        Checkpoints at each epoch end (after validation), whenever `checkpoint_interval_seconds`
        of training passed since the last one, and when a stop is requested; the latter then
        raises TrainingStopped.
        """
        with long_lived_objects_frozen():
            return self._train()

    def _train(self) -> int:
        step, trained_tokens, samples_seen = self.position.step, self.position.trained_tokens, 0
        started = last_checkpoint = time.monotonic()
        first_step_at: float | None = None
        skip_batches = self.position.batches_into_epoch
        lengths = self.training_examples.lengths
        for epoch in range(self.position.epochs_done + 1, self.spec.hyperparameters.n_epochs + 1):
            self.start_epoch(epoch)
            with (
                self.features.serving(FileRole.training),
                self.accelerator.cpu_threads(1 if self.features.head_only_on_cached_vectors() else None),
            ):
                for batch_index, indices in enumerate(self.epoch_batches(epoch, skip_batches), start=skip_batches):
                    if self.control.stop_requested():
                        self._stop(
                            step=step, epoch=epoch, batches_into_epoch=batch_index, trained_tokens=trained_tokens
                        )
                    batch = self._batch(FileRole.training, self.training_examples, indices)
                    with self.accelerator.autocast():
                        loss, _ = self.task.loss_step(self.step_network, batch)
                    penalty = self.strategy.penalty(self.network)
                    total = loss if penalty is None else loss + penalty
                    if not torch.isfinite(total):
                        raise TrainingFailure(
                            JobErrorCode.training_diverged,
                            f"training loss became {total.item()} at step {step + 1}; "
                            "lower hyperparameters.learning_rate_multiplier",
                        )
                    total.backward()
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
                        frozen_features=self.features.path.value,
                        penalty=None if penalty is None else float(penalty.item()),
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
            stop_early = self._observe_epoch(epoch, step, metrics)
            self.save_checkpoint(
                CheckpointKind.epoch,
                step=step,
                epoch=epoch,
                batches_into_epoch=0,
                metrics=metrics,
                trained_tokens=trained_tokens,
            )
            last_checkpoint = time.monotonic()
            if stop_early:
                break
        return trained_tokens

    def _observe_epoch(self, epoch: int, step: int, metrics: dict[str, float]) -> bool:
        """Tell early stopping the epoch's metrics; True when its patience ran out (and say so)."""
        tracker = self.early_stopping
        if tracker is None:
            return False
        key = self.spec.checkpoint_keys.format(step=step)
        stop = tracker.observe(epoch=epoch, step=step, metrics=metrics, blob_key=key)
        best = tracker.best
        assert best is not None
        if stop and epoch < self.spec.hyperparameters.n_epochs:
            metric = tracker.rule.metric
            self.reporter.message(
                f"Early stopping after epoch {epoch}: {metric} has not improved for {tracker.rule.patience} "
                f"epoch(s); the weights of epoch {best.epoch} ({metric} {best.metrics[metric]:.4f}) are delivered",
                data={"stopped_after_epoch": epoch, "best_epoch": best.epoch, "metric": metric},
            )
        return stop

    @property
    def best_epoch(self) -> BestEpoch | None:
        """The epoch whose weights are delivered when the job stops early; None without early stopping."""
        return self.early_stopping.best if self.early_stopping is not None else None

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
        self.features.prepare(FileRole.validation)
        with self.features.serving(FileRole.validation):
            return self._evaluate()

    @torch.inference_mode()
    def _evaluate(self) -> dict[str, float]:
        examples = self.validation_examples
        assert examples is not None
        self.network.eval()
        evaluator = self.task.evaluator(examples, self.spec)
        loss_sum, counted = 0.0, 0
        for indices in length_sorted_batches(examples.lengths, EVAL_BATCH_SIZE):
            batch = self._batch(FileRole.validation, examples, indices)
            with self.accelerator.autocast():
                loss, outputs = self.task.loss_step(self.network, batch)
            loss_sum += float(loss.item()) * len(indices)
            counted += len(indices)
            evaluator.update(indices, batch, outputs)
        task_metrics = {f"valid_{name}": value for name, value in evaluator.compute().items()}
        return {"valid_loss": loss_sum / max(counted, 1), **task_metrics}

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
        key = self.spec.checkpoint_keys.format(step=step)
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
                early_stopping=self.early_stopping.state() if self.early_stopping is not None else None,
            )
        except OSError as error:
            raise TrainingFailure(
                JobErrorCode.artifact_write_failed, f"could not write the checkpoint at step {step}: {error}"
            ) from error
        self.last_checkpoint_step = step
        self.reporter.checkpoint_saved(
            step=step, epoch=epoch, metrics=metrics, blob_key=key, kind=kind, size_bytes=size_bytes
        )

    def export(self, key: str) -> ExportManifest:
        """Publish the fine-tuned model (the best epoch's, with early stopping); frozen parameters are
        exported too, so the folder is complete."""
        self._restore_best_epoch()
        network = self.strategy.export(self.network)
        network.requires_grad_(True)
        network.eval()
        try:
            return export_model_archive(
                self.store,
                key,
                network.cpu(),
                save_extras=lambda folder: self.task.save_extras(folder, network, self.processor),
            )
        except OSError as error:
            raise TrainingFailure(
                JobErrorCode.artifact_write_failed, f"could not write the fine-tuned model: {error}"
            ) from error

    def _restore_best_epoch(self) -> None:
        """Put the best epoch's weights back, when a later epoch trained on.

        The best epoch's checkpoint holds what trained up to then. A parameter that began to
        train only afterwards (a schedule unfroze it) goes back to its pretrained value.
        """
        best = self.best_epoch
        if best is None or best.step == self.last_checkpoint_step:
            return
        weights = load_trainable_weights(self.store.path(best.blob_key))
        later = {name for name, p in self.network.named_parameters() if p.requires_grad} - set(weights)
        if later:
            pretrained = self.task.load_template(self.template_key).network.state_dict()
            weights |= {name: pretrained[name] for name in later if name not in self.new_parameter_names}
        self.network.load_state_dict(weights, strict=False)
        self.reporter.message(
            f"Delivering the weights of epoch {best.epoch}, the best by {self._early_stopping_metric}",
            data={"best_checkpoint": {"epoch": best.epoch, "step": best.step, "metrics": best.metrics}},
        )

    @property
    def _early_stopping_metric(self) -> str:
        return self.early_stopping.rule.metric if self.early_stopping is not None else ""

    @staticmethod
    def _seed_everything(seed: int) -> None:
        random.seed(seed)
        torch.manual_seed(seed)


def describe_run(spec: RunSpec) -> dict[str, Any]:
    """The settings of a run as an event's data: what a user needs to reproduce it."""
    return {
        "strategy": spec.strategy.model_dump(mode="json"),
        "hyperparameters": spec.hyperparameters.as_dict(),
        "seed": spec.seed,
        **spec.task_settings,
    }
