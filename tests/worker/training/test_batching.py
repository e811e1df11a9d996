from __future__ import annotations

import torch

from worker.training.batching import MEGABATCH_BATCHES, length_grouped_batches, length_sorted_batches


def skewed_lengths(count: int, seed: int = 0) -> torch.Tensor:
    """Mostly short examples and a long tail, like SST-2's phrases: 3 to 64 tokens, mean about 10."""
    uniform = torch.rand(count, generator=torch.Generator().manual_seed(seed))
    return (3 - 8 * torch.log1p(-uniform)).long().clamp(max=64)


def padding_waste(batches: list[list[int]], lengths: torch.Tensor) -> float:
    """The fraction of a padded batch's positions that are padding, over all batches."""
    padded = sum(int(lengths[batch].max()) * len(batch) for batch in batches)
    real = sum(int(lengths[batch].sum()) for batch in batches)
    return (padded - real) / padded


def test_the_same_seed_epoch_and_lengths_give_the_same_batches() -> None:
    lengths = skewed_lengths(1000)
    first = length_grouped_batches(lengths, 8, seed=3, epoch=1)
    again = length_grouped_batches(lengths.clone(), 8, seed=3, epoch=1)
    assert first == again


def test_batches_differ_across_epochs_and_seeds() -> None:
    lengths = skewed_lengths(1000)
    reference = length_grouped_batches(lengths, 8, seed=3, epoch=1)
    assert length_grouped_batches(lengths, 8, seed=3, epoch=2) != reference
    assert length_grouped_batches(lengths, 8, seed=4, epoch=1) != reference


def test_the_order_does_not_touch_the_global_random_generator() -> None:
    torch.manual_seed(11)
    expected = torch.rand(3)
    torch.manual_seed(11)
    length_grouped_batches(skewed_lengths(200), 8, seed=3, epoch=1)
    assert torch.equal(torch.rand(3), expected)


def test_every_example_appears_exactly_once_per_epoch() -> None:
    lengths = skewed_lengths(1003)  # more than one mega-batch (8 × 50 = 400) and a ragged end
    for epoch in (1, 2, 3):
        batches = length_grouped_batches(lengths, 8, seed=3, epoch=epoch)
        indices = [index for batch in batches for index in batch]
        assert sorted(indices) == list(range(1003))


def test_all_batches_are_full_except_a_short_last_one() -> None:
    lengths = skewed_lengths(1003)
    batches = length_grouped_batches(lengths, 8, seed=3, epoch=1)
    assert len(batches) == 126  # ⌈1003 / 8⌉
    assert [len(batch) for batch in batches[:-1]] == [8] * 125
    assert len(batches[-1]) == 1003 % 8


def test_the_short_batch_is_last_in_every_epoch_and_seed() -> None:
    lengths = skewed_lengths(3 * 8 * MEGABATCH_BATCHES + 5)
    for seed, epoch in [(0, 1), (1, 1), (0, 2), (7, 5)]:
        sizes = [len(batch) for batch in length_grouped_batches(lengths, 8, seed=seed, epoch=epoch)]
        assert sizes[-1] == 5
        assert set(sizes[:-1]) == {8}


def test_a_size_that_divides_evenly_gives_only_full_batches() -> None:
    batches = length_grouped_batches(skewed_lengths(800), 8, seed=3, epoch=1)
    assert len(batches) == 100
    assert all(len(batch) == 8 for batch in batches)


def test_fewer_examples_than_a_batch_give_one_short_batch() -> None:
    batches = length_grouped_batches(torch.tensor([5, 3, 9]), 8, seed=3, epoch=1)
    assert len(batches) == 1
    assert sorted(batches[0]) == [0, 1, 2]


def test_full_batches_are_shuffled_rather_than_left_in_length_order() -> None:
    lengths = skewed_lengths(8 * MEGABATCH_BATCHES)  # one mega-batch: sorted longest first before the shuffle
    batches = length_grouped_batches(lengths, 8, seed=3, epoch=1)
    longest = [int(lengths[batch].max()) for batch in batches]
    assert longest != sorted(longest, reverse=True)
    assert longest != sorted(longest)


def test_grouped_batches_waste_far_less_padding_than_random_batches() -> None:
    lengths = skewed_lengths(4000)
    grouped = length_grouped_batches(lengths, 16, seed=3, epoch=1)
    order = torch.randperm(4000, generator=torch.Generator().manual_seed(3)).tolist()
    random_batches = [order[i : i + 16] for i in range(0, 4000, 16)]
    random_waste = padding_waste(random_batches, lengths)
    assert random_waste > 0.4  # the skew makes random batches mostly padding
    assert padding_waste(grouped, lengths) < random_waste / 5


def test_length_sorted_batches_cover_every_example_once_in_non_decreasing_length() -> None:
    lengths = skewed_lengths(1003)
    batches = length_sorted_batches(lengths, 64)
    indices = [index for batch in batches for index in batch]
    assert sorted(indices) == list(range(1003))
    in_order = lengths[indices].tolist()
    assert in_order == sorted(in_order)
    assert [len(batch) for batch in batches] == [64] * 15 + [1003 - 15 * 64]
