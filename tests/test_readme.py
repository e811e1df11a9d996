"""The README stays true: every setting documented, the two set-up commands wired as it says."""

from __future__ import annotations

import re

from models.settings import Settings
from tests.conftest import REPO_ROOT

README = (REPO_ROOT / "README.md").read_text(encoding="utf-8")


def test_every_setting_is_in_the_configuration_table() -> None:
    documented = set(re.findall(r"`GRAFT_([A-Z_]+)`", README))
    assert {name.upper() for name in Settings.model_fields} <= documented


def test_every_documented_variable_is_a_setting() -> None:
    documented = set(re.findall(r"`GRAFT_([A-Z_]+)`", README))
    assert documented <= {name.upper() for name in Settings.model_fields}


def test_ci_runs_the_readmes_test_command() -> None:
    assert "make test" in README and "make up" in README
    assert "make test" in (REPO_ROOT / ".ci" / "run").read_text()
    makefile = (REPO_ROOT / "Makefile").read_text()
    assert re.search(r"^test:\n\tscripts/test\.sh$", makefile, re.MULTILINE)
    assert re.search(r"^up: install\n\t\.venv/bin/graft up$", makefile, re.MULTILINE)
