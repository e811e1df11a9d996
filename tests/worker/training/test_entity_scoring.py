from __future__ import annotations

import random

import pytest
from seqeval.metrics import accuracy_score, classification_report, f1_score, precision_score, recall_score

from worker.training.tasks.entity_scoring import EntityScores

TYPES = ["person", "location", "group", "corporation", "product", "creative-work"]
TAGS = ["O", *(f"{prefix}-{entity_type}" for entity_type in TYPES for prefix in "BI")]


def scores_of(gold: list[list[str]], predicted: list[list[str]]) -> dict[str, float]:
    scores = EntityScores()
    scores.add(gold, predicted)
    return scores.compute()


def random_sentences(seed: int, count: int) -> tuple[list[list[str]], list[list[str]]]:
    """Gold tags mostly 'O' with entities of 1-3 words, and predictions that get about a third of tokens wrong.

    The random tags include every kind of conlleval case: lone I- tags, I- of another type after
    B-, entities that touch.
    """
    generator = random.Random(seed)
    gold, predicted = [], []
    for _ in range(count):
        length = generator.randint(1, 40)
        sentence: list[str] = []
        while len(sentence) < length:
            if generator.random() < 0.7:
                sentence.append("O")
            else:
                entity_type = generator.choice(TYPES)
                sentence += [f"B-{entity_type}"] + [f"I-{entity_type}"] * generator.randint(0, 2)
        gold.append(sentence)
        predicted.append([generator.choice(TAGS) if generator.random() < 0.3 else tag for tag in sentence])
    return gold, predicted


def test_a_missed_entity_costs_recall_only() -> None:
    # Gold: person (0-1), location (3). Predicted: person (0-1).
    # Precision 1/1 = 1; recall 1/2; F1 = 2 · 1 · 0.5 / (1 + 0.5) = 2/3. Tokens right: 3 of 4.
    # person: P = R = 1, F1 1. location: no prediction, so P = 0 (seqeval's zero division), R = 0, F1 0.
    scores = scores_of([["B-PER", "I-PER", "O", "B-LOC"]], [["B-PER", "I-PER", "O", "O"]])

    assert scores == {
        "precision": 1.0,
        "recall": 0.5,
        "f1": pytest.approx(2 / 3),
        "accuracy": 0.75,
        "f1_LOC": 0.0,
        "f1_PER": 1.0,
    }


def test_a_boundary_error_is_both_a_false_positive_and_a_false_negative() -> None:
    # Gold: person (0-1), location (3). Predicted: person (0) — a boundary error — and location (3).
    # Matched 1 (location) of 2 predicted and of 2 gold: P = R = F1 = 0.5. Tokens right: 3 of 4.
    scores = scores_of([["B-PER", "I-PER", "O", "B-LOC"]], [["B-PER", "O", "O", "B-LOC"]])

    assert scores == {"precision": 0.5, "recall": 0.5, "f1": 0.5, "accuracy": 0.75, "f1_LOC": 1.0, "f1_PER": 0.0}


def test_an_inside_tag_without_a_beginning_starts_an_entity_as_in_conlleval() -> None:
    # Gold: person (1-2) from B-; predicted: the same span opened by a lone I-. A match, though
    # token 1 differs: P = R = F1 = 1, accuracy 3/4.
    assert scores_of([["O", "B-PER", "I-PER", "O"]], [["O", "I-PER", "I-PER", "O"]]) == {
        "precision": 1.0,
        "recall": 1.0,
        "f1": 1.0,
        "accuracy": 0.75,
        "f1_PER": 1.0,
    }


def test_an_inside_tag_of_another_type_starts_a_new_entity() -> None:
    # Predicted B-PER I-LOC reads as person (0) then location (1), not one entity of two words.
    # Gold person (0-1) matches neither: P = 0/2, R = 0/1, F1 0; tokens right: 1 of 2.
    scores = scores_of([["B-PER", "I-PER"]], [["B-PER", "I-LOC"]])

    assert scores == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "accuracy": 0.5, "f1_LOC": 0.0, "f1_PER": 0.0}


def test_entities_never_cross_sentences() -> None:
    # A sentence ending in B-PER and the next opening with I-PER hold two entities, not one.
    # Gold person (0) and person (0) of the next sentence; predicted the same: P = R = F1 = 1.
    assert scores_of([["B-PER"], ["I-PER"]], [["B-PER"], ["B-PER"]])["f1"] == 1.0


def test_each_type_has_its_own_f1() -> None:
    # Gold: creative-work (0-2), person (4), person (6). Predicted: creative-work (0-2), person (4), location (6).
    # creative-work: 1 of 1, F1 1. person: matched 1, predicted 1, gold 2: P 1, R 0.5, F1 2/3.
    # location: predicted 1, matched 0, gold 0: F1 0. Overall: matched 2 of 3 predicted and of 3 gold,
    # P = R = F1 = 2/3. Tokens right: 6 of 7.
    gold = [["B-creative-work", "I-creative-work", "I-creative-work", "O", "B-person", "O", "B-person"]]
    predicted = [["B-creative-work", "I-creative-work", "I-creative-work", "O", "B-person", "O", "B-location"]]

    assert scores_of(gold, predicted) == {
        "precision": pytest.approx(2 / 3),
        "recall": pytest.approx(2 / 3),
        "f1": pytest.approx(2 / 3),
        "accuracy": pytest.approx(6 / 7),
        "f1_creative-work": 1.0,
        "f1_location": 0.0,
        "f1_person": pytest.approx(2 / 3),
    }


def test_nothing_added_scores_zero() -> None:
    assert EntityScores().compute() == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "accuracy": 0.0}


def test_adding_batch_by_batch_equals_adding_all_at_once() -> None:
    gold, predicted = random_sentences(seed=1, count=200)
    streamed = EntityScores()
    for start, end in [(0, 1), (1, 64), (64, 64), (64, 130), (130, 200)]:
        streamed.add(gold[start:end], predicted[start:end])

    assert streamed.compute() == scores_of(gold, predicted)


@pytest.mark.parametrize("seed", [2, 3, 4])
def test_scores_equal_seqeval_to_the_last_bit(seed: int) -> None:
    gold, predicted = random_sentences(seed, count=500)
    scores = EntityScores()
    for start in range(0, 500, 32):
        scores.add(gold[start : start + 32], predicted[start : start + 32])
    computed = scores.compute()
    report = classification_report(gold, predicted, output_dict=True)
    per_type = {f"f1_{name}": row["f1-score"] for name, row in report.items() if not name.endswith(" avg")}

    assert set(per_type) == {f"f1_{entity_type}" for entity_type in TYPES}
    assert computed == {
        "precision": precision_score(gold, predicted),
        "recall": recall_score(gold, predicted),
        "f1": f1_score(gold, predicted),
        "accuracy": accuracy_score(gold, predicted),
        **per_type,
    }
    assert 0.3 < computed["f1"] < 0.9  # neither trivially perfect nor trivially zero


def test_a_batch_with_a_fault_is_refused_whole() -> None:
    scores = EntityScores()
    scores.add([["B-PER", "O"]], [["B-PER", "O"]])
    before = scores.compute()

    with pytest.raises(ValueError, match="tag 'PER' is not a BIO tag"):
        scores.add([["O"], ["PER"]], [["O"], ["O"]])
    with pytest.raises(ValueError, match="tag 'E-LOC' belongs to the IOBES scheme"):
        scores.add([["O"]], [["E-LOC"]])
    with pytest.raises(ValueError, match="sentence 1 has 2 gold tags but 1 predicted"):
        scores.add([["O"], ["O", "O"]], [["O"], ["O"]])
    with pytest.raises(ValueError, match="2 gold sentences but 1 predicted"):
        scores.add([["O"], ["O"]], [["O"]])
    assert scores.compute() == before
