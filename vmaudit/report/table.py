"""The terminal report: a rich table of images by risk, then the riskiest images' findings.

Every guest string goes in as ``rich.text.Text`` (never parsed as markup) after its
control characters are escaped. Without colour the output carries no escape sequence
at all, which is what a pipe or ``NO_COLOR`` asks for.
"""

from __future__ import annotations

import io
import os

from rich import box
from rich.console import Console, Group, RenderableType
from rich.table import Table
from rich.text import Text

from vmaudit.models import SEVERITIES, ImageResult, ScanReport
from vmaudit.report.common import os_text, severity_counts, sort_by_risk, terminal_safe

LEVEL_STYLES = {
    "critical": "bold white on red",
    "high": "bold red",
    "medium": "yellow",
    "low": "cyan",
    "none": "green",
}
SEVERITY_STYLES = {
    "critical": "bold red",
    "high": "red",
    "medium": "yellow",
    "low": "cyan",
    "info": "dim",
}
TOP_IMAGES = 5  # how many of the riskiest images have their findings listed
DEFAULT_WIDTH = 160


def _text(value: str | None, style: str = "") -> Text:
    return Text(terminal_safe(value or ""), style=style)


def common_folder(results: list[ImageResult]) -> str:
    """The folder all images lie under, so the table can name them by what differs."""
    folders = [os.path.dirname(r.image.path) for r in results if os.path.isabs(r.image.path)]
    if len(folders) != len(results) or not folders:
        return ""
    return os.path.commonpath(folders)


def _short(path: str, folder: str) -> str:
    return os.path.relpath(path, folder) if folder else path


def _images_table(results: list[ImageResult], folder: str) -> Table:
    title = "vmaudit: images by risk" + (f" under {folder}" if folder else "")
    table = Table(title=terminal_safe(title), box=box.SIMPLE_HEAD, title_justify="left")
    for column in ("image", "OS", "hostname", "application", "days idle"):
        table.add_column(column, overflow="fold")
    for severity in SEVERITIES:
        table.add_column(severity[:4], justify="right")
    table.add_column("risk", justify="right")
    table.add_column("level")
    for result in results:
        facts = result.facts
        counts = severity_counts(result.findings)
        idle = facts.dormancy.days_idle if facts is not None else None
        if result.error is not None:
            risk_cells = [_text("-"), _text(f"error: {result.error.kind}", "bold magenta")]
        else:
            risk_cells = [
                _text(str(result.risk.score), LEVEL_STYLES[result.risk.level]),
                _text(result.risk.level, LEVEL_STYLES[result.risk.level]),
            ]
        table.add_row(
            _text(_short(result.image.path, folder)),
            _text(os_text(result)),
            _text(facts.os.hostname if facts is not None else ""),
            _text(result.business.application),
            _text("" if idle is None else str(idle)),
            *(
                _text(str(counts[s]) if counts[s] else "", SEVERITY_STYLES[s] if counts[s] else "")
                for s in SEVERITIES
            ),
            *risk_cells,
        )
    return table


def _findings_table(result: ImageResult, folder: str) -> Table:
    path = _short(result.image.path, folder)
    title = f"{path} (risk {result.risk.score}, {result.risk.level})"
    table = Table(title=terminal_safe(title), box=box.SIMPLE_HEAD, title_justify="left")
    for column in ("severity", "rule", "subject", "message"):
        table.add_column(column, overflow="fold")
    order = {severity: rank for rank, severity in enumerate(SEVERITIES)}
    for finding in sorted(result.findings, key=lambda f: (order[f.severity], f.rule)):
        table.add_row(
            _text(finding.severity, SEVERITY_STYLES[finding.severity]),
            _text(finding.rule),
            _text(finding.subject),
            _text(finding.message),
        )
    return table


def render(report: ScanReport, *, color: bool = False, width: int | None = None) -> str:
    results = sort_by_risk(report.results)
    folder = common_folder(results)
    parts: list[RenderableType] = [_images_table(results, folder)]
    for result in [r for r in results if r.findings][:TOP_IMAGES]:
        parts.append(_findings_table(result, folder))
    errors = [r for r in results if r.error is not None]
    for result in errors:
        assert result.error is not None
        parts.append(
            Text.assemble(
                ("error ", "bold magenta" if color else ""),
                terminal_safe(f"{_short(result.image.path, folder)}: {result.error.kind}: "
                              f"{result.error.message}"),
            )
        )
    counts = severity_counts(f for r in results for f in r.findings)
    summary = ", ".join(f"{counts[s]} {s}" for s in SEVERITIES)
    parts.append(
        Text(
            terminal_safe(
                f"{len(results)} image(s), {len(results) - len(errors)} audited, {len(errors)} in "
                f"error; findings: {summary}; baselines: {', '.join(report.baselines)}; "
                f"fail on {report.fail_on}"
            )
        )
    )
    buffer = io.StringIO()
    console = Console(
        file=buffer,
        force_terminal=color,
        no_color=not color,
        color_system="standard" if color else None,
        width=width or DEFAULT_WIDTH,
        highlight=False,
        emoji=False,
        legacy_windows=False,
    )
    console.print(Group(*parts))
    return buffer.getvalue()
