"""What a dormant image missed while asleep, from its judged ``vuln.cve`` findings.

Advisories published after the guest's last package update (or its last boot, when that
is later) that still apply: counts by severity, the oldest one's date, and the days of
fixes missed (from the oldest to the scan). A finding whose feed gives no date (the Debian
tracker) cannot be placed in time and is not counted. Derived from the findings and facts
alone, so ``vmaudit report`` shows it for a stored scan as the scan did.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

from vmaudit.models import SEVERITIES, ImageResult
from vmaudit.timeutil import parse_iso


@dataclass(frozen=True)
class Missed:
    """One image's missed advisories (``missed`` in the JSON report)."""

    since: str | None  # last package update or boot, whichever is later; None when unknown
    total: int = 0
    by_severity: dict[str, int] = field(default_factory=dict)
    oldest: str | None = None  # publication date of the oldest missed advisory
    days: int | None = None  # days of fixes missed: from the oldest to the scan


def missed(result: ImageResult, now: datetime) -> Missed | None:
    """The summary of one judged image; None when ``vuln.cve`` was not judged on it."""
    if result.facts is None or "vuln.cve" not in result.rules_evaluated:
        return None
    dormancy = result.facts.dormancy
    marks = [m for m in (parse_iso(dormancy.last_update), parse_iso(dormancy.last_boot)) if m]
    since = max(marks) if marks else None
    counts: dict[str, int] = dict.fromkeys(SEVERITIES, 0)
    dates: list[datetime] = []
    for finding in result.findings:
        if finding.rule != "vuln.cve":
            continue
        published = finding.evidence.get("published")
        moment = parse_iso(published if isinstance(published, str) else None)
        if moment is None or (since is not None and moment <= since):
            continue
        counts[finding.severity] += 1
        dates.append(moment)
    if not dates:
        return Missed(since.strftime("%Y-%m-%dT%H:%M:%SZ") if since else None, 0, counts)
    oldest = min(dates)
    scanned = now if now.tzinfo else now.replace(tzinfo=UTC)
    return Missed(
        since=since.strftime("%Y-%m-%dT%H:%M:%SZ") if since else None,
        total=len(dates),
        by_severity=counts,
        oldest=oldest.strftime("%Y-%m-%d"),
        days=max(0, (scanned - oldest).days),
    )


def missed_text(summary: Missed | None) -> str:
    """``12 missed (1 critical, 3 high) since 2024-05-02, oldest 2024-05-14, 565 days``."""
    if summary is None:
        return ""
    if not summary.total:
        return "none missed"
    worst = ", ".join(f"{n} {s}" for s, n in summary.by_severity.items() if n)
    since = f" since {summary.since[:10]}" if summary.since else ""
    return (
        f"{summary.total} missed ({worst}){since}, oldest {summary.oldest}, "
        f"{summary.days} days of fixes"
    )
