from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from tests.conftest import jsonl_bytes, upload_file
from tests.worker.training.conftest import sentiment_rows


@pytest.fixture
def files(client: TestClient, auth: dict[str, str]) -> tuple[str, str]:
    """A training file of 96 rows (24 steps an epoch at batch size 4) and a validation file of 16."""
    training = upload_file(client, auth, jsonl_bytes(sentiment_rows(96)))
    validation = upload_file(client, auth, jsonl_bytes(sentiment_rows(16)))
    return training, validation
