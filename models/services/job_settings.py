"""A job's training settings resolved at creation: the strategy's knobs, the hyperparameters, early stopping."""

from __future__ import annotations

from models.errors import InvalidRequest
from models.hyperparameters import EarlyStopping, ResolvedHyperparameters
from models.strategies.common import StrategyDefaults
from models.wire.jobs import EarlyStoppingSpec, HyperparametersSpec

VALIDATION_PREFIX = "valid_"


def resolve_hyperparameters(
    spec: HyperparametersSpec,
    defaults: StrategyDefaults,
    *,
    training_records: int,
    model_max_length: int,
    metrics: tuple[str, ...],
    has_validation_file: bool,
) -> ResolvedHyperparameters:
    """Replace every "auto" by the default; raises InvalidRequest for values the model or the job can't take.

    `metrics` are the validation metrics the task reports, its main one first (without the
    `valid_` prefix); early stopping may watch any of them or the validation loss.
    """
    multiplier = 1.0 if spec.learning_rate_multiplier == "auto" else float(spec.learning_rate_multiplier)
    batch_size = min(defaults.batch_size, training_records) if spec.batch_size == "auto" else int(spec.batch_size)
    max_length = min(defaults.max_length, model_max_length) if spec.max_length == "auto" else int(spec.max_length)
    if max_length > model_max_length:
        raise InvalidRequest(
            f"hyperparameters.max_length is {max_length}, but the model takes at most {model_max_length} tokens; "
            f"use at most {model_max_length}, or 'auto'",
            param="hyperparameters.max_length",
        )
    return ResolvedHyperparameters(
        n_epochs=defaults.n_epochs if spec.n_epochs == "auto" else int(spec.n_epochs),
        batch_size=batch_size,
        learning_rate_multiplier=multiplier,
        learning_rate=defaults.learning_rate * multiplier,
        warmup_ratio=defaults.warmup_ratio if spec.warmup_ratio == "auto" else float(spec.warmup_ratio),
        max_length=max_length,
        weight_decay=defaults.weight_decay,
        early_stopping=(
            resolve_early_stopping(spec.early_stopping, metrics, has_validation_file=has_validation_file)
            if spec.early_stopping is not None
            else None
        ),
    )


def resolve_early_stopping(
    spec: EarlyStoppingSpec, metrics: tuple[str, ...], *, has_validation_file: bool
) -> EarlyStopping:
    """The metric named as checkpoints name it (`valid_…`); InvalidRequest without a validation file or for
    a metric the task does not report."""
    param = "hyperparameters.early_stopping"
    if not has_validation_file:
        raise InvalidRequest(
            f"{param}: early stopping watches a validation metric, and the job has no validation_file; "
            "upload one and pass its id as validation_file, or remove early_stopping",
            param=param,
        )
    reported = [f"{VALIDATION_PREFIX}{name}" for name in ("loss", *metrics)]
    if spec.metric == "auto":
        metric = reported[1] if len(reported) > 1 else reported[0]
    else:
        metric = spec.metric if spec.metric.startswith(VALIDATION_PREFIX) else VALIDATION_PREFIX + spec.metric
        if metric not in reported:
            raise InvalidRequest(
                f"{param}.metric: {spec.metric!r} is not a metric this task reports; use one of "
                f"{', '.join(reported)}, or 'auto'",
                param=f"{param}.metric",
            )
    return EarlyStopping(metric=metric, patience=spec.patience, min_delta=spec.min_delta)
