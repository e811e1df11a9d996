"""Tokenised examples held flat (one tensor per field, no padding) and padded per batch on demand.

A file of N examples is stored as each token field concatenated (`input_ids`, `token_type_ids`,
per-token labels of future tasks) plus N + 1 offsets, and per-example fields (`labels`) beside
them. That is as compact as the data can be, it is written to the derived-data cache as plain
arrays, and a batch pads only to its own longest example.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch

Batch = dict[str, torch.Tensor]
PaddingSide = Literal["left", "right"]
IGNORED_LABEL = -100  # what per-token label fields pad with: the loss skips it


@dataclass(frozen=True)
class TokenisedExamples:
    """Examples i's tokens are `token_fields[name][offsets[i]:offsets[i + 1]]`."""

    offsets: torch.Tensor
    token_fields: dict[str, torch.Tensor]
    example_fields: dict[str, torch.Tensor]
    pad_values: dict[str, int] = field(default_factory=dict)
    padding_side: PaddingSide = "right"
    # What a task keeps beside the network's inputs (word ids, character offsets, window→example maps),
    # laid out like the fields above but never put in a batch: its evaluator reads them by index.
    side_token_fields: dict[str, torch.Tensor] = field(default_factory=dict)
    side_example_fields: dict[str, torch.Tensor] = field(default_factory=dict)

    def __post_init__(self) -> None:
        total = int(self.offsets[-1])
        for name, values in (self.token_fields | self.side_token_fields).items():
            if values.shape[0] != total:
                raise ValueError(f"token field {name} holds {values.shape[0]} values for {total} tokens")
        for name, values in (self.example_fields | self.side_example_fields).items():
            if values.shape[0] != len(self):
                raise ValueError(f"example field {name} holds {values.shape[0]} values for {len(self)} examples")

    def __len__(self) -> int:
        return int(self.offsets.shape[0]) - 1

    @property
    def lengths(self) -> torch.Tensor:
        return self.offsets[1:] - self.offsets[:-1]

    @property
    def total_tokens(self) -> int:
        return int(self.offsets[-1])

    def batch(self, indices: list[int]) -> Batch:
        """Examples `indices`, padded to the longest of them, with an attention mask."""
        lengths = self.lengths[indices]
        longest = int(lengths.max())
        positions = torch.arange(longest)
        if self.padding_side == "right":
            mask = positions.unsqueeze(0) < lengths.unsqueeze(1)
        else:
            mask = positions.unsqueeze(0) >= (longest - lengths).unsqueeze(1)
        token_index = self.flat_token_index(indices)
        batch: Batch = {"attention_mask": mask.long()}
        for name, values in self.token_fields.items():
            padded = torch.full((len(indices), longest), self.pad_values.get(name, 0), dtype=torch.long)
            padded[mask] = values[token_index].long()
            batch[name] = padded
        for name, values in self.example_fields.items():
            batch[name] = values[indices].long()
        return batch

    def first_tokens(self, indices: list[int]) -> Batch:
        """Examples `indices` cut to their first token (right padding only): all a [CLS] head reads."""
        if self.padding_side != "right":
            raise ValueError("the first token of a left-padded batch is padding")
        starts = self.offsets[indices]
        batch: Batch = {"attention_mask": torch.ones((len(indices), 1), dtype=torch.long)}
        for name, values in self.token_fields.items():
            batch[name] = values[starts].long().unsqueeze(1)
        for name, values in self.example_fields.items():
            batch[name] = values[indices].long()
        return batch

    def flat_token_index(self, indices: list[int]) -> torch.Tensor:
        """The flat positions of the tokens of `indices`, row by row: the order a batch's mask lists them in."""
        lengths = self.lengths[indices]
        starts = self.offsets[indices]
        token_index = torch.repeat_interleave(starts - torch.cumsum(lengths, 0) + lengths, lengths)
        return token_index + torch.arange(int(lengths.sum()))


def from_lists(
    token_fields: dict[str, list[list[int]]],
    example_fields: dict[str, list[int]],
    pad_values: dict[str, int],
    padding_side: PaddingSide = "right",
    *,
    side_token_fields: dict[str, list[list[int]]] | None = None,
    side_example_fields: dict[str, list[int]] | None = None,
) -> TokenisedExamples:
    """Flatten a tokenizer's per-example lists."""
    first = next(iter(token_fields.values()))
    lengths = torch.tensor([len(tokens) for tokens in first], dtype=torch.long)
    offsets = torch.zeros(len(first) + 1, dtype=torch.long)
    torch.cumsum(lengths, 0, out=offsets[1:])
    return TokenisedExamples(
        offsets,
        _flat(token_fields),
        _per_example(example_fields),
        pad_values,
        padding_side,
        side_token_fields=_flat(side_token_fields or {}),
        side_example_fields=_per_example(side_example_fields or {}),
    )


def _flat(fields: dict[str, list[list[int]]]) -> dict[str, torch.Tensor]:
    return {
        name: torch.tensor([token for tokens in rows for token in tokens], dtype=torch.int32)
        for name, rows in fields.items()
    }


def _per_example(fields: dict[str, list[int]]) -> dict[str, torch.Tensor]:
    return {name: torch.tensor(values, dtype=torch.long) for name, values in fields.items()}
