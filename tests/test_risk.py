"""The risk score of spec/baseline.md ("Risk score", revised) on hand-computed cases.

X = W x D x C; W: critical 40, high 20, medium 8, low 2, info 0 per finding, vuln.cve per
severity weight x log2(1 + CVEs); D = 1 + min(days, 730) / 365; C: low 0.5, medium 1,
high 1.5, critical 2; score = 100 x (1 - e^(-X/200)) to one decimal.
"""

from __future__ import annotations

from dataclasses import replace

import pytest

from vmaudit.judge.risk import contributions, exposure_by_severity, level_of, rank, score, why
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
    Risk,
    Severity,
)


def _findings(*severities: Severity) -> list[Finding]:
    return [Finding("r", severity, f"s{i}", "m") for i, severity in enumerate(severities)]


def _cves(severity: Severity, count: int, start: int = 0) -> list[Finding]:
    return [
        Finding("vuln.cve", severity, f"CVE-2024-{n:05d}", "m", {"package": "p"})
        for n in range(start, start + count)
    ]


PAYROLL: tuple[Severity, ...] = ("critical",) * 3 + ("high",) * 6 + ("medium",) * 7  # W = 296


@pytest.mark.parametrize(
    ("severities", "days_idle", "criticality", "expected"),
    [
        # zero findings: nothing to weigh, whatever the sleep and the application
        ((), 400, "critical", Risk(0.0, "none", 0.0)),
        (("info", "info"), 365, "critical", Risk(0.0, "none", 0.0)),  # info weighs nothing
        # X = 20 x 1 x 1 = 20; 100 x (1 - e^-0.1) = 9.516
        (("high",), 0, "medium", Risk(9.5, "low", 20.0)),
        # unknown and negative (clock skew) idle time count as 0 days: X = 40, 18.127
        (("critical",), None, "medium", Risk(18.1, "low", 40.0)),
        (("critical",), -3, "medium", Risk(18.1, "low", 40.0)),
        # every criticality, one high finding a year asleep (D = 2): X = 20 x 2 x C
        (("high",), 365, "low", Risk(9.5, "low", 20.0)),  # x 0.5 = 20
        (("high",), 365, "medium", Risk(18.1, "low", 40.0)),  # x 1 = 40
        (("high",), 365, "high", Risk(25.9, "medium", 60.0)),  # x 1.5 = 60: 25.918
        (("high",), 365, "critical", Risk(33.0, "medium", 80.0)),  # x 2 = 80: 32.968
        # dormancy counts up to two years (D = 3), no further
        (("high",), 730, "medium", Risk(25.9, "medium", 60.0)),
        (("high",), 1000, "medium", Risk(25.9, "medium", 60.0)),
        # 73 days: D = 1.2, X = 24, 100 x (1 - e^-0.12) = 11.308
        (("high",), 73, "medium", Risk(11.3, "low", 24.0)),
        # payroll-db-07 of the demo: 296 x 3 x 2 = 1776; 99.986 reads 100.0
        (PAYROLL, 940, "critical", Risk(100.0, "critical", 1776.0)),
        # hr-portal of the demo: 1 high 5 medium = 60, D = 1 + 199/365, C = 1.5
        # X = 60 x 1.545205 x 1.5 = 139.0685; 100 x (1 - e^-0.695342) = 50.110
        (("high",) + ("medium",) * 5, 199, "high", Risk(50.1, "high", 139.0685)),
        (("low",), 0, "low", Risk(0.5, "low", 1.0)),  # 2 x 0.5 = 1: 0.499
    ],
)
def test_score(
    severities: tuple[Severity, ...], days_idle: int | None, criticality: str, expected: Risk
) -> None:
    assert score(_findings(*severities), days_idle, criticality) == expected


def test_a_thousand_cves_weigh_log2_of_their_count() -> None:
    # W = 20 x log2(1001) = 20 x 9.967226 = 199.3445; 100 x (1 - e^-0.996723) = 63.091
    assert score(_cves("high", 1000), 0, "medium") == Risk(63.1, "high", 199.3445)


def test_thousands_of_cves_of_an_old_windows_image() -> None:
    # 3000 critical CVEs: 40 x log2(3001) = 462.0491, 90.076; one more still counts
    # (40 x log2(3002) = 462.0683), and they sit beside ordinary findings, not over them.
    findings = _cves("critical", 3000)
    assert score(findings, 0, "medium") == Risk(90.1, "critical", 462.0491)
    one_more = score([*findings, *_cves("critical", 1, start=3000)], 0, "medium")
    assert one_more.exposure == 462.0683
    with_finding = score([*findings, *_findings("critical")], 0, "medium")
    assert with_finding.exposure == 502.0491  # + 40, exactly one critical finding


def test_cves_count_per_severity_and_once_per_cve() -> None:
    # 1 critical CVE = 40 x log2(2) = 40; 3 medium = 8 x log2(4) = 16; the same CVE found
    # on a second package is still one CVE. W = 56, D = 1, C = 2: X = 112, 42.879
    findings = [
        *_cves("critical", 1),
        *_cves("medium", 3, start=10),
        Finding("vuln.cve", "medium", "CVE-2024-00010", "m", {"package": "other"}),
    ]
    assert score(findings, 0, "critical") == Risk(42.9, "medium", 112.0)


def test_the_score_approaches_100_and_never_passes_it() -> None:
    assert score(_findings(*("critical",) * 5000), 10_000, "critical") == Risk(
        100.0, "critical", 1_200_000.0
    )


def test_level_comes_from_the_score_at_its_thresholds() -> None:
    # The score is 75 at X = 200 x ln 4 = 277.26: 13 high findings (260) stay high,
    # 7 critical ones (280) are critical.
    assert score(_findings(*("high",) * 13), 0, "medium") == Risk(72.7, "high", 260.0)
    assert score(_findings(*("critical",) * 7), 0, "medium") == Risk(75.3, "critical", 280.0)


@pytest.mark.parametrize(
    ("value", "level"),
    [
        (100.0, "critical"),
        (75.0, "critical"),
        (74.9, "high"),
        (50.0, "high"),
        (49.9, "medium"),
        (25.0, "medium"),
        (24.9, "low"),
        (0.1, "low"),
        (0.0, "none"),
    ],
)
def test_level_boundaries(value: float, level: str) -> None:
    assert level_of(value) == level


# ---------------------------------------------------------------- ranking and reasons

UNMAPPED = Business(None, None, "medium")


def _result(
    path: str,
    findings: list[Finding],
    days_idle: int | None,
    business: Business = UNMAPPED,
) -> ImageResult:
    info = ImageInfo(path, "qcow2", 1, "2026-01-01T00:00:00Z", "0" * 64, None, (path,))
    return AuditedImage(
        image=ImageRef(path, "qcow2", ()),
        facts=Facts(info, OsInfo("linux"), dormancy=Dormancy(None, None, None, days_idle)),
        findings=tuple(findings),
        risk=score(findings, days_idle, business.criticality),
        business=business,
    )


def test_images_whose_scores_both_read_100_still_rank_by_exposure() -> None:
    payroll = _result("/ds/b.vmdk", _findings(*PAYROLL), 940, Business("payroll", "f", "critical"))
    erp = _result("/ds/a.vmdk", _findings(*("critical",) * 10), 430, Business("e", "o", "critical"))
    # 1776 against 400 x (1 + 430/365) x 2 = 1742.4658: both 99.98..., both read 100.0
    assert payroll.risk.score == erp.risk.score == 100.0
    assert (payroll.risk.exposure, erp.risk.exposure) == (1776.0, 1742.4658)
    assert [r.image.path for r in rank([erp, payroll])] == ["/ds/b.vmdk", "/ds/a.vmdk"]


def test_rank_ties_by_path_and_puts_errors_and_unknown_exposure_last() -> None:
    same_b = _result("/ds/b.qcow2", _findings("high"), 10)
    same_a = _result("/ds/a.qcow2", _findings("high"), 10)
    clean = _result("/ds/0-clean.qcow2", [], 10)
    broken = FailedImage(ImageRef("/ds/0-broken.qcow2", "qcow2", ()), ImageError("x", "y"))
    capped = replace(_result("/ds/0-old.qcow2", [], None), risk=Risk(100.0, "critical", None))
    ranked = rank([broken, clean, capped, same_b, same_a])
    assert [r.image.path for r in ranked] == [
        "/ds/a.qcow2",
        "/ds/b.qcow2",
        "/ds/0-clean.qcow2",
        "/ds/0-old.qcow2",
        "/ds/0-broken.qcow2",
    ]


def test_why_names_the_three_largest_shares_of_the_exposure() -> None:
    # payroll-db-07: sleep brings 296 x (3 - 1) x 2 = 1184, criticality 296 x 3 x (2 - 1) =
    # 888, the critical findings 120 x 3 x 2 = 720 (the high ones as much: severity first),
    # the medium ones 56 x 6 = 336.
    payroll = _result("/ds/p.vmdk", _findings(*PAYROLL), 940, Business("payroll", "f", "critical"))
    assert why(payroll) == "940 days asleep, payroll (critical), 3 critical findings"
    shares = contributions(payroll.findings, 940, payroll.business)
    assert [(c.kind, round(c.exposure, 4)) for c in shares] == [
        ("dormancy", 1184.0),
        ("criticality", 888.0),
        ("critical", 720.0),
        ("high", 720.0),
        ("medium", 336.0),
    ]


def test_why_leaves_out_what_adds_nothing() -> None:
    fresh = _result(
        "/ds/f.qcow2",
        [*_findings("high", "info"), *_cves("low", 3)],
        0,
        Business("tools", "d", "low"),
    )
    # a low criticality halves the exposure, a guest that ran today adds no sleep
    assert why(fresh) == "1 high finding, 3 low CVEs"
    assert why(_result("/ds/c.qcow2", [], 800, Business("pay", "f", "critical"))) == ""


def test_exposure_by_severity_adds_up_to_the_exposure() -> None:
    findings = [*_findings("critical", "high", "high", "low"), *_cves("medium", 7)]
    result = _result("/ds/x.qcow2", findings, 200, Business("a", "o", "high"))
    parts = exposure_by_severity(result)
    # D = 1 + 200/365, C = 1.5: critical 40, high 40, medium 8 x log2(8) = 24, low 2
    assert parts["critical"] == pytest.approx(40 * (1 + 200 / 365) * 1.5)
    assert parts["medium"] == pytest.approx(24 * (1 + 200 / 365) * 1.5)
    assert parts["info"] == 0
    assert sum(parts.values()) == pytest.approx(result.risk.exposure, abs=1e-4)
