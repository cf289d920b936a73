"""Report formats: an enum and an exhaustive factory; formatters never call the engine.

Each format is a module with ``render(report) -> str``. ``render`` picks it; the final
``assert_never`` makes mypy refuse a format without a formatter.
"""

from __future__ import annotations

from enum import StrEnum
from typing import assert_never

from vmaudit.judge.verdict import exit_code
from vmaudit.models import ScanReport
from vmaudit.report import csv, cyclonedx, html, json, junit, table


class Format(StrEnum):
    TABLE = "table"
    CSV = "csv"
    JSON = "json"
    JUNIT = "junit"
    HTML = "html"
    CYCLONEDX = "cyclonedx"  # one CycloneDX BOM per audited image, a line each


def render(
    report: ScanReport, fmt: Format, *, color: bool = False, width: int | None = None
) -> str:
    """The report as text in ``fmt``; ``color``/``width`` only affect the table."""
    if fmt is Format.TABLE:
        return table.render(report, color=color, width=width)
    if fmt is Format.CSV:
        return csv.render(report)
    if fmt is Format.JSON:
        return json.render(report)
    if fmt is Format.JUNIT:
        return junit.render(report)
    if fmt is Format.HTML:
        return html.render(report)
    if fmt is Format.CYCLONEDX:
        return cyclonedx.render(report)
    assert_never(fmt)


__all__ = ["Format", "exit_code", "render"]
