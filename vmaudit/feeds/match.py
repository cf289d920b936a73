"""Matching a guest's facts against the feeds database: which advisories still apply.

Linux: each installed package by its source package (dpkg ``Source:``, rpm ``SOURCERPM``,
apk origin; else its own name), in the guest's own release only, its version compared
with the release's ordering against each OSV range. Windows: the guest's product (build,
installation type, architecture) and ``CurrentBuild.UBR`` below the Vendor Fix's
``FixedBuild``; an installed KB whose fix build is above the registry's UBR is a warning
on the finding, never taken as proof either way.

Rows are read once per ecosystem or product and kept: re-judging a thousand cached
images of one release reads the database once.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Sequence
from contextlib import closing
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cmp_to_key, lru_cache
from pathlib import Path
from threading import Lock
from typing import TYPE_CHECKING, Any

from vmaudit.feeds.db import open_read
from vmaudit.feeds.distros import guest_ecosystems
from vmaudit.feeds.records import Range, feed_severity
from vmaudit.feeds.windows import parse_build, windows_guest
from vmaudit.models import SEVERITIES, Facts, Severity

if TYPE_CHECKING:
    from vmaudit.feeds.versions import Comparator

_RANK = {severity: rank for rank, severity in enumerate(SEVERITIES)}
BY_VERSION_MAX = 1_000_000  # (ecosystem, package, version) results kept for re-judging


@lru_cache(maxsize=65536)
def _moment(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


@dataclass(frozen=True)
class VulnMatch:
    """One advisory that applies to one guest: what a ``vuln.cve`` finding says."""

    subject: str  # the CVE id, or the advisory id when it has none
    advisory: str  # the feed's record id (DSA-5724-1, CVE-2024-38077)
    package: str  # source package, or Windows product
    installed: str
    fixed: str | None
    published: str | None  # when the fix (or the advisory) was published
    source: str  # which feed: "osv: /path/debian.zip"
    severity: Severity
    cvss: float | None = None
    kb: str | None = None
    warning: str | None = None

    def exposed_days(self, now: datetime) -> int | None:
        """Days since the fix was published (the image stayed unpatched all along)."""
        if self.published is None:
            return None
        moment = now if now.tzinfo else now.replace(tzinfo=UTC)
        return max(0, (moment - _moment(self.published)).days)

    def evidence(self, now: datetime, days: int | None = None) -> dict[str, Any]:
        key = "product" if self.kb is not None or self.source.startswith("msrc") else "package"
        evidence: dict[str, Any] = {
            key: self.package,
            "installed": self.installed,
            "fixed": self.fixed,
            "advisory": self.advisory,
            "published": self.published,
            "source": self.source,
            "exposed_days": days if days is not None else self.exposed_days(now),
        }
        if self.cvss is not None:
            evidence["cvss"] = self.cvss
        if self.kb is not None:
            evidence["kb"] = self.kb
        if self.warning is not None:
            evidence["warning"] = self.warning
        return evidence


# An advisory row beside the package (Linux) or product (Windows) it was asked for: the
# name column, the CVSS score, two columns of fixes, the table, the column asked on.
_ADVISORY = (
    "SELECT t.{0}, adv.key, adv.id, adv.cves, adv.published, {1}, adv.rating, "
    "s.path, s.format, t.{2}, t.{3}, t.rating FROM {4} t JOIN advisories adv ON "
    "adv.key = t.key JOIN sources s ON s.id = adv.source_id WHERE t.{5} = ?"
)
_LINUX = _ADVISORY.format("package", "adv.cvss", "ranges", "versions", "affected", "ecosystem")
_WINDOWS = _ADVISORY.format(
    "product", "coalesce(t.cvss, adv.cvss)", "kb", "fixed_build", "windows_fixes", "product_key"
)


@dataclass(frozen=True)
class _Candidate:
    key: str
    advisory: str
    subjects: tuple[str, ...]
    published: str | None
    severity: Severity
    cvss: float | None
    source: str
    ranges: tuple[Range, ...] = ()
    versions: tuple[str, ...] = ()
    kb: str | None = None
    fixed_build: str | None = None


def _sorted_events(events: Range, compare: Comparator) -> list[tuple[str, str]]:
    def order(left: tuple[str, str], right: tuple[str, str]) -> int:
        if left[1] == "0" and left[0] == "introduced":
            return 0 if right == left else -1
        if right[1] == "0" and right[0] == "introduced":
            return 1
        return compare(left[1], right[1])

    return sorted(events, key=cmp_to_key(order))


def affected_fix(
    installed: str, ranges: Sequence[Range], versions: Sequence[str], compare: Comparator
) -> tuple[bool, str | None]:
    """Whether ``installed`` is affected, and the fixed version that would end it.

    Each range as OSV evaluates it: its events sorted by version, ``introduced`` at or
    below the version makes it affected, ``fixed`` (or ``limit``) at or below and
    ``last_affected`` below make it not.
    """
    hit = installed in versions
    fixes: list[str] = []
    for events in ranges:
        ordered = _sorted_events(events, compare)
        affected = False
        for kind, version in ordered:
            if kind == "introduced":
                if version == "0" or compare(installed, version) >= 0:
                    affected = True
            elif kind in ("fixed", "limit"):
                if compare(installed, version) >= 0:
                    affected = False
            elif kind == "last_affected" and compare(installed, version) > 0:
                affected = False
        if affected:
            hit = True
            later = [v for k, v in ordered if k == "fixed" and compare(v, installed) > 0]
            if later:
                fixes.append(later[0])
    if not hit:
        return False, None
    lowest = min(fixes, key=cmp_to_key(compare)) if fixes else None
    return True, lowest


class FeedsMatcher:
    """The feeds database as the rules see it: ``matches(facts)``."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._linux: dict[str, dict[str, list[_Candidate]]] = {}
        self._windows: dict[str, list[tuple[str, _Candidate]]] = {}
        self._by_version: dict[tuple[str, str, str], tuple[VulnMatch, ...]] = {}
        self._lock = Lock()

    @classmethod
    def open(cls, path: Path) -> FeedsMatcher | None:
        """A matcher over ``path``; None when the database is missing or holds no record."""
        connection = open_read(path)
        if connection is None:
            return None
        with closing(connection):
            row = connection.execute("SELECT count(*) FROM advisories").fetchone()
        return cls(path) if row and row[0] else None

    def _connect(self) -> sqlite3.Connection:
        connection = open_read(self.path)
        if connection is None:
            raise FileNotFoundError(self.path)
        return connection

    def _candidates(self, rows: Iterable[Any], linux: bool) -> list[_Candidate]:
        found = []
        for row in rows:
            (
                key,
                advisory,
                cves,
                published,
                cvss,
                adv_rating,
                src_path,
                src_format,
                a,
                b,
                rating,
            ) = row
            severity = feed_severity(cvss, rating or adv_rating)
            subjects = tuple(json.loads(cves)) or (advisory,)
            source = f"{src_format}: {src_path}"
            specific: dict[str, Any] = (
                {
                    "ranges": tuple(tuple(tuple(e) for e in r) for r in json.loads(a)),
                    "versions": tuple(json.loads(b)),
                }
                if linux
                else {"kb": a, "fixed_build": b}
            )
            found.append(
                _Candidate(key, advisory, subjects, published, severity, cvss, source, **specific)
            )
        return found

    def _rows(self, sql: str, key: str) -> list[Any]:
        with closing(self._connect()) as connection:
            return list(connection.execute(sql, (key,)))

    def _ecosystem(self, ecosystem: str) -> dict[str, list[_Candidate]]:
        with self._lock:
            known = self._linux.get(ecosystem)
            if known is None:
                known = {}
                for row in self._rows(_LINUX, ecosystem):
                    known.setdefault(row[0], []).extend(self._candidates([row[1:]], True))
                self._linux[ecosystem] = known
            return known

    def _product(self, product: str) -> list[tuple[str, _Candidate]]:
        """The fixes of one product (lower-case name), each with the name as CVRF spells it."""
        with self._lock:
            known = self._windows.get(product)
            if known is None:
                known = [
                    (row[0], self._candidates([row[1:]], False)[0])
                    for row in self._rows(_WINDOWS, product)
                ]
                self._windows[product] = known
            return known

    def matches(self, facts: Facts) -> tuple[VulnMatch, ...]:
        """Every advisory that applies to the guest, one per subject (CVE), most severe kept."""
        if facts.os.type == "windows":
            found = self._windows_matches(facts)
        else:
            found = self._linux_matches(facts)
        best: dict[str, VulnMatch] = {}
        for match in found:
            known = best.get(match.subject)
            if known is None or _better(match, known):
                if known is not None and match.published is None:
                    match = _with_published(match, known.published)
                best[match.subject] = match
            elif known.published is None and match.published is not None:
                best[match.subject] = _with_published(known, match.published)
        return tuple(sorted(best.values(), key=lambda m: (_RANK[m.severity], m.subject)))

    def _linux_matches(self, facts: Facts) -> list[VulnMatch]:
        from vmaudit.feeds.versions import ordering_for  # python-debian: only to match

        found: list[VulnMatch] = []
        for ecosystem in guest_ecosystems(facts.os):
            ordering = ordering_for(ecosystem)
            if ordering is None:
                continue
            table = self._ecosystem(ecosystem)
            seen: set[tuple[str, str]] = set()
            for package in facts.packages:
                name = package.source or package.name
                if (name, package.version) in seen or name not in table:
                    continue
                seen.add((name, package.version))
                found.extend(
                    self._package_matches(
                        ecosystem, name, package.version, table[name], ordering.compare
                    )
                )
        return found

    def _package_matches(
        self,
        ecosystem: str,
        name: str,
        version: str,
        candidates: list[_Candidate],
        compare: Comparator,
    ) -> tuple[VulnMatch, ...]:
        """The matches of one source package at one version, computed once per fleet.

        Images of one release share most of their versions: re-judging a thousand of them
        compares each (package, version) with its advisories once.
        """
        key = (ecosystem, name, version)
        known = self._by_version.get(key)
        if known is not None:
            return known
        found: list[VulnMatch] = []
        for candidate in candidates:
            try:
                hit, fixed = affected_fix(version, candidate.ranges, candidate.versions, compare)
            except ValueError:
                continue  # a guest version its own ordering refuses: not judged
            if not hit:
                continue
            found.extend(
                VulnMatch(
                    subject,
                    candidate.advisory,
                    name,
                    version,
                    fixed,
                    candidate.published,
                    candidate.source,
                    candidate.severity,
                    candidate.cvss,
                )
                for subject in candidate.subjects
            )
        if len(self._by_version) >= BY_VERSION_MAX:
            self._by_version.clear()
        self._by_version[key] = result = tuple(found)
        return result

    def _windows_matches(self, facts: Facts) -> list[VulnMatch]:
        guest = windows_guest(facts.os)
        if guest is None:
            return []
        installed = {hotfix.id.upper() for hotfix in facts.hotfixes}
        found: list[VulnMatch] = []
        for product in guest.products:
            by_key: dict[str, list[tuple[int, _Candidate]]] = {}
            names: dict[str, str] = {}
            for name, candidate in self._product(product):
                names[candidate.key] = name
                fixed = parse_build(candidate.fixed_build)
                if fixed is None or fixed[0] != guest.build:
                    continue  # no build to compare with (or another release's): not judged
                by_key.setdefault(candidate.key, []).append((fixed[1], candidate))
            for fixes in by_key.values():
                revision, candidate = min(fixes, key=lambda f: f[0])
                if guest.revision >= revision:
                    continue
                warning = None
                stale = sorted({c.kb for r, c in fixes if c.kb and c.kb in installed})
                if stale:
                    warning = f"hotfix {', '.join(stale)} installed but build is older"
                build = f"{guest.build}.{guest.revision}"
                for subject in candidate.subjects:
                    found.append(
                        VulnMatch(
                            subject,
                            candidate.advisory,
                            names[candidate.key],
                            build,
                            candidate.fixed_build,
                            candidate.published,
                            candidate.source,
                            candidate.severity,
                            candidate.cvss,
                            candidate.kb,
                            warning,
                        )
                    )
        return found


def _better(match: VulnMatch, known: VulnMatch) -> bool:
    return _RANK[match.severity] < _RANK[known.severity]


def _with_published(match: VulnMatch, published: str | None) -> VulnMatch:
    from dataclasses import replace

    return replace(match, published=published)


def open_feeds(path: Path) -> tuple[FeedsMatcher | None, str | None]:
    """The matcher over a feeds database, or None and the one notice to show.

    A missing or empty database is not an error (spec/vulnerabilities.md): no ``vuln.*``
    finding, and this notice on stderr. A file that is not a feeds database raises
    ``ConfigError``.
    """
    matcher = FeedsMatcher.open(path)
    if matcher is None:
        return None, (
            f"{path}: no vulnerability feeds (vmaudit feeds import PATH...): vuln.cve is not judged"
        )
    return matcher, None
