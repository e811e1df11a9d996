"""Static checks of the deployment files (Dockerfile, docker-compose.yml).

No Docker engine is needed: the compose file is validated against the Compose Specification schema
with check-jsonschema and read with PyYAML; the Dockerfile is read as text.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from models.settings import Settings

REPO = Path(__file__).resolve().parents[1]
COMPOSE_FILE = REPO / "docker-compose.yml"
DOCKERFILE = REPO / "Dockerfile"
GRAFT_SERVICES = ("migrate", "api", "worker")


# --- helpers -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    document = yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))
    assert isinstance(document, dict), "docker-compose.yml is not a mapping"
    return document


def _service(compose: dict[str, Any], name: str) -> dict[str, Any]:
    services = compose.get("services") or {}
    assert name in services, f"docker-compose.yml has no {name!r} service (has {sorted(services)})"
    service = services[name]
    assert isinstance(service, dict)
    return service


def _environment(service: dict[str, Any]) -> dict[str, str | None]:
    """A service's `environment`, in either the mapping or the list (`KEY=VALUE`) form."""
    raw = service.get("environment") or {}
    if isinstance(raw, dict):
        return {str(k): None if v is None else str(v) for k, v in raw.items()}
    env: dict[str, str | None] = {}
    for item in raw:
        key, sep, value = str(item).partition("=")
        env[key] = value if sep else None
    return env


def _volume_mounts(service: dict[str, Any]) -> dict[str, str]:
    """Named-volume or bind source -> container path, from short (`src:dst[:mode]`) or long syntax."""
    mounts: dict[str, str] = {}
    for entry in service.get("volumes") or []:
        if isinstance(entry, str):
            parts = entry.split(":")
            if len(parts) >= 2:
                mounts[parts[0]] = parts[1]
        elif isinstance(entry, dict) and "source" in entry and "target" in entry:
            mounts[str(entry["source"])] = str(entry["target"])
    return mounts


def _dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, with line continuations joined and comments dropped."""
    logical: list[str] = []
    current = ""
    for line in DOCKERFILE.read_text(encoding="utf-8").splitlines():
        stripped = line.strip()
        if stripped.startswith("#") or (not stripped and not current):
            continue
        if stripped.endswith("\\"):
            current += stripped[:-1] + " "
            continue
        current += stripped
        if current.strip():
            logical.append(current.strip())
        current = ""
    if current.strip():
        logical.append(current.strip())
    instructions = []
    for text in logical:
        keyword, _, args = text.partition(" ")
        instructions.append((keyword.upper(), args.strip()))
    return instructions


# pip options that take a value, so that value is not mistaken for a requirement.
_PIP_OPTIONS_WITH_VALUE = {
    "-i",
    "--index-url",
    "--extra-index-url",
    "-c",
    "--constraint",
    "-r",
    "--requirement",
    "-f",
    "--find-links",
    "-t",
    "--target",
    "--prefix",
    "--root",
    "--platform",
    "--python-version",
    "--implementation",
    "--abi",
    "--upgrade-strategy",
    "--progress-bar",
    "--cache-dir",
    "--src",
}


def _pip_installs() -> list[tuple[int, list[str], list[str]]]:
    """Every `pip install` in a RUN: (order, requirement arguments, full argument list)."""
    found = []
    order = 0
    for keyword, args in _dockerfile_instructions():
        if keyword != "RUN":
            continue
        for command in re.split(r"&&|\|\||;", args):
            try:
                tokens = shlex.split(command)
            except ValueError:
                tokens = command.split()
            for i in range(len(tokens) - 1):
                if Path(tokens[i]).name.startswith("pip") and tokens[i + 1] == "install":
                    rest = tokens[i + 2 :]
                    requirements, skip = [], False
                    for token in rest:
                        if skip:
                            skip = False
                        elif token in _PIP_OPTIONS_WITH_VALUE:
                            skip = True
                        elif not token.startswith("-"):
                            requirements.append(token)
                    found.append((order, requirements, rest))
                    order += 1
                    break
    return found


def _is_torch(requirement: str) -> bool:
    """Whether a pip requirement names the `torch` distribution itself (not torchvision etc.)."""
    name = re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", requirement)
    return name is not None and name.group(0).lower() == "torch"


# --- docker-compose.yml --------------------------------------------------------------------------


def test_compose_file_matches_compose_specification() -> None:
    checker = Path(sys.executable).parent / "check-jsonschema"
    assert checker.exists(), f"check-jsonschema is not installed next to {sys.executable}"
    result = subprocess.run(
        [str(checker), "--builtin-schema", "vendor.compose-spec", str(COMPOSE_FILE)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, f"compose file is invalid:\n{result.stdout}\n{result.stderr}"


def test_api_worker_and_migrate_share_the_artifact_volume_at_the_same_path(compose: dict[str, Any]) -> None:
    assert "artifacts" in (compose.get("volumes") or {}), "no top-level named volume 'artifacts'"
    targets = {name: _volume_mounts(_service(compose, name)).get("artifacts") for name in GRAFT_SERVICES}
    assert None not in targets.values(), f"not every graft service mounts 'artifacts': {targets}"
    assert len(set(targets.values())) == 1, f"'artifacts' is mounted at different paths: {targets}"
    # ... and that path is the data directory each of them is told to use.
    for name in GRAFT_SERVICES:
        data_dir = _environment(_service(compose, name)).get("GRAFT_DATA_DIR")
        assert data_dir == targets[name], f"{name}: GRAFT_DATA_DIR={data_dir!r} but artifacts at {targets[name]}"


@pytest.mark.parametrize("variable", ["GRAFT_DATABASE_URL", "GRAFT_BROKER_URL"])
def test_api_worker_and_migrate_get_the_same_connection_url(compose: dict[str, Any], variable: str) -> None:
    values = {name: _environment(_service(compose, name)).get(variable) for name in GRAFT_SERVICES}
    assert None not in values.values(), f"{variable} is not set for every graft service: {values}"
    assert len(set(values.values())) == 1, f"{variable} differs between services: {values}"


def test_connection_urls_point_at_the_compose_postgres_and_redis(compose: dict[str, Any]) -> None:
    env = _environment(_service(compose, "api"))
    database_url = env["GRAFT_DATABASE_URL"] or ""
    broker_url = env["GRAFT_BROKER_URL"] or ""
    assert database_url.startswith("postgresql+psycopg://"), database_url
    assert "@postgres:5432/" in database_url, database_url
    assert broker_url.startswith("redis://redis:6379"), broker_url
    _service(compose, "postgres")
    _service(compose, "redis")


def test_worker_reserves_an_nvidia_gpu(compose: dict[str, Any]) -> None:
    worker = _service(compose, "worker")
    devices = (((worker.get("deploy") or {}).get("resources") or {}).get("reservations") or {}).get("devices")
    assert devices, "worker has no deploy.resources.reservations.devices"
    assert any(
        device.get("driver") == "nvidia" and "gpu" in (device.get("capabilities") or []) for device in devices
    ), f"worker asks for no nvidia GPU: {devices}"


def test_api_and_worker_start_only_after_a_successful_migration(compose: dict[str, Any]) -> None:
    assert _service(compose, "migrate").get("command") == ["migrate"]
    for name in ("api", "worker"):
        depends_on = _service(compose, name).get("depends_on") or {}
        assert isinstance(depends_on, dict), f"{name}: depends_on needs conditions"
        assert (depends_on.get("migrate") or {}).get("condition") == "service_completed_successfully", name
        assert (depends_on.get("redis") or {}).get("condition") == "service_healthy", name
    assert (_service(compose, "migrate").get("depends_on") or {}).get("postgres", {}).get(
        "condition"
    ) == "service_healthy"


def test_every_graft_variable_in_compose_is_a_settings_field(compose: dict[str, Any]) -> None:
    text = COMPOSE_FILE.read_text(encoding="utf-8")
    named = set(re.findall(r"\bGRAFT_[A-Z0-9_]+\b", text))
    for service in (compose.get("services") or {}).values():
        named |= {key for key in _environment(service) if key.startswith("GRAFT_")}
    assert named, "docker-compose.yml names no GRAFT_* variable"
    unknown = sorted(name for name in named if name.removeprefix("GRAFT_").lower() not in Settings.model_fields)
    assert not unknown, f"not fields of models.settings.Settings: {unknown}"


# --- Dockerfile ----------------------------------------------------------------------------------


def test_dockerfile_installs_a_pinned_torch_before_the_project() -> None:
    installs = _pip_installs()
    torch_pins = [
        order
        for order, requirements, _ in installs
        if any(re.fullmatch(r"torch==\d+(\.\d+)+", r) for r in requirements)
    ]
    project = [order for order, requirements, _ in installs if "." in requirements]
    assert torch_pins, f"no `pip install torch==<version>` in the Dockerfile: {installs}"
    assert project, f"no `pip install .` in the Dockerfile: {installs}"
    assert min(torch_pins) < min(project), "torch must be installed before the project"


def test_dockerfile_torch_comes_from_the_index_named_by_torch_variant() -> None:
    instructions = _dockerfile_instructions()
    args = [a for keyword, a in instructions if keyword == "ARG"]
    assert "TORCH_VARIANT=cpu" in args, f"ARG TORCH_VARIANT=cpu missing: {args}"
    for _, requirements, rest in _pip_installs():
        if any(_is_torch(r) for r in requirements):
            assert "--index-url" in rest, f"torch installed without --index-url: {rest}"
            index = rest[rest.index("--index-url") + 1]
            assert index == "https://download.pytorch.org/whl/${TORCH_VARIANT}", index


def test_dockerfile_never_installs_an_unpinned_torch() -> None:
    for _, requirements, _ in _pip_installs():
        for requirement in requirements:
            if _is_torch(requirement):
                assert re.fullmatch(r"torch==\d+(\.\d+)+", requirement), f"unpinned torch: {requirement!r}"


def test_dockerfile_copies_everything_the_project_build_needs() -> None:
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    packages = [p.rstrip("*") for p in pyproject["tool"]["setuptools"]["packages"]["find"]["include"]]
    copied: set[str] = set()
    for keyword, args in _dockerfile_instructions():
        if keyword == "COPY":
            sources = [s for s in shlex.split(args) if not s.startswith("--")][:-1]
            copied |= {s.rstrip("/") for s in sources}
    needed = {"pyproject.toml", pyproject["project"]["readme"], *packages}
    assert needed <= copied, f"Dockerfile does not COPY: {sorted(needed - copied)}"


def test_dockerfile_runs_the_graft_cli_as_a_non_root_user() -> None:
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    assert "graft" in pyproject["project"]["scripts"]
    instructions = dict(_dockerfile_instructions())  # last of each instruction wins, as in Docker
    assert instructions["FROM"].startswith("python:3.11-slim")
    assert instructions["ENTRYPOINT"] == '["graft"]'
    assert instructions["CMD"] == '["api", "--host", "0.0.0.0", "--port", "8000"]'
    assert instructions["USER"] == "graft"
    assert instructions["EXPOSE"] == "8000"
    env = [token for keyword, args in _dockerfile_instructions() if keyword == "ENV" for token in args.split()]
    assert "GRAFT_DATA_DIR=/data" in env


def test_the_worker_is_given_time_to_checkpoint_and_hand_back_its_job_on_stop(compose: dict[str, Any]) -> None:
    grace = str(compose["services"]["worker"]["stop_grace_period"])
    assert grace.endswith("s")
    defaults = Settings()
    assert float(grace.removesuffix("s")) >= defaults.stop_grace_seconds + defaults.heartbeat_seconds
