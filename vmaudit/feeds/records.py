"""What an importer hands the feeds database: advisories, the packages or Windows products
they affect, and the one severity scale every feed is mapped to.

Severity (spec/vulnerabilities.md): a CVSS v3 base score when the record gives one (>= 9.0
critical, >= 7.0 high, >= 4.0 medium, else low); else the feed's own rating (MSRC
Critical/Important/Moderate/Low, Debian urgency high/medium/low/unimportant, Ubuntu
priority); none given: medium.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from vmaudit.errors import ConfigError
from vmaudit.models import Severity

DEFAULT_SEVERITY: Severity = "medium"
ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:+-]{0,127}")
CVE_PATTERN = re.compile(r"CVE-\d{4}-\d{4,}")
TEXT_MAX = 1000  # a summary kept for `feeds show`; the feed has the rest
VERSION_MAX = 256

# Vendor ratings -> vmaudit severities. Debian's "unimportant" is info by the spec; a
# rating not listed here counts as not given.
VENDOR_SEVERITY: dict[str, Severity] = {
    # MSRC
    "critical": "critical",
    "important": "high",
    "moderate": "medium",
    "low": "low",
    # Debian urgency (the tracker marks guesses with '*': "low**")
    "high": "high",
    "medium": "medium",
    "unimportant": "info",
    # Ubuntu priority, GHSA and other database_specific ratings
    "negligible": "info",
}


class FeedError(ConfigError):
    """A feed file that cannot be imported: names the file and the record; exit 2."""

    def __init__(self, path: str, record: str | None, problem: str) -> None:
        where = f"{path}: record {record}" if record else path
        super().__init__(f"{where}: {problem}")
        self.path = path
        self.record = record
        self.problem = problem


def severity_from_cvss(score: float) -> Severity:
    """The spec's CVSS v3 bands."""
    if score >= 9.0:
        return "critical"
    if score >= 7.0:
        return "high"
    if score >= 4.0:
        return "medium"
    return "low"


def vendor_severity(rating: str | None) -> Severity | None:
    """A feed's own rating on vmaudit's scale; None when absent or unknown."""
    if not rating:
        return None
    return VENDOR_SEVERITY.get(rating.strip().rstrip("*").strip().lower())


def feed_severity(cvss: float | None, rating: str | None) -> Severity:
    """CVSS v3 base first, then the vendor's rating, else medium."""
    if cvss is not None:
        return severity_from_cvss(cvss)
    return vendor_severity(rating) or DEFAULT_SEVERITY


Event = tuple[str, str]  # (kind, version)
Range = tuple[Event, ...]


@dataclass(frozen=True)
class Affected:
    """One package of one ecosystem that an advisory affects.

    ``ranges`` hold each OSV ``ECOSYSTEM`` range's events (``introduced``, ``fixed``,
    ``last_affected``, ``limit``), compared with the ecosystem's ordering; ``versions`` are
    explicitly affected versions.
    """

    ecosystem: str  # normalised key: Debian:12, Ubuntu:22.04, Alpine:v3.20, Rocky Linux:9
    package: str  # the source package name
    ranges: tuple[Range, ...] = ()
    versions: tuple[str, ...] = ()
    rating: str | None = None  # a per-package rating (Debian urgency), else the advisory's


@dataclass(frozen=True)
class WindowsFix:
    """A Vendor Fix remediation of one CVE for one Windows product (MSRC CVRF)."""

    product: str  # FullProductName, e.g. "Windows Server 2019 (Server Core installation)"
    kb: str | None  # "KB5040430"
    fixed_build: str | None  # "10.0.17763.6054"
    supersedes: str | None = None
    rating: str | None = None  # MSRC severity for this product
    cvss: float | None = None


@dataclass(frozen=True)
class Advisory:
    """One record of a feed as stored; ``key`` is unique across feeds."""

    key: str  # origin:id, e.g. osv:DSA-5724-1, debian-tracker:openssh:CVE-2024-6387
    id: str  # the feed's own id
    cves: tuple[str, ...]  # CVE ids it names (its id when it is one)
    published: str | None  # ISO date the fix/advisory was published
    modified: str | None
    summary: str = ""
    cvss: float | None = None
    cvss_vector: str | None = None
    rating: str | None = None
    affected: tuple[Affected, ...] = ()
    windows: tuple[WindowsFix, ...] = ()
    extra: dict[str, Any] = field(default_factory=dict)

    def subject_ids(self) -> tuple[str, ...]:
        """The ids a finding is named by: each CVE, or the advisory id when it has none."""
        return self.cves or (self.id,)


def checked_id(path: str, record: str | None, value: Any, what: str = "id") -> str:
    """An identifier from a feed: a short token, never free text or a path."""
    if not isinstance(value, str) or not ID_PATTERN.fullmatch(value):
        shown = repr(value)[:60]
        raise FeedError(path, record, f"{what} {shown} is not an advisory identifier")
    return value


def short_text(value: Any) -> str:
    """Free text from a feed, bounded and without control characters."""
    if not isinstance(value, str):
        return ""
    cleaned = "".join(ch if ch.isprintable() or ch in "\n\t" else " " for ch in value[:TEXT_MAX])
    return cleaned.strip()
