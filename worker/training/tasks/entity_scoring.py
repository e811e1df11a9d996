"""Seqeval's entity-level scores of BIO-tagged sentences, accumulated batch by batch."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from seqeval.metrics.sequence_labeling import get_entities

from models.bio_tags import bio_tag_fault

Entity = tuple[str, int, int]  # (type, first word, last word) within one sentence


class EntityScores:
    """A streaming scorer: `add` sentences as they are evaluated; `compute` scores all added so far.

    Each sentence is reduced to counts as it arrives (entities found, predicted, matched per type;
    tokens seen and right), so memory stays constant however large the evaluation set. Entities
    are read by seqeval's `get_entities`, its default mode, compatible with conlleval: an 'I-x'
    after 'O' or after another type starts an entity. A predicted entity counts only if its type
    and both boundaries match a gold one, so a boundary error is one false positive and one false
    negative. Seqeval joins sentences with an 'O' between them; scoring sentence by sentence is
    the same, as no entity crosses that 'O'.
    """

    def __init__(self) -> None:
        self.gold_entities: Counter[str] = Counter()
        self.predicted_entities: Counter[str] = Counter()
        self.matched_entities: Counter[str] = Counter()
        self.tokens = 0
        self.correct_tokens = 0
        self.checked_tags: set[str] = set()

    def add(self, gold: Sequence[Sequence[str]], predicted: Sequence[Sequence[str]]) -> None:
        """Count a batch of sentences: gold[i] and predicted[i] are sentence i's tags, word by word.

        Raises ValueError, before counting anything, when the sentence counts or a sentence's
        lengths differ, or a tag is not BIO (see `models.bio_tags.bio_tag_fault`).
        """
        if len(gold) != len(predicted):
            raise ValueError(f"{len(gold)} gold sentences but {len(predicted)} predicted")
        for index, (gold_tags, predicted_tags) in enumerate(zip(gold, predicted, strict=True)):
            if len(gold_tags) != len(predicted_tags):
                raise ValueError(f"sentence {index} has {len(gold_tags)} gold tags but {len(predicted_tags)} predicted")
            self.check_tags(gold_tags)
            self.check_tags(predicted_tags)
        for gold_tags, predicted_tags in zip(gold, predicted, strict=True):
            gold_set = set(entities(gold_tags))
            predicted_set = set(entities(predicted_tags))
            self.gold_entities.update(entity_type for entity_type, _, _ in gold_set)
            self.predicted_entities.update(entity_type for entity_type, _, _ in predicted_set)
            self.matched_entities.update(entity_type for entity_type, _, _ in gold_set & predicted_set)
            self.tokens += len(gold_tags)
            self.correct_tokens += sum(g == p for g, p in zip(gold_tags, predicted_tags, strict=True))

    def check_tags(self, tags: Sequence[str]) -> None:
        """Raise ValueError at the first tag that is not BIO; seqeval would only warn and score it anyway."""
        for tag in tags:
            if tag in self.checked_tags:
                continue
            fault = bio_tag_fault(tag)
            if fault is not None:
                raise ValueError(fault)
            self.checked_tags.add(tag)

    def compute(self) -> dict[str, float]:
        """The scores of every sentence added so far.

        `precision`, `recall` and `f1` are micro-averaged over entities (seqeval's `f1_score` and
        friends); `accuracy` is the share of tokens tagged right (`accuracy_score`). `f1_<type>`
        is one type's F1 (classification_report's per-type row), for each type found in the gold
        tags or the predictions; the type is written as the tags spell it ('f1_creative-work'),
        which `bio_tag_fault` keeps to letters, digits, '_', '-' and '.', safe as a JSON key or
        CSV column. A score whose denominator is 0 is 0.0, as seqeval sets it, and so is the
        accuracy of no tokens at all.
        """
        scores = scores_from_counts(
            sum(self.matched_entities.values()),
            sum(self.predicted_entities.values()),
            sum(self.gold_entities.values()),
        )
        scores["accuracy"] = self.correct_tokens / self.tokens if self.tokens else 0.0
        for entity_type in sorted(self.gold_entities.keys() | self.predicted_entities.keys()):
            type_scores = scores_from_counts(
                self.matched_entities[entity_type],
                self.predicted_entities[entity_type],
                self.gold_entities[entity_type],
            )
            scores[f"f1_{entity_type}"] = type_scores["f1"]
        return scores


def entities(tags: Sequence[str]) -> list[Entity]:
    """The entities of one sentence's tags, by seqeval's (conlleval's) reading."""
    found: list[Entity] = get_entities(list(tags))
    return found


def scores_from_counts(matched: int, predicted: int, gold: int) -> dict[str, float]:
    """Precision, recall and F1 from entity counts, in seqeval's arithmetic (so equal to the last bit)."""
    precision = matched / predicted if predicted else 0.0
    recall = matched / gold if gold else 0.0
    # seqeval's (1 + β²)·P·R / (β²·P + R) with β = 1, evaluated in the same order.
    f1 = 2.0 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1}
