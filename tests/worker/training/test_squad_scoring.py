from __future__ import annotations

import pytest

from worker.training.tasks.squad_scoring import (
    exact_match,
    find_best_thresholds,
    normalize_answer,
    score_predictions,
    score_question,
    token_f1,
)


@pytest.mark.parametrize(
    ("text", "normalized"),
    [
        ("The  Eiffel Tower!", "eiffel tower"),
        # Punctuation goes before articles: "-" vanishes, joining the words, so no "the" is left alone.
        ("The Eiffel-Tower", "eiffeltower"),
        # … so "a" is an article only when punctuation does not join it to a word: "a-bomb" is "abomb".
        ("an A-bomb", "abomb"),
        ("U.S.", "us"),
        # Only whole words are articles: "another" and "theatre" keep their letters.
        ("an apple, another theatre", "apple another theatre"),
        ("A\tcat\n", "cat"),
        ("the", ""),
    ],
)
def test_normalize_answer_lowers_then_drops_punctuation_articles_and_extra_spaces(text: str, normalized: str) -> None:
    assert normalize_answer(text) == normalized


@pytest.mark.parametrize(
    ("gold", "prediction", "exact", "f1"),
    [
        # "eiffel tower" both: identical.
        ("Eiffel Tower", "the Eiffel tower", 1, 1.0),
        # prediction [in, paris, france], gold [paris]: 1 shared; P = 1/3, R = 1, F1 = 2·(1/3·1)/(1/3 + 1) = 0.5.
        ("Paris", "in Paris France", 0, 0.5),
        # Both normalize to nothing: they agree.
        ("", "", 1, 1.0),
        ("", "Paris", 0, 0.0),
        ("Paris", "", 0, 0.0),
        # "the" is an empty answer once normalized.
        ("the", "", 1, 1.0),
        # [another, apple] vs [apple]: P = 1/2, R = 1, F1 = 2·(1/2)/(3/2) = 2/3.
        ("an apple", "another apple", 0, 2 / 3),
        # Bags, not sets: [paris, paris] vs [paris] share one; P = 1/2, R = 1, F1 = 2/3.
        ("Paris", "Paris, Paris", 0, 2 / 3),
        # Repeats count as often as both sides hold them: 2 shared of 2 and 2, F1 1 (a set would share 1, F1 0.5).
        ("Paris Paris", "Paris, Paris", 1, 1.0),
        # No shared word.
        ("Paris", "London", 0, 0.0),
        # [1889] vs [in, 1889]: P = 1/2, R = 1, F1 = 2/3; "1,889" would be one word "1889" too.
        ("1,889", "in 1889.", 0, 2 / 3),
    ],
)
def test_exact_match_and_f1_of_one_pair_worked_by_hand(gold: str, prediction: str, exact: int, f1: float) -> None:
    assert exact_match(gold, prediction) == exact
    assert token_f1(gold, prediction) == pytest.approx(f1)


def test_a_question_scores_its_best_gold_answer() -> None:
    # [broncos, team] vs [denver, broncos]: P = 1/2, R = 1/2, F1 = 1/2; vs [broncos]: P = 1/2, R = 1,
    # F1 = 2/3. The best of each measure counts.
    exact, f1 = score_question(["Denver Broncos", "Broncos"], "the Broncos team")
    assert exact == 0
    assert f1 == pytest.approx(2 / 3)
    assert score_question(["Denver Broncos", "Broncos"], "Broncos") == (1, 1.0)


def test_gold_answers_that_normalize_to_nothing_leave_the_empty_answer() -> None:
    # "a" and "!" are dropped as gold answers; only [""] remains, which "" matches and "Paris" does not.
    assert score_question(["a", "!"], "") == (1, 1.0)
    assert score_question(["a", "!"], "Paris") == (0, 0.0)
    # With one real answer beside them, the empty ones do not count.
    assert score_question(["the", "Paris"], "") == (0, 0.0)


def test_report_splits_answerable_and_unanswerable_questions() -> None:
    gold = {"q1": ["Eiffel Tower"], "q2": ["Paris"], "q3": [], "q4": []}
    predictions = {"q1": "the Eiffel tower", "q2": "in Paris France", "q3": "", "q4": "London"}
    # Per question (exact, F1): q1 (1, 1), q2 (0, 0.5), q3 (1, 1), q4 (0, 0).
    # All: exact 2/4 = 50 %, F1 2.5/4 = 62.5 %; answerable q1, q2: 1/2 = 50 %, 1.5/2 = 75 %;
    # unanswerable q3, q4: 1/2 = 50 %, 1/2 = 50 %.
    assert score_predictions(gold, predictions) == {
        "exact": 50.0,
        "f1": 62.5,
        "total": 4,
        "has_answer_exact": 50.0,
        "has_answer_f1": 75.0,
        "has_answer_total": 2,
        "no_answer_exact": 50.0,
        "no_answer_f1": 50.0,
        "no_answer_total": 2,
    }


def test_report_of_only_answerable_questions_has_no_no_answer_keys() -> None:
    # SQuAD v1: every question answerable. (1 + 0)/2 = 50 % exact; (1 + 0.5)/2 = 75 % F1.
    report = score_predictions({"q1": ["Paris"], "q2": ["Paris"]}, {"q1": "Paris", "q2": "in Paris France"})
    assert report == {
        "exact": 50.0,
        "f1": 75.0,
        "total": 2,
        "has_answer_exact": 50.0,
        "has_answer_f1": 75.0,
        "has_answer_total": 2,
    }


def test_question_whose_answers_all_normalize_to_nothing_still_counts_as_answerable() -> None:
    report = score_predictions({"q1": ["the"], "q2": []}, {"q1": "", "q2": ""})
    assert (report["has_answer_total"], report["no_answer_total"], report["exact"]) == (1, 1, 100.0)


def test_scoring_rejects_missing_or_unknown_predictions() -> None:
    with pytest.raises(ValueError, match=r"predictions miss 1 question ids \['q2'\] and add 1 unknown ones \['q3'\]"):
        score_predictions({"q1": ["Paris"], "q2": []}, {"q1": "Paris", "q3": ""})
    with pytest.raises(ValueError, match="no questions to score"):
        score_predictions({}, {})


def test_best_threshold_search_sweeps_null_score_differences_upward() -> None:
    gold = {"a": ["Paris"], "b": ["Paris"], "c": [], "d": [], "e": ["Rome"]}
    spans = {"a": "Paris", "b": "in Paris France", "c": "x", "d": "y", "e": "Rome"}
    diffs = {"a": -3.0, "b": 1.0, "c": 2.0, "d": -1.0, "e": 1.5}
    # Answering nothing scores the 2 unanswerable questions. Sweeping by diff: a (-3) +1 → 3;
    # d (-1) answers "y" to no question, -1 → 2; b (1) +0 exact, +0.5 F1 → 2 | 2.5; e (1.5) +1 →
    # 3 | 3.5; c (2) -1 → 2 | 2.5. Exact peaks first at 3 after a: 3/5 = 60 % at -3; F1 at 3.5
    # after e: 3.5/5 = 70 % at 1.5.
    assert find_best_thresholds(gold, spans, diffs) == {
        "best_exact": 60.0,
        "best_exact_threshold": -3.0,
        "best_f1": 70.0,
        "best_f1_threshold": 1.5,
    }
    # Predicting "" where the diff exceeds 1.5 (only c) reproduces the best F1.
    thresholded = {question: "" if diffs[question] > 1.5 else span for question, span in spans.items()}
    assert score_predictions(gold, thresholded)["f1"] == pytest.approx(70.0)


def test_an_empty_prediction_to_an_unanswerable_question_costs_nothing_in_the_sweep() -> None:
    # From 1 (c answered by nothing): c (-2) predicts "" to a question without answer, ±0 → 1;
    # a (1) +1 → 2 = 2/2 = 100 % at 1. Counting c as a wrong answer would peak at 1, 50 %.
    result = find_best_thresholds({"a": ["Paris"], "c": []}, {"a": "Paris", "c": ""}, {"c": -2.0, "a": 1.0})
    assert result == {"best_exact": 100.0, "best_exact_threshold": 1.0, "best_f1": 100.0, "best_f1_threshold": 1.0}


def test_best_threshold_stays_zero_when_answering_nothing_is_best() -> None:
    # Both questions are unanswerable and both spans wrong: every step down from 2 loses, so the
    # script's initial threshold 0.0 stays, though the diffs are 5 and 7.
    result = find_best_thresholds({"c": [], "d": []}, {"c": "x", "d": "y"}, {"c": 5.0, "d": 7.0})
    assert result == {"best_exact": 100.0, "best_exact_threshold": 0.0, "best_f1": 100.0, "best_f1_threshold": 0.0}


def test_best_threshold_search_rejects_mismatched_ids() -> None:
    with pytest.raises(ValueError, match="null score differences miss 1 question ids"):
        find_best_thresholds({"a": ["Paris"], "b": []}, {"a": "Paris", "b": ""}, {"a": 0.0})
