"""docs/baseline-reference.md is what ``python -m vmaudit.baseline.docs`` prints."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from vmaudit.baseline.docs import reference
from vmaudit.judge.rules import RULES

REPO = Path(__file__).resolve().parents[2]


def test_reference_file_is_up_to_date() -> None:
    committed = (REPO / "docs" / "baseline-reference.md").read_text("utf-8")
    assert committed == reference(), (
        "run: python -m vmaudit.baseline.docs > docs/baseline-reference.md"
    )


def test_module_prints_the_reference_with_every_rule_docstring() -> None:
    printed = subprocess.run(
        [sys.executable, "-m", "vmaudit.baseline.docs"],
        check=True,
        capture_output=True,
        text=True,
        cwd=REPO,
    ).stdout
    assert printed == reference()
    for rule in RULES.values():
        assert f"### `{rule.id}`" in printed
        assert rule.doc.splitlines()[0] in printed
