"""Which examples go into which batch: length-grouped for training, length-sorted for inference.

Padding to the longest example of a random batch wastes most of a batch's compute when lengths
vary (SST-2's phrases run from 3 to 56 tokens). Grouping similar lengths into a batch, as
`transformers`' `group_by_length` does, removes that waste while keeping batches random: the epoch's
shuffled order is cut into mega-batches of `MEGABATCH_BATCHES` batches, each is sorted by length
and cut into batches, and the batches are shuffled again.

The whole order is a pure function of (seed, epoch, lengths): a run resumed mid-epoch skips the
batches it already trained on and draws exactly the ones an uninterrupted run would have drawn.
"""

from __future__ import annotations

import torch

MEGABATCH_BATCHES = 50


def length_grouped_batches(lengths: torch.Tensor, batch_size: int, *, seed: int, epoch: int) -> list[list[int]]:
    """Epoch `epoch`'s batches of example indices; all have `batch_size` examples except possibly the last."""
    generator = torch.Generator().manual_seed(seed + epoch)
    order = torch.randperm(len(lengths), generator=generator)
    megabatch = batch_size * MEGABATCH_BATCHES
    batches: list[list[int]] = []
    for start in range(0, len(order), megabatch):
        chunk = order[start : start + megabatch]
        # A stable sort: ties keep their shuffled order, so the result depends on nothing but the inputs.
        chunk = chunk[torch.sort(lengths[chunk], descending=True, stable=True).indices]
        batches += [chunk[i : i + batch_size].tolist() for i in range(0, len(chunk), batch_size)]
    # Only the epoch's very last batch may be short; shuffle the others and keep it last.
    full, last = (batches[:-1], batches[-1:]) if len(batches[-1]) < batch_size else (batches, [])
    shuffled = [full[i] for i in torch.randperm(len(full), generator=generator).tolist()]
    return shuffled + last


def length_sorted_batches(lengths: torch.Tensor, batch_size: int) -> list[list[int]]:
    """Every example once, in batches of similar length: the cheapest order for a pass without gradients."""
    order = torch.sort(lengths, stable=True).indices
    return [order[i : i + batch_size].tolist() for i in range(0, len(order), batch_size)]
