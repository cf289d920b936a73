"""The exit code of a scan (spec/cli.md): findings at or above ``--fail-on`` beat errors.

0: clean; 1: a finding at or above ``fail_on``; 3: none, but an image was not audited, or
was audited with a section that could not be read (``complete`` false, spec/report.md).
2 (configuration error) is the CLI's: it happens before there are results.
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import StrEnum

from vmaudit.errors import ExitCode
from vmaudit.models import SEVERITIES, ImageResult


class FailOn(StrEnum):
    """``--fail-on``: the least severe finding that fails a scan, or never."""

    CRITICAL = "critical"
    HIGH = "high"
    MEDIUM = "medium"
    LOW = "low"
    NEVER = "never"


FAIL_ON_CHOICES = tuple(level.value for level in FailOn)


def at_or_above(severity: str, fail_on: str) -> bool:
    """Whether a finding of ``severity`` fails a gate set at ``fail_on``."""
    if fail_on == "never":
        return False
    return SEVERITIES.index(severity) <= SEVERITIES.index(fail_on)


def exit_code(results: Sequence[ImageResult], fail_on: str) -> ExitCode:
    """0, 1 or 3 for a finished scan; ``ValueError`` on an unknown ``fail_on``."""
    if fail_on not in FAIL_ON_CHOICES:
        raise ValueError(f"fail_on must be one of {', '.join(FAIL_ON_CHOICES)}, not {fail_on!r}")
    if any(at_or_above(f.severity, fail_on) for r in results for f in r.findings):
        return ExitCode.FINDINGS
    if any(not result.complete for result in results):
        return ExitCode.NOT_AUDITED
    return ExitCode.OK
