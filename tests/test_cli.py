from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from alembic import command
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from cli.main import app
from models.services import catalog, tenants
from models.settings import Settings, get_settings
from models.storage.database import session_scope
from tests.conftest import jsonl_bytes, upload_file
from tests.processes import REPO_ROOT, service_environment, wait_for


@pytest.fixture
def cli_settings(settings: Settings) -> Settings:
    get_settings.cache_clear()
    return settings


def invoke_environment(settings: Settings) -> dict[str, str]:
    return {key: value for key, value in service_environment(settings).items() if key.startswith("GRAFT_")}


def invoke(settings: Settings, *arguments: str) -> tuple[int, str]:
    environment = invoke_environment(settings)
    get_settings.cache_clear()
    result = CliRunner().invoke(app, list(arguments), env=environment)
    get_settings.cache_clear()
    return result.exit_code, " ".join(result.output.split())  # rich wraps long lines


def test_keys_create_prints_a_working_key_once(cli_settings: Settings) -> None:
    code, output = invoke(cli_settings, "keys", "create", "--tenant", "umbrella")
    assert code == 0, output
    [key] = re.findall(r"sk-graft-\S+", output)
    with session_scope(cli_settings.database_url) as session:
        assert tenants.authenticate(session, key) == tenants.find_tenant(session, "umbrella").id


def test_models_add_registers_a_local_folder_and_list_shows_it(cli_settings: Settings, tiny_bert_folder: Path) -> None:
    code, output = invoke(cli_settings, "models", "add", "my-bert", str(tiny_bert_folder))
    assert code == 0, output
    with session_scope(cli_settings.database_url) as session:
        row = catalog.get_base_model(session, "my-bert")
        assert (row.model_type, row.num_layers, row.max_sequence_length) == ("bert", 2, 64)
    code, output = invoke(cli_settings, "models", "list")
    assert "my-bert" in output


def test_models_add_refuses_a_folder_without_safetensors(cli_settings: Settings, tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text('{"model_type": "bert", "num_hidden_layers": 2}')
    (tmp_path / "pytorch_model.bin").write_bytes(b"pickle")
    code, output = invoke(cli_settings, "models", "add", "pickled", str(tmp_path))
    assert code == 2
    assert "safetensors" in output


def test_up_serves_the_api_and_stops_both_processes_on_ctrl_c(tmp_path: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    environment = {key: value for key, value in os.environ.items() if not key.startswith("GRAFT_")}
    environment.update({"GRAFT_DATA_DIR": str(tmp_path / "var"), "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO_ROOT)})
    log = tmp_path / "up.log"
    with log.open("wb") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "cli.main", "up", "--port", str(port)],
            env=environment,
            cwd=tmp_path,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_for(lambda: b" ready." in log.read_bytes(), timeout=60, what="the worker of `graft up`")
        key = next(line for line in log.read_text().splitlines() if line.startswith("sk-graft-"))
        # The first start names the key's id, so the key it printed can be revoked.
        [key_id] = re.findall(r"API key (key-\S+) ", " ".join(log.read_text().split()))
        assert f"graft keys revoke {key_id}" in " ".join(log.read_text().split())

        def models() -> httpx.Response | None:
            try:
                return httpx.get(f"http://127.0.0.1:{port}/v1/models", headers={"Authorization": f"Bearer {key}"})
            except httpx.TransportError:
                return None

        response = wait_for(models, timeout=30, what="the API of `graft up`")
        assert [m["id"] for m in response.json()["data"]] == ["sentence-transformers/all-MiniLM-L6-v2"]
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=30) == 0
        assert "Warm shutdown" in log.read_text()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_models_add_with_an_unreachable_hub_id_says_so(cli_settings: Settings) -> None:
    code, output = invoke(cli_settings, "models", "add", "remote", "no-such-org/no-such-model")
    assert code == 2
    assert "neither a local folder nor a reachable hub model" in output


def quota_row(output: str, quota: str) -> list[str]:
    """The limit, set-by and in-use cells of one quota in the table `graft tenants` prints."""
    match = re.search(rf"│ {quota} │([^│]*)│([^│]*)│([^│]*)│", output)
    assert match is not None, output
    return [cell.strip() for cell in match.groups()]


def test_tenants_set_quota_gives_a_tenant_its_own_limits_and_show_prints_them_with_usage(
    cli_settings: Settings, client: TestClient, auth: dict[str, str], minilm: str
) -> None:
    content = jsonl_bytes([{"text": "good", "label": "a"}, {"text": "bad", "label": "b"}])
    training_file = upload_file(client, auth, content)
    assert client.post("/v1/fine_tuning/jobs", headers=auth, json={"training_file": training_file}).status_code == 200

    code, output = invoke(cli_settings, "tenants", "set-quota", "acme", "--max-active-jobs", "3")
    assert code == 0, output
    code, output = invoke(cli_settings, "tenants", "set-quota", "acme", "--max-upload-bytes", "4096")
    assert code == 0, output
    code, output = invoke(cli_settings, "tenants", "show", "acme")

    assert code == 0, output
    assert quota_row(output, "max_active_jobs") == ["3", "tenant", "1"]
    assert quota_row(output, "max_stored_bytes") == [
        str(cli_settings.tenant_max_stored_bytes),
        "service default",
        str(len(content)),
    ]
    assert quota_row(output, "max_upload_bytes") == ["4096", "tenant", "-"]


def test_a_quota_set_from_the_cli_holds_at_the_api(
    cli_settings: Settings, client: TestClient, auth: dict[str, str], minilm: str
) -> None:
    training_file = upload_file(
        client, auth, jsonl_bytes([{"text": "good", "label": "a"}, {"text": "bad", "label": "b"}])
    )
    code, output = invoke(cli_settings, "tenants", "set-quota", "acme", "--max-active-jobs", "1")
    assert code == 0, output
    assert client.post("/v1/fine_tuning/jobs", headers=auth, json={"training_file": training_file}).status_code == 200
    refused = client.post("/v1/fine_tuning/jobs", headers=auth, json={"training_file": training_file})
    assert refused.status_code == 429
    assert refused.json()["error"]["param"] == "max_active_jobs"


def test_tenants_set_quota_zero_returns_a_quota_to_the_service_default(
    cli_settings: Settings, auth: dict[str, str]
) -> None:
    invoke(cli_settings, "tenants", "set-quota", "acme", "--max-active-jobs", "3", "--max-stored-bytes", "5000")
    code, output = invoke(cli_settings, "tenants", "set-quota", "acme", "--max-active-jobs", "0")

    assert code == 0, output
    assert quota_row(output, "max_active_jobs") == [str(cli_settings.tenant_max_active_jobs), "service default", "0"]
    assert quota_row(output, "max_stored_bytes") == ["5000", "tenant", "0"]
    with session_scope(cli_settings.database_url) as session:
        tenant = tenants.find_tenant(session, "acme")
        assert (tenant.max_active_jobs, tenant.max_stored_bytes) == (None, 5000)


def test_tenants_commands_name_an_unknown_tenant(cli_settings: Settings) -> None:
    for arguments in (("show", "nobody"), ("set-quota", "nobody", "--max-active-jobs", "2")):
        code, output = invoke(cli_settings, "tenants", *arguments)
        assert code == 2
        assert "no tenant named 'nobody'" in output


def test_tenants_set_quota_refuses_a_negative_limit(cli_settings: Settings, auth: dict[str, str]) -> None:
    code, _ = invoke(cli_settings, "tenants", "set-quota", "acme", "--max-stored-bytes", "-1")
    assert code == 2
    with session_scope(cli_settings.database_url) as session:
        assert tenants.find_tenant(session, "acme").max_stored_bytes is None


def test_models_add_refuses_a_model_needing_remote_code_unless_told_to_trust_it(
    cli_settings: Settings, tiny_bert_folder: Path, tmp_path: Path
) -> None:
    folder = Path(shutil.copytree(tiny_bert_folder, tmp_path / "custom"))
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    config["auto_map"] = {"AutoModelForSequenceClassification": "modeling_custom.CustomModel"}
    (folder / "config.json").write_text(json.dumps(config), encoding="utf-8")
    code, output = invoke(cli_settings, "models", "add", "custom", str(folder))
    assert code == 2
    assert "needs remote code" in output and "--trust-remote-code" in output
    code, output = invoke(cli_settings, "models", "add", "custom", str(folder), "--trust-remote-code")
    assert code == 0, output
    assert "workers will run the Python code" in output
    with session_scope(cli_settings.database_url) as session:
        assert catalog.get_base_model(session, "custom").trust_remote_code is True


def test_keys_list_shows_each_keys_id_tenant_and_last_use_but_never_the_secret(
    cli_settings: Settings, client: TestClient
) -> None:
    code, output = invoke(cli_settings, "keys", "create", "--tenant", "umbrella")
    [key] = re.findall(r"sk-graft-\S+", output)
    [key_id] = re.findall(r"key id (\S+) ", output)
    code, output = invoke(cli_settings, "keys", "list")
    assert code == 0, output
    assert re.search(rf"{key_id} │ umbrella │ \S+ \S+Z │ never │ -", output), output
    assert client.get("/v1/files", headers={"Authorization": f"Bearer {key}"}).status_code == 200
    code, output = invoke(cli_settings, "keys", "list", "--tenant", "umbrella")
    assert re.search(rf"{key_id} │ umbrella │ \S+ \S+Z │ \S+ \S+Z │ -", output), output
    assert key.split("_")[-1] not in output and key not in output
    invoke(cli_settings, "keys", "revoke", key_id)
    code, output = invoke(cli_settings, "keys", "list")
    assert re.search(rf"{key_id} │ umbrella │ \S+ \S+Z │ \S+ \S+Z │ \S+ \S+Z", output), output


def test_keys_list_names_an_unknown_tenant(cli_settings: Settings) -> None:
    code, output = invoke(cli_settings, "keys", "list", "--tenant", "nobody")
    assert (code, output) == (2, "error: no tenant named 'nobody'")


@pytest.mark.parametrize(
    "command",
    [
        ("keys", "create", "--tenant", "acme"),
        ("keys", "list"),
        ("keys", "revoke", "key-1"),
        ("tenants", "show", "acme"),
        ("tenants", "set-quota", "acme", "--max-active-jobs", "2"),
        ("models", "list"),
        ("models", "add", "x", "/nowhere"),
    ],
)
def test_a_command_on_a_data_directory_never_migrated_says_to_migrate_in_one_line(
    tmp_path: Path, command: tuple[str, ...]
) -> None:
    # Every URL spelled out: scripts/test.sh exports GRAFT_DATABASE_URL (PostgreSQL) to the whole suite.
    fresh_dir = tmp_path / "fresh"
    fresh = Settings(
        data_dir=fresh_dir,
        database_url=f"sqlite:///{fresh_dir / 'graft.db'}",
        broker_url=f"sqla+sqlite:///{fresh_dir / 'broker.db'}",
    )
    code, output = invoke(fresh, *command)
    assert code == 2
    assert output == (
        f"error: the database sqlite:///{tmp_path}/fresh/graft.db has no Graft schema yet; "
        "run `graft migrate` (or `graft up`) first"
    )
    assert not (tmp_path / "fresh" / "graft.db").exists()


def test_a_command_on_a_database_behind_the_code_says_to_migrate(cli_settings: Settings) -> None:
    from migrations.apply import alembic_config

    command.downgrade(alembic_config(cli_settings.database_url), "-1")
    code, output = invoke(cli_settings, "keys", "list")
    assert code == 2
    assert "has an older schema than this version of Graft; run `graft migrate`" in output


def test_models_list_never_cuts_a_long_id_or_location(cli_settings: Settings, tiny_bert_folder: Path) -> None:
    name = "an-organisation-with-a-long-name/a-model-whose-name-is-longer-than-eighty-columns-by-itself-alone"
    invoke(cli_settings, "models", "add", name, str(tiny_bert_folder))
    get_settings.cache_clear()
    result = CliRunner().invoke(app, ["models", "list"], env=dict(invoke_environment(cli_settings), COLUMNS="80"))
    assert result.exit_code == 0, result.output
    assert name in result.output and str(tiny_bert_folder) in result.output


def test_up_and_api_help_show_the_host_and_port_defaults() -> None:
    for subcommand in ("up", "api"):
        output = " ".join(CliRunner().invoke(app, [subcommand, "--help"], env={"COLUMNS": "200"}).output.split())
        assert "Interface to bind (default: GRAFT_HOST, else 127.0.0.1)." in output, subcommand
        assert "Port to listen on (default: GRAFT_PORT, else 8000)." in output, subcommand
