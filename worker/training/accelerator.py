"""The device a run trains on, and the fast paths that device supports.

On CUDA: bf16 autocast (where the GPU has bf16; the weights and the optimiser stay float32),
TF32 matmuls, the fused AdamW kernel and pinned host memory for batches. An opt-in
`torch.compile` of the network. On CPU each of these falls back to the plain float32 path, so
CPU results stay bit-reproducible; the fallbacks are what the CPU test suite pins down.
"""

from __future__ import annotations

import resource
import sys
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn


@dataclass(frozen=True)
class Accelerator:
    device: torch.device
    bf16_autocast: bool
    compile_network: bool

    @classmethod
    def pick(cls, *, compile_network: bool = False) -> Accelerator:
        if torch.cuda.is_available():
            return cls(torch.device("cuda"), torch.cuda.is_bf16_supported(), compile_network)
        return cls(torch.device("cpu"), bf16_autocast=False, compile_network=compile_network)

    @property
    def is_cuda(self) -> bool:
        return self.device.type == "cuda"

    @property
    def precision(self) -> str:
        """Part of the key of cached features: features computed in bf16 are not those of float32."""
        return "bf16-autocast" if self.bf16_autocast else "float32"

    @property
    def pin_memory(self) -> bool:
        return self.is_cuda

    def configure(self) -> None:
        """Process-wide switches: TF32 for float32 matmuls and cuDNN convolutions on CUDA."""
        if self.is_cuda:
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True

    def autocast(self) -> AbstractContextManager[Any]:
        if self.bf16_autocast:
            return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
        return nullcontext()

    def optimizer(self, groups: list[dict[str, Any]], learning_rate: float) -> torch.optim.AdamW:
        """AdamW with the fused kernel (one pass per parameter), on CUDA and CPU alike.

        On CPU the fused kernel was the faster both for a head's few small tensors (where a step is
        mostly per-kernel overhead) and for a whole body, where the multi-tensor kernel's separate
        passes (sqrt, mul, addcdiv, lerp) cost several times the fused one (bench.training, `full`).
        """
        return torch.optim.AdamW(groups, lr=learning_rate, fused=True)

    def maybe_compile(self, network: nn.Module) -> nn.Module:
        """The module to call for training steps: compiled when asked for, else the network itself."""
        if not self.compile_network:
            return network
        compiled: nn.Module = torch.compile(network, dynamic=True)  # type: ignore[assignment]
        return compiled

    def to_device(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        if self.pin_memory:
            return {name: tensor.pin_memory().to(self.device, non_blocking=True) for name, tensor in batch.items()}
        return {name: tensor.to(self.device) for name, tensor in batch.items()}

    @contextmanager
    def cpu_threads(self, count: int | None) -> Iterator[None]:
        """Run the block with `count` intra-op threads on CPU (None, or on CUDA: unchanged).

        Training a head on cached one-vector features is a stream of tiny operations, for which
        a second thread costs more in synchronisation than it brings, and on a busy machine much
        more.
        """
        if count is None or self.is_cuda:
            yield
            return
        previous = torch.get_num_threads()
        torch.set_num_threads(count)
        try:
            yield
        finally:
            torch.set_num_threads(previous)

    def reset_peak_memory(self) -> None:
        if self.is_cuda:
            torch.cuda.reset_peak_memory_stats(self.device)

    def peak_memory_bytes(self) -> int:
        """Peak GPU memory allocated by tensors on CUDA; the process's peak resident set on CPU."""
        if self.is_cuda:
            return int(torch.cuda.max_memory_allocated(self.device))
        return peak_resident_bytes()


def peak_resident_bytes() -> int:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)  # bytes on macOS, KiB on Linux
