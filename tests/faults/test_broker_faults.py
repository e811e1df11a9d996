"""The broker restarted with jobs queued: Redis comes back empty, and every queued job still runs once."""

from __future__ import annotations

import shutil
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from fastapi.testclient import TestClient

from api.main import create_app
from models.settings import Settings
from tests.faults.test_worker_faults import create_job, events_of, inject, wait_for_status
from tests.processes import running_worker, wait_for

pytestmark = pytest.mark.fault


class RedisServer:
    """A throwaway redis-server on a spare loopback port, without persistence: a restart loses every message."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.fail("redis-server is not installed; scripts/test.sh installs it")
        self.process = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
            cwd=self.folder,
            stdout=subprocess.DEVNULL,
        )
        wait_for(self._answers, timeout=10, what="redis-server to accept connections")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def waiting_messages(self) -> int:
        return int(redis.Redis(port=self.port).llen("training"))

    def _answers(self) -> bool:
        try:
            return bool(redis.Redis(port=self.port, socket_timeout=1).ping())
        except redis.ConnectionError:
            return False


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path)
    server.start()
    yield server
    server.stop()


def test_jobs_queued_when_redis_restarts_empty_are_sent_again_and_each_runs_once(
    client: TestClient,
    auth: dict[str, str],
    tiny_bert: str,
    settings: Settings,
    files: tuple[str, str],
    redis_server: RedisServer,
    tmp_path: Path,
) -> None:
    on_redis = settings.model_copy(
        update={"broker_url": redis_server.url, "sweep_interval_seconds": 0.5, "requeue_after_seconds": 1.0}
    )
    with running_worker(on_redis, tmp_path / "worker.log"), TestClient(create_app(on_redis)) as api:
        busy = create_job(api, auth, tiny_bert, files, n_epochs=25)
        wait_for_status(client, auth, busy, "running", timeout=60)
        waiting = [create_job(api, auth, tiny_bert, files, n_epochs=1) for _ in range(2)]
        assert redis_server.waiting_messages() == 2  # the busy worker holds none of them

        redis_server.stop()
        redis_server.start()
        assert redis_server.waiting_messages() == 0  # both messages are gone

        for job_id in [busy, *waiting]:
            assert wait_for_status(client, auth, job_id, "succeeded", timeout=120)["attempt"] == 1
    for job_id in [busy, *waiting]:
        started = [e for e in events_of(client, auth, job_id) if e["message"].startswith("Fine-tuning job started")]
        assert len(started) == 1
    assert redis_server.waiting_messages() == 0  # the re-sends did not pile up


def test_a_job_outlasting_the_redis_visibility_timeout_is_delivered_once(
    client: TestClient,
    auth: dict[str, str],
    tiny_bert: str,
    settings: Settings,
    files: tuple[str, str],
    redis_server: RedisServer,
    tmp_path: Path,
) -> None:
    """Messages are acknowledged when a worker takes them, so Redis has nothing to give back when a
    run outlasts its visibility timeout; a second, idle worker on the same queue never gets the job."""
    on_redis = settings.model_copy(update={"broker_url": redis_server.url})
    one_second = inject("redis_visibility_timeout:1")
    with (
        running_worker(on_redis, tmp_path / "a.log", one_second),
        running_worker(on_redis, tmp_path / "b.log", one_second),
        TestClient(create_app(on_redis)) as api,
    ):
        job_id = create_job(api, auth, tiny_bert, files, n_epochs=12)
        running = wait_for_status(client, auth, job_id, "running", timeout=60)
        finished = wait_for_status(client, auth, job_id, "succeeded", timeout=120)
    assert finished["finished_at"] - running["created_at"] > 3  # three visibility timeouts and more
    assert finished["attempt"] == 1
    started = [e for e in events_of(client, auth, job_id) if e["message"].startswith("Fine-tuning job started")]
    assert len(started) == 1
    logs = (tmp_path / "a.log").read_text(errors="replace") + (tmp_path / "b.log").read_text(errors="replace")
    assert logs.count("Task graft.run_job[") == 2  # one "received" and one "succeeded": a single delivery
