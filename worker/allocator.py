"""How a training process's C allocator handles large blocks: it keeps them for reuse until the process ends.

glibc serves an allocation above its mmap threshold (128 KiB at first) with a fresh `mmap` and
unmaps it when it is freed, raising the threshold to that block's size, up to 32 MiB. So a fresh
process maps, faults in and zeroes the activation tensors of its first forward passes anew each
time: a one-off tax that a long-running process stops paying once its threshold has grown. With the
threshold fixed at 32 MiB from the start, a fresh process's first inference pass runs as fast as its
later ones (bench/training.py measures it). The price: memory freed in the
heap is kept for reuse rather than returned, so the process's resident size (the `peak_memory_bytes`
a CPU job reports) can stay higher than before. A training process lives for one job, and gives
everything back when it exits.

Applied as environment variables when the process starts (glibc reads them once, at start-up); a
value the operator set, or another allocator preloaded instead, is left alone.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

GLIBC_MAX_MMAP_THRESHOLD_BYTES = 32 * 1024 * 1024  # glibc ignores larger values on 64-bit systems
TRIM_THRESHOLD_BYTES = 1024**3

TRAINING_ALLOCATOR_ENVIRONMENT = {
    "MALLOC_MMAP_THRESHOLD_": str(GLIBC_MAX_MMAP_THRESHOLD_BYTES),
    "MALLOC_TRIM_THRESHOLD_": str(TRIM_THRESHOLD_BYTES),
}


def with_training_allocator(environment: Mapping[str, str] | None = None) -> dict[str, str]:
    """`environment` (default: this process's) with the allocator settings added where it has none of its own."""
    return {**TRAINING_ALLOCATOR_ENVIRONMENT, **(os.environ if environment is None else environment)}
