"""The users' command line against a running service: files, jobs (with a live watch), models and webhooks."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from api.main import create_app
from cli.main import app
from models.settings import Settings, get_settings
from tests.conftest import jsonl_bytes, make_tenant_key
from tests.live_api import ServedApp, free_port, running_server
from tests.processes import REPO_ROOT, running_worker, wait_for
from tests.worker.training.conftest import sentiment_rows


@pytest.fixture
def served(settings: Settings) -> Iterator[ServedApp]:
    with running_server(create_app(settings), settings) as server:
        yield server


@pytest.fixture
def worker(settings: Settings, tmp_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    with running_worker(settings, tmp_path / "worker.log") as process:
        yield process


@pytest.fixture
def key(settings: Settings) -> str:
    return make_tenant_key(settings, "cli-user")


def graft(served: ServedApp, key: str | None, *arguments: str) -> tuple[int, str]:
    environment = {"GRAFT_BASE_URL": served.base_url, "GRAFT_API_KEY": key or ""}
    get_settings.cache_clear()
    result = CliRunner().invoke(app, list(arguments), env=environment)
    get_settings.cache_clear()
    return result.exit_code, result.output


def training_file(tmp_path: Path, rows: int = 64) -> Path:
    path = tmp_path / "train.jsonl"
    path.write_bytes(jsonl_bytes(sentiment_rows(rows)))
    return path


def uploaded(served: ServedApp, key: str, tmp_path: Path, rows: int = 64) -> str:
    code, output = graft(served, key, "files", "upload", str(training_file(tmp_path, rows)), "--json")
    assert code == 0, output
    file_id: str = json.loads(output)["id"]
    return file_id


def test_files_upload_list_get_delete(served: ServedApp, key: str, tmp_path: Path) -> None:
    code, output = graft(served, key, "files", "upload", str(training_file(tmp_path)))
    assert code == 0, output
    assert "train.jsonl" in output and "text-classification" in output

    code, output = graft(served, key, "files", "list", "--json")
    [listed] = json.loads(output)["data"]
    code, output = graft(served, key, "files", "get", listed["id"])
    assert code == 0 and "label_counts" in output and listed["sha256"] in output
    code, output = graft(served, key, "files", "delete", listed["id"])
    assert (code, output.strip()) == (0, f"deleted {listed['id']}")


def test_a_bad_file_is_refused_naming_its_line_with_exit_code_2(served: ServedApp, key: str, tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "a", "label": "x"}\n{"text": "b"}\n', encoding="utf-8")

    code, output = graft(served, key, "files", "upload", str(bad))

    assert code == 2
    assert "error:" in output and "line 2" in output


def test_without_a_key_or_a_service_the_command_says_what_is_missing(served: ServedApp, key: str) -> None:
    code, output = graft(served, None, "jobs", "list")
    assert code == 2 and "no API key" in output

    gone = ServedApp("127.0.0.1", free_port())
    code, output = graft(gone, key, "jobs", "list")
    assert code == 2 and f"cannot reach the Graft service at {gone.base_url}" in " ".join(output.split())


def test_create_watch_follows_the_job_to_success_then_download_writes_the_model(
    served: ServedApp, key: str, tiny_bert: str, worker: subprocess.Popen[bytes], tmp_path: Path
) -> None:
    file_id = uploaded(served, key, tmp_path)

    code, output = graft(
        served, key, "jobs", "create", "--training-file", file_id, "--validation-file", file_id,
        "--model", tiny_bert, "--epochs", "2", "--batch-size", "8", "--watch",
    )  # fmt: skip

    assert code == 0, output
    job_id = output.split()[1]
    assert "succeeded" in output and f"ft:{tiny_bert}" in output
    assert "final validation: valid_loss" in output and "epoch 2/2" in output
    code, output = graft(served, key, "jobs", "list", "--status", "succeeded", "--json")
    assert [job["id"] for job in json.loads(output)["data"]] == [job_id]
    target = tmp_path / "model.tar"
    code, output = graft(served, key, "jobs", "download", job_id, "--output", str(target))
    assert code == 0, output
    with tarfile.open(target) as archive:
        assert "config.json" in {Path(name).name for name in archive.getnames()}
    code, output = graft(served, key, "jobs", "events", job_id, "--limit", "3")
    assert "The job has successfully completed" in " ".join(output.split())


def test_watch_exits_1_when_the_job_is_cancelled_and_3_when_it_pauses(
    served: ServedApp, key: str, tiny_bert: str, worker: subprocess.Popen[bytes], tmp_path: Path
) -> None:
    file_id = uploaded(served, key, tmp_path)
    http = httpx.Client(base_url=served.base_url, headers={"Authorization": f"Bearer {key}"}, timeout=30)
    environment = {**os.environ, "GRAFT_BASE_URL": served.base_url, "GRAFT_API_KEY": key, "PYTHONPATH": str(REPO_ROOT)}
    outcomes = {}
    for action in ("pause", "cancel"):
        body = {"model": tiny_bert, "training_file": file_id, "hyperparameters": {"n_epochs": 100, "batch_size": 4}}
        job_id = http.post("/v1/fine_tuning/jobs", json=body).json()["id"]
        watcher = subprocess.Popen(
            [sys.executable, "-m", "cli.main", "jobs", "watch", job_id],
            env=environment,
            cwd=REPO_ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )

        def trains(job_id: str = job_id) -> bool:
            return bool((http.get(f"/v1/fine_tuning/jobs/{job_id}").json()["progress"] or {}).get("step"))

        wait_for(trains, timeout=60, what="the job to train")
        assert http.post(f"/v1/fine_tuning/jobs/{job_id}/{action}").status_code == 200
        output, _ = watcher.communicate(timeout=60)
        outcomes[action] = (watcher.returncode, output)
        http.post(f"/v1/fine_tuning/jobs/{job_id}/cancel")
    http.close()

    assert outcomes["pause"][0] == 3, outcomes["pause"][1]
    assert "graft jobs resume" in outcomes["pause"][1]
    assert outcomes["cancel"][0] == 1, outcomes["cancel"][1]
    assert "cancelled" in outcomes["cancel"][1]


def test_models_list_with_a_key_lists_what_the_api_serves(served: ServedApp, key: str, tiny_bert: str) -> None:
    code, output = graft(served, key, "models", "list", "--json")

    assert code == 0, output
    assert tiny_bert in [model["id"] for model in json.loads(output)["data"]]


def test_webhooks_add_shows_the_secret_once_list_and_delete(served: ServedApp, key: str) -> None:
    code, output = graft(
        served, key, "webhooks", "add", "https://hooks.example.com/graft", "--event", "fine_tuning.job.failed"
    )
    assert code == 0, output
    assert "whsec_" in output

    code, output = graft(served, key, "webhooks", "list", "--json")
    [endpoint] = json.loads(output)["data"]
    assert (endpoint["events"], endpoint["secret"]) == (["fine_tuning.job.failed"], None)
    code, output = graft(served, key, "webhooks", "delete", endpoint["id"])
    assert (code, output.strip()) == (0, f"deleted {endpoint['id']}")


def test_pause_resume_and_cancel_steer_a_queued_job_and_get_shows_it(
    served: ServedApp, key: str, tiny_bert: str, tmp_path: Path
) -> None:
    file_id = uploaded(served, key, tmp_path)
    code, output = graft(served, key, "jobs", "create", "--training-file", file_id, "--model", tiny_bert, "--json")
    job_id = json.loads(output)["id"]

    steps = [graft(served, key, "jobs", action, job_id) for action in ("pause", "resume", "cancel")]

    assert steps == [(0, f"{job_id}: paused\n"), (0, f"{job_id}: queued\n"), (0, f"{job_id}: cancelled\n")]
    code, output = graft(served, key, "jobs", "get", job_id)
    assert code == 0 and "cancelled" in output and tiny_bert in output
    code, output = graft(served, key, "jobs", "cancel", job_id)
    assert code == 2 and "already ended" in output
