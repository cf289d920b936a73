"""Every registered rule against its own passing and failing facts (tests/baseline/rules/).

Each ``rules/<rule-id>/`` holds ``baseline.yaml`` (only the keys that rule reads),
``pass.json`` and ``fail.json`` (complete vmaudit.facts/v1 documents) and
``expected.json`` (the subjects the failing facts must produce, no more, no fewer). A rule
judged against vulnerability feeds (``vuln.cve``) also has ``feeds/``: feed files imported
into a feeds database that the evaluation matches against.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from vmaudit.baseline import facts_from_dict, load_baseline
from vmaudit.feeds import FeedsMatcher, import_feeds
from vmaudit.judge.rules import RULES, VulnerabilitySource, evaluate
from vmaudit.models import Facts

FIXTURES = Path(__file__).parent / "rules"
NOW = datetime(2026, 11, 27, tzinfo=UTC)


def _facts(path: Path) -> Facts:
    return facts_from_dict(json.loads(path.read_text("utf-8")))


def _feeds(folder: Path, tmp_path: Path) -> VulnerabilitySource | None:
    if not (folder / "feeds").is_dir():
        return None
    import_feeds([str(folder / "feeds")], tmp_path / "feeds.db", lambda _: None)
    return FeedsMatcher.open(tmp_path / "feeds.db")


def test_every_registered_rule_has_a_fixture_folder() -> None:
    missing = [rule_id for rule_id in RULES if not (FIXTURES / rule_id).is_dir()]
    assert missing == []


def test_every_fixture_folder_names_a_registered_rule() -> None:
    folders = {p.name for p in FIXTURES.iterdir() if p.is_dir()}
    assert folders - set(RULES) == set()


@pytest.mark.parametrize("rule_id", sorted(RULES))
def test_rule_passes_on_pass_fixture(rule_id: str, tmp_path: Path) -> None:
    folder = FIXTURES / rule_id
    baseline = load_baseline(str(folder / "baseline.yaml"))
    evaluation = evaluate(_facts(folder / "pass.json"), [baseline], NOW, _feeds(folder, tmp_path))
    assert rule_id in evaluation.rules_evaluated
    assert evaluation.findings == ()


@pytest.mark.parametrize("rule_id", sorted(RULES))
def test_rule_fires_on_fail_fixture(rule_id: str, tmp_path: Path) -> None:
    folder = FIXTURES / rule_id
    baseline = load_baseline(str(folder / "baseline.yaml"))
    expected = json.loads((folder / "expected.json").read_text("utf-8"))["subjects"]
    evaluation = evaluate(_facts(folder / "fail.json"), [baseline], NOW, _feeds(folder, tmp_path))
    assert rule_id in evaluation.rules_evaluated
    assert sorted(f.subject for f in evaluation.findings) == sorted(expected)
    for finding in evaluation.findings:
        assert finding.rule == rule_id
        assert finding.severity == RULES[rule_id].severity
        assert finding.baseline == baseline.name
        assert finding.message
