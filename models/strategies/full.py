"""full, torch-free half: every parameter trains at one rate."""

from __future__ import annotations

from typing import ClassVar, Literal

from models.strategies.common import StrategyDefaults, StrategySpecBase
from models.strategies.names import StrategyType


class FullSpec(StrategySpecBase):
    # Full fine-tuning of all-MiniLM-L6-v2 prefers 1e-4 to the 2e-5–5e-5 usual for BERT-base.
    defaults: ClassVar[StrategyDefaults] = StrategyDefaults(
        learning_rate=1e-4, n_epochs=3, warmup_ratio=0.06, weight_decay=0.01
    )
    needs_layers: ClassVar[bool] = False

    type: Literal[StrategyType.full] = StrategyType.full
