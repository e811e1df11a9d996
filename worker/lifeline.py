"""The training process dies with its worker, so no training is ever left running unsupervised.

The child asks the kernel itself (rather than through a `preexec_fn`, which is unsafe in a
parent that has threads) for SIGKILL when its parent dies, then checks that the parent is still
the worker that started it: one that died while the child was importing torch is caught too.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys

PARENT_PID_VARIABLE = "GRAFT_WORKER_PID"
_PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """Arrange SIGKILL on the parent's death; exit at once if the parent is already gone."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    expected = os.environ.get(PARENT_PID_VARIABLE)
    if expected is not None and os.getppid() != int(expected):
        os._exit(1)  # orphaned before the death signal was armed: nobody supervises this run
