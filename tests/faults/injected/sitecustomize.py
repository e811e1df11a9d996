"""Fault injection for fault tests: Python imports this at start-up when its folder is on PYTHONPATH.

`GRAFT_TEST_FAULT` picks one fault. The first three act only inside the training process (the
one process that imports `worker.training.recipe`), at a precise moment no outside signal could hit:

- `kill_worker_during_checkpoint:N`: while the Nth checkpoint is half-written (optimiser state
  on disk, no COMPLETE marker yet), SIGKILL the worker that runs this process; the kernel then
  kills this process too (PDEATHSIG).
- `kill_worker_at_step:N`: SIGKILL the worker right after optimiser step N (a poison job).
- `disk_full_on_export`: writing the exported model archive fails with ENOSPC.
- `redis_visibility_timeout:S`: the worker's Redis transport gives unacknowledged messages back to
  the queue after S seconds instead of an hour, so a test can outlast it.
"""

from __future__ import annotations

import errno
import importlib.abc
import importlib.util
import os
import signal
import sys
import time
from types import ModuleType
from typing import Any

FAULT = os.environ.get("GRAFT_TEST_FAULT", "")


def _kill_worker_and_wait() -> None:
    os.kill(os.getppid(), signal.SIGKILL)
    time.sleep(60)  # PDEATHSIG ends this process within milliseconds


def _patch_recipe(_module: ModuleType) -> None:
    name, _, argument = FAULT.partition(":")
    if name == "kill_worker_during_checkpoint":
        import torch

        original_save = torch.save
        calls = {"count": 0}

        def save_then_die(*args: Any, **kwargs: Any) -> None:
            original_save(*args, **kwargs)
            calls["count"] += 1
            if calls["count"] == int(argument):
                _kill_worker_and_wait()

        torch.save = save_then_die
    elif name == "kill_worker_at_step":
        from worker.training import reporting

        original_fan_out = reporting.FanOutReporter.step_finished

        def step_then_die(self: Any, progress: Any) -> None:
            original_fan_out(self, progress)
            if progress.step == int(argument):
                _kill_worker_and_wait()

        reporting.FanOutReporter.step_finished = step_then_die  # type: ignore[method-assign]
    elif name == "disk_full_on_export":
        import tarfile

        def no_space(*_: Any, **__: Any) -> None:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        tarfile.TarFile.addfile = no_space  # type: ignore[method-assign]


def _patch_redis_transport(module: ModuleType) -> None:
    name, _, argument = FAULT.partition(":")
    if name == "redis_visibility_timeout":
        module.Channel.visibility_timeout = float(argument)


PATCHES = {"worker.training.recipe": _patch_recipe, "kombu.transport.redis": _patch_redis_transport}


class _PatchAfterImport(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname: str, path: Any, target: Any = None) -> Any:
        if fullname not in PATCHES:
            return None
        sys.meta_path.remove(self)
        try:
            spec = importlib.util.find_spec(fullname)
        finally:
            sys.meta_path.insert(0, self)
        assert spec is not None and spec.loader is not None
        loader = spec.loader
        original_exec = loader.exec_module  # type: ignore[attr-defined]

        def exec_module(module: ModuleType) -> None:
            original_exec(module)
            PATCHES[fullname](module)

        loader.exec_module = exec_module  # type: ignore[attr-defined]
        return spec


if FAULT:
    sys.meta_path.insert(0, _PatchAfterImport())
