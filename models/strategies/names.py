"""The names of the transfer strategies and of the regularisers a strategy may carry."""

from __future__ import annotations

from enum import StrEnum


class StrategyType(StrEnum):
    feature_extraction = "feature_extraction"
    partial = "partial"
    full = "full"
    layerwise_lr = "layerwise_lr"
    gradual_unfreezing = "gradual_unfreezing"


class RegularizationType(StrEnum):
    l2_sp = "l2_sp"
