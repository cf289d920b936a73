"""The Debian security tracker's JSON (``security-tracker.debian.org/tracker/data/json``).

``{source: {CVE: {releases: {codename: {status, fixed_version, urgency}}}}}``, read one
source package at a time (jsonstream). Per release: ``resolved`` with a fixed version is
vulnerable below it (``0`` = never affected), ``open`` is vulnerable in every version,
``undetermined`` says nothing. The tracker gives no dates: such findings have no
``published`` and no ``exposed_days`` unless another feed dates the same CVE.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import IO, Any

from vmaudit.feeds.distros import debian_version_of
from vmaudit.feeds.jsonstream import JsonStreamError, object_members
from vmaudit.feeds.records import (
    CVE_PATTERN,
    Advisory,
    Affected,
    FeedError,
    Range,
    checked_id,
    short_text,
)
from vmaudit.feeds.versions import DPKG

SOURCE_CAP = 64 * 1024 * 1024  # one source package's entry (linux is the largest, ~10 MB)
SOURCE_NAME = re.compile(r"[a-z0-9][a-z0-9+.-]{0,99}")


def looks_like_tracker(key: str, value: Any) -> bool:
    """A first member shaped as the tracker's: a source name -> {id: {releases: ...}}."""
    return (
        SOURCE_NAME.fullmatch(key) is not None
        and isinstance(value, dict)
        and bool(value)
        and all(isinstance(v, dict) and "releases" in v for v in value.values())
    )


def _release(path: str, record: str, source: str, codename: str, entry: Any) -> Affected | None:
    if not isinstance(entry, dict):
        raise FeedError(path, record, f"release {codename[:40]!r} is not an object")
    version = debian_version_of(codename)
    if version is None:
        return None  # sid, experimental: no guest is "in" them for matching
    status = entry.get("status")
    fixed = entry.get("fixed_version")
    urgency = entry.get("urgency")
    rating = urgency if isinstance(urgency, str) and len(urgency) < 40 else None
    if status == "resolved":
        if not isinstance(fixed, str):
            raise FeedError(path, record, f"{codename}: resolved without a fixed_version")
        if fixed == "0":
            return None
        if not DPKG.valid(fixed):
            raise FeedError(path, record, f"{codename}: fixed_version {fixed[:80]!r} is invalid")
        events: Range = (("introduced", "0"), ("fixed", fixed))
    elif status == "open":
        events = (("introduced", "0"),)
    elif status == "undetermined":
        return None
    else:
        raise FeedError(path, record, f"{codename}: unknown status {str(status)[:40]!r}")
    return Affected(f"Debian:{version}", source, (events,), (), rating)


def parse_tracker(path: str, stream: IO[bytes]) -> Iterator[Advisory]:
    """One advisory per (source package, CVE) with an affected entry per known release."""
    try:
        for index, (source, cves) in enumerate(object_members(stream, SOURCE_CAP)):
            if index == 0 and not looks_like_tracker(source, cves):
                raise FeedError(
                    path,
                    None,
                    "JSON that is neither an OSV record nor the Debian security tracker's",
                )
            if not SOURCE_NAME.fullmatch(source):
                raise FeedError(path, source[:60], "not a Debian source package name")
            if not isinstance(cves, dict):
                raise FeedError(path, source, "expected an object of CVE entries")
            for cve, entry in cves.items():
                record = f"{source}/{cve[:60]}"
                checked_id(path, record, cve, "CVE id")
                if not isinstance(entry, dict) or not isinstance(entry.get("releases"), dict):
                    raise FeedError(path, record, "expected {releases: {...}}")
                affected = [
                    found
                    for codename, release in entry["releases"].items()
                    if (found := _release(path, record, source, codename, release)) is not None
                ]
                if not affected:
                    continue
                yield Advisory(
                    key=f"debian-tracker:{source}:{cve}",
                    id=cve,
                    cves=(cve,) if CVE_PATTERN.fullmatch(cve) else (),
                    published=None,
                    modified=None,
                    summary=short_text(entry.get("description")),
                    affected=tuple(affected),
                )
    except JsonStreamError as exc:
        raise FeedError(path, exc.member, str(exc)) from None
