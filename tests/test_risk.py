"""The risk score of spec/baseline.md on hand-computed cases."""

from __future__ import annotations

import pytest

from vmaudit.models import Finding, Risk, Severity
from vmaudit.risk import level_of, score


def _findings(*severities: Severity) -> list[Finding]:
    return [Finding("r", severity, f"s{i}", "m") for i, severity in enumerate(severities)]


@pytest.mark.parametrize(
    ("severities", "days_idle", "criticality", "expected"),
    [
        ((), 400, "critical", Risk(0, "none")),
        (("info", "info"), 365, "critical", Risk(0, "none")),  # info weighs nothing
        (("high",), 0, "medium", Risk(20, "low")),  # 20 x 1 x 1
        (("critical",), None, "medium", Risk(40, "medium")),  # unknown idle counts as 0 days
        (("critical",), -3, "medium", Risk(40, "medium")),  # clock skew counts as 0 days
        (("critical",), 0, "low", Risk(20, "low")),  # 40 x 1 x 0.5
        (("high", "medium"), 365, "high", Risk(84, "critical")),  # 28 x 2 x 1.5
        (("high",), 1000, "medium", Risk(40, "medium")),  # idle capped at 365: 20 x 2
        (("high",), 73, "medium", Risk(24, "low")),  # 20 x 1.2 = 24
        (("critical",), 310, "medium", Risk(74, "high")),  # 40 x 1.8493 = 73.97
        (("critical",), 315, "medium", Risk(75, "critical")),  # 40 x 1.8630 = 74.52
        (("critical", "medium", "low"), 0, "high", Risk(75, "critical")),  # 50 x 1.5
        (("medium", "medium", "medium"), 0, "high", Risk(36, "medium")),  # 24 x 1.5
        (("low",), 0, "low", Risk(1, "low")),  # 2 x 0.5
        (("critical", "critical", "critical"), 365, "critical", Risk(100, "critical")),  # 480
    ],
)
def test_score(
    severities: tuple[Severity, ...], days_idle: int | None, criticality: str, expected: Risk
) -> None:
    assert score(_findings(*severities), days_idle, criticality) == expected


@pytest.mark.parametrize(
    ("value", "level"),
    [
        (100, "critical"),
        (75, "critical"),
        (74, "high"),
        (50, "high"),
        (49, "medium"),
        (25, "medium"),
        (24, "low"),
        (1, "low"),
        (0, "none"),
    ],
)
def test_level_boundaries(value: int, level: str) -> None:
    assert level_of(value) == level
