from __future__ import annotations

import pytest
import torch

from worker.training.examples import IGNORED_LABEL, PaddingSide, TokenisedExamples, from_lists

INPUT_IDS = [[2, 10, 11, 3], [2, 12, 3], [2, 13, 14, 15, 16, 3], [2, 3]]
TOKEN_LABELS = [[IGNORED_LABEL, 1, 0, IGNORED_LABEL], [7, 8, 9], [1, 2, 3, 4, 5, 6], [5, 5]]


def examples(padding_side: PaddingSide = "right") -> TokenisedExamples:
    return from_lists(
        {"input_ids": INPUT_IDS, "token_labels": TOKEN_LABELS},
        {"labels": [1, 0, 1, 0]},
        {"input_ids": 99, "token_labels": IGNORED_LABEL},
        padding_side,
    )


def test_a_batch_pads_to_its_longest_example_with_each_fields_pad_value() -> None:
    batch = examples().batch([1, 0])
    assert batch["input_ids"].tolist() == [[2, 12, 3, 99], [2, 10, 11, 3]]
    assert batch["token_labels"].tolist() == [[7, 8, 9, IGNORED_LABEL], [IGNORED_LABEL, 1, 0, IGNORED_LABEL]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 0], [1, 1, 1, 1]]


def test_a_batch_is_as_wide_as_its_own_longest_example_not_the_files() -> None:
    assert examples().batch([3, 1])["input_ids"].shape == (2, 3)
    assert examples().batch([2])["input_ids"].shape == (1, 6)


def test_a_batch_keeps_per_example_fields_in_the_batch_order_as_long_tensors() -> None:
    batch = examples().batch([2, 3, 0])
    assert batch["labels"].tolist() == [1, 0, 1]
    assert {name: tensor.dtype for name, tensor in batch.items()} == dict.fromkeys(
        ["attention_mask", "input_ids", "token_labels", "labels"], torch.long
    )


def test_left_padding_puts_the_pads_first() -> None:
    batch = examples("left").batch([3, 2, 1])
    assert batch["input_ids"].tolist() == [
        [99, 99, 99, 99, 2, 3],
        [2, 13, 14, 15, 16, 3],
        [99, 99, 99, 2, 12, 3],
    ]
    assert batch["attention_mask"].tolist() == [
        [0, 0, 0, 0, 1, 1],
        [1, 1, 1, 1, 1, 1],
        [0, 0, 0, 1, 1, 1],
    ]
    assert batch["token_labels"][0].tolist() == [IGNORED_LABEL] * 4 + [5, 5]


@pytest.mark.parametrize("padding_side", ["right", "left"])
def test_flat_token_index_lists_tokens_in_the_order_of_the_batch_mask(padding_side: PaddingSide) -> None:
    data = examples(padding_side)
    indices = [2, 0, 3, 1]
    batch = data.batch(indices)
    flat = data.token_fields["input_ids"][data.flat_token_index(indices)]
    assert flat.tolist() == batch["input_ids"][batch["attention_mask"].bool()].tolist()
    assert flat.tolist() == [token for index in indices for token in INPUT_IDS[index]]


def test_lengths_and_total_tokens_follow_the_offsets() -> None:
    data = examples()
    assert data.offsets.tolist() == [0, 4, 7, 13, 15]
    assert data.lengths.tolist() == [4, 3, 6, 2]
    assert data.total_tokens == 15
    assert len(data) == 4


def test_from_lists_round_trips_every_example() -> None:
    data = examples()
    for index, (ids, labels) in enumerate(zip(INPUT_IDS, TOKEN_LABELS, strict=True)):
        start, end = int(data.offsets[index]), int(data.offsets[index + 1])
        assert data.token_fields["input_ids"][start:end].tolist() == ids
        assert data.token_fields["token_labels"][start:end].tolist() == labels
    assert data.example_fields["labels"].tolist() == [1, 0, 1, 0]
    assert data.pad_values == {"input_ids": 99, "token_labels": IGNORED_LABEL}
    assert data.padding_side == "right"


def test_the_constructor_refuses_a_token_field_of_the_wrong_length() -> None:
    offsets = torch.tensor([0, 2, 5])
    with pytest.raises(ValueError, match="token field token_type_ids holds 4 values for 5 tokens"):
        TokenisedExamples(
            offsets,
            {"input_ids": torch.arange(5), "token_type_ids": torch.zeros(4, dtype=torch.long)},
            {"labels": torch.tensor([0, 1])},
        )


def test_the_constructor_refuses_an_example_field_of_the_wrong_length() -> None:
    offsets = torch.tensor([0, 2, 5])
    with pytest.raises(ValueError, match="example field labels holds 3 values for 2 examples"):
        TokenisedExamples(offsets, {"input_ids": torch.arange(5)}, {"labels": torch.tensor([0, 1, 1])})


def test_first_tokens_is_the_first_column_of_the_padded_batch() -> None:
    examples = from_lists(
        {
            "input_ids": [[101, 7, 102], [101, 102], [101, 8, 9, 102]],
            "token_type_ids": [[0, 0, 0], [0, 0], [0, 0, 0, 0]],
        },
        {"labels": [1, 0, 1]},
        pad_values={"input_ids": 0},
    )
    padded, first = examples.batch([2, 0]), examples.first_tokens([2, 0])
    assert set(first) == set(padded)
    for name in ("input_ids", "token_type_ids", "attention_mask"):
        assert torch.equal(first[name], padded[name][:, :1])
    assert torch.equal(first["labels"], padded["labels"])


def test_first_tokens_refuses_left_padding_where_the_first_token_is_a_pad() -> None:
    examples = from_lists({"input_ids": [[5, 6]]}, {"labels": [0]}, pad_values={}, padding_side="left")
    with pytest.raises(ValueError, match="left-padded"):
        examples.first_tokens([0])
