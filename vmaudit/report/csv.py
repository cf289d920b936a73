"""The findings as CSV (spec/report.md): one row per finding, one ``scan.error`` per failure.

RFC 4180: every cell quoted when needed, CRLF line ends, UTF-8. Guest text that starts
like a formula is prefixed with ``'`` so a spreadsheet shows it instead of running it.
"""

from __future__ import annotations

import csv
import io

from vmaudit.models import ImageResult, ScanReport
from vmaudit.report.common import csv_cell, os_text, sort_by_risk

HEADER = (
    "image",
    "vm",
    "os",
    "hostname",
    "application",
    "owner",
    "criticality",
    "risk_score",
    "risk_level",
    "days_idle",
    "rule",
    "severity",
    "subject",
    "message",
    "baseline",
    # issue 20, after the spec's columns so that readers by position keep working
    "vm_source",
    "vm_template",
    "vm_state",
)


def _image_cells(result: ImageResult) -> list[str]:
    facts = result.facts
    days_idle = facts.dormancy.days_idle if facts is not None else None
    return [
        result.image.path,
        result.image.vm or "",
        os_text(result),
        (facts.os.hostname or "") if facts is not None else "",
        result.business.application or "",
        result.business.owner or "",
        result.business.criticality,
        f"{result.risk.score:.1f}" if result.error is None else "",
        result.risk.level if result.error is None else "",
        "" if days_idle is None else str(days_idle),
    ]


def _vm_cells(result: ImageResult) -> list[str]:
    image = result.image
    return [image.source, "true" if image.template else "false", image.state or ""]


def rows(report: ScanReport) -> list[list[str]]:
    """Every data row, neutralised, riskiest image first (``sort_by_risk``)."""
    table: list[list[str]] = []
    for result in sort_by_risk(report.results):
        image = _image_cells(result)
        vm = _vm_cells(result)
        if result.error is not None:
            table.append(
                [*image, "scan.error", "", result.error.kind, result.error.message, "", *vm]
            )
            continue
        for finding in result.findings:
            table.append(
                [
                    *image,
                    finding.rule,
                    finding.severity,
                    finding.subject,
                    finding.message,
                    finding.baseline,
                    *vm,
                ]
            )
        for entry in result.not_judged:  # a rule that could not look is no pass
            table.append([*image, entry.rule, "", "", f"not judged: {entry.reason}", "", *vm])
    return [[csv_cell(cell) for cell in row] for row in table]


def render(report: ScanReport) -> str:
    buffer = io.StringIO(newline="")
    writer = csv.writer(buffer, lineterminator="\r\n", quoting=csv.QUOTE_MINIMAL)
    writer.writerow(HEADER)
    writer.writerows(rows(report))
    return buffer.getvalue()
