"""``vmaudit report --since``: the auditor's CSV of what was scanned or changed since a date.

Two scans are recorded in a real ``StateDB`` with ``record_result``; the results carry
facts collected from guest trees and findings from the built-in ``default`` baseline.
Between the scans a moment is taken; the CSV rendered from ``last_report(since=...)``
must hold exactly the images read afresh or changed after it.
"""

from __future__ import annotations

import csv
import io
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner

from tests.imaging import MINI_FILES, write_tree
from vmaudit.baseline.loader import load_baseline
from vmaudit.cli import main
from vmaudit.guest.tree import TreeFS
from vmaudit.judge.risk import score
from vmaudit.judge.rules import evaluate
from vmaudit.judge.verdict import exit_code
from vmaudit.models import (
    AuditedImage,
    Business,
    DiskRef,
    Facts,
    FailedImage,
    ImageError,
    ImageInfo,
    ImageRef,
    ImageResult,
    ScanReport,
)
from vmaudit.report import Format, render
from vmaudit.run.audit import collect_facts
from vmaudit.state import StateDB

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
SPEC_HEADER = (
    "image,vm,os,hostname,application,owner,criticality,risk_score,risk_level,days_idle,"
    "rule,severity,subject,message,baseline,vm_source,vm_template,vm_state"
)
EXTRA_PACKAGE = (
    "Package: telnetd\nStatus: install ok installed\nArchitecture: amd64\n"
    "Version: 0.17+2.4-2\nDescription: telnet server\n\n"
)


def _facts(base: Path, name: str, extra_status: str = "") -> Facts:
    files = dict(MINI_FILES)
    files["etc/hostname"] = f"{name}\n"
    files["var/lib/dpkg/status"] = MINI_FILES["var/lib/dpkg/status"] + extra_status
    root = write_tree(base / f"{name}-{len(extra_status)}", files)
    path = str(base / f"{name}.qcow2")
    info = ImageInfo(path, "qcow2", 1, "2026-10-01T00:00:00Z", "0" * 64, None, (path,))
    return collect_facts(TreeFS(root), info, NOW)


def _ref(facts: Facts) -> ImageRef:
    path = facts.image.path
    return ImageRef(path, "qcow2", (DiskRef(path, "qcow2", (path,), ("qcow2",)),))


def _audited(facts: Facts, from_cache: bool = False) -> ImageResult:
    evaluation = evaluate(facts, [load_baseline("default")], NOW)
    return AuditedImage(
        image=_ref(facts),
        facts=facts,
        findings=evaluation.findings,
        risk=score(evaluation.findings, facts.dormancy.days_idle, "medium"),
        business=Business(None, None, "medium"),
        from_cache=from_cache,
        rules_evaluated=evaluation.rules_evaluated,
    )


def _scan(db: StateDB, results: tuple[ImageResult, ...], roots: list[str]) -> ScanReport:
    scan_id = db.begin_scan(("default",), NOW)
    for result in results:
        db.record_result(scan_id, result, None)
    report = ScanReport(
        NOW.isoformat(), NOW.isoformat(), ("default",), "high", results, exit_code(results, "high")
    )
    db.finish_scan(scan_id, report, roots)
    return report


def _images(text: str) -> set[str]:
    rows = list(csv.reader(io.StringIO(text, newline="")))
    return {row[0] for row in rows[1:]}


@pytest.fixture()
def state(tmp_path: Path) -> tuple[Path, datetime, dict[str, str]]:
    """Two scans; returns the database, the moment between them and the image paths.

    Second scan: ``cached`` and ``idle`` come from the cache unchanged, ``patched`` was
    re-read with a new package, ``new`` appeared, ``broken`` failed this time, ``reread``
    was read afresh (``--no-cache``) with the same facts.
    """
    base = tmp_path / "datastore"
    first = {name: _facts(base, name) for name in ("cached", "idle", "patched", "broken", "reread")}
    paths = {name: facts.image.path for name, facts in first.items()}
    db_path = tmp_path / "state.db"
    with StateDB(db_path) as db:
        _scan(db, tuple(_audited(f) for f in first.values()), [str(base)])
        time.sleep(0.01)
        moment = datetime.now(UTC)
        time.sleep(0.01)
        new = _facts(base, "new")
        paths["new"] = new.image.path
        second = (
            _audited(first["cached"], from_cache=True),
            _audited(first["idle"], from_cache=True),
            _audited(_facts(base, "patched", EXTRA_PACKAGE)),
            _audited(new),
            FailedImage(
                image=_ref(first["broken"]),
                error=ImageError("timeout", "took longer than 600 s"),
            ),
            _audited(first["reread"]),
        )
        _scan(db, second, [str(base)])
    return db_path, moment, paths


def test_csv_since_holds_only_images_scanned_or_changed_since(
    state: tuple[Path, datetime, dict[str, str]],
) -> None:
    db_path, moment, paths = state
    with StateDB(db_path) as db:
        since = db.last_report(since=moment)
        everything = db.last_report()
    assert since is not None and everything is not None
    text = render(since, Format.CSV)
    wanted = {paths[name] for name in ("patched", "new", "broken", "reread")}
    assert _images(text) == wanted
    assert _images(render(everything, Format.CSV)) == set(paths.values())
    rows = list(csv.DictReader(io.StringIO(text, newline="")))
    assert {(r["image"], r["rule"]) for r in rows if r["image"] == paths["broken"]} == {
        (paths["broken"], "scan.error")
    }
    assert {r["hostname"] for r in rows if r["image"] == paths["patched"]} == {"patched"}


def test_since_before_every_scan_gives_the_whole_last_scan(
    state: tuple[Path, datetime, dict[str, str]],
) -> None:
    db_path, _, paths = state
    with StateDB(db_path) as db:
        report = db.last_report(since=datetime.now(UTC) - timedelta(days=1))
    assert report is not None
    assert _images(render(report, Format.CSV)) == set(paths.values())


def test_csv_first_line_is_the_spec_header(state: tuple[Path, datetime, dict[str, str]]) -> None:
    db_path, moment, _ = state
    with StateDB(db_path) as db:
        report = db.last_report(since=moment)
    assert report is not None
    text = render(report, Format.CSV)
    assert text.split("\r\n", 1)[0] == SPEC_HEADER
    assert not text.startswith(("#", "\ufeff"))


def test_report_command_since_prints_the_same_csv(
    state: tuple[Path, datetime, dict[str, str]],
) -> None:
    db_path, moment, paths = state
    result = CliRunner().invoke(
        main,
        ["report", "--format", "csv", "--since", moment.isoformat(), "--state", str(db_path)],
    )
    assert result.exit_code == 0, result.stderr
    assert result.stdout.splitlines()[0] == SPEC_HEADER
    assert _images(result.stdout) == {paths[n] for n in ("patched", "new", "broken", "reread")}
