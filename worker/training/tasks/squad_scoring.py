"""Exact match and F1 of predicted answers, computed as the official SQuAD v2.0 evaluation script computes them."""

from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Mapping, Sequence

ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)
PUNCTUATION = frozenset(string.punctuation)


def normalize_answer(text: str) -> str:
    """Lower-case, drop ASCII punctuation, then the articles a/an/the, then collapse whitespace (the script's order)."""
    without_punctuation = "".join(character for character in text.lower() if character not in PUNCTUATION)
    return " ".join(ARTICLES.sub(" ", without_punctuation).split())


def answer_tokens(text: str) -> list[str]:
    """The normalized answer's words (the script's `get_tokens`)."""
    return normalize_answer(text).split() if text else []


def exact_match(gold: str, prediction: str) -> int:
    """1 when the normalized texts are equal, else 0."""
    return int(normalize_answer(gold) == normalize_answer(prediction))


def token_f1(gold: str, prediction: str) -> float:
    """F1 of the two bags of normalized words; when either has none, 1.0 if both have none, else 0.0."""
    gold_tokens, predicted_tokens = answer_tokens(gold), answer_tokens(prediction)
    if not gold_tokens or not predicted_tokens:
        return float(gold_tokens == predicted_tokens)
    shared = sum((Counter(gold_tokens) & Counter(predicted_tokens)).values())
    if shared == 0:
        return 0.0
    precision, recall = shared / len(predicted_tokens), shared / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


def scorable_answers(answers: Sequence[str]) -> list[str]:
    """The gold answers that normalize to something, or [""] when none does (an unanswerable question's one answer)."""
    return [answer for answer in answers if normalize_answer(answer)] or [""]


def score_question(answers: Sequence[str], prediction: str) -> tuple[int, float]:
    """(exact match, F1) of one prediction: each the best over the question's scorable gold answers."""
    golds = scorable_answers(answers)
    return max(exact_match(gold, prediction) for gold in golds), max(token_f1(gold, prediction) for gold in golds)


def score_predictions(gold_answers: Mapping[str, Sequence[str]], predictions: Mapping[str, str]) -> dict[str, float]:
    """The script's report, in percent, over every question of `gold_answers` (id → gold texts, [] if unanswerable).

    Keys: `exact`, `f1`, `total`; `has_answer_exact`, `has_answer_f1`, `has_answer_total` when some
    question has gold answers; `no_answer_exact`, `no_answer_f1`, `no_answer_total` when some has
    none (the script's `HasAns_*`/`NoAns_*`, omitted as it omits them). A question counts as
    answerable when its gold list is not empty, even if every answer normalizes to nothing.
    `predictions` maps each id to its answer, "" for no answer. Raises ValueError when there are
    no questions or the two hold different ids (the script skips a missing prediction in the
    total but then fails on it in HasAns/NoAns).
    """
    check_same_questions(gold_answers, predictions, "predictions")
    exact_scores, f1_scores = raw_scores(gold_answers, predictions)
    report = percentages(exact_scores, f1_scores, list(gold_answers), prefix="")
    has_answer = [question_id for question_id, answers in gold_answers.items() if answers]
    no_answer = [question_id for question_id, answers in gold_answers.items() if not answers]
    if has_answer:
        report |= percentages(exact_scores, f1_scores, has_answer, prefix="has_answer_")
    if no_answer:
        report |= percentages(exact_scores, f1_scores, no_answer, prefix="no_answer_")
    return report


def find_best_thresholds(
    gold_answers: Mapping[str, Sequence[str]],
    span_predictions: Mapping[str, str],
    null_score_diffs: Mapping[str, float],
) -> dict[str, float]:
    """The script's best-threshold search: `best_exact`, `best_exact_threshold`, `best_f1`, `best_f1_threshold`.

    `span_predictions` are each question's best non-null span (`SpanAnswer.span_text`) and
    `null_score_diffs` its evidence for no answer (`SpanAnswer.null_score_diff`, the script's
    na_prob). Predicting "" wherever the diff exceeds a best threshold reproduces its score,
    except that, as in the script, the threshold stays 0.0 when answering nothing scores best.
    Raises ValueError when there are no questions or the mappings hold different ids.
    """
    check_same_questions(gold_answers, span_predictions, "span predictions")
    check_same_questions(gold_answers, null_score_diffs, "null score differences")
    exact_scores, f1_scores = raw_scores(gold_answers, span_predictions)
    has_answer = {question_id: bool(answers) for question_id, answers in gold_answers.items()}
    best_exact, exact_threshold = find_best_threshold(span_predictions, exact_scores, null_score_diffs, has_answer)
    best_f1, f1_threshold = find_best_threshold(span_predictions, f1_scores, null_score_diffs, has_answer)
    return {
        "best_exact": best_exact,
        "best_exact_threshold": exact_threshold,
        "best_f1": best_f1,
        "best_f1_threshold": f1_threshold,
    }


def find_best_threshold(
    predictions: Mapping[str, str],
    scores: Mapping[str, float],
    null_score_diffs: Mapping[str, float],
    has_answer: Mapping[str, bool],
) -> tuple[float, float]:
    """(best score in percent, its threshold): the script's `find_best_thresh`, a sweep from answering nothing upward.

    Questions are taken in ascending order of diff (ties in mapping order, Python's stable
    sort); answering each changes the count by its score if it has an answer, by -1 if it has
    none and the prediction is not empty. The best count's last diff is the threshold.
    """
    current = float(sum(1 for answerable in has_answer.values() if not answerable))
    best, threshold = current, 0.0
    for question_id in sorted(null_score_diffs, key=lambda key: null_score_diffs[key]):
        if has_answer[question_id]:
            current += scores[question_id]
        elif predictions[question_id]:
            current -= 1
        if current > best:
            best, threshold = current, null_score_diffs[question_id]
    return 100.0 * best / len(scores), threshold


def raw_scores(
    gold_answers: Mapping[str, Sequence[str]], predictions: Mapping[str, str]
) -> tuple[dict[str, float], dict[str, float]]:
    """Per question id: exact match and F1 of its prediction, before any threshold."""
    exact_scores: dict[str, float] = {}
    f1_scores: dict[str, float] = {}
    for question_id, answers in gold_answers.items():
        exact_scores[question_id], f1_scores[question_id] = score_question(answers, predictions[question_id])
    return exact_scores, f1_scores


def percentages(
    exact_scores: Mapping[str, float], f1_scores: Mapping[str, float], question_ids: Sequence[str], *, prefix: str
) -> dict[str, float]:
    """Mean exact match and F1 over `question_ids` in percent, and their count, keys prefixed."""
    total = len(question_ids)
    return {
        f"{prefix}exact": 100.0 * sum(exact_scores[question_id] for question_id in question_ids) / total,
        f"{prefix}f1": 100.0 * sum(f1_scores[question_id] for question_id in question_ids) / total,
        f"{prefix}total": total,
    }


def check_same_questions(gold_answers: Mapping[str, object], other: Mapping[str, object], name: str) -> None:
    """Raise ValueError when there are no questions or `other` does not hold exactly the gold question ids."""
    if not gold_answers:
        raise ValueError("no questions to score")
    missing = [question_id for question_id in gold_answers if question_id not in other]
    extra = [question_id for question_id in other if question_id not in gold_answers]
    if missing or extra:
        raise ValueError(
            f"{name} miss {len(missing)} question ids {missing[:3]} and add {len(extra)} unknown ones {extra[:3]}"
        )
