"""Why a checkpoint was taken: the one spelling of its kind, from the engine to the table."""

from __future__ import annotations

from enum import StrEnum


class CheckpointKind(StrEnum):
    epoch = "epoch"  # an epoch end, with validation metrics; kept until the job ends
    interval = "interval"  # mid-epoch, because checkpoint_interval_seconds passed; only the newest is kept
    stop = "stop"  # mid-epoch, because the run was asked to stop (pause, worker shutdown); only the newest is kept
