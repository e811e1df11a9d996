from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from worker.training.accelerator import Accelerator, peak_resident_bytes

on_cpu_only = pytest.mark.skipif(torch.cuda.is_available(), reason="pins the CPU fallbacks")


@pytest.fixture
def tf32_switches() -> Iterator[None]:
    """Put the process-wide TF32 switches back as they were, whatever a test set them to."""
    matmul, cudnn = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = matmul, cudnn


def current_resident_bytes() -> int:
    status = Path("/proc/self/status")
    if not status.is_file():
        pytest.skip("needs /proc to read the resident set")
    line = next(line for line in status.read_text().splitlines() if line.startswith("VmRSS:"))
    return int(line.split()[1]) * 1024  # reported in kB


@on_cpu_only
def test_pick_on_a_machine_without_cuda_trains_in_plain_float32_on_the_cpu() -> None:
    accelerator = Accelerator.pick()
    assert accelerator.device == torch.device("cpu")
    assert not accelerator.is_cuda
    assert not accelerator.bf16_autocast
    assert accelerator.precision == "float32"
    assert not accelerator.pin_memory
    assert not accelerator.compile_network
    assert Accelerator.pick(compile_network=True).compile_network


@on_cpu_only
def test_autocast_on_cpu_changes_nothing_a_matmul_stays_float32() -> None:
    accelerator = Accelerator.pick()
    left, right = torch.randn(4, 8), torch.randn(8, 3)
    with accelerator.autocast():
        product = left @ right
        assert not torch.is_autocast_enabled("cpu")
    assert product.dtype == torch.float32
    assert torch.equal(product, left @ right)


@on_cpu_only
def test_the_cpu_optimizer_is_adamw_with_the_fused_kernel_and_the_strategys_groups() -> None:
    network = nn.Linear(4, 2)
    groups = [
        {"params": [network.weight], "lr": 1e-3, "weight_decay": 0.01},
        {"params": [network.bias], "lr": 1e-3, "weight_decay": 0.0},
    ]
    optimizer = Accelerator.pick().optimizer(groups, 1e-3)
    assert type(optimizer) is torch.optim.AdamW
    assert optimizer.defaults["fused"] is True
    assert [group["weight_decay"] for group in optimizer.param_groups] == [0.01, 0.0]
    network(torch.randn(3, 4)).sum().backward()
    optimizer.step()  # the fused kernel runs on CPU tensors


def test_maybe_compile_returns_the_network_itself_unless_compiling_is_asked_for() -> None:
    network = nn.Linear(4, 2)
    accelerator = Accelerator(torch.device("cpu"), bf16_autocast=False, compile_network=False)
    assert accelerator.maybe_compile(network) is network


def test_maybe_compile_hands_the_network_to_torch_compile_when_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[nn.Module, dict[str, Any]]] = []
    compiled = nn.Identity()

    def record(module: nn.Module, **options: Any) -> nn.Module:
        calls.append((module, options))
        return compiled

    monkeypatch.setattr(torch, "compile", record)
    network = nn.Linear(4, 2)
    accelerator = Accelerator(torch.device("cpu"), bf16_autocast=False, compile_network=True)
    assert accelerator.maybe_compile(network) is compiled
    assert calls == [(network, {"dynamic": True})]


@on_cpu_only
@pytest.mark.parametrize("before", [True, False])
def test_configure_on_cpu_leaves_the_tf32_switches_alone(tf32_switches: None, before: bool) -> None:
    torch.backends.cuda.matmul.allow_tf32 = before
    torch.backends.cudnn.allow_tf32 = before
    Accelerator.pick().configure()
    assert torch.backends.cuda.matmul.allow_tf32 is before
    assert torch.backends.cudnn.allow_tf32 is before


@on_cpu_only
def test_peak_memory_on_cpu_is_the_peak_resident_set_in_bytes() -> None:
    accelerator = Accelerator.pick()
    accelerator.reset_peak_memory()  # nothing to reset on CPU; must not fail
    resident = current_resident_bytes()
    peak = accelerator.peak_memory_bytes()
    assert isinstance(peak, int)
    assert peak > 10 * 1024**2  # a process with torch imported holds far more than 10 MB
    # In bytes, not kilobytes; not to the page, since the kernel counts resident pages per CPU lazily.
    assert peak >= 0.9 * resident
    assert peak <= 1024**4
    assert peak_resident_bytes() >= peak


@on_cpu_only
def test_to_device_on_cpu_moves_nothing_and_pins_nothing() -> None:
    batch = {"input_ids": torch.tensor([[2, 5, 3]]), "labels": torch.tensor([1])}
    moved = Accelerator.pick().to_device(batch)
    assert set(moved) == set(batch)
    for name, tensor in moved.items():
        assert torch.equal(tensor, batch[name])
        assert tensor.device.type == "cpu"
        assert not tensor.is_pinned()


@on_cpu_only
def test_cpu_threads_sets_the_thread_count_for_the_block_and_restores_it() -> None:
    accelerator = Accelerator.pick()
    before = torch.get_num_threads()
    with accelerator.cpu_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
    with pytest.raises(RuntimeError, match="boom"), accelerator.cpu_threads(1):
        raise RuntimeError("boom")
    assert torch.get_num_threads() == before


def test_cpu_threads_of_none_or_on_cuda_leaves_the_thread_count_alone() -> None:
    before = torch.get_num_threads()
    with Accelerator(torch.device("cpu"), bf16_autocast=False, compile_network=False).cpu_threads(None):
        assert torch.get_num_threads() == before
    with Accelerator(torch.device("cuda"), bf16_autocast=True, compile_network=False).cpu_threads(1):
        assert torch.get_num_threads() == before


def test_a_cuda_accelerator_with_bf16_reports_its_precision_and_pins_batches() -> None:
    accelerator = Accelerator(torch.device("cuda"), bf16_autocast=True, compile_network=False)
    assert accelerator.is_cuda
    assert accelerator.precision == "bf16-autocast"
    assert accelerator.pin_memory
    network = nn.Linear(4, 2)
    assert accelerator.maybe_compile(network) is network


def test_a_cuda_accelerator_without_bf16_computes_features_in_float32() -> None:
    accelerator = Accelerator(torch.device("cuda"), bf16_autocast=False, compile_network=False)
    assert accelerator.precision == "float32"
    assert accelerator.pin_memory


def test_the_fused_kernel_steps_as_the_multi_tensor_one_would() -> None:
    torch.manual_seed(0)
    networks = [nn.Sequential(nn.Linear(4, 8), nn.Linear(8, 2)) for _ in range(2)]
    networks[1].load_state_dict(networks[0].state_dict())
    fused = Accelerator.pick().optimizer([{"params": list(networks[0].parameters())}], 1e-2)
    foreach = torch.optim.AdamW(networks[1].parameters(), lr=1e-2, foreach=True)
    batch = torch.randn(3, 4)
    for network, optimizer in zip(networks, (fused, foreach), strict=True):
        for _ in range(3):
            network(batch).square().sum().backward()
            optimizer.step()
            optimizer.zero_grad()
    for fused_parameter, foreach_parameter in zip(networks[0].parameters(), networks[1].parameters(), strict=True):
        torch.testing.assert_close(fused_parameter, foreach_parameter)


@pytest.mark.gpu
def test_pick_on_a_cuda_machine_uses_bf16_autocast_tf32_and_the_fused_optimizer(tf32_switches: None) -> None:
    accelerator = Accelerator.pick()
    assert accelerator.is_cuda
    assert accelerator.bf16_autocast == torch.cuda.is_bf16_supported()
    torch.backends.cuda.matmul.allow_tf32 = False
    accelerator.configure()
    assert torch.backends.cuda.matmul.allow_tf32
    assert torch.backends.cudnn.allow_tf32
    network = nn.Linear(4, 2).cuda()
    optimizer = accelerator.optimizer([{"params": list(network.parameters())}], 1e-3)
    assert optimizer.defaults["fused"] is True
    with accelerator.autocast():
        product = network(torch.randn(3, 4, device="cuda"))
    assert product.dtype == (torch.bfloat16 if accelerator.bf16_autocast else torch.float32)
    accelerator.reset_peak_memory()
    assert accelerator.peak_memory_bytes() > 0
