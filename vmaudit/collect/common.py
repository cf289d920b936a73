"""What the collectors share: the collector contract (``Collector``: a section, whether
it applies, its facts or its failure, recorded in a ``CoverageLog``), guest globbing,
os-release style files and time formatting.

Every helper turns a guest-side failure into a line in ``warnings`` and returns an empty
result, so one hostile file never stops the collection of the others.
"""

from __future__ import annotations

import fnmatch
import re
import shlex
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Generic, TypeVar

from vmaudit.errors import GuestFileError
from vmaudit.guest.base import GuestFS, join, safe_path
from vmaudit.models import SECTIONS, Coverage, Package

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MAX_GLOB_MATCHES = 1000  # a glob in a guest config never legitimately names more files


def guest_glob(fs: GuestFS, pattern: str, warnings: list[str]) -> list[str]:
    """Guest paths matching an absolute glob, sorted as glob(3) sorts them.

    As in glob(3), a wildcard does not match a leading dot. Symlinks are followed inside
    the guest by the backend; a directory that cannot be listed is a warning.
    """
    parts = [part for part in pattern.split("/") if part]
    paths = ["/"]
    for index, part in enumerate(parts):
        last = index == len(parts) - 1
        found: list[str] = []
        for base in paths:
            if not any(ch in part for ch in "*?["):
                candidate = join(base, part)
                if fs.stat(candidate) is not None:
                    found.append(candidate)
                continue
            try:
                names = sorted(fs.listdir(base))
            except GuestFileError as exc:
                if exc.reason != "not found":
                    warnings.append(f"{safe_path(base)}: {exc.reason}")
                continue
            for name in names:
                if name.startswith(".") and not part.startswith("."):
                    continue
                if fnmatch.fnmatchcase(name, part):
                    candidate = join(base, name)
                    st = fs.stat(candidate)
                    if st is not None and (last or st.kind == "dir"):
                        found.append(candidate)
        paths = found[:MAX_GLOB_MATCHES]
        if len(found) > MAX_GLOB_MATCHES:
            warnings.append(
                f"{safe_path(pattern)}: over {MAX_GLOB_MATCHES} matches, the rest ignored"
            )
    return sorted(paths) if parts else []


def from_epoch(seconds: float) -> datetime | None:
    """A UTC datetime from a Unix time, None when out of any sane range (garbage in a log)."""
    if seconds <= 0:
        return None
    try:
        return EPOCH + timedelta(seconds=seconds)
    except OverflowError:
        return None


def day_to_date(days: int) -> str | None:
    """A shadow-style day count since 1970-01-01 as an ISO date, None when out of range."""
    try:
        return (EPOCH + timedelta(days=days)).date().isoformat()
    except OverflowError:
        return None


def packages_by_name(packages: Iterable[Package]) -> dict[str, Package]:
    """Installed packages by name (the first one of a multi-arch set)."""
    index: dict[str, Package] = {}
    for package in packages:
        index.setdefault(package.name, package)
    return index


def shell_assignments(lines: list[str]) -> dict[str, str]:
    """``KEY=value`` lines as a shell reads them (os-release, ufw.conf, firewalld.conf).

    Values are unquoted, trailing ``#`` comments dropped; malformed lines are skipped.
    """
    values: dict[str, str] = {}
    for line in lines:
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, raw = line.partition("=")
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
            continue
        try:
            words = shlex.split(raw, comments=True)
        except ValueError:
            words = [raw.strip().strip("\"'")]
        values[key] = " ".join(words)
    return values


T = TypeVar("T")
S = TypeVar("S")


class SectionFailed(Exception):
    """A section's source is there but cannot be read: its rules are not judged."""


class CoverageLog:
    """What each section of one guest's facts came to: read, absent, or failed and why.

    ``read`` never overrides another word, ``absent`` overrides ``read``, and ``failed``
    overrides everything: a clean result must mean "looked and found nothing", never
    "could not look".
    """

    def __init__(self) -> None:
        self._entries: dict[str, Coverage] = {}

    def read(self, section: str) -> None:
        self._entries.setdefault(section, Coverage(section, "read"))

    def absent(self, section: str, reason: str) -> None:
        if self._entries.get(section, Coverage(section, "read")).status != "failed":
            self._entries[section] = Coverage(section, "absent", reason)

    def failed(self, section: str, reason: str) -> None:
        if self._entries.get(section, Coverage(section, "read")).status != "failed":
            self._entries[section] = Coverage(section, "failed", reason[:500])

    def entries(self) -> tuple[Coverage, ...]:
        """Every section in ``SECTIONS`` order (then any other, by name)."""
        order = {name: index for index, name in enumerate(SECTIONS)}
        return tuple(
            sorted(
                self._entries.values(), key=lambda c: (order.get(c.section, len(order)), c.section)
            )
        )


@dataclass(frozen=True)
class SectionFailure:
    """A section that could not be read, and why: its rules are not judged."""

    section: str
    reason: str


def attempt(
    section: str,
    warnings: list[str],
    run: Callable[[], T],
    expected: tuple[type[Exception], ...] = (),
) -> T | SectionFailure:
    """``run()``'s facts, or the section's failure (its reason also a warning): one broken
    section of a guest's facts must not cost the others. ``expected`` errors (and
    ``SectionFailed``) already say what is wrong; their text is kept."""
    explained: tuple[type[Exception], ...] = (SectionFailed, *expected)
    try:
        return run()
    except explained as exc:
        reason = str(exc)
    except Exception as exc:
        reason = f"collection failed ({type(exc).__name__}: {exc})"
    warnings.append(f"{section}: {reason}")
    return SectionFailure(section, reason)


def guarded(
    section: str,
    warnings: list[str],
    fallback: T,
    run: Callable[[], T],
    expected: tuple[type[Exception], ...] = (),
    coverage: CoverageLog | None = None,
) -> T:
    """``run()``, or ``fallback`` when the section fails (``attempt``); with ``coverage``,
    the section is recorded as read, or as failed with the reason."""
    outcome = attempt(section, warnings, run, expected)
    log = coverage or CoverageLog()
    if isinstance(outcome, SectionFailure):
        log.failed(section, outcome.reason)
        return fallback
    log.read(section)
    return outcome


def _applies(_source: object) -> str | None:
    return None


def _present(_facts: object) -> str | None:
    return None


@dataclass(frozen=True)
class Collector(Generic[S, T]):
    """One section of a guest's facts, as its collector declares it.

    ``applies(source)`` looks before anything is read: None when the guest has what the
    section reads, else why not (the section is *absent*, its facts ``empty``). ``read``
    returns the facts; a ``SectionFailed``, one of the ``expected`` errors or any crash is
    the section *failing* with its reason: its facts are ``empty`` and its rules are not
    judged, never an empty list that reads as a clean guest. ``absent(facts)`` may still
    say, from what was read, that the guest has none of it (no sshd among the packages).
    """

    section: str
    read: Callable[[S], T]
    empty: T
    applies: Callable[[S], str | None] = _applies
    absent: Callable[[T], str | None] = _present
    expected: tuple[type[Exception], ...] = ()

    def collect(self, source: S, warnings: list[str], coverage: CoverageLog) -> T:
        """The section's facts from ``source``; its coverage recorded in ``coverage``."""
        reason = attempt(self.section, warnings, lambda: self.applies(source))
        if reason is None:
            facts = attempt(self.section, warnings, lambda: self.read(source), self.expected)
            if not isinstance(facts, SectionFailure):
                coverage.read(self.section)
                why = self.absent(facts)
                if why is not None:
                    coverage.absent(self.section, why)
                return facts
            reason = facts
        if isinstance(reason, SectionFailure):
            coverage.failed(self.section, reason.reason)
        else:
            coverage.absent(self.section, reason)
        return self.empty
