"""The missed-while-asleep summary, and how the JSON, table and HTML reports show it."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import jsonschema

from tests.feeds.conftest import DSA_5586_1, DSA_5724_1, DSA_5868_1, bookworm, write_json
from vmaudit.baseline.factsio import load_schema
from vmaudit.baseline.model import Baseline
from vmaudit.feeds import FeedsMatcher, import_feeds
from vmaudit.judge.missed import Missed, missed
from vmaudit.judge.rules import evaluate
from vmaudit.models import (
    AuditedImage,
    Dormancy,
    ImageRef,
    ImageResult,
    ScanReport,
)
from vmaudit.report import Format, render

NOW = datetime(2025, 3, 1, tzinfo=UTC)
BASELINE = Baseline("vulns", "", "test", settings={"vulnerabilities": {}})


def _result(tmp_path: Path, last_update: str | None, last_boot: str | None) -> ImageResult:
    records = [
        write_json(tmp_path / f"{r['id']}.json", r) for r in (DSA_5586_1, DSA_5724_1, DSA_5868_1)
    ]
    import_feeds([str(p) for p in records], tmp_path / "feeds.db", lambda _: None)
    matcher = FeedsMatcher.open(tmp_path / "feeds.db")
    facts = replace(
        bookworm("1:9.2p1-2+deb12u1"), dormancy=Dormancy(last_boot, None, last_update, 300)
    )
    evaluation = evaluate(facts, [BASELINE], NOW, matcher)
    return AuditedImage(
        ImageRef(facts.image.path, "qcow2", ()),
        facts,
        evaluation.findings,
        rules_evaluated=evaluation.rules_evaluated,
    )


def test_advisories_published_after_the_later_of_update_and_boot(tmp_path: Path) -> None:
    result = _result(tmp_path, "2024-01-10T08:00:00Z", "2024-03-01T09:00:00Z")
    assert missed(result, NOW) == Missed(
        since="2024-03-01T09:00:00Z",
        total=2,
        by_severity={"critical": 0, "high": 0, "medium": 2, "low": 0, "info": 0},
        oldest="2024-07-01",
        days=243,
    )  # DSA-5586-1 (Dec 2023) was out before the last update: not missed while asleep


def test_without_dates_every_dated_advisory_counts(tmp_path: Path) -> None:
    summary = missed(_result(tmp_path, None, None), NOW)
    assert summary is not None
    assert (summary.since, summary.total, summary.oldest) == (None, 4, "2023-12-22")


def test_no_summary_when_vuln_cve_was_not_judged(tmp_path: Path) -> None:
    result = replace(_result(tmp_path, None, None), rules_evaluated=())
    assert missed(result, NOW) is None


def test_reports_show_it_per_image(tmp_path: Path) -> None:
    result = _result(tmp_path, "2024-01-10T08:00:00Z", "2024-03-01T09:00:00Z")
    report = ScanReport(
        "2025-03-01T00:00:00Z", "2025-03-01T00:01:00Z", ("vulns",), "high", (result,), 1
    )
    document = json.loads(render(report, Format.JSON))
    jsonschema.validate(document, load_schema("report"))
    assert document["images"][0]["missed"]["total"] == 2
    expected = "2 missed (2 medium) since 2024-03-01, oldest 2024-07-01, 243 days of fixes"
    assert expected in render(report, Format.TABLE, width=200)
    assert f"missed while asleep: {expected}" in render(report, Format.HTML)
    rows = render(report, Format.CSV).splitlines()
    assert sum(",vuln.cve," in row for row in rows) == 4  # vuln.cve rows like any finding
