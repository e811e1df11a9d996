from __future__ import annotations

import pytest
import torch
from sklearn.metrics import f1_score

from worker.training.metrics import accuracy, macro_f1


@pytest.mark.parametrize(
    ("predictions", "targets", "classes"),
    [
        ([0, 1, 1, 0, 2], [0, 1, 0, 0, 2], 3),
        ([1, 1, 1, 1], [0, 1, 0, 1], 2),
        ([0, 0, 0], [0, 0, 0], 4),
        ([2, 0, 1, 3, 3, 1], [3, 0, 1, 3, 2, 2], 4),
    ],
)
def test_macro_f1_matches_scikit_learn(predictions: list[int], targets: list[int], classes: int) -> None:
    expected = f1_score(targets, predictions, average="macro")
    assert macro_f1(torch.tensor(predictions), torch.tensor(targets), classes) == pytest.approx(expected)


def test_accuracy_is_the_share_of_exact_matches() -> None:
    assert accuracy(torch.tensor([0, 1, 1, 2]), torch.tensor([0, 1, 2, 2])) == pytest.approx(0.75)
