"""Which engine task trains each task name: one line per task."""

from __future__ import annotations

from models.tasks.names import Task
from worker.training.tasks.protocol import EngineTask
from worker.training.tasks.question_answering import QuestionAnswering
from worker.training.tasks.text_classification import TextClassification
from worker.training.tasks.token_classification import TokenClassification

ENGINE_TASKS: dict[Task, EngineTask] = {
    Task.text_classification: TextClassification(),
    Task.token_classification: TokenClassification(),
    Task.question_answering: QuestionAnswering(),
}


def engine_task(task: Task) -> EngineTask:
    return ENGINE_TASKS[task]
