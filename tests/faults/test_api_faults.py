"""Faults around the API process: a SIGKILL mid-upload leaves nothing visible, and no secret reaches a log."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from models.services import tenants
from models.settings import Settings
from models.storage.blobs import ArtifactStore
from models.storage.database import session_scope
from models.storage.tables import File
from tests.conftest import jsonl_bytes, make_tenant_key
from tests.live_api import MULTIPART_CONTENT_TYPE, multipart_head, multipart_tail, running_api, tree_size_bytes
from tests.processes import running_worker, wait_for
from worker import reconciler

pytestmark = pytest.mark.fault

MIB = 1024 * 1024


# ---------------------------------------------------------------------------------------------
# The API is SIGKILLed halfway through an upload.
# ---------------------------------------------------------------------------------------------


class StalledUpload:
    """A multipart body that sends half its file, then waits until the test has killed the server."""

    def __init__(self, file_bytes: int) -> None:
        line = json.dumps({"text": "a review that will never be stored " + "w" * 60, "label": "pos"}).encode() + b"\n"
        self.chunk = line * (64 * 1024 // len(line))
        self.chunks = file_bytes // len(self.chunk)
        self.half_sent = threading.Event()
        self.server_killed = threading.Event()
        self.outcome: httpx.Response | BaseException | None = None

    def body(self) -> Iterator[bytes]:
        yield multipart_head(b"doomed.jsonl")
        for index in range(self.chunks):
            if index == self.chunks // 2:
                self.half_sent.set()
                assert self.server_killed.wait(timeout=60), "the test never killed the server"
            yield self.chunk
        yield multipart_tail()

    def send(self, url: str, key: str) -> None:
        try:
            self.outcome = httpx.post(
                url,
                headers={"authorization": f"Bearer {key}", "content-type": MULTIPART_CONTENT_TYPE},
                content=self.body(),
                timeout=60,
            )
        except BaseException as error:  # the outcome is judged by the test, in the main thread
            self.outcome = error


def file_row_count(settings: Settings) -> int:
    with session_scope(settings.database_url) as session:
        return session.scalar(select(func.count()).select_from(File)) or 0


def test_an_api_killed_mid_upload_leaves_no_file_and_only_a_temporary_the_janitor_removes(
    settings: Settings, tmp_path: Path
) -> None:
    key = make_tenant_key(settings, "acme")
    temporary_area = settings.artifacts / ".tmp"
    upload = StalledUpload(file_bytes=4 * MIB)
    with running_api(settings, tmp_path / "api.log") as api:
        sender = threading.Thread(target=upload.send, args=(f"{api.base_url}/v1/files", key))
        sender.start()
        try:
            assert upload.half_sent.wait(timeout=60)
            partial_bytes = wait_for(
                lambda: tree_size_bytes(temporary_area) >= MIB and tree_size_bytes(temporary_area),
                timeout=30,
                what="the first half of the upload to reach the temporary area",
            )
            api.process.send_signal(signal.SIGKILL)
            assert api.process.wait(timeout=10) == -signal.SIGKILL
        finally:
            upload.server_killed.set()
            sender.join(timeout=60)
    assert not sender.is_alive()
    assert isinstance(upload.outcome, httpx.TransportError), upload.outcome

    # Nothing was registered, nothing was published: the partial bytes sit in the temporary area only.
    assert file_row_count(settings) == 0
    leftovers = [path for path in settings.artifacts.rglob("*") if path.is_file()]
    assert [path.parent for path in leftovers] == [temporary_area], leftovers
    [partial] = leftovers
    assert partial_bytes <= partial.stat().st_size < upload.chunks * len(upload.chunk)
    assert not (settings.artifacts / "files").exists()

    # The janitor workers run at start keeps a temporary as young as an upload in progress ...
    store = ArtifactStore(settings.artifacts)
    reconciler.remove_stale_temporaries(store)
    assert partial.exists()
    # ... and removes it once it is older than any upload could take.
    stale = time.time() - reconciler.STALE_TEMPORARY_SECONDS - 60
    os.utime(partial, (stale, stale))
    reconciler.remove_stale_temporaries(store)
    assert not partial.exists()
    assert list(temporary_area.iterdir()) == []

    with running_api(settings, tmp_path / "api-restarted.log") as api:
        headers = {"authorization": f"Bearer {key}"}
        assert httpx.get(f"{api.base_url}/v1/files", headers=headers).json()["data"] == []
        retried = httpx.post(
            f"{api.base_url}/v1/files",
            headers=headers,
            files={"file": ("retry.jsonl", b'{"text": "ok", "label": "pos"}\n')},
            data={"purpose": "fine-tune"},
        )
        assert retried.status_code == 200, retried.text
        assert [f["id"] for f in httpx.get(f"{api.base_url}/v1/files", headers=headers).json()["data"]] == [
            retried.json()["id"]
        ]
    assert file_row_count(settings) == 1


# ---------------------------------------------------------------------------------------------
# A whole job through real processes: no key and no dataset row text in any log or event.
# ---------------------------------------------------------------------------------------------

ROW_MARKERS = ("qxjvopening", "zqpkclosing")  # distinctive words at both ends of every row


def marked_rows(count: int) -> list[dict[str, object]]:
    words = [("good", "pos"), ("bad", "neg"), ("great", "pos"), ("awful", "neg")]
    return [
        {
            "text": f"{ROW_MARKERS[0]}{i} the film was {words[i % 4][0]} {ROW_MARKERS[1]}",
            "label": words[i % 4][1],
        }
        for i in range(count)
    ]


def all_events(api_url: str, headers: dict[str, str], job_id: str) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    after = ""
    while True:
        page = httpx.get(f"{api_url}/v1/fine_tuning/jobs/{job_id}/events?limit=100{after}", headers=headers).json()
        events += page["data"]
        if not page["has_more"]:
            return events
        after = f"&after={page['data'][-1]['id']}"


def test_no_key_and_no_dataset_text_reaches_a_log_or_an_event(
    settings: Settings, tiny_bert: str, tmp_path: Path
) -> None:
    with session_scope(settings.database_url) as session:
        _, key = tenants.create_api_key(session, tenants.create_tenant(session, "acme"))
    secrets = [key, key.rsplit("_", 1)[1]]
    headers = {"authorization": f"Bearer {key}"}
    api_log, worker_log = tmp_path / "api.log", tmp_path / "worker.log"
    with (
        running_api(settings, api_log, GRAFT_LOG_LEVEL="DEBUG") as api,
        running_worker(settings, worker_log),  # the training process writes to the worker's output
    ):

        def upload(rows_bytes: bytes, filename: str) -> httpx.Response:
            return httpx.post(
                f"{api.base_url}/v1/files",
                headers=headers,
                files={"file": (filename, rows_bytes)},
                data={"purpose": "fine-tune"},
            )

        training = upload(jsonl_bytes(marked_rows(64)), "train.jsonl")
        validation = upload(jsonl_bytes(marked_rows(16)), "valid.jsonl")
        assert training.status_code == validation.status_code == 200, (training.text, validation.text)
        refused = upload(jsonl_bytes(marked_rows(3)) + f'{{"text": "{ROW_MARKERS[0]} broken"}}\n'.encode(), "bad.jsonl")
        assert refused.status_code == 400
        almost_the_key = key[:-1] + ("Y" if key.endswith("X") else "X")  # one character off, never the key itself
        wrong_key = httpx.get(f"{api.base_url}/v1/files", headers={"authorization": f"Bearer {almost_the_key}"})
        assert wrong_key.status_code == 401

        created = httpx.post(
            f"{api.base_url}/v1/fine_tuning/jobs",
            headers=headers,
            json={
                "model": tiny_bert,
                "training_file": training.json()["id"],
                "validation_file": validation.json()["id"],
                "hyperparameters": {"n_epochs": 1, "batch_size": 16},
            },
        )
        assert created.status_code == 200, created.text
        job_id = created.json()["id"]

        def finished() -> dict[str, Any] | None:
            job: dict[str, Any] = httpx.get(f"{api.base_url}/v1/fine_tuning/jobs/{job_id}", headers=headers).json()
            return job if job["status"] in ("succeeded", "failed", "cancelled") else None

        job = wait_for(finished, timeout=120, interval=0.2, what=f"job {job_id} to finish")
        assert job["status"] == "succeeded", job
        events = all_events(api.base_url, headers, job_id)

    assert len(events) > 3
    outputs = {
        "API log": api_log.read_text(errors="replace"),
        "worker and training process log": worker_log.read_text(errors="replace"),
        "job events": json.dumps(events),
        "job record": json.dumps(job),
    }
    assert "POST /v1/files" in outputs["API log"]
    worker_output = outputs["worker and training process log"]
    assert "Task graft.run_job[" in worker_output and "succeeded in" in worker_output
    assert "BertForSequenceClassification" in worker_output  # transformers' load report, from the training process
    for where, text in outputs.items():
        for secret in secrets:
            assert secret not in text, f"the API key appears in the {where}"
        for marker in ROW_MARKERS:
            assert marker not in text.lower(), f"dataset row text appears in the {where}"
