"""Run the frozen bottom of a network once, then train only what sits above it.

Under `feature_extraction` and `partial` the embeddings and the lowest layers are frozen and in eval
mode: deterministic functions of the input. Their output at the freeze boundary (the hidden
states leaving the last frozen layer) is therefore the same in every epoch, and computing it once,
in inference mode and in length-sorted batches, replaces every later pass through those layers.

While training on the cached states, the frozen layers' `forward` is swapped for a pass-through
(the last one returns the cached states of the batch at hand), so the network's own forward, with
its masks and head, runs unchanged above the boundary. The embeddings still run (a table lookup):
that keeps the mechanism independent of how an architecture combines its embeddings.

When only the first token's state reaches the head (BERT's pooler, a `[CLS]` head) — found out by
asking autograd which positions the head's output depends on — only that token is kept: the
cache of `feature_extraction` is then one vector per example.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from enum import StrEnum
from typing import Any

import torch
from torch import nn

from worker.training.batching import length_sorted_batches
from worker.training.examples import Batch, TokenisedExamples

PROBE_EXAMPLES = 8


class FeaturePath(StrEnum):
    """How a job's frozen part was handled; reported in its events."""

    not_applicable = "not_applicable"  # nothing frozen below the trainable layers (full, layerwise_lr)
    cached = "cached"  # computed once (or found in the cache), held in memory
    memory_mapped = "memory_mapped"  # computed once, held in a file on disk and read as needed
    recomputed = "recomputed"  # the frozen layers run at every step


class _BoundaryReached(Exception):
    """Raised by the hook on the last frozen layer: nothing above it needs computing."""


class FrozenPrefix:
    """The embeddings and `layers[:depth]` of a network whose parameters are all frozen.

    `label_fields` are the batch fields the task's loss reads (`labels`, a span's positions): never
    inputs of the network when it runs for its states.
    """

    def __init__(
        self,
        network: nn.Module,
        layers: list[nn.Module],
        depth: int,
        *,
        label_fields: tuple[str, ...],
    ) -> None:
        if not 1 <= depth <= len(layers):
            raise ValueError(f"a frozen prefix needs 1 to {len(layers)} layers, not {depth}")
        self.network = network
        self.layers = layers
        self.depth = depth
        self.label_fields = frozenset(label_fields)
        self.pending: torch.Tensor | None = None  # the cached states of the batch being trained on
        self._layer_returns_tuple = False
        self._serving = False  # inside replaced(), unless boundary_states is computing

    @property
    def last_layer(self) -> nn.Module:
        return self.layers[self.depth - 1]

    def inputs(self, batch: Batch, device: torch.device) -> Batch:
        """The batch's network inputs on `device`: every field but the labels."""
        return {name: tensor.to(device) for name, tensor in batch.items() if name not in self.label_fields}

    def boundary_states(self, inputs: Batch) -> torch.Tensor:
        """The hidden states leaving the last frozen layer, for one padded batch; no layer above runs.

        Works inside `replaced()` too (the frozen layers then compute for real for this call), so
        features can be filled in while training runs on those already computed.
        """
        captured: list[torch.Tensor] = []

        def capture(_module: nn.Module, _args: Any, output: Any) -> None:
            self._layer_returns_tuple = isinstance(output, tuple)
            captured.append(output[0] if isinstance(output, tuple) else output)
            raise _BoundaryReached

        handle = self.last_layer.register_forward_hook(capture)
        serving, self._serving = self._serving, False
        try:
            self.network(**inputs)
        except _BoundaryReached:
            pass
        finally:
            handle.remove()
            self._serving = serving
        if not captured:
            raise RuntimeError("the network's forward never reached its last frozen layer")
        return captured[0]

    @contextmanager
    def replaced(self) -> Iterator[None]:
        """Within the block the frozen layers don't compute: the last one returns `self.pending`."""

        def replacement(layer: nn.Module, is_last: bool) -> Callable[..., Any]:
            def forward(*args: Any, **kwargs: Any) -> Any:
                if not self._serving:  # boundary_states at work: compute for real
                    return type(layer).forward(layer, *args, **kwargs)
                if is_last:
                    assert self.pending is not None, "set FrozenPrefix.pending before each forward"
                    hidden = self.pending
                else:
                    hidden = args[0] if args else kwargs["hidden_states"]
                return (hidden,) if self._layer_returns_tuple else hidden

            return forward

        for index, layer in enumerate(self.layers[: self.depth]):
            layer.forward = replacement(layer, is_last=index == self.depth - 1)
        self._serving = True
        try:
            yield
        finally:
            self._serving = False
            for layer in self.layers[: self.depth]:
                del layer.forward
            self.pending = None

    def head_reads_first_token_only(self, examples: TokenisedExamples, device: torch.device) -> bool:
        """Whether the output of everything above the boundary depends on the first position alone.

        Asks autograd on a few of the longest examples: the gradient of the logits with respect to
        the boundary states must be non-zero at position 0 of every row and zero everywhere else.
        """
        if examples.padding_side != "right" or len(examples) == 0:
            return False
        longest = torch.sort(examples.lengths, descending=True, stable=True).indices[:PROBE_EXAMPLES].tolist()
        inputs = self.inputs(examples.batch(longest), device)
        was_training = self.network.training
        self.network.eval()
        try:
            with torch.no_grad():
                states = self.boundary_states(inputs)
            states = states.detach().clone().requires_grad_(True)
            with self.replaced(), torch.enable_grad():
                self.pending = states
                logits = self.network(**inputs).logits
                (gradient,) = torch.autograd.grad(logits.float().sum(), states)
        finally:
            self.network.train(was_training)
        touched = gradient.abs().sum(dim=-1) > 0
        return bool(touched[:, 0].all()) and not bool(touched[:, 1:].any())


class BoundaryFeatures:
    """Boundary states of every example of a file: all tokens (flat, like the token ids) or the first only.

    With a `filler`, the states are computed on first use, a length-sorted batch at a time
    (FeatureFiller): training starts after one batch rather than after a pass over the file.
    """

    def __init__(
        self,
        examples: TokenisedExamples,
        states: torch.Tensor,
        *,
        first_token_only: bool,
        filler: FeatureFiller | None = None,
    ) -> None:
        expected = len(examples) if first_token_only else examples.total_tokens
        if states.shape[0] != expected:
            raise ValueError(f"cached features hold {states.shape[0]} rows where {expected} are needed")
        self.examples = examples
        self.states = states
        self.first_token_only = first_token_only
        self.filler = filler

    def batch(
        self, indices: list[int], device: torch.device, *, pin_memory: bool = False
    ) -> tuple[Batch, torch.Tensor]:
        """The batch's inputs (cut to the first token when that is all the head reads) and its boundary states."""
        if self.filler is not None:
            self.filler.ensure(indices)
        if self.first_token_only:
            batch = self.examples.first_tokens(indices)
            states = self.states[indices].unsqueeze(1)
        else:
            batch = self.examples.batch(indices)
            mask = batch["attention_mask"].bool()
            states = torch.zeros((*mask.shape, self.states.shape[-1]), dtype=self.states.dtype)
            states[mask] = self.states[self.examples.flat_token_index(indices)]
        if pin_memory:
            batch = {name: tensor.pin_memory() for name, tensor in batch.items()}
            states = states.pin_memory()
        moved = {name: tensor.to(device, non_blocking=pin_memory) for name, tensor in batch.items()}
        return moved, states.to(device, non_blocking=pin_memory)


def fill_boundary_states(
    prefix: FrozenPrefix,
    examples: TokenisedExamples,
    indices: list[int],
    output: torch.Tensor,
    *,
    first_token_only: bool,
    device: torch.device,
    autocast: Callable[[], AbstractContextManager[Any]] = nullcontext,
) -> None:
    """Compute the boundary states of examples `indices` (one batch) into their rows of `output`."""
    batch = examples.batch(indices)
    inputs = prefix.inputs(batch, device)
    frozen_modes = [module.training for module in prefix.network.modules()]
    prefix.network.eval()
    try:
        with torch.no_grad(), autocast():
            states = prefix.boundary_states(inputs).float().cpu()
    finally:
        for module, mode in zip(prefix.network.modules(), frozen_modes, strict=True):
            module.training = mode
    if first_token_only:
        output[indices] = states[:, 0]
    else:
        output[examples.flat_token_index(indices)] = states[batch["attention_mask"].bool()]


def compute_boundary_states(
    prefix: FrozenPrefix,
    examples: TokenisedExamples,
    *,
    first_token_only: bool,
    batch_size: int,
    device: torch.device,
    allocate: Callable[[tuple[int, int]], torch.Tensor],
    autocast: Callable[[], AbstractContextManager[Any]] = nullcontext,
) -> torch.Tensor:
    """Run the frozen prefix over every example once, in length-sorted batches; `allocate(shape)` gives
    the float32 output. Used when the hidden size is not known ahead (FeatureFiller needs it)."""
    output: torch.Tensor | None = None
    for indices in length_sorted_batches(examples.lengths, batch_size):
        if output is None:
            rows = len(examples) if first_token_only else examples.total_tokens
            output = allocate((rows, _hidden_size_of(prefix, examples, indices, device, autocast)))
        fill_boundary_states(
            prefix, examples, indices, output, first_token_only=first_token_only, device=device, autocast=autocast
        )
    if output is None:
        raise ValueError("no examples to compute features for")
    return output


def _hidden_size_of(
    prefix: FrozenPrefix,
    examples: TokenisedExamples,
    indices: list[int],
    device: torch.device,
    autocast: Callable[[], AbstractContextManager[Any]],
) -> int:
    inputs = prefix.inputs(examples.batch(indices[:1]), device)
    with torch.no_grad(), autocast():
        return int(prefix.boundary_states(inputs).shape[-1])


class FeatureFiller:
    """Fills a features tensor one length-sorted batch at a time, as training first asks for its examples.

    The batches are those of a pass over the whole file (length-sorted, `batch_size` each) however
    the requests arrive, so the states are identical to an upfront pass: a run resumed mid-epoch,
    or a later job reading the cache, sees the very same numbers. `on_complete(seconds)` runs
    once, when the last batch is in.
    """

    def __init__(
        self,
        prefix: FrozenPrefix,
        examples: TokenisedExamples,
        output: torch.Tensor,
        *,
        first_token_only: bool,
        batch_size: int,
        device: torch.device,
        autocast: Callable[[], AbstractContextManager[Any]],
        on_complete: Callable[[float], None],
    ) -> None:
        self.prefix = prefix
        self.examples = examples
        self.output = output
        self.first_token_only = first_token_only
        self.device = device
        self.autocast = autocast
        self.on_complete = on_complete
        self.batches = length_sorted_batches(examples.lengths, batch_size)
        self.batch_of_example = torch.empty(len(examples), dtype=torch.long)
        for number, indices in enumerate(self.batches):
            self.batch_of_example[indices] = number
        self.done = torch.zeros(len(self.batches), dtype=torch.bool)
        self.threads = torch.get_num_threads()  # features are computed with these, whatever trains around them
        self.seconds = 0.0
        self.complete = len(self.batches) == 0

    def ensure(self, indices: list[int]) -> None:
        """Compute every batch holding one of `indices` that is not computed yet."""
        if self.complete:
            return
        needed = torch.unique(self.batch_of_example[indices])
        missing = needed[~self.done[needed]].tolist()
        if not missing:
            return
        started = time.perf_counter()
        training_threads = torch.get_num_threads()
        torch.set_num_threads(self.threads)
        try:
            for number in missing:
                fill_boundary_states(
                    self.prefix,
                    self.examples,
                    self.batches[number],
                    self.output,
                    first_token_only=self.first_token_only,
                    device=self.device,
                    autocast=self.autocast,
                )
                self.done[number] = True
        finally:
            torch.set_num_threads(training_threads)
        self.seconds += time.perf_counter() - started
        if bool(self.done.all()):
            self.complete = True
            self.on_complete(self.seconds)

    def fill_all(self) -> None:
        self.ensure(list(range(len(self.examples))))
