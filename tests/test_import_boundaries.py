"""The rooms of docs/architecture.md and the arrows allowed between them."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT

VOCABULARY = ("models.tasks", "models.strategies", "models.errors", "models.hyperparameters", "models.architectures")
VOCABULARY += ("models.bio_tags", "models.checksums", "models.unicode_text", "models.ids", "models.states")
VOCABULARY += ("models.checkpoint_kinds",)


def imported_modules(folder: str) -> set[tuple[str, str]]:
    """(file, imported module) for every import under `folder` (a package path such as `models/tasks`)."""
    found = set()
    for path in (REPO_ROOT / folder).rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                found |= {(str(path.relative_to(REPO_ROOT)), alias.name) for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module:
                found.add((str(path.relative_to(REPO_ROOT)), node.module))
    return found


def offenders(folder: str, allowed: tuple[str, ...], *, inside: tuple[str, ...] = ()) -> set[tuple[str, str]]:
    """Imports of project modules under `folder` that are neither in `allowed` nor inside `inside`."""
    project = ("api", "models", "worker", "cli", "bench", "migrations")
    return {
        (path, module)
        for path, module in imported_modules(folder)
        if module.split(".")[0] in project and not module.startswith(allowed + inside)
    }


@pytest.mark.parametrize(("package", "forbidden"), [("models", ("api", "worker", "cli")), ("api", ("worker", "cli"))])
def test_packages_import_only_downward(package: str, forbidden: tuple[str, ...]) -> None:
    found = {(path, module) for path, module in imported_modules(package) if module.split(".")[0] in forbidden}
    assert found == set()


@pytest.mark.parametrize("folder", ["models/tasks", "models/strategies"])
def test_the_torch_free_halves_of_tasks_and_strategies_use_only_the_shared_vocabulary(folder: str) -> None:
    assert offenders(folder, VOCABULARY) == set()


def test_the_engine_imports_no_storage_services_wire_or_supervision() -> None:
    assert offenders("worker/training", VOCABULARY, inside=("worker.training",)) == set()


def test_the_training_process_imports_neither_celery_nor_the_runner() -> None:
    imported = {module for _, module in imported_modules("worker") if _ == "worker/training_process.py"}
    assert not {m for m in imported if m.split(".")[0] == "celery" or m in ("worker.runner", "worker.tasks")}
    assert "worker.celery_app" not in imported


def test_only_the_engine_and_the_training_process_import_torch() -> None:
    allowed = ("worker/training/", "worker/training_process.py", "worker/database_reporter.py")
    found = {
        (path, module)
        for package in ("api", "models", "worker", "cli")
        for path, module in imported_modules(package)
        if module.split(".")[0] in ("torch", "transformers") and not path.startswith(allowed)
    }
    assert found == set()


@pytest.mark.parametrize("module", ["api.main", "worker.tasks", "cli.main"])
def test_importing_the_service_processes_leaves_torch_unloaded(module: str) -> None:
    check = f"import sys, {module}; sys.exit('torch' in sys.modules or 'transformers' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", check], cwd=Path(REPO_ROOT), capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_loading_the_engine_loads_no_storage_services_wire_celery_or_sqlalchemy() -> None:
    """The arrows hold transitively too: the recipe and every task and strategy, imported, pull none in."""
    check = (
        "import sys, worker.training.recipe\n"
        "bad = sorted(m for m in sys.modules if m.startswith(('models.storage', 'models.services', 'models.wire',"
        " 'celery', 'sqlalchemy', 'api.', 'worker.runner')))\n"
        "sys.exit(', '.join(bad) or None)"
    )
    result = subprocess.run([sys.executable, "-c", check], cwd=Path(REPO_ROOT), capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


USER_COMMANDS = ("cli/files_commands.py", "cli/jobs_commands.py", "cli/job_watch.py", "cli/webhooks_commands.py")
USER_COMMANDS += ("cli/service_client.py", "cli/output.py")


def test_the_users_commands_reach_the_service_only_over_http() -> None:
    """They run against any Graft URL: no database, storage or services; the settings only for the local URL."""
    found = {
        (path, module)
        for path, module in imported_modules("cli")
        if path in USER_COMMANDS and module.split(".")[0] in ("models", "api", "worker") and module != "models.settings"
    }
    assert found == set()


def test_the_dashboards_page_loads_nothing_from_another_origin() -> None:
    dashboard = REPO_ROOT / "api" / "dashboard"
    texts = {path.name: path.read_text(encoding="utf-8") for path in dashboard.iterdir() if path.suffix != ".png"}
    assert texts, "api/dashboard holds the page"
    for name, text in texts.items():
        assert "http://" not in text.replace("http://www.w3.org/2000/svg", "") and "https://" not in text, name
