"""OSV records (ossf/osv-schema 1.x) as advisories: ecosystems, ranges, aliases, severity.

Only the ecosystems a guest can be in are kept (distros.normalise_ecosystem); ``ECOSYSTEM``
ranges only, their versions checked against the ecosystem's ordering at import time so a
record vmaudit cannot compare is an error now, not a silent miss at scan time. CVE ids
come from the id, ``aliases`` and ``upstream``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from vmaudit.feeds.distros import normalise_ecosystem
from vmaudit.feeds.records import (
    CVE_PATTERN,
    ID_PATTERN,
    VERSION_MAX,
    Advisory,
    Affected,
    Event,
    FeedError,
    Range,
    checked_id,
    short_text,
)
from vmaudit.feeds.versions import ordering_for

RECORD_CAP = 16 * 1024 * 1024  # one OSV record; real ones are a few KB
EVENT_KINDS = ("introduced", "fixed", "last_affected", "limit")
MAX_AFFECTED = 10_000  # entries, ranges, events or versions of one record


@dataclass(frozen=True)
class Withdrawn:
    """An OSV record its publisher withdrew: any stored copy is dropped."""

    key: str
    id: str


def looks_like_osv(record: Any) -> bool:
    """An object with a string ``id`` and a ``modified`` (both required by OSV)."""
    return isinstance(record, dict) and isinstance(record.get("id"), str) and "modified" in record


def iso_time(path: str, record: str | None, value: Any, field: str) -> str | None:
    """An RFC 3339 time from a feed as ``YYYY-MM-DDTHH:MM:SSZ``; None when absent."""
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > 64:
        raise FeedError(path, record, f"{field} is not a date")
    try:
        moment = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        raise FeedError(path, record, f"{field} {value!r} is not a date") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _list(path: str, record: str, value: Any, field: str) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise FeedError(path, record, f"{field} is not a list")
    if len(value) > MAX_AFFECTED:
        raise FeedError(path, record, f"{field} has more than {MAX_AFFECTED} entries")
    return value


def _dict(path: str, record: str, value: Any, field: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise FeedError(path, record, f"{field} is not an object")
    return value


def _cvss(path: str, record: str, severities: list[Any]) -> tuple[float | None, str | None]:
    """The base score of the record's CVSS v3 vector (else v4), computed by ``cvss``."""
    from cvss import CVSS3, CVSS4
    from cvss.exceptions import CVSSError

    vectors: dict[str, str] = {}
    for entry in severities:
        entry = _dict(path, record, entry, "severity[]")
        kind, score = entry.get("type"), entry.get("score")
        if isinstance(kind, str) and isinstance(score, str) and len(score) < 512:
            vectors.setdefault(kind, score)
    for kind, calculator in (("CVSS_V3", CVSS3), ("CVSS_V4", CVSS4)):
        vector = vectors.get(kind)
        if vector is None:
            continue
        try:
            return float(calculator(vector).base_score), vector
        except (CVSSError, ValueError, KeyError, IndexError) as exc:
            raise FeedError(path, record, f"{kind} vector {vector!r} is invalid ({exc})") from None
    return None, None


def _rating(*places: dict[str, Any]) -> str | None:
    """A textual rating: Debian's urgency, a vendor's severity, Ubuntu's priority."""
    for place in places:
        for field in ("urgency", "severity", "priority"):
            value = place.get(field)
            if isinstance(value, str) and 0 < len(value) < 40:
                return value
    return None


def _ranges(path: str, record: str, ranges: list[Any], check: Any) -> tuple[Range, ...]:
    kept: list[Range] = []
    for entry in ranges:
        entry = _dict(path, record, entry, "ranges[]")
        if entry.get("type") != "ECOSYSTEM":
            continue  # GIT and SEMVER ranges do not apply to distribution packages
        events: list[Event] = []
        for event in _list(path, record, entry.get("events"), "events"):
            event = _dict(path, record, event, "events[]")
            kinds = [k for k in EVENT_KINDS if k in event]
            if len(kinds) != 1 or not isinstance(event[kinds[0]], str):
                raise FeedError(path, record, f"event {str(event)[:80]} is not one version")
            kind, version = kinds[0], event[kinds[0]]
            if not (kind == "introduced" and version == "0") and not check(version):
                raise FeedError(path, record, f"{kind} version {version[:80]!r} is invalid")
            events.append((kind, version))
        if events:
            kept.append(tuple(events))
    return tuple(kept)


def parse_osv(path: str, data: Any) -> Advisory | Withdrawn | None:
    """One OSV record; None when it affects no ecosystem a guest can be in."""
    if not isinstance(data, dict):
        raise FeedError(path, None, "an OSV record must be a JSON object")
    record = checked_id(path, None, data.get("id"))
    key = f"osv:{record}"
    modified = iso_time(path, record, data.get("modified"), "modified")
    published = iso_time(path, record, data.get("published"), "published")
    if data.get("withdrawn") is not None:
        iso_time(path, record, data.get("withdrawn"), "withdrawn")
        return Withdrawn(key, record)
    names = [record]
    for field in ("aliases", "upstream"):
        # an alias that is not an identifier names nothing vmaudit reports: left out
        names.extend(
            alias for alias in _list(path, record, data.get(field), field)
            if isinstance(alias, str) and ID_PATTERN.fullmatch(alias)
        )  # fmt: skip
    cves = tuple(dict.fromkeys(n for n in names if CVE_PATTERN.fullmatch(n)))
    cvss, vector = _cvss(path, record, _list(path, record, data.get("severity"), "severity"))
    record_rating = _rating(
        _dict(path, record, data.get("database_specific"), "database_specific"),
        *(
            {"severity": s.get("score")}
            for s in _list(path, record, data.get("severity"), "severity")
            if isinstance(s, dict) and s.get("type") == "Ubuntu"
        ),
    )
    affected: list[Affected] = []
    for entry in _list(path, record, data.get("affected"), "affected"):
        entry = _dict(path, record, entry, "affected[]")
        package = _dict(path, record, entry.get("package"), "affected[].package")
        ecosystem_name, name = package.get("ecosystem"), package.get("name")
        if not isinstance(ecosystem_name, str) or not isinstance(name, str):
            raise FeedError(path, record, "affected[].package needs an ecosystem and a name")
        ecosystem = normalise_ecosystem(ecosystem_name)
        ordering = ordering_for(ecosystem) if ecosystem else None
        if ecosystem is None or ordering is None:
            continue
        name = checked_id(path, record, name, "package name")
        ranges = _ranges(
            path, record, _list(path, record, entry.get("ranges"), "ranges"), ordering.valid
        )
        versions = tuple(
            v for v in _list(path, record, entry.get("versions"), "versions")
            if isinstance(v, str) and len(v) <= VERSION_MAX
        )  # fmt: skip
        if not ranges and not versions:
            continue
        rating = _rating(
            _dict(path, record, entry.get("ecosystem_specific"), "ecosystem_specific"),
            _dict(path, record, entry.get("database_specific"), "database_specific"),
        )
        affected.append(Affected(ecosystem, name, ranges, versions, rating))
    if not affected:
        return None
    return Advisory(
        key=key,
        id=record,
        cves=cves,
        published=published,
        modified=modified,
        summary=short_text(data.get("summary")) or short_text(data.get("details")),
        cvss=cvss,
        cvss_vector=vector,
        rating=record_rating,
        affected=tuple(affected),
    )
