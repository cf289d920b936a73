"""Coverage (spec/report.md): a section that could not be read leaves its rules not judged,
never passed, and the image counts as not fully audited for the exit code."""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from datetime import UTC, datetime
from pathlib import Path

import pytest

from fixtures.windows.build import build_image, build_tree, guest
from vmaudit.baseline.loader import load_baseline
from vmaudit.judge.rules import RULES, evaluate
from vmaudit.judge.verdict import exit_code
from vmaudit.models import (
    AuditedImage,
    ImageRef,
    ScanReport,
)
from vmaudit.report import Format, render
from vmaudit.report.json import report_dict

from .test_collect_windows import NOW, copy_tree, facts_of

ACCOUNT_RULES = {
    "account.revoked-present",
    "account.revoked-active",
    "account.unapproved-admin",
    "account.empty-password",
}
REPO = Path(__file__).resolve().parents[2]
BASELINE = REPO / "fixtures" / "demo-windows-baseline.yaml"


def corrupt_sam(root: Path) -> None:
    (root / "Windows" / "System32" / "config" / "SAM").write_bytes(b"regf" + os.urandom(8192))


def test_every_section_of_a_readable_guest_is_read(windows_trees: dict[str, Path]) -> None:
    facts = facts_of(windows_trees["win2019-patched"])
    assert {c.section: c.status for c in facts.coverage} == {
        "os": "read",
        "packages": "read",
        "hotfixes": "read",
        "accounts": "read",
        "sudo": "absent",
        "ssh": "absent",
        "firewall": "read",
        "dormancy": "read",
        "config": "read",
    }
    assert facts.failed_sections() == {}


def test_an_unreadable_sam_fails_accounts_and_its_rules_are_not_judged(
    windows_trees: dict[str, Path], tmp_path: Path
) -> None:
    root = copy_tree(windows_trees["win2016-dormant"], tmp_path)
    intact = evaluate(facts_of(root), [load_baseline(str(BASELINE))], NOW)
    assert {f.rule for f in intact.findings} & ACCOUNT_RULES  # the dormant guest has some

    corrupt_sam(root)
    facts = facts_of(root)
    assert facts.failed_sections() == {"accounts": "the SAM hive is not readable"}
    assert facts.users == ()
    judged = evaluate(facts, [load_baseline(str(BASELINE))], NOW)
    blind = {entry.rule for entry in judged.not_judged}
    assert blind and blind <= {r for r, rule in RULES.items() if "accounts" in rule.sections}
    assert not {f.rule for f in judged.findings} & blind  # not judged is not passed either
    assert not set(judged.rules_evaluated) & blind
    assert all("accounts: the SAM hive is not readable" in e.reason for e in judged.not_judged)


def test_an_image_with_a_failed_section_is_audited_incomplete_and_exits_3(
    windows_trees: dict[str, Path], tmp_path: Path
) -> None:
    root = copy_tree(windows_trees["win2019-patched"], tmp_path)
    corrupt_sam(root)
    facts = facts_of(root)
    judged = evaluate(facts, [load_baseline("windows-default")], NOW)
    ref = ImageRef("/ds/win.vhdx", "vhdx", ())
    result = AuditedImage(
        ref,
        facts,
        findings=judged.findings,
        rules_evaluated=judged.rules_evaluated,
        not_judged=judged.not_judged,
    )
    assert result.status == "audited" and not result.complete
    assert exit_code([result], "high") == 3
    assert exit_code([result], "never") == 3
    clean = AuditedImage(ref, facts_of(windows_trees["win2019-patched"]))
    assert clean.complete and exit_code([clean], "high") == 0
    report = ScanReport(
        "2026-01-01T00:00:00Z", "2026-01-01T00:00:01Z", ("windows-default",), "high", (result,), 3
    )
    image = report_dict(report)["images"][0]
    assert image["status"] == "audited" and image["complete"] is False
    assert {e["rule"] for e in image["not_judged"]} == {e.rule for e in judged.not_judged}
    assert {c["section"]: c["status"] for c in image["coverage"]}["accounts"] == "failed"


def test_every_format_shows_the_rules_not_judged(
    windows_trees: dict[str, Path], tmp_path: Path
) -> None:
    root = copy_tree(windows_trees["win2019-patched"], tmp_path)
    corrupt_sam(root)
    facts = facts_of(root)
    judged = evaluate(facts, [load_baseline("windows-default")], NOW)
    result = AuditedImage(
        ImageRef("/ds/win.vhdx", "vhdx", ()),
        facts,
        findings=judged.findings,
        rules_evaluated=judged.rules_evaluated,
        not_judged=judged.not_judged,
    )
    report = ScanReport(
        "2026-01-01T00:00:00Z", "2026-01-01T00:00:01Z", ("windows-default",), "high", (result,), 3
    )
    rule = "account.empty-password"
    assert rule in {e.rule for e in judged.not_judged}
    table = render(report, Format.TABLE, width=200)
    assert any("not judged" in line and rule in line for line in table.split("\n"))
    assert "incompletely" in table
    rows = list(csv.reader(io.StringIO(render(report, Format.CSV))))
    assert [r[10] for r in rows if r[13].startswith("not judged: accounts:")] == [
        e.rule for e in judged.not_judged
    ]
    suite = ET.fromstring(render(report, Format.JUNIT)).find("testsuite")
    assert suite is not None and suite.get("skipped") == str(len(judged.not_judged))
    skipped = {c.get("name") for c in suite.iter("testcase") if c.find("skipped") is not None}
    assert skipped == {e.rule for e in judged.not_judged}
    page = render(report, Format.HTML)
    assert "incomplete audit" in page and f"<code>{rule}</code></td><td>not judged" in page


def test_every_rule_declares_the_sections_it_reads() -> None:
    from vmaudit.models import SECTIONS

    assert all(rule.sections and set(rule.sections) <= set(SECTIONS) for rule in RULES.values())


@pytest.mark.appliance
def test_scan_exits_3_for_the_image_whose_sam_cannot_be_read(tmp_path: Path) -> None:
    """Two real Windows images in one scan; only the one with a damaged SAM is incomplete."""
    store = tmp_path / "store"
    store.mkdir()
    spec = guest("win2019-patched")
    built = datetime.now(UTC).replace(microsecond=0)
    for name, damaged in (("intact", False), ("damaged", True)):
        work = tmp_path / f"work-{name}"
        work.mkdir()
        tree = build_tree(spec, work / "root", built)
        if damaged:
            corrupt_sam(tree)
        build_image(spec, tree, store / f"{name}.vhdx", work)
        shutil.rmtree(work)
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "vmaudit.cli",
            "scan",
            str(store),
            "-b",
            "windows-default",
            "--format",
            "json",
            "--no-cache",
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=900,
        env={**os.environ, "XDG_STATE_HOME": str(tmp_path / "state")},
    )
    assert proc.returncode == 3, proc.stderr
    images = {Path(i["path"]).stem: i for i in json.loads(proc.stdout)["images"]}
    assert {name: (i["status"], i["complete"]) for name, i in images.items()} == {
        "intact": ("audited", True),
        "damaged": ("audited", False),
    }
    assert images["intact"]["not_judged"] == []
    assert {e["rule"] for e in images["damaged"]["not_judged"]} >= {"account.empty-password"}
