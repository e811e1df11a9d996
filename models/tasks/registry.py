"""What each task's torch-free half declares, by task name: one line per task."""

from __future__ import annotations

from dataclasses import dataclass

from models.tasks.names import Task


@dataclass(frozen=True)
class TaskRules:
    # The validation metrics the task reports, its main one first, as the engine's evaluator names them
    # (checkpoints show them with a `valid_` prefix, beside valid_loss).
    metrics: tuple[str, ...]


TASK_RULES: dict[Task, TaskRules] = {
    Task.text_classification: TaskRules(metrics=("macro_f1", "accuracy")),
}


def task_rules(task: Task) -> TaskRules:
    return TASK_RULES[task]
