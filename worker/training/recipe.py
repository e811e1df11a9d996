"""The one training loop: set up a task network under a strategy, train, evaluate, checkpoint, export."""

from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass
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
    """Where training stands: the last finished epoch, its last step, and the tokens trained so far."""

    epoch: int
    step: int
    trained_tokens: int


EVAL_BATCH_SIZE = 128


class FineTuningRecipe:
    """torchtune's shape: `setup`, then `train` with the loop in plain sight, then `export`.

    The recipe knows nothing of databases or settings: it reads a TrainingConfig, writes blobs to
    the artifact store and tells a TrainingReporter what happened.
    """

    def __init__(self, config: TrainingConfig, store: ArtifactStore, reporter: TrainingReporter) -> None:
        self.config = config
        self.store = store
        self.reporter = reporter
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
        self.shuffle_generator = torch.Generator().manual_seed(self.config.seed)
        self.train_loader = DataLoader(
            self.training_examples,
            batch_size=hyper.batch_size,
            shuffle=True,
            generator=self.shuffle_generator,
            collate_fn=self.task.collator(self.tokenizer),
        )
        self.steps_per_epoch = len(self.train_loader)
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
        self.position = TrainingPosition(epoch=0, step=0, trained_tokens=0)
        self.reporter.run_started(
            trainable_parameters=self.trainable_parameters,
            total_parameters=self.total_parameters,
            total_steps=self.total_steps,
            examples=len(self.training_examples),
        )

    def resume(self, folder: Path) -> int:
        """Continue from a complete checkpoint (call after `setup`): weights, optimiser, schedule, RNG, position.

        Checkpoints are taken at epoch ends, so training continues with the next epoch's batches in
        the order an uninterrupted run would have drawn them. Returns the checkpoint's step.
        """
        checkpoint = load_checkpoint(folder)
        trainable = {name for name, p in self.network.named_parameters() if p.requires_grad}
        if set(checkpoint.trainable_weights) != trainable:
            raise ValueError(f"checkpoint {folder.name} does not match this job's trainable parameters")
        self.network.load_state_dict(checkpoint.trainable_weights, strict=False)
        self.optimizer.load_state_dict(checkpoint.optimizer)
        self.scheduler.load_state_dict(checkpoint.state.scheduler)
        torch.set_rng_state(checkpoint.rng["torch_cpu"])
        self.shuffle_generator.set_state(checkpoint.rng["shuffle"])
        restore_python_random_state(checkpoint.state.python_random_state)
        self.position = TrainingPosition(
            epoch=checkpoint.state.epoch, step=checkpoint.state.step, trained_tokens=checkpoint.state.trained_tokens
        )
        return checkpoint.state.step

    def train(self) -> int:
        """Run every remaining epoch; evaluate and checkpoint at each epoch end. Returns the tokens trained on."""
        step, trained_tokens, samples_seen = self.position.step, self.position.trained_tokens, 0
        started = time.perf_counter()
        for epoch in range(self.position.epoch + 1, self.config.hyperparameters.n_epochs + 1):
            set_training_mode(self.network, self.plan)
            for batch in self.train_loader:
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
                elapsed = max(time.perf_counter() - started, 1e-9)
                self.reporter.step_finished(
                    StepProgress(
                        step=step,
                        total_steps=self.total_steps,
                        epoch=epoch,
                        train_loss=float(loss.item()),
                        learning_rate=float(self.scheduler.get_last_lr()[0]),
                        samples_per_second=samples_seen / elapsed,
                        tokens_per_second=trained_tokens / elapsed,
                        trained_tokens=trained_tokens,
                    )
                )
            metrics = self.evaluate() if self.validation_examples is not None else {}
            self.reporter.epoch_finished(epoch=epoch, step=step, metrics=metrics)
            self.save_checkpoint(step=step, epoch=epoch, metrics=metrics, trained_tokens=trained_tokens)
        return trained_tokens

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

    def save_checkpoint(self, *, step: int, epoch: int, metrics: dict[str, float], trained_tokens: int) -> None:
        key = checkpoint_key(self.config.job_id, step)
        save_checkpoint(
            self.store,
            key,
            network=self.network,
            optimizer=self.optimizer,
            scheduler=self.scheduler,
            shuffle_generator=self.shuffle_generator,
            step=step,
            epoch=epoch,
            metrics=metrics,
            trained_tokens=trained_tokens,
        )
        self.reporter.checkpoint_saved(step=step, epoch=epoch, metrics=metrics, blob_key=key)

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
