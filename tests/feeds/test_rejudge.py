"""Instant re-judging: a feeds import, then a scan of unchanged images, opens no image and
judges the cached facts against the new feeds; `report` re-judges the last scan likewise."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tests.feeds.conftest import DSA_5724_1, bookworm, write_json
from vmaudit.feeds import import_feeds
from vmaudit.models import (
    AuditedImage,
    DiskRef,
    ImageRef,
    ScanReport,
)
from vmaudit.scan import ScanOptions, load_judge, rejudge, run_scan
from vmaudit.state import StateDB
from vmaudit.state.cache import StateCache

pytestmark = pytest.mark.skipif(shutil.which("qemu-img") is None, reason="needs qemu-img")
BASELINE = """apiVersion: vmaudit/v1
kind: Baseline
metadata: {name: vulns}
vulnerabilities: {}
"""


@pytest.fixture
def cached_datastore(tmp_path: Path) -> tuple[Path, Path, Path]:
    """A datastore of one real qcow2 image whose facts a past scan recorded."""
    datastore = tmp_path / "datastore"
    datastore.mkdir()
    disk = datastore / "bastion.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(disk), "1M"], check=True)
    image = ImageRef(str(disk), "qcow2", (DiskRef(str(disk), "qcow2", (str(disk),), ("qcow2",)),))
    facts = bookworm("1:9.2p1-2+deb12u2")
    facts = replace(facts, image=replace(facts.image, path=str(disk), disks=(str(disk),)))
    state = tmp_path / "state.db"
    cache = StateCache(StateDB(state))
    started = datetime(2026, 11, 1, tzinfo=UTC)
    cache.begin(["vulns"], started)
    result = AuditedImage(image, facts)
    cache.record(result)
    cache.finish(
        ScanReport(
            "2026-11-01T00:00:00Z", "2026-11-01T00:01:00Z", ("vulns",), "high", (result,), 0
        ),
        [str(datastore)],
    )
    cache.close()
    baseline = tmp_path / "vulns.yaml"
    baseline.write_text(BASELINE, "utf-8")
    return datastore, state, baseline


def test_scan_after_a_feeds_import_judges_the_cache_without_opening_an_image(
    tmp_path: Path, cached_datastore: tuple[Path, Path, Path]
) -> None:
    datastore, state, baseline = cached_datastore
    feeds = tmp_path / "feeds.db"
    import_feeds([str(write_json(tmp_path / "dsa.json", DSA_5724_1))], feeds, lambda _: None)
    options = ScanOptions(
        paths=(str(datastore),), baselines=(str(baseline),), jobs=1, feeds_db=str(feeds)
    )
    cache = StateCache(StateDB(state))
    try:
        report = run_scan(options, cache=cache)
    finally:
        cache.close()
    (result,) = report.results
    assert result.from_cache  # no appliance: the facts came from the state database
    assert [(f.rule, f.subject) for f in result.findings] == [("vuln.cve", "CVE-2024-6387")]
    assert report.exit_code == 0  # medium is below --fail-on high


def test_report_rejudges_the_last_scan_against_current_feeds(
    tmp_path: Path, cached_datastore: tuple[Path, Path, Path]
) -> None:
    _, state, baseline = cached_datastore
    db = StateDB(state)
    try:
        last = db.last_report()
    finally:
        db.close()
    assert last is not None and last.results[0].findings == ()
    feeds = tmp_path / "feeds.db"
    import_feeds([str(write_json(tmp_path / "dsa.json", DSA_5724_1))], feeds, lambda _: None)
    judge = load_judge(
        ScanOptions(paths=(), baselines=(str(baseline),), feeds_db=str(feeds)),
        datetime(2026, 11, 1, tzinfo=UTC),
    )
    again = rejudge(last, judge)
    (result,) = again.results
    assert [f.subject for f in result.findings] == ["CVE-2024-6387"]
    assert result.findings[0].evidence["exposed_days"] == 853  # 1 Jul 2024 to 1 Nov 2026
    assert result.risk.exposure and result.risk.exposure > 0


def _vmaudit(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "vmaudit.cli", *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
        env=env,
    )


def test_cli_feeds_import_then_scan_and_report_show_the_cve(
    tmp_path: Path, cached_datastore: tuple[Path, Path, Path]
) -> None:
    datastore, state, baseline = cached_datastore
    env = {**os.environ, "XDG_DATA_HOME": str(tmp_path / "data")}  # never the user's feeds
    feeds = str(tmp_path / "feeds.db")
    scan = ["scan", str(datastore), "-b", str(baseline), "--state", str(state), "-f", "json"]
    before = _vmaudit(*scan, env=env)
    assert before.returncode == 0, before.stderr
    assert "no vulnerability feeds" in before.stderr  # one notice, not an error
    assert json.loads(before.stdout)["images"][0]["findings"] == []
    imported = _vmaudit(
        "feeds",
        "import",
        str(write_json(tmp_path / "dsa.json", DSA_5724_1)),
        "--db",
        feeds,
        env=env,
    )
    assert imported.returncode == 0, imported.stderr
    after = _vmaudit(*scan, "--feeds-db", feeds, env=env)
    assert after.returncode == 0, after.stderr
    (image,) = json.loads(after.stdout)["images"]
    assert image["from_cache"] is True
    assert [f["subject"] for f in image["findings"]] == ["CVE-2024-6387"]
    assert image["missed"]["total"] == 1
    sbom = _vmaudit(*scan[:-2], "-f", "cyclonedx", "--feeds-db", feeds, env=env)
    assert json.loads(sbom.stdout)["vulnerabilities"][0]["id"] == "CVE-2024-6387"
    reported = _vmaudit("report", "--state", str(state), "-f", "csv", "--feeds-db", feeds, env=env)
    assert reported.returncode == 0, reported.stderr
    assert ",vuln.cve,medium,CVE-2024-6387," in reported.stdout
