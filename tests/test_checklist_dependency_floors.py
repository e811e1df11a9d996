"""Reliability checklist item 21: the build fails without the security floors, or with pickle in Celery."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tomllib
from importlib.metadata import version as installed_version
from pathlib import Path
from typing import Any

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

from models.settings import Settings
from tests.processes import REPO_ROOT, service_environment

# Each floor fixes the advisories named in ../shared/notes/reliability.md §4 and §5.
SECURITY_FLOORS = {
    "python-multipart": Version("0.0.32"),  # CVE-2024-24762 … CVE-2026-42561 and the 0.0.30–0.0.31 fixes
    "starlette": Version("1.3.1"),  # GHSA-7f5h-v6xp-fcq8 (Range DoS), GHSA-82w8-qh3p-5jfq (form limits)
    "torch": Version("2.6"),  # CVE-2025-32434: weights_only loading executed code before 2.6
}
PICKLE_NAMES = {"pickle", "application/x-python-serialize"}
CELERY_SERIALIZER_SETTINGS = ("accept_content", "result_accept_content", "task_serializer", "result_serializer")


def dependency_floor_violations(pyproject_text: str) -> list[str]:
    """What in `pyproject_text` lets a vulnerable version in: a missing dependency or a floor below SECURITY_FLOORS."""
    dependencies = [Requirement(line) for line in tomllib.loads(pyproject_text)["project"]["dependencies"]]
    violations = []
    for name, floor in SECURITY_FLOORS.items():
        matching = [requirement for requirement in dependencies if requirement.name.lower() == name]
        if not matching:
            violations.append(f"{name}: not a declared dependency")
            continue
        specifier = matching[0].specifier
        lower_bounds = [Version(clause.version) for clause in specifier if clause.operator in (">=", ">", "==", "~=")]
        if not lower_bounds or max(lower_bounds) < floor:
            violations.append(f"{name}: {specifier or 'no version bound'} admits versions below {floor}")
    return violations


def unsafe_serializer_settings(conf: dict[str, Any]) -> list[str]:
    """Celery settings that would let a worker unpickle what the broker hands it."""
    found = []
    for key in CELERY_SERIALIZER_SETTINGS:
        value = conf.get(key)
        values = [value] if isinstance(value, str) else list(value or [])
        found += [f"{key}={item}" for item in values if item in PICKLE_NAMES]
    if not conf.get("accept_content"):
        found.append("accept_content unset: Celery's default would decide")
    return found


def test_pyproject_keeps_every_security_floor() -> None:
    assert dependency_floor_violations((REPO_ROOT / "pyproject.toml").read_text(encoding="utf-8")) == []


@pytest.mark.parametrize(
    ("requirement", "replacement", "violation"),
    [
        pytest.param("python-multipart", '"python-multipart>=0.0.31"', "python-multipart:", id="multipart-0.0.31"),
        pytest.param("python-multipart", '"python-multipart"', "python-multipart:", id="multipart-unbounded"),
        pytest.param("starlette", '"starlette>=1.3.0"', "starlette:", id="starlette-1.3.0"),
        pytest.param("starlette", '"starlette<2"', "starlette:", id="starlette-only-a-ceiling"),
        pytest.param("torch", '"torch>=2.5.1"', "torch:", id="torch-2.5.1"),
        pytest.param("torch", None, "torch: not a declared dependency", id="torch-removed"),
    ],
)
def test_a_weakened_floor_is_caught(requirement: str, replacement: str | None, violation: str) -> None:
    text = (REPO_ROOT / "pyproject.toml").read_text(encoding="utf-8")
    declared = re.compile(rf'^\s*"{re.escape(requirement)}[^"]*",\n', re.MULTILINE)
    assert declared.search(text), f"{requirement} is not declared on a line of its own"
    mutated = declared.sub(f"    {replacement},\n" if replacement else "", text, count=1)
    violations = dependency_floor_violations(mutated)
    assert len(violations) == 1 and violations[0].startswith(violation), violations


@pytest.mark.parametrize("distribution", sorted(SECURITY_FLOORS))
def test_the_installed_environment_meets_every_floor(distribution: str) -> None:
    assert Version(installed_version(distribution)) >= SECURITY_FLOORS[distribution]


@pytest.mark.parametrize("install_file", ["Dockerfile", "scripts/install.sh"])
def test_the_pinned_torch_of_each_install_path_meets_the_floor(install_file: str) -> None:
    text = (REPO_ROOT / install_file).read_text(encoding="utf-8")
    pins = re.findall(r"torch==(\d+(?:\.\d+)+)", text) + re.findall(r"TORCH_VERSION:-(\d+(?:\.\d+)+)", text)
    assert pins, f"{install_file} pins no torch version"
    assert all(Version(pin) >= SECURITY_FLOORS["torch"] for pin in pins), pins


def test_the_workers_celery_app_never_accepts_pickle(settings: Settings) -> None:
    # A process of its own: importing worker.celery_app reads the environment into get_settings' cache.
    dump = (
        "import json; from worker.celery_app import celery_app as app; "
        f"print(json.dumps({{key: app.conf[key] for key in {CELERY_SERIALIZER_SETTINGS!r}}}))"
    )
    result = subprocess.run(
        [sys.executable, "-c", dump],
        env=service_environment(settings),
        cwd=Path(REPO_ROOT),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    conf = json.loads(result.stdout.strip().splitlines()[-1])
    assert unsafe_serializer_settings(conf) == []
    assert conf["accept_content"] == ["json"]


@pytest.mark.parametrize(
    "conf",
    [
        pytest.param({"accept_content": ["json", "pickle"]}, id="pickle-accepted"),
        pytest.param({"accept_content": ["application/x-python-serialize"]}, id="pickle-by-mime-type"),
        pytest.param({"accept_content": ["json"], "result_accept_content": ["pickle"]}, id="pickled-results"),
        pytest.param({"accept_content": ["json"], "task_serializer": "pickle"}, id="pickle-serializer"),
        pytest.param({"accept_content": None}, id="accept-content-unset"),
    ],
)
def test_pickle_in_the_celery_configuration_is_caught(conf: dict[str, Any]) -> None:
    assert unsafe_serializer_settings(conf) != []
