"""Report formats: an enum and an exhaustive factory; formatters never call the engine.

Each format is a module with ``render(report) -> str``. ``render`` picks it; the final
``assert_never`` makes mypy refuse a format without a formatter. A formatter is imported
when it is asked for, so a command that renders nothing (the power-on hook) pays for none.
"""

from __future__ import annotations

from enum import StrEnum
from typing import assert_never

from vmaudit.judge.verdict import exit_code
from vmaudit.models import ScanReport


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
        from vmaudit.report import table

        return table.render(report, color=color, width=width)
    if fmt is Format.CSV:
        from vmaudit.report import csv

        return csv.render(report)
    if fmt is Format.JSON:
        from vmaudit.report import json

        return json.render(report)
    if fmt is Format.JUNIT:
        from vmaudit.report import junit

        return junit.render(report)
    if fmt is Format.HTML:
        from vmaudit.report import html

        return html.render(report)
    if fmt is Format.CYCLONEDX:
        from vmaudit.report import cyclonedx

        return cyclonedx.render(report)
    assert_never(fmt)


__all__ = ["Format", "exit_code", "render"]
