"""feature_extraction, torch-free half: the pretrained body stays frozen; only the head trains."""

from __future__ import annotations

from typing import ClassVar, Literal

from models.strategies.common import BodyParameters, StrategyDefaults, StrategySpecBase
from models.strategies.names import StrategyType


class FeatureExtractionSpec(StrategySpecBase):
    # A head on frozen features needs a rate 100× that of full fine-tuning: only the new classifier
    # and the pooler move, and a sentence-transformers pooler was never trained for classification.
    defaults: ClassVar[StrategyDefaults] = StrategyDefaults(
        learning_rate=1e-2, n_epochs=8, warmup_ratio=0.06, weight_decay=0.0
    )
    trains_pretrained_weights: ClassVar[bool] = False

    type: Literal[StrategyType.feature_extraction] = StrategyType.feature_extraction

    def most_trained_parameters(self, body: BodyParameters) -> int:
        return body.top  # what the source task left above the layers (BERT's pooler)
