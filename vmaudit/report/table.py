"""The terminal report: a rich table of images by risk, then the riskiest images' findings.

Images rank by exposure (``vmaudit.judge.risk``), shown beside the score: where several scores
round to 100 the exposure still tells them apart, and the last column says what brings
the most of it.

Every guest string goes in as ``rich.text.Text`` (never parsed as markup) after its
control characters are escaped. Without colour the output carries no escape sequence
at all, which is what a pipe or ``NO_COLOR`` asks for.
"""

from __future__ import annotations

import io
import os
from datetime import datetime

from rich import box
from rich.console import Console, Group, RenderableType
from rich.table import Table
from rich.text import Text

from vmaudit.judge.missed import missed, missed_text
from vmaudit.judge.risk import why
from vmaudit.models import SEVERITIES, ImageResult, ScanReport
from vmaudit.report.common import (
    common_folder,
    exposure_text,
    os_text,
    score_text,
    severity_counts,
    sort_by_risk,
    terminal_safe,
    vm_label,
)
from vmaudit.timeutil import parse_iso, utc_now

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
IMAGE_CHARS = 40  # an image name longer than this folds


def _text(value: str | None, style: str = "") -> Text:
    return Text(terminal_safe(value or ""), style=style)


def _image_cell(name: str, label: str | None) -> Text:
    """The image's name and, on a line of its own, what its hypervisor calls it (each line
    made safe on its own: the line break is ours, never the guest's)."""
    cell = _text(name)
    if label:
        cell.append("\n")
        cell.append_text(_text(label, "dim"))
    return cell


def _short(path: str, folder: str) -> str:
    return os.path.relpath(path, folder) if folder else path


def _images_table(results: list[ImageResult], folder: str) -> Table:
    title = "vmaudit: images by risk" + (f" under {folder}" if folder else "")
    # Collapsed padding: one space and the divider between columns, so that sixteen
    # columns fit in 160 characters.
    table = _titled(terminal_safe(title))
    # The image names the row: it keeps its whole width (up to a point) and the other text
    # columns fold first.
    names = [len(terminal_safe(_short(r.image.path, folder))) for r in results]
    # a fixed width counts the padding too
    width = min(max(names, default=5), IMAGE_CHARS) + 2
    table.add_column("image", overflow="fold", width=width)
    for column in ("OS", "hostname", "application", "days idle"):
        table.add_column(column, overflow="fold")
    for severity in SEVERITIES:
        table.add_column(severity[:4], justify="right")
    table.add_column("exposure", justify="right", no_wrap=True)
    table.add_column("risk", justify="right", no_wrap=True)
    table.add_column("level", no_wrap=True, min_width=max(len(level) for level in LEVEL_STYLES))
    for result in results:
        facts = result.facts
        counts = severity_counts(result.findings)
        idle = facts.dormancy.days_idle if facts is not None else None
        if result.error is not None:
            risk_cells = [
                _text("-"),
                _text("-"),
                _text(f"error: {result.error.kind}", "bold magenta"),
            ]
        else:
            style = LEVEL_STYLES[result.risk.level]
            risk_cells = [
                _text(exposure_text(result.risk)),
                _text(score_text(result.risk), style),
                _text(result.risk.level, style),
            ]
        label = vm_label(result.image)  # a hypervisor's guest: its name and state
        table.add_row(
            _image_cell(_short(result.image.path, folder), label),
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


def _titled(title: str) -> Table:
    """A table of the report: its title on the left, one space between columns."""
    return Table(title=title, box=box.SIMPLE_HEAD, title_justify="left", collapse_padding=True)


def _why_table(results: list[ImageResult], folder: str) -> Table | None:
    """Why each image ranks where it does: the largest shares of its exposure."""
    ranked = [r for r in results if r.error is None and r.risk.exposure]
    if not ranked:
        return None
    table = _titled("why they rank: the largest shares of each image's exposure")
    table.add_column("#", justify="right", no_wrap=True)
    table.add_column("image", overflow="fold")
    table.add_column("exposure", justify="right", no_wrap=True)
    table.add_column("largest shares", overflow="fold")
    for place, result in enumerate(ranked, start=1):
        table.add_row(
            _text(str(place)),
            _text(_short(result.image.path, folder)),
            _text(exposure_text(result.risk)),
            _text(why(result)),
        )
    return table


def _missed_table(results: list[ImageResult], folder: str, scanned: datetime) -> Table | None:
    """What each image missed while asleep (images judged against vulnerability feeds)."""
    rows = [(r, summary) for r in results if (summary := missed(r, scanned)) is not None]
    if not rows:
        return None
    table = _titled(
        "missed while asleep: advisories published after each image's last update or boot"
    )
    table.add_column("image", overflow="fold")
    table.add_column("missed", overflow="fold")
    for result, summary in rows:
        table.add_row(_text(_short(result.image.path, folder)), _text(missed_text(summary)))
    return table


def _findings_table(result: ImageResult, folder: str) -> Group:
    path = _short(result.image.path, folder)
    title = (
        f"{path} (risk {score_text(result.risk)}, {result.risk.level}; "
        f"exposure {exposure_text(result.risk)})"
    )
    table = Table(box=box.SIMPLE_HEAD)
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
    for entry in result.not_judged:
        table.add_row(
            _text("not judged", "bold magenta"), _text(entry.rule), _text(""), _text(entry.reason)
        )
    # The title on a line of its own: a table's title folds to the table's width.
    return Group(Text(""), _text(title), table)


def render(report: ScanReport, *, color: bool = False, width: int | None = None) -> str:
    results = sort_by_risk(report.results)
    folder = common_folder(results)
    parts: list[RenderableType] = [_images_table(results, folder)]
    reasons = _why_table(results, folder)
    if reasons is not None:
        parts.append(reasons)
    asleep = _missed_table(results, folder, parse_iso(report.started_at) or utc_now())
    if asleep is not None:
        parts.append(asleep)
    shown = [r for r in results if r.findings][:TOP_IMAGES]
    shown += [r for r in results if r.not_judged and r not in shown]  # never hidden
    for result in shown:
        parts.append(_findings_table(result, folder))
    errors = [r for r in results if r.error is not None]
    for result in errors:
        assert result.error is not None
        parts.append(
            Text.assemble(
                ("error ", "bold magenta" if color else ""),
                terminal_safe(
                    f"{_short(result.image.path, folder)}: {result.error.kind}: "
                    f"{result.error.message}"
                ),
            )
        )
    incomplete = sum(1 for r in results if r.error is None and not r.complete)
    incomplete_note = f" ({incomplete} incompletely: rules not judged)" if incomplete else ""
    counts = severity_counts(f for r in results for f in r.findings)
    summary = ", ".join(f"{counts[s]} {s}" for s in SEVERITIES)
    parts.append(
        Text(
            terminal_safe(
                f"{len(results)} image(s), {len(results) - len(errors)} audited"
                f"{incomplete_note}, {len(errors)} in "
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
