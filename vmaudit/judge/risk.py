"""The risk score of spec/baseline.md ("Risk score"): an exposure that ranks, a score that reads.

exposure ``X = W x D x C``:

- ``W``, the findings weight: critical 40, high 20, medium 8, low 2, info 0 per finding,
  except ``vuln.cve``, which weighs per severity ``weight x log2(1 + number of CVEs)``:
  a thousand CVEs of an old image do not drown every other finding, one more still counts;
- ``D`` = 1 + min(days idle, 730) / 365, the dormancy factor (1.0 to 3.0);
- ``C``, the criticality of the image's business application (low 0.5 to critical 2.0).

score = 100 x (1 - e^(-X / 200)), one decimal; the level comes from the score. Nothing caps
``X``: images sort by it, so two images whose exposure differs never tie at the top even
where their scores both read 100.0.

``contributions`` says why an image ranks where it does: how much of its exposure each
severity, its sleep and its application's criticality bring.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from vmaudit.models import SEVERITIES, Business, Finding, ImageResult, Risk, Severity

WEIGHTS: dict[str, int] = {"critical": 40, "high": 20, "medium": 8, "low": 2, "info": 0}
CRITICALITY = {"low": 0.5, "medium": 1.0, "high": 1.5, "critical": 2.0}
CVE_RULE = "vuln.cve"
DORMANCY_CAP_DAYS = 730  # two years asleep weigh as much as any longer sleep
DORMANCY_YEAR = 365
SCALE = 200.0  # the exposure at which the score reaches 1 - 1/e (63.2)
LEVELS = ((75.0, "critical"), (50.0, "high"), (25.0, "medium"))
EXPOSURE_DECIMALS = 4  # stored and sorted by at this precision, live and from the state alike
# Which formula a stored score comes from (vmaudit.state.schema): 1 was the capped
# ``min(100, round(W x D x C))`` with dormancy up to one year, 2 is this one.
FORMULA = 2


@dataclass(frozen=True)
class Weight:
    """The findings weight of one image, per severity, CVEs apart from the other rules."""

    findings: dict[str, int]  # severity -> number of findings other than vuln.cve
    cves: dict[str, int]  # severity -> number of distinct CVEs

    def of(self, severity: str) -> float:
        """What the findings of one severity weigh, CVEs counted logarithmically."""
        weight = WEIGHTS[severity]
        return weight * self.findings.get(severity, 0) + weight * math.log2(
            1 + self.cves.get(severity, 0)
        )

    @property
    def total(self) -> float:
        return sum(self.of(severity) for severity in SEVERITIES)


def weigh(findings: Iterable[Finding]) -> Weight:
    """Count the findings per severity; a CVE found on two packages counts once."""
    others: Counter[str] = Counter()
    cves: dict[str, set[str]] = {}
    for finding in findings:
        if finding.rule == CVE_RULE:
            cves.setdefault(finding.severity, set()).add(finding.subject)
        else:
            others[finding.severity] += 1
    return Weight(dict(others), {severity: len(ids) for severity, ids in cves.items()})


def idle_days(days_idle: int | None) -> int:
    """Unknown or negative (clock skew) idle time counts as 0 days."""
    return max(days_idle or 0, 0)


def dormancy_factor(days_idle: int | None) -> float:
    return 1 + min(idle_days(days_idle), DORMANCY_CAP_DAYS) / DORMANCY_YEAR


def criticality_factor(criticality: str) -> float:
    # An unknown criticality cannot come from a validated inventory; medium is the
    # spec's value for "not mapped".
    return CRITICALITY.get(criticality, 1.0)


def level_of(score: float) -> str:
    """critical at 75 and above, high from 50, medium from 25, low above 0, else none."""
    for threshold, level in LEVELS:
        if score >= threshold:
            return level
    return "low" if score > 0 else "none"


def score_of(exposure: float) -> float:
    """100 x (1 - e^(-X/200)) to one decimal: 0 for no exposure, toward 100, never above."""
    return round(100 * (1 - math.exp(-exposure / SCALE)), 1)


def score(findings: Iterable[Finding], days_idle: int | None, criticality: str) -> Risk:
    """The risk of one audited image."""
    exposure = round(
        weigh(findings).total * dormancy_factor(days_idle) * criticality_factor(criticality),
        EXPOSURE_DECIMALS,
    )
    value = score_of(exposure)
    return Risk(value, level_of(value), exposure)


def rank_key(result: ImageResult) -> tuple[bool, bool, float, str]:
    """Riskiest first: audited images by exposure, descending, then by path; errors last.

    An image whose exposure is unknown (recorded by the capped formula of schema v2 and
    not recomputable) comes after every image with one, by its old score.
    """
    exposure = result.risk.exposure
    known = exposure is not None
    return (
        result.error is not None,
        not known,
        -(exposure if exposure is not None else result.risk.score),
        result.image.path,
    )


def rank(results: Iterable[ImageResult]) -> list[ImageResult]:
    return sorted(results, key=rank_key)


# ---------------------------------------------------------------- why an image ranks


@dataclass(frozen=True)
class Contribution:
    """One reason for an image's exposure and the share of ``X`` it brings.

    ``kind`` is a severity (its findings), ``cve:<severity>``, ``dormancy`` or
    ``criticality``. Findings bring ``w x D x C``; sleep brings ``W x (D - 1) x C``, what the
    same findings would weigh less on a guest that ran today; criticality brings
    ``W x D x (C - 1)``, what they would weigh less for a medium application.
    """

    kind: str
    exposure: float
    text: str


def _plural(count: int, word: str) -> str:
    return f"{count} {word}" if count == 1 else f"{count} {word}s"


def contributions(
    findings: Sequence[Finding], days_idle: int | None, business: Business
) -> list[Contribution]:
    """Everything that adds to the exposure, largest first (ties: findings by severity,
    then sleep, then criticality); what adds nothing (info findings, a guest idle 0 days,
    a medium or low criticality) is left out."""
    weight = weigh(findings)
    total = weight.total
    dormancy = dormancy_factor(days_idle)
    factor = criticality_factor(business.criticality)
    found: list[Contribution] = []
    for severity in SEVERITIES:
        count = weight.findings.get(severity, 0)
        if count and WEIGHTS[severity]:
            found.append(
                Contribution(
                    severity,
                    WEIGHTS[severity] * count * dormancy * factor,
                    f"{_plural(count, severity + ' finding')}",
                )
            )
        cves = weight.cves.get(severity, 0)
        if cves and WEIGHTS[severity]:
            found.append(
                Contribution(
                    f"cve:{severity}",
                    WEIGHTS[severity] * math.log2(1 + cves) * dormancy * factor,
                    _plural(cves, f"{severity} CVE"),
                )
            )
    days = idle_days(days_idle)
    if days and total:
        found.append(
            Contribution(
                "dormancy",
                total * (dormancy - 1) * factor,
                f"{days} days asleep" if days != 1 else "1 day asleep",
            )
        )
    if factor > 1 and total:
        application = business.application or "unmapped"
        found.append(
            Contribution(
                "criticality",
                total * dormancy * (factor - 1),
                f"{application} ({business.criticality})",
            )
        )
    order = {c.kind: index for index, c in enumerate(found)}
    return sorted(found, key=lambda c: (-round(c.exposure, EXPOSURE_DECIMALS), order[c.kind]))


def top_contributions(result: ImageResult, count: int = 3) -> list[Contribution]:
    """The ``count`` largest contributions of an audited image; none for an image in error."""
    if result.error is not None or result.facts is None:
        return []
    return contributions(result.findings, result.facts.dormancy.days_idle, result.business)[:count]


def why(result: ImageResult, count: int = 3) -> str:
    """``940 days asleep, payroll (critical), 3 critical findings``: the top contributions."""
    return ", ".join(c.text for c in top_contributions(result, count))


def exposure_by_severity(result: ImageResult) -> dict[Severity, float]:
    """The exposure each severity brings (its findings and CVEs x D x C): sums to ``X``."""
    if result.error is not None or result.facts is None:
        return {severity: 0.0 for severity in SEVERITIES}
    weight = weigh(result.findings)
    scale = dormancy_factor(result.facts.dormancy.days_idle) * criticality_factor(
        result.business.criticality
    )
    return {severity: weight.of(severity) * scale for severity in SEVERITIES}
