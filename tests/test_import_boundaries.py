"""The layering rules of STYLE.md: api → models ← worker, and torch only under worker/training."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT


def imported_modules(package: str) -> set[tuple[str, str]]:
    found = set()
    for path in (REPO_ROOT / package).rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                found |= {(str(path.relative_to(REPO_ROOT)), alias.name) for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module:
                found.add((str(path.relative_to(REPO_ROOT)), node.module))
    return found


@pytest.mark.parametrize(("package", "forbidden"), [("models", ("api", "worker", "cli")), ("api", ("worker", "cli"))])
def test_packages_import_only_downward(package: str, forbidden: tuple[str, ...]) -> None:
    offenders = {(path, module) for path, module in imported_modules(package) if module.split(".")[0] in forbidden}
    assert offenders == set()


def test_only_the_training_package_and_the_child_import_torch() -> None:
    allowed = ("worker/training/", "worker/training_process.py", "worker/database_reporter.py")
    offenders = {
        (path, module)
        for package in ("api", "models", "worker", "cli")
        for path, module in imported_modules(package)
        if module.split(".")[0] in ("torch", "transformers") and not path.startswith(allowed)
    }
    assert offenders == set()


@pytest.mark.parametrize("module", ["api.main", "worker.tasks", "cli.main"])
def test_importing_the_service_processes_leaves_torch_unloaded(module: str) -> None:
    check = f"import sys, {module}; sys.exit('torch' in sys.modules or 'transformers' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", check], cwd=Path(REPO_ROOT), capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
