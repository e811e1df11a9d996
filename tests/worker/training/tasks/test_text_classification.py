from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from sklearn.metrics import accuracy_score, f1_score

from worker.training.tasks.text_classification import ConfusionCounts


def evaluate_in_batches(predictions: list[int], targets: list[int], classes: int, batch_size: int) -> dict[str, float]:
    """Feed one-hot logits batch by batch, as the loop feeds the evaluator."""
    counts = ConfusionCounts(classes)
    for start in range(0, len(targets), batch_size):
        predicted = torch.tensor(predictions[start : start + batch_size])
        logits = torch.nn.functional.one_hot(predicted, classes).float()
        labels = torch.tensor(targets[start : start + batch_size])
        counts.update(list(range(start, start + len(labels))), {"labels": labels}, SimpleNamespace(logits=logits))
    return counts.compute()


@pytest.mark.parametrize(
    ("predictions", "targets", "classes"),
    [
        ([0, 1, 1, 0, 2], [0, 1, 0, 0, 2], 3),
        ([1, 1, 1, 1], [0, 1, 0, 1], 2),
        ([0, 0, 0], [0, 0, 0], 4),
        ([2, 0, 1, 3, 3, 1], [3, 0, 1, 3, 2, 2], 4),
    ],
)
@pytest.mark.parametrize("batch_size", [1, 2, 64])
def test_streamed_counts_give_scikit_learns_accuracy_and_macro_f1(
    predictions: list[int], targets: list[int], classes: int, batch_size: int
) -> None:
    metrics = evaluate_in_batches(predictions, targets, classes, batch_size)
    assert metrics["accuracy"] == pytest.approx(accuracy_score(targets, predictions))
    assert metrics["macro_f1"] == pytest.approx(f1_score(targets, predictions, average="macro"))
