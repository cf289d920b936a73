"""A scan report with hostile guest strings, an image in error and a clean image."""

from __future__ import annotations

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
    OsInfo,
    Risk,
    ScanReport,
)

HOSTILE_HOST = "=cmd|' /C calc'!A0\x1b]0;pwned\x07[bold]x[/bold]"
HOSTILE_USER = 'toor,"quoted"\nsecond line\x00'
HOSTILE_PACKAGE = "@SUM(1+1)\u202etxt.exe"
CLEAR_SCREEN = "\x1b[2J"


def _facts(path: str, hostname: str, days_idle: int | None) -> Facts:
    return Facts(
        image=ImageInfo(path, "qcow2", 1, "2026-01-01T00:00:00Z", "00", None, (path,)),
        os=OsInfo("linux", "debian", "12.4", "Debian GNU/Linux 12", hostname, "x86_64", "deb"),
        dormancy=Dormancy("2026-03-01T08:00:00Z", "2026-03-02T09:30:00+00:00", None, days_idle),
    )


@pytest.fixture()
def report() -> ScanReport:
    hostile_path = "/ds/payroll-db-07.vmdk"
    findings = (
        Finding(
            "account.extra-uid0",
            "critical",
            HOSTILE_USER,
            f"{HOSTILE_USER} has uid 0{CLEAR_SCREEN}",
            {"uid": 0},
            "default",
        ),
        Finding(
            "package.forbidden",
            "high",
            HOSTILE_PACKAGE,
            f"forbidden package {HOSTILE_PACKAGE} is installed",
            {},
            "cis-linux-l1",
        ),
        Finding(
            "dormancy.stale",
            "medium",
            "debian 12.4",
            "idle for 270 days (limit 90)",
            {"days_idle": 270},
            "default",
        ),
    )
    risky = AuditedImage(
        image=ImageRef(hostile_path, "vmdk", ()),
        facts=_facts(hostile_path, HOSTILE_HOST, 270),
        findings=findings,
        # 68 x (1 + 270/365) x 1.5 = 177.4521: 58.8, high
        risk=score(findings, 270, "high"),
        business=Business("payroll", "-finance", "high"),
        rules_evaluated=(
            "account.extra-uid0",
            "dormancy.stale",
            "firewall.disabled",
            "package.forbidden",
        ),
    )
    clean = AuditedImage(
        image=ImageRef("/ds/web-01.qcow2", "qcow2", (), vm="web"),
        facts=_facts("/ds/web-01.qcow2", "web-01", None),
        risk=Risk(0.0, "none", 0.0),
        from_cache=True,
        rules_evaluated=("account.extra-uid0", "firewall.disabled"),
    )
    broken = FailedImage(
        image=ImageRef("/ds/evil.qcow2", "qcow2", ()),
        error=ImageError("unsafe-backing-file", "backing file /etc/shadow\x1b[31m is outside"),
    )
    return ScanReport(
        "2026-11-27T10:00:00Z",
        "2026-11-27T10:05:00Z",
        ("default", "cis-linux-l1"),
        "high",
        (clean, broken, risky),
        1,
    )
