"""vuln.cve and os.end-of-life through evaluate(): the vulnerabilities section's
min_severity, max_days_exposed and ignore-with-expiry, the feed's severity, no feeds."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from tests.feeds.conftest import (
    CVRF,
    DSA_5586_1,
    DSA_5724_1,
    DSA_5868_1,
    bookworm,
    linux_facts,
    windows_facts,
    write_json,
)
from vmaudit.baseline import load_baseline
from vmaudit.baseline.model import Baseline
from vmaudit.feeds import FeedsMatcher, import_feeds
from vmaudit.judge.rules import evaluate

NOW = datetime(2025, 3, 1, tzinfo=UTC)  # DSA-5868-1 (18 Feb 2025) is 11 days old


def _baseline(tmp_path: Path, section: str, extra: str = "") -> Baseline:
    path = tmp_path / "b.yaml"
    path.write_text(
        "apiVersion: vmaudit/v1\nkind: Baseline\nmetadata: {name: vulns}\n"
        f"vulnerabilities: {section}\n{extra}",
        "utf-8",
    )
    return load_baseline(str(path))


@pytest.fixture
def debian_feeds(tmp_path: Path) -> FeedsMatcher:
    records = [
        write_json(tmp_path / f"{r['id']}.json", r) for r in (DSA_5586_1, DSA_5724_1, DSA_5868_1)
    ]
    import_feeds([str(p) for p in records], tmp_path / "feeds.db", lambda _: None)
    matcher = FeedsMatcher.open(tmp_path / "feeds.db")
    assert matcher is not None
    return matcher


def _subjects(
    baseline: Baseline, feeds: FeedsMatcher, openssh: str = "1:9.2p1-2+deb12u1", now: datetime = NOW
) -> set[str]:
    evaluation = evaluate(bookworm(openssh), [baseline], now, feeds)
    return {f.subject for f in evaluation.findings if f.rule == "vuln.cve"}


def test_findings_carry_the_spec_evidence(tmp_path: Path, debian_feeds: FeedsMatcher) -> None:
    evaluation = evaluate(
        bookworm("1:9.2p1-2+deb12u2"), [_baseline(tmp_path, "{}")], NOW, debian_feeds
    )
    finding = next(f for f in evaluation.findings if f.subject == "CVE-2024-6387")
    assert finding.rule == "vuln.cve"
    assert finding.severity == "medium"
    assert (
        finding.message == "openssh 1:9.2p1-2+deb12u2 is older than 1:9.2p1-2+deb12u3 (DSA-5724-1)"
    )
    assert finding.evidence["package"] == "openssh"
    assert finding.evidence["fixed"] == "1:9.2p1-2+deb12u3"
    assert finding.evidence["advisory"] == "DSA-5724-1"
    assert finding.evidence["published"] == "2024-07-01T00:00:00Z"
    assert finding.evidence["exposed_days"] == 243
    assert finding.evidence["source"].startswith("osv: ")
    assert "vuln.cve" in evaluation.rules_evaluated


def test_no_feeds_means_vuln_cve_is_not_judged(tmp_path: Path) -> None:
    evaluation = evaluate(bookworm("1:9.2p1-2+deb12u1"), [_baseline(tmp_path, "{}")], NOW)
    assert "vuln.cve" not in evaluation.rules_evaluated
    assert [f for f in evaluation.findings if f.rule == "vuln.cve"] == []


def test_no_vulnerabilities_section_means_no_check(
    tmp_path: Path, debian_feeds: FeedsMatcher
) -> None:
    path = tmp_path / "plain.yaml"
    path.write_text(
        "apiVersion: vmaudit/v1\nkind: Baseline\nmetadata: {name: plain}\n"
        "dormancy: {max_days_idle: 30}\n",
        "utf-8",
    )
    evaluation = evaluate(
        bookworm("1:9.2p1-2+deb12u1"), [load_baseline(str(path))], NOW, debian_feeds
    )
    assert "vuln.cve" not in evaluation.rules_evaluated


def test_max_days_exposed_keeps_only_older_fixes(
    tmp_path: Path, debian_feeds: FeedsMatcher
) -> None:
    every = _subjects(_baseline(tmp_path, "{}"), debian_feeds)
    assert "CVE-2025-26465" in every
    month = _subjects(_baseline(tmp_path, "{max_days_exposed: 30}"), debian_feeds)
    assert month == every - {"CVE-2025-26465"}  # fixed 11 days before the scan


def test_ignore_hides_until_its_date_then_the_finding_is_back(
    tmp_path: Path, debian_feeds: FeedsMatcher
) -> None:
    baseline = _baseline(
        tmp_path, "{ignore: [{id: CVE-2024-6387, reason: not exposed, until: 2025-03-31}]}"
    )
    assert "CVE-2024-6387" not in _subjects(baseline, debian_feeds)
    later = datetime(2025, 4, 1, tzinfo=UTC)
    evaluation = evaluate(bookworm("1:9.2p1-2+deb12u1"), [baseline], later, debian_feeds)
    finding = next(f for f in evaluation.findings if f.subject == "CVE-2024-6387")
    assert finding.evidence["ignore_expired"] is True
    on_the_day = datetime(2025, 3, 31, 23, 0, tzinfo=UTC)
    assert "CVE-2024-6387" not in _subjects(baseline, debian_feeds, now=on_the_day)


def test_ignore_by_advisory_id_hides_its_cves(tmp_path: Path, debian_feeds: FeedsMatcher) -> None:
    baseline = _baseline(tmp_path, "{ignore: [{id: DSA-5586-1, until: 2030-01-01}]}")
    assert _subjects(baseline, debian_feeds) == {"CVE-2024-6387", "CVE-2025-26465"}


def test_ignore_without_until_is_a_baseline_problem(tmp_path: Path) -> None:
    with pytest.raises(Exception, match="until: required key is missing"):
        _baseline(tmp_path, "{ignore: [{id: CVE-2024-6387, reason: later}]}")
    with pytest.raises(Exception, match="not a date"):
        _baseline(tmp_path, "{ignore: [{id: CVE-2024-6387, until: 'soon'}]}")


@pytest.fixture(scope="module")
def july(tmp_path_factory: pytest.TempPathFactory) -> FeedsMatcher:
    db = tmp_path_factory.mktemp("july") / "feeds.db"
    import_feeds([str(CVRF / "2024-Jul.xml.zst")], db, lambda _: None)
    matcher = FeedsMatcher.open(db)
    assert matcher is not None
    return matcher


def test_windows_severity_is_the_feeds_and_min_severity_filters(
    tmp_path: Path, july: FeedsMatcher
) -> None:
    facts = windows_facts("17763.5936")
    every = evaluate(facts, [_baseline(tmp_path, "{}")], NOW, july).findings
    severities = {f.severity for f in every if f.rule == "vuln.cve"}
    assert {"critical", "high"} <= severities
    cve = next(f for f in every if f.subject == "CVE-2024-38077")
    assert (cve.severity, cve.evidence["product"], cve.evidence["kb"]) == (
        "critical",
        "Windows Server 2019",
        "KB5040430",
    )
    critical = evaluate(
        facts, [_baseline(tmp_path, "{min_severity: critical}")], NOW, july
    ).findings
    assert critical and {f.severity for f in critical if f.rule == "vuln.cve"} == {"critical"}


def test_a_baseline_severity_override_wins_over_the_feed(
    tmp_path: Path, july: FeedsMatcher
) -> None:
    baseline = _baseline(tmp_path, "{}", "severity: {vuln.cve: low}\n")
    findings = evaluate(windows_facts("17763.5936"), [baseline], NOW, july).findings
    assert {f.severity for f in findings if f.rule == "vuln.cve"} == {"low"}


def test_end_of_life_fires_past_the_date(tmp_path: Path) -> None:
    baseline = _baseline(tmp_path, "{}")
    legacy = windows_facts("9600.21620", "Windows Server 2012 R2 Standard")
    (finding,) = evaluate(legacy, [baseline], NOW).findings
    assert (finding.rule, finding.severity) == ("os.end-of-life", "high")
    assert finding.evidence["end_of_support"] == "2023-10-10"
    assert finding.evidence["days_past"] == 508
    current = evaluate(windows_facts("17763.5936"), [baseline], NOW)
    assert current.findings == () and "os.end-of-life" in current.rules_evaluated
    buster = evaluate(linux_facts("debian", "10.13", []), [baseline], NOW).findings
    assert [f.subject for f in buster] == ["debian 10.13"]
