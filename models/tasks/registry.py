"""Which torch-free task half serves each task name, and which tasks an upload's records are meant for."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from models.errors import InvalidFile
from models.tasks.jsonl_records import iter_jsonl_records
from models.tasks.names import Task
from models.tasks.protocol import TaskFormat
from models.tasks.question_answering import QuestionAnsweringFormat
from models.tasks.text_classification import DataFormat, DataLimits, TextClassificationFormat
from models.tasks.token_classification import TokenClassificationFormat

TASK_FORMATS: dict[Task, TaskFormat] = {
    Task.text_classification: TextClassificationFormat(),
    Task.token_classification: TokenClassificationFormat(),
    Task.question_answering: QuestionAnsweringFormat(),
}
FALLBACK_TASK = Task.text_classification  # whose validator names the faults of a file meant for no task


def task_format(task: Task) -> TaskFormat:
    return TASK_FORMATS[task]


def intended_tasks(path: Path, data_format: DataFormat) -> list[Task]:
    """The tasks whose record fields the file's first record holds, in registry order; the fallback task
    when it holds none of them (or is no JSON object), so its validator names the fault by line."""
    if data_format is DataFormat.jsonl:
        keys = _first_record_keys(path)
        if keys:
            matching = [task for task, rules in TASK_FORMATS.items() if rules.record_fields <= keys]
            if matching:
                return matching
    return [FALLBACK_TASK]


def _first_record_keys(path: Path) -> frozenset[str]:
    """The keys of the file's first record, read as validation reads it; none when it is no JSON object."""
    try:
        _, record = next(iter_jsonl_records(path, example=""))
    except (InvalidFile, StopIteration):
        return frozenset()  # the fallback task's validator names the fault
    return frozenset(record)


def summarize_upload(path: Path, data_format: DataFormat, limits: DataLimits) -> dict[str, dict[str, Any]]:
    """Validate an upload for each task its records are meant for: {task: summary} for those it satisfies.

    Raises the first task's InvalidFile (naming the line) when it satisfies none.
    """
    summaries: dict[str, dict[str, Any]] = {}
    faults: list[InvalidFile] = []
    for task in intended_tasks(path, data_format):
        try:
            summaries[task.value] = TASK_FORMATS[task].summarize(path, data_format, limits)
        except InvalidFile as fault:
            faults.append(fault)
    if not summaries:
        raise faults[0]
    return summaries
