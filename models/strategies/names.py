"""The names of the transfer strategies."""

from __future__ import annotations

from enum import StrEnum


class StrategyType(StrEnum):
    feature_extraction = "feature_extraction"
    partial = "partial"
    full = "full"
    layerwise_lr = "layerwise_lr"
