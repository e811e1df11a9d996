"""The README stays true: every setting documented, the two set-up commands wired as it says."""

from __future__ import annotations

import re

from cli.service_client import CLIENT_VARIABLES
from models.settings import Settings
from tests.conftest import REPO_ROOT

README = (REPO_ROOT / "README.md").read_text(encoding="utf-8")


def test_every_setting_is_in_the_configuration_table() -> None:
    documented = set(re.findall(r"`GRAFT_([A-Z_]+)`", README))
    assert {name.upper() for name in Settings.model_fields} <= documented


def test_every_documented_variable_is_a_setting_or_the_command_lines_own() -> None:
    documented = set(re.findall(r"`GRAFT_([A-Z_]+)`", README))
    client_variables = {name.removeprefix("GRAFT_") for name in CLIENT_VARIABLES}
    assert documented <= {name.upper() for name in Settings.model_fields} | client_variables
    assert client_variables <= documented


def test_ci_runs_the_readmes_test_command() -> None:
    assert "make test" in README and "make up" in README
    assert "make test" in (REPO_ROOT / ".ci" / "run").read_text()
    makefile = (REPO_ROOT / "Makefile").read_text()
    assert re.search(r"^test:\n\tscripts/test\.sh$", makefile, re.MULTILINE)
    assert re.search(r"^up: install\n\t\.venv/bin/graft up$", makefile, re.MULTILINE)


def guarantees_table() -> list[str]:
    section = README.split("## Guarantees", 1)[1].split("\n## ", 1)[0]
    return [
        line for line in section.splitlines() if line.startswith("| ") and not line.startswith(("| promise", "| ---"))
    ]


def test_every_guarantee_names_tests_that_exist() -> None:
    """Each row's `file::test` (or a bare `::test` after a file named earlier in the row) is a real test."""
    rows = guarantees_table()
    assert len(rows) >= 15
    for row in rows:
        pinned_by = row.rsplit("|", 2)[1]
        references = re.findall(r"`((?:tests/)?[\w/]*\.py)?(?:::(\w+))?`", pinned_by)
        assert references, row
        current_file = None
        for path, test in references:
            if path:
                candidates = [REPO_ROOT / path] if path.startswith("tests/") else REPO_ROOT.glob(f"tests/**/{path}")
                existing = [candidate for candidate in candidates if candidate.is_file()]
                assert len(existing) == 1, f"{path} names {len(existing)} files; give its path ({row[:60]}…)"
                current_file = existing[0]
            if test:
                assert current_file is not None, row
                assert re.search(rf"^def {test}\(", current_file.read_text(), re.MULTILINE), (
                    f"{test} is not in {current_file.relative_to(REPO_ROOT)}"
                )
