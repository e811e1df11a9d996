"""Classification metrics computed from predicted and true class ids."""

from __future__ import annotations

import torch


def accuracy(predictions: torch.Tensor, targets: torch.Tensor) -> float:
    return float((predictions == targets).float().mean().item()) if targets.numel() else 0.0


def macro_f1(predictions: torch.Tensor, targets: torch.Tensor, num_classes: int) -> float:
    """Unweighted mean of per-class F1 over the classes present in targets or predictions.

    A class that appears in neither contributes nothing (scikit-learn's `labels=None` behaviour).
    """
    scores = []
    for label in range(num_classes):
        predicted, actual = predictions == label, targets == label
        if not predicted.any() and not actual.any():
            continue
        true_positives = float((predicted & actual).sum())
        denominator = float(predicted.sum() + actual.sum())
        scores.append(2 * true_positives / denominator if denominator else 0.0)
    return sum(scores) / len(scores) if scores else 0.0
