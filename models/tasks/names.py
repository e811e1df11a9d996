"""The names of the tasks a job can train."""

from __future__ import annotations

from enum import StrEnum


class Task(StrEnum):
    text_classification = "text-classification"
    token_classification = "token-classification"
    question_answering = "question-answering"
