"""The risk score of spec/baseline.md: findings weighted, scaled by dormancy and criticality.

score = min(100, round(W x D x C)) with W the sum of finding weights, D = 1 + min(days
idle, 365) / 365 and C from the business criticality. W is even and C a multiple of 1/2,
so W x D x C never lands on an exact half: round() needs no tie rule here.
"""

from __future__ import annotations

from collections.abc import Iterable

from vmaudit.models import Finding, Risk

WEIGHTS = {"critical": 40, "high": 20, "medium": 8, "low": 2, "info": 0}
CRITICALITY = {"low": 0.5, "medium": 1.0, "high": 1.5, "critical": 2.0}
DORMANCY_CAP_DAYS = 365
LEVELS = ((75, "critical"), (50, "high"), (25, "medium"), (1, "low"))


def level_of(score: int) -> str:
    """critical at 75 and above, high from 50, medium from 25, low above 0, else none."""
    for threshold, level in LEVELS:
        if score >= threshold:
            return level
    return "none"


def score(findings: Iterable[Finding], days_idle: int | None, criticality: str) -> Risk:
    """The risk of one audited image; unknown or negative idle days count as 0."""
    weight = sum(WEIGHTS[finding.severity] for finding in findings)
    idle = min(max(days_idle or 0, 0), DORMANCY_CAP_DAYS)
    dormancy = 1 + idle / DORMANCY_CAP_DAYS
    # An unknown criticality cannot come from a validated inventory; medium is the
    # spec's value for "not mapped".
    factor = CRITICALITY.get(criticality, 1.0)
    value = min(100, round(weight * dormancy * factor))
    return Risk(value, level_of(value))
