"""Every format lists images in one order: exposure descending, then path; errors last.

The scan holds two images whose scores both read 100.0 (the order comes from their
exposure, not from the score or the path), two images of equal exposure (the path
decides), a clean image and one in error, handed to the formatters out of order.
"""

from __future__ import annotations

import csv
import io
import json
import re
import xml.etree.ElementTree as ET

import pytest

from vmaudit.judge.risk import score
from vmaudit.models import (
    AuditedImage,
    Business,
    Dormancy,
    Facts,
    FailedImage,
    Finding,
    ImageError,
    ImageInfo,
    ImageRef,
    ImageResult,
    OsInfo,
    ScanReport,
    Severity,
)
from vmaudit.report import Format, render
from vmaudit.report.csv import HEADER


def _n(severity: Severity, count: int) -> list[Severity]:
    return [severity] * count


def _audited(
    path: str, days_idle: int, criticality: str, *severities: Severity, app: str = "app"
) -> ImageResult:
    findings = tuple(
        Finding(f"rule.{severity}", severity, f"s{i}", f"finding {i}", {}, "default")
        for i, severity in enumerate(severities)
    )
    info = ImageInfo(path, "qcow2", 1, "2026-01-01T00:00:00Z", "0" * 64, None, (path,))
    facts = Facts(
        info,
        OsInfo("linux", "debian", "12.4", hostname=path.rsplit("/", 1)[-1].split(".")[0]),
        dormancy=Dormancy(None, None, None, days_idle),
    )
    return AuditedImage(
        image=ImageRef(path, "qcow2", ()),
        facts=facts,
        findings=findings,
        risk=score(findings, days_idle, criticality),
        business=Business(app, "owner", criticality),
        rules_evaluated=tuple(sorted({f.rule for f in findings})),
    )


PAYROLL = "/ds/z-payroll.qcow2"  # 296 x 3 x 2 = 1776.0, 100.0
ERP = "/ds/a-erp.qcow2"  # 400 x (1 + 430/365) x 2 = 1742.4658, 100.0
TWIN_1, TWIN_2 = "/ds/m-twin-1.qcow2", "/ds/m-twin-2.qcow2"  # 20 x 1 x 1 = 20.0 each
CLEAN = "/ds/0-clean.qcow2"
BROKEN = "/ds/0-broken.qcow2"
RANKED = [PAYROLL, ERP, TWIN_1, TWIN_2, CLEAN, BROKEN]


@pytest.fixture()
def report() -> ScanReport:
    results = (
        FailedImage(ImageRef(BROKEN, "qcow2", ()), ImageError("timeout", "took too long")),
        _audited(TWIN_2, 0, "medium", "high"),
        _audited(CLEAN, 800, "critical"),
        _audited(ERP, 430, "critical", *_n("critical", 10)),
        _audited(TWIN_1, 0, "medium", "high"),
        _audited(
            PAYROLL,
            940,
            "critical",
            *_n("critical", 3),
            *_n("high", 6),
            *_n("medium", 7),
            app="payroll",
        ),
    )
    return ScanReport(
        "2026-11-27T10:00:00Z", "2026-11-27T10:05:00Z", ("default",), "high", results, 1
    )


def test_the_two_top_images_share_a_score_and_not_an_exposure(report: ScanReport) -> None:
    risks = {r.image.path: r.risk for r in report.results}
    assert risks[PAYROLL].score == risks[ERP].score == 100.0
    assert (risks[PAYROLL].exposure, risks[ERP].exposure) == (1776.0, 1742.4658)
    assert risks[TWIN_1] == risks[TWIN_2]


def test_json_lists_images_by_exposure(report: ScanReport) -> None:
    images = json.loads(render(report, Format.JSON))["images"]
    assert [image["path"] for image in images] == RANKED
    assert [image["risk"]["exposure"] for image in images[:2]] == [1776.0, 1742.4658]


def test_csv_rows_follow_the_ranking(report: ScanReport) -> None:
    rows = list(csv.reader(io.StringIO(render(report, Format.CSV), newline="")))[1:]
    images = [dict(zip(HEADER, row, strict=True))["image"] for row in rows]
    order = list(dict.fromkeys(images))
    assert order == [PAYROLL, ERP, TWIN_1, TWIN_2, BROKEN]  # the clean image has no row
    scores = {row[0]: row[HEADER.index("risk_score")] for row in rows}
    assert (scores[PAYROLL], scores[ERP], scores[TWIN_1]) == ("100.0", "100.0", "9.5")


def test_junit_suites_follow_the_ranking(report: ScanReport) -> None:
    root = ET.fromstring(render(report, Format.JUNIT))
    assert [suite.get("name") for suite in root.findall("testsuite")] == RANKED


def test_table_rows_follow_the_ranking_and_show_the_exposure(report: ScanReport) -> None:
    text = render(report, Format.TABLE, width=160)
    table = text.split("why they rank")[0]
    names = [name.removeprefix("/ds/") for name in RANKED]
    lines = [line for line in table.splitlines() if any(n in line for n in names)]
    assert [next(n for n in names if n in line) for line in lines] == names
    payroll, erp = lines[0], lines[1]
    assert re.search(r" 1776\.0 +100 +critical", payroll)
    assert re.search(r" 1742\.5 +100 +critical", erp)
    assert "error: timeout" in lines[-1]


def test_table_says_why_each_image_ranks_where_it_does(report: ScanReport) -> None:
    text = render(report, Format.TABLE, width=160)
    reasons = text.split("why they rank")[1].split("\n\n\n")[0]
    lines = [line.split() for line in reasons.splitlines() if re.match(r"\s+\d+ ", line)]
    assert [(line[0], line[1], line[2]) for line in lines] == [
        ("1", "z-payroll.qcow2", "1776.0"),
        ("2", "a-erp.qcow2", "1742.5"),
        ("3", "m-twin-1.qcow2", "20.0"),
        ("4", "m-twin-2.qcow2", "20.0"),
    ]  # the clean image brings nothing to explain, the broken one has no score
    # payroll: sleep brings 296 x 2 x 2 = 1184, criticality 296 x 3 = 888, the critical
    # findings 120 x 3 x 2 = 720; erp: its findings 1742.5, sleep 400 x 1.178 x 2 = 942.5,
    # criticality 400 x 2.178 = 871.2
    assert "940 days asleep, payroll (critical), 3 critical findings" in reasons
    assert "10 critical findings, 430 days asleep, app (critical)" in reasons
    assert "1 high finding" in reasons


def test_html_table_and_chart_follow_the_ranking(report: ScanReport) -> None:
    page = render(report, Format.HTML)
    body = page.split('<table class="sortable" id="images-table">')[1].split("</table>")[0]
    rows = re.findall(r'<tr id="row-\d+"><td data-value="([^"]+)"', body)
    assert rows == RANKED
    chart = page.split('id="chart-ranking"')[1].split("</svg>")[0]
    assert re.findall(r'<g class="bar-row" data-path="([^"]+)"', chart) == RANKED[:-1]
