"""Schema v3: scores of the capped formula, written by schema v2, scored again on opening.

The v2 database is written the way vmaudit wrote it before v3: the v1 and v2 migrations,
then rows with v2's own column lists and the score of its capped formula
``min(100, round(W x D x C))`` with dormancy counted up to one year.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import replace
from pathlib import Path

from click.testing import CliRunner
from state_helpers import failed, make_facts, make_image

from vmaudit.cli import main
from vmaudit.judge.risk import score
from vmaudit.models import (
    AuditedImage,
    Business,
    Dormancy,
    Finding,
    ImageResult,
    Risk,
    ScanReport,
    Severity,
)
from vmaudit.report.history import CAPPED, render_history
from vmaudit.state import StateDB, codec, schema

OLD_WEIGHTS = {"critical": 40, "high": 20, "medium": 8, "low": 2, "info": 0}
OLD_CRITICALITY = {"low": 0.5, "medium": 1.0, "high": 1.5, "critical": 2.0}


def capped_score(result: ImageResult) -> tuple[int, str]:
    """The score and level schema v2's vmaudit recorded for this result."""
    if result.error is not None or result.facts is None:
        return 0, "none"
    weight = sum(OLD_WEIGHTS[f.severity] for f in result.findings)
    idle = min(max(result.facts.dormancy.days_idle or 0, 0), 365)
    value = min(
        100, round(weight * (1 + idle / 365) * OLD_CRITICALITY[result.business.criticality])
    )
    for threshold, level in ((75, "critical"), (50, "high"), (25, "medium"), (1, "low")):
        if value >= threshold:
            return value, level
    return value, "none"


def write_v2_database(path: Path, scans: list[tuple[int, list[ImageResult]]]) -> None:
    """A state file as schema v2 left it: each scan finished, in order, with its results."""
    conn = sqlite3.connect(path)
    for script in (schema.V1, schema.V2):
        for statement in schema.statements(script):
            conn.execute(statement)
    conn.execute(f"PRAGMA application_id = {schema.APPLICATION_ID}")
    conn.execute("PRAGMA user_version = 2")
    for scan_id, results in scans:
        conn.execute(
            "INSERT INTO scans (id, started_at, finished_at, baselines_json, fail_on, exit_code,"
            " roots_json, finished_rank) VALUES (?, ?, ?, '[\"default\"]', 'high', 1, '[]', ?)",
            (scan_id, f"2026-11-0{scan_id}T10:00:00Z", f"2026-11-0{scan_id}T10:05:00Z", scan_id),
        )
        for result in results:
            key = codec.path_key(result.image.path)
            facts_digest = None
            if result.facts is not None:
                facts_json, facts_digest = codec.facts_text(result.facts)
                conn.execute(
                    "INSERT OR IGNORE INTO facts (digest, facts_json) VALUES (?, ?)",
                    (facts_digest, facts_json),
                )
            conn.execute(
                "INSERT INTO images (key, first_scan, last_scan, facts_digest, gone)"
                " VALUES (?, ?, ?, ?, 0) ON CONFLICT (key) DO UPDATE SET"
                " last_scan = excluded.last_scan,"
                " facts_digest = coalesce(excluded.facts_digest, facts_digest)",
                (key, scan_id, scan_id, facts_digest),
            )
            risk_score, risk_level = capped_score(result)
            conn.execute(
                "INSERT INTO results (scan_id, image_key, recorded_at, status, image_json,"
                " identity_digest, identity_json, facts_digest, findings_json, findings_count,"
                " risk_score, risk_level, business_json, error_json, from_cache, rules_json)"
                " VALUES (?, ?, ?, ?, ?, NULL, NULL, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    scan_id,
                    key,
                    f"2026-11-0{scan_id}T10:01:00Z",
                    result.status,
                    codec.dumps(result.image),
                    facts_digest,
                    codec.dumps(result.findings),
                    len(result.findings),
                    risk_score,
                    risk_level,
                    codec.dumps(result.business),
                    codec.dumps(result.error) if result.error is not None else None,
                    int(result.from_cache),
                    codec.dumps(result.rules_evaluated),
                ),
            )
    conn.commit()
    conn.close()


def _findings(*severities: Severity) -> tuple[Finding, ...]:
    return tuple(
        Finding(f"rule.{severity}", severity, f"s{i}", "m", {}, "default")
        for i, severity in enumerate(severities)
    )


def _n(severity: Severity, count: int) -> list[Severity]:
    return [severity] * count


def _audited(path: str, days_idle: int, criticality: str, *severities: Severity) -> ImageResult:
    facts = make_facts(path, dormancy=Dormancy(None, None, None, days_idle))
    findings = _findings(*severities)
    return AuditedImage(
        image=make_image(path),
        facts=facts,
        findings=findings,
        risk=score(findings, days_idle, criticality),  # what v3 records; v2's is computed above
        business=Business("app", "owner", criticality),
    )


PAYROLL = "/ds/payroll-db-07/payroll-db-07.vmdk"
HR = "/ds/hr-portal/hr-portal.qcow2"
WEB = "/ds/web-01/web-01.qcow2"
FIRST = _audited(PAYROLL, 900, "critical", *_n("critical", 3), *_n("high", 6), *_n("medium", 7))
FIXED = _audited(PAYROLL, 940, "critical", *_n("critical", 3), *_n("high", 2))
HR_ROW = _audited(HR, 199, "high", "high", *_n("medium", 5))
WEB_ROW = _audited(WEB, 1, "high")


def _v2_state(tmp_path: Path) -> Path:
    path = tmp_path / "v2.db"
    write_v2_database(
        path,
        [
            (1, [FIRST, HR_ROW, WEB_ROW]),
            (2, [FIXED, HR_ROW, WEB_ROW]),
            (3, [failed(make_image(PAYROLL)), HR_ROW, WEB_ROW]),
        ],
    )
    return path


def test_v2_stored_capped_scores_that_tie() -> None:
    # What the issue is about: three different images, one score.
    assert capped_score(FIRST) == capped_score(FIXED) == capped_score(HR_ROW) == (100, "critical")


def test_capped_scores_are_scored_again_from_their_findings_and_facts(tmp_path: Path) -> None:
    path = _v2_state(tmp_path)
    with StateDB(path) as state:
        assert state.schema_version() == schema.LATEST
        history = state.history(PAYROLL)
        hr_history = state.history(HR)
    # payroll: 296 x 3 x 2 = 1776 (99.986); fixed: 160 x 3 x 2 = 960 (99.177); then an error
    assert [entry.risk for entry in history] == [
        Risk(100.0, "critical", 1776.0),
        Risk(99.2, "critical", 960.0),
        Risk(0.0, "none", 0.0),
    ]
    # hr-portal: 60 x (1 + 199/365) x 1.5 = 139.0685, 50.1 high, in every scan alike
    assert {entry.risk for entry in hr_history} == {Risk(50.1, "high", 139.0685)}
    conn = sqlite3.connect(path)
    assert conn.execute("SELECT DISTINCT risk_formula FROM results").fetchall() == [(2,)]
    conn.close()


def test_a_migrated_scan_reads_back_as_a_v3_scan_would_have_recorded_it(tmp_path: Path) -> None:
    with StateDB(_v2_state(tmp_path)) as state:
        report = state.last_report()
    assert report is not None
    by_path = {r.image.path: r for r in report.results}
    assert by_path[HR].risk == HR_ROW.risk and by_path[WEB].risk == WEB_ROW.risk
    assert by_path[PAYROLL].risk == Risk(0.0, "none", 0.0)


def test_report_and_history_show_the_same_migrated_score(tmp_path: Path) -> None:
    path = _v2_state(tmp_path)
    runner = CliRunner()
    table = runner.invoke(main, ["report", "--state", str(path)])
    assert table.exit_code == 0, table.output
    images_table = table.output.split("why they rank")[0]
    (hr_line,) = [line for line in images_table.splitlines() if "hr-portal.qcow2" in line]
    assert " 139.1 " in hr_line and " 50 " in hr_line and "high" in hr_line
    history = runner.invoke(main, ["history", HR, "--state", str(path)])
    assert history.exit_code == 0, history.output
    rows = [line for line in history.output.splitlines() if line.startswith("2026-11-0")]
    assert len(rows) == 3 and all("50 high" in row and "139.1" in row for row in rows)


def test_a_row_that_cannot_be_scored_again_keeps_its_capped_score_marked(tmp_path: Path) -> None:
    path = _v2_state(tmp_path)
    # Facts gone (a hand-pruned or damaged file): days idle are unknown, the score is kept.
    conn = sqlite3.connect(path)
    conn.execute(
        "UPDATE results SET facts_digest = NULL WHERE scan_id = 1 AND image_key = ?",
        (codec.path_key(PAYROLL),),
    )
    conn.commit()
    conn.close()
    with StateDB(path) as state:
        history = state.history(PAYROLL)
    assert [entry.risk for entry in history] == [
        Risk(100.0, "critical", None),
        Risk(99.2, "critical", 960.0),
        Risk(0.0, "none", 0.0),
    ]
    text = render_history(history, "table")
    (first, second, _) = [line for line in text.splitlines() if line.startswith("2026-11-0")]
    assert CAPPED in first and "960.0" in second
    assert '"exposure": null' in render_history(history, "json")
    conn = sqlite3.connect(path)
    assert conn.execute(
        "SELECT risk_score, risk_level, risk_exposure, risk_formula FROM results"
        " WHERE scan_id = 1 AND image_key = ?",
        (codec.path_key(PAYROLL),),
    ).fetchall() == [(100, "critical", None, schema.CAPPED_FORMULA)]
    conn.close()


def test_an_unknown_exposure_ranks_after_the_known_ones(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    capped = replace(FIRST, risk=Risk(100.0, "critical", None))
    report = ScanReport("s", "f", ("default",), "high", (capped, WEB_ROW), 1)
    with StateDB(path) as state:
        scan = state.begin_scan(["default"], "s")
        for result in report.results:
            state.record_result(scan, result, None)
        state.finish_scan(scan, report, [])
    output = CliRunner().invoke(main, ["report", "--state", str(path), "--format", "json"])
    assert output.exit_code == 0, output.output
    images = json.loads(output.output)["images"]
    assert [(i["path"], i["risk"]["exposure"]) for i in images] == [(WEB, 0.0), (PAYROLL, None)]
