"""The scan report as one self-contained HTML page (spec/report.md, HTML) for an auditor.

Nothing is fetched: the CSS and a small sorting script are inline, the charts are SVG drawn
here (the ranking: each image's exposure as a bar stacked by severity, riskiest on top),
and a Content-Security-Policy forbids any fetch should a string slip through. Every
guest-controlled string (paths, host names, user and package names, messages, evidence)
goes through ``_text``: control and reordering characters shown as ``\\xNN``, then
HTML-escaped quotes included. The script is a constant that carries no data; it sorts by
the cells' ``data-value`` attributes, so nothing from a guest is ever inside ``<script>``.
"""

from __future__ import annotations

import html
import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import vmaudit
from vmaudit.judge.missed import missed, missed_text
from vmaudit.judge.risk import exposure_by_severity, level_of, why
from vmaudit.models import SEVERITIES, ImageResult, ScanReport, to_jsonable
from vmaudit.report.common import (
    common_folder,
    exposure_text,
    os_text,
    severity_counts,
    sort_by_risk,
    terminal_safe,
    vm_label,
)
from vmaudit.report.facts_view import POWER_ON_COLUMNS, power_on_rows
from vmaudit.report.json import report_dict
from vmaudit.timeutil import parse_iso, utc_now

CONTENT_SECURITY_POLICY = (
    "default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; "
    "img-src data:; base-uri 'none'; form-action 'none'"
)
UNASSIGNED = "(no application)"
LEVEL_COLORS = {
    "critical": "#b71c1c",
    "high": "#e65100",
    "medium": "#c79100",
    "low": "#1565c0",
    "none": "#2e7d32",
}
# Sort ranks so that a numeric sort of these columns follows their meaning, not the alphabet.
SEVERITY_COLORS = {
    "critical": "#b71c1c",
    "high": "#e65100",
    "medium": "#c79100",
    "low": "#1565c0",
    "info": "#607d8b",
}
LEVEL_RANK = {"none": 0, "low": 1, "medium": 2, "high": 3, "critical": 4}
CRITICALITY_RANK = {"low": 1, "medium": 2, "high": 3, "critical": 4}
LABEL_CHARS = 30  # application names longer than this are cut in the chart (full in a tooltip)
RANKING_LABEL_CHARS = 42  # image names in the ranking chart, likewise


def _text(value: object) -> str:
    """Guest text made inert for HTML, in element content and in quoted attributes alike."""
    return html.escape(terminal_safe(str(value)), quote=True)


def _evidence(evidence: dict[str, Any]) -> str:
    if not evidence:
        return ""
    return _text(json.dumps(evidence, sort_keys=True, ensure_ascii=False, default=str))


# ---------------------------------------------------------------- charts


@dataclass(frozen=True)
class ApplicationRisk:
    """Risk of the audited images of one business application."""

    application: str
    images: int
    max_score: float
    mean_score: float


def risk_by_application(results: Sequence[ImageResult]) -> list[ApplicationRisk]:
    """Per application (audited images only), riskiest first; unmapped images grouped."""
    scores: dict[str, list[float]] = {}
    for result in results:
        if result.error is None:
            name = result.business.application or UNASSIGNED
            scores.setdefault(name, []).append(result.risk.score)
    rows = [
        ApplicationRisk(name, len(values), max(values), sum(values) / len(values))
        for name, values in scores.items()
    ]
    return sorted(rows, key=lambda row: (-row.max_score, -row.mean_score, row.application))


def _short(label: str, chars: int = LABEL_CHARS) -> str:
    return label if len(label) <= chars else label[: chars - 1] + "…"


def _image_label(path: str, folder: str) -> str:
    return os.path.relpath(path, folder) if folder else path


def ranking_chart(ranked: Sequence[ImageResult]) -> str:
    """One bar per audited image, riskiest on top: its exposure, stacked by severity.

    A bar's length is the image's exposure ``X`` on a linear axis, each segment what one
    severity's findings bring (``vmaudit.judge.risk.exposure_by_severity``), so the ranking and
    what drives it read from lengths and colours alone; the numbers are in tooltips.
    """
    audited = [result for result in ranked if result.error is None]
    if not audited:
        return '<p class="empty">No audited image: nothing to rank.</p>'
    folder = common_folder(audited)
    label_width, bar_width, row_height, top = 310, 460, 22, 30
    width = label_width + bar_width + 90
    height = top + row_height * len(audited) + 30
    largest = max((r.risk.exposure or 0.0) for r in audited) or 1.0
    parts = [
        f'<svg class="chart" id="chart-ranking" role="img" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}">',
        "<title>Images ranked by exposure, stacked by the severity of their findings</title>",
    ]
    legend_x = label_width
    for severity in SEVERITIES[:-1]:  # info weighs nothing: it never has a segment
        parts.append(
            f'<rect x="{legend_x}" y="6" width="10" height="10" '
            f'fill="{SEVERITY_COLORS[severity]}"/>'
            f'<text x="{legend_x + 14}" y="15" class="legend">{severity}</text>'
        )
        legend_x += 80
    for index, result in enumerate(audited):
        y = top + index * row_height
        path = _text(result.image.path)
        why_text = why(result)
        tip = _text(
            f"{result.image.path}: exposure {exposure_text(result.risk)}, risk "
            f"{result.risk.score:.1f} ({result.risk.level})" + (f"; {why_text}" if why_text else "")
        )
        parts.append(
            f'<g class="bar-row" data-path="{path}" '
            f'data-exposure="{_text(exposure_text(result.risk))}"><title>{tip}</title>'
            f'<text x="{label_width - 8}" y="{y + 14}" text-anchor="end" class="label">'
            f"{_text(_short(_image_label(result.image.path, folder), RANKING_LABEL_CHARS))}</text>"
        )
        x = float(label_width)
        for severity, exposure in exposure_by_severity(result).items():
            if exposure <= 0:
                continue
            length = bar_width * exposure / largest
            parts.append(
                f'<rect x="{x:.2f}" y="{y + 3}" width="{length:.2f}" height="14" '
                f'fill="{SEVERITY_COLORS[severity]}" data-severity="{severity}" '
                f'data-exposure="{exposure:.2f}"/>'
            )
            x += length
        parts.append(
            f'<text x="{x + 6:.2f}" y="{y + 14}" class="value">'
            f"{_text(exposure_text(result.risk))}</text></g>"
        )
    axis_y = top + row_height * len(audited) + 14
    parts.append(
        f'<text x="{label_width}" y="{axis_y}" class="axis">exposure W × D × C '
        f"(longest bar {largest:.1f}); risk score = 100 × (1 − e^(−exposure/200))</text>"
        "</svg>"
    )
    return "".join(parts)


def application_chart(rows: Sequence[ApplicationRisk]) -> str:
    """Horizontal bars: maximum and mean risk score (0-100) of each application."""
    if not rows:
        return '<p class="empty">No audited image: nothing to chart.</p>'
    label_width, bar_width, row_height, top = 230, 440, 34, 28
    width = label_width + bar_width + 60
    height = top + row_height * len(rows) + 30
    parts = [
        f'<svg class="chart" id="chart-applications" role="img" width="{width}" '
        f'height="{height}" viewBox="0 0 {width} {height}">',
        "<title>Risk score by application: maximum and mean</title>",
    ]
    for tick in range(0, 101, 25):
        x = label_width + bar_width * tick / 100
        parts.append(
            f'<line x1="{x:.1f}" y1="{top - 6}" x2="{x:.1f}" y2="{height - 24}" class="grid"/>'
            f'<text x="{x:.1f}" y="{height - 8}" class="tick" text-anchor="middle">{tick}</text>'
        )
    for index, row in enumerate(rows):
        y = top + index * row_height
        name = _text(row.application)
        summary = _text(
            f"{row.application}: {row.images} image(s), max {row.max_score}, "
            f"mean {row.mean_score:.1f}"
        )
        max_len = bar_width * row.max_score / 100
        mean_len = bar_width * row.mean_score / 100
        parts.append(
            f'<g class="bar-row"><title>{summary}</title>'
            f'<text x="{label_width - 8}" y="{y + 17}" text-anchor="end" class="label">'
            f"{_text(_short(row.application))}</text>"
            f'<rect x="{label_width}" y="{y + 4}" width="{max_len:.1f}" height="12" '
            f'fill="{LEVEL_COLORS[level_of(row.max_score)]}" data-application="{name}" '
            f'data-kind="max"/>'
            f'<rect x="{label_width}" y="{y + 18}" width="{mean_len:.1f}" height="8" '
            f'fill="#78909c" data-application="{name}" data-kind="mean"/>'
            f'<text x="{label_width + max_len + 6:.1f}" y="{y + 15}" class="value">'
            f"{row.max_score:.1f}</text></g>"
        )
    parts.append(
        f'<text x="{label_width}" y="14" class="legend">'
        f'<tspan fill="{LEVEL_COLORS["high"]}">■</tspan> maximum  '
        f'<tspan fill="#78909c">■</tspan> mean  (risk score 0–100)</text></svg>'
    )
    return "".join(parts)


def _nice_ceiling(value: int) -> int:
    """A round upper bound for an axis: 30, 60, 90, 180, 365 days, then hundreds."""
    for bound in (30, 60, 90, 180, 365):
        if value <= bound:
            return bound
    return math.ceil(value / 100) * 100


def dormancy_chart(results: Sequence[ImageResult]) -> str:
    """Scatter of risk score against days idle, one point per audited image."""
    points = [
        (result, result.facts.dormancy.days_idle)
        for result in results
        if result.error is None
        and result.facts is not None
        and result.facts.dormancy.days_idle is not None
    ]
    unknown = sum(1 for r in results if r.error is None) - len(points)
    note = (
        f'<p class="note">{unknown} audited image(s) without a known idle time are not plotted.</p>'
        if unknown
        else ""
    )
    if not points:
        return '<p class="empty">No audited image with a known idle time.</p>' + note
    left, right, top, bottom = 50, 20, 20, 40
    plot_width, plot_height = 620, 260
    width, height = left + plot_width + right, top + plot_height + bottom
    x_max = _nice_ceiling(max(days for _, days in points if days is not None))
    parts = [
        f'<svg class="chart" id="chart-dormancy" role="img" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}">',
        "<title>Risk score against days idle</title>",
    ]
    for step in range(5):
        risk = step * 25
        y = top + plot_height - plot_height * risk / 100
        parts.append(
            f'<line x1="{left}" y1="{y:.1f}" x2="{left + plot_width}" y2="{y:.1f}" class="grid"/>'
            f'<text x="{left - 6}" y="{y + 4:.1f}" class="tick" text-anchor="end">{risk}</text>'
        )
        days = x_max * step / 4
        x = left + plot_width * step / 4
        parts.append(
            f'<text x="{x:.1f}" y="{top + plot_height + 16}" class="tick" '
            f'text-anchor="middle">{days:.0f}</text>'
        )
    parts.append(
        f'<text x="{left + plot_width / 2:.1f}" y="{height - 4}" class="axis" '
        f'text-anchor="middle">days idle</text>'
        f'<text x="12" y="{top + plot_height / 2:.1f}" class="axis" text-anchor="middle" '
        f'transform="rotate(-90 12 {top + plot_height / 2:.1f})">risk score</text>'
    )
    for result, days in points:
        assert days is not None
        x = left + plot_width * min(days, x_max) / x_max
        y = top + plot_height - plot_height * result.risk.score / 100
        tip = _text(f"{result.image.path}: risk {result.risk.score:.1f}, {days} days idle")
        parts.append(
            f'<circle cx="{x:.1f}" cy="{y:.1f}" r="5" '
            f'fill="{LEVEL_COLORS[result.risk.level]}" data-days="{days}" '
            f'data-risk="{result.risk.score}"><title>{tip}</title></circle>'
        )
    parts.append("</svg>")
    return "".join(parts) + note


# ---------------------------------------------------------------- sections


def _summary(report: ScanReport) -> str:
    summary = report_dict(report)["summary"]
    cells = [
        ("images", summary["images"]),
        ("audited", summary["audited"]),
        ("errors", summary["errors"]),
        ("from cache", summary["from_cache"]),
        *((severity, summary["findings"][severity]) for severity in SEVERITIES),
        ("exit code", summary["exit_code"]),
    ]
    items = "".join(
        f'<div class="stat" data-stat="{_text(label)}"><span class="count">{value}</span>'
        f'<span class="what">{_text(label)}</span></div>'
        for label, value in cells
    )
    return f'<section id="summary"><h2>Summary</h2><div class="stats">{items}</div></section>'


def _baselines(report: ScanReport) -> str:
    if not report.baselines:
        return '<section id="baselines"><h2>Baselines</h2><p>None recorded.</p></section>'
    items = "".join(f"<li>{_text(name)}</li>" for name in report.baselines)
    return (
        f'<section id="baselines"><h2>Baselines used</h2><ul>{items}</ul>'
        f"<p>Fail on: <strong>{_text(report.fail_on or 'unknown')}</strong></p></section>"
    )


# (heading, numeric) for each column of the images table.
IMAGE_COLUMNS: tuple[tuple[str, bool], ...] = (
    ("Image", False),
    ("OS", False),
    ("Hostname", False),
    ("Application", False),
    ("Owner", False),
    ("Criticality", True),
    ("Days idle", True),
    *((severity.capitalize(), True) for severity in SEVERITIES),
    ("Exposure", True),
    ("Risk", True),
    ("Level", True),
    ("Why", False),
    ("Status", False),
)


def _cell(text: str, value: object | None = None, css: str = "") -> str:
    attributes = f' data-value="{_text(value)}"' if value is not None else ""
    if css:
        attributes += f' class="{css}"'
    return f"<td{attributes}>{text}</td>"


def _image_row(index: int, result: ImageResult) -> str:
    facts = result.facts
    counts = severity_counts(result.findings)
    idle = facts.dormancy.days_idle if facts is not None else None
    criticality = result.business.criticality
    if result.error is None:
        level = result.risk.level
        exposure = result.risk.exposure
        risk_cells = [
            _cell(_text(exposure_text(result.risk)), "" if exposure is None else exposure, "num"),
            _cell(f"{result.risk.score:.1f}", result.risk.score, "num"),
            _cell(
                f'<span class="level level-{_text(level)}">{_text(level)}</span>',
                LEVEL_RANK.get(level, 0),
            ),
            _cell(_text(why(result)), css="why"),
        ]
        status = "cached" if result.from_cache else "audited"
    else:
        # An image in error has no score: empty values sort after every scored image.
        risk_cells = [
            _cell("–", "", "num"),
            _cell("–", "", "num"),
            _cell('<span class="level level-error">error</span>', ""),
            _cell(""),
        ]
        status = f"error: {_text(result.error.kind)}"
    vm = f'<br><span class="vm">VM {_text(result.image.vm)}</span>' if result.image.vm else ""
    if vm_label(result.image):  # a hypervisor's guest: source, template, state
        vm = f'<br><span class="vm">{_text(vm_label(result.image))}</span>'
    cells = [
        _cell(
            f'<a href="#image-{index}">{_text(result.image.path)}</a>{vm}',
            result.image.path,
            "path",
        ),
        _cell(_text(os_text(result))),
        _cell(_text((facts.os.hostname or "") if facts is not None else "")),
        _cell(_text(result.business.application or "")),
        _cell(_text(result.business.owner or "")),
        _cell(_text(criticality), CRITICALITY_RANK.get(criticality, 0)),
        _cell("" if idle is None else str(idle), "" if idle is None else idle, "num"),
        *(_cell(str(counts[s]), counts[s], "num") for s in SEVERITIES),
        *risk_cells,
        _cell(status),
    ]
    return f'<tr id="row-{index}">{"".join(cells)}</tr>'


def _images_table(ordered: Sequence[tuple[int, ImageResult]]) -> str:
    headers = []
    for heading, numeric in IMAGE_COLUMNS:
        # The table starts in sort_by_risk order: say so to screen readers and the script.
        sort_state = "descending" if heading == "Exposure" else "none"
        headers.append(
            f'<th scope="col" data-type="{"number" if numeric else "text"}" '
            f'aria-sort="{sort_state}"><button type="button">{heading}</button></th>'
        )
    rows = "".join(_image_row(index, result) for index, result in ordered)
    return (
        '<section id="images"><h2>Images</h2>'
        '<p class="hint">Click a column heading to sort; click again to reverse.</p>'
        '<div class="scroll"><table class="sortable" id="images-table">'
        f"<thead><tr>{''.join(headers)}</tr></thead><tbody>{rows}</tbody></table></div>"
        "</section>"
    )


def _power_on(result: ImageResult) -> str:
    """A Linux guest's "what runs at power-on", folded (its facts' ``config.linux``)."""
    linux = result.facts.config.linux if result.facts is not None else None
    if linux is None:
        return ""
    rows = power_on_rows(to_jsonable(linux))
    body = "".join(
        "<tr>" + "".join(f"<td>{_text(row.get(c) or '-')}</td>" for c in POWER_ON_COLUMNS) + "</tr>"
        for row in rows
    )
    head = "".join(f"<th>{c}</th>" for c in POWER_ON_COLUMNS)
    table = (
        '<table class="findings power-on">'
        f"<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
        if rows
        else "<p>Nothing starts at power-on.</p>"
    )
    return (
        f'<details class="power-on"><summary>what runs at power-on ({len(rows)})</summary>'
        f"{table}</details>"
    )


def _image_details(index: int, result: ImageResult, scanned: datetime) -> str:
    title = _text(result.image.path)
    if result.error is not None:
        body = (
            '<table class="findings"><thead><tr><th>kind</th><th>message</th></tr></thead>'
            f'<tbody><tr class="error-row"><td>{_text(result.error.kind)}</td>'
            f"<td>{_text(result.error.message)}</td></tr></tbody></table>"
        )
    elif result.findings:
        rows = "".join(
            f'<tr class="finding finding-{_text(f.severity)}"><td><code>{_text(f.rule)}</code></td>'
            f'<td><span class="sev sev-{_text(f.severity)}">{_text(f.severity)}</span></td>'
            f"<td>{_text(f.subject)}</td><td>{_text(f.message)}</td>"
            f"<td><code>{_evidence(f.evidence)}</code></td><td>{_text(f.baseline)}</td></tr>"
            for f in result.findings
        )
        body = (
            '<table class="findings"><thead><tr><th>rule</th><th>severity</th>'
            "<th>subject</th><th>message</th><th>evidence</th><th>baseline</th></tr></thead>"
            f"<tbody>{rows}</tbody></table>"
        )
    elif not result.not_judged:
        checked = len(result.rules_evaluated)
        body = f'<p class="clean">No finding ({checked} rule(s) evaluated).</p>'
    else:
        body = ""
    if result.not_judged:
        rows = "".join(
            f'<tr class="not-judged"><td><code>{_text(entry.rule)}</code></td>'
            f"<td>not judged</td><td>{_text(entry.reason)}</td></tr>"
            for entry in result.not_judged
        )
        body += (
            '<table class="findings not-judged"><thead><tr><th>rule</th><th>result</th>'
            f"<th>why (a section could not be read)</th></tr></thead><tbody>{rows}</tbody></table>"
        )
    meta = []
    if result.error is None and not result.complete:
        meta.append("<strong>incomplete audit</strong>")
    if result.error is None:
        meta.append(
            f"risk {result.risk.score:.1f} ({_text(result.risk.level)}), exposure "
            f"{_text(exposure_text(result.risk))}"
        )
        why_text = why(result)
        if why_text:
            meta.append(f"largest shares: {_text(why_text)}")
    asleep = missed(result, scanned)
    if asleep is not None:
        meta.append(f"missed while asleep: {_text(missed_text(asleep))}")
    if result.business.application:
        meta.append(f"application {_text(result.business.application)}")
    if result.from_cache:
        meta.append("facts from cache")
    warnings = _power_on(result)
    if result.facts is not None and result.facts.warnings:
        items = "".join(f"<li>{_text(w)}</li>" for w in result.facts.warnings)
        warnings += (
            f'<details class="warnings"><summary>warnings</summary><ul>{items}</ul></details>'
        )
    return (
        f'<section class="image" id="image-{index}"><h3>{title}</h3>'
        f'<p class="meta">{" · ".join(meta)}</p>{body}{warnings}</section>'
    )


def _errors(ordered: Sequence[tuple[int, ImageResult]]) -> str:
    failed = [(i, r) for i, r in ordered if r.error is not None]
    if not failed:
        return ""
    rows = "".join(
        f'<tr class="error-row"><td><a href="#image-{index}">{_text(result.image.path)}</a></td>'
        f"<td>{_text(result.error.kind)}</td><td>{_text(result.error.message)}</td></tr>"
        for index, result in failed
        if result.error is not None
    )
    return (
        '<section id="errors"><h2>Images not audited</h2><table class="errors">'
        "<thead><tr><th>image</th><th>kind</th><th>message</th></tr></thead>"
        f"<tbody>{rows}</tbody></table></section>"
    )


STYLE = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;margin:0 2rem 3rem;color:#212121}
h1{font-size:1.5rem;margin:1.2rem 0 .2rem}h2{margin-top:2rem;border-bottom:1px solid #ddd}
h3{font-size:1rem;word-break:break-all;margin-bottom:.2rem}
.stats{display:flex;flex-wrap:wrap;gap:.6rem}
.stat{border:1px solid #ddd;border-radius:6px;padding:.4rem .8rem;min-width:5.5rem}
.stat .count{display:block;font-size:1.4rem;font-weight:600}.stat .what{color:#555}
table{border-collapse:collapse;margin:.4rem 0}th,td{border:1px solid #ddd;padding:.25rem .5rem;
vertical-align:top;text-align:left}td.num{text-align:right;font-variant-numeric:tabular-nums}
th button{font:inherit;font-weight:600;border:0;background:none;cursor:pointer;padding:0}
th[aria-sort=ascending] button::after{content:" ▲"}
th[aria-sort=descending] button::after{content:" ▼"}
td{overflow-wrap:break-word;max-width:20rem}td.path{overflow-wrap:anywhere;min-width:12rem}
.scroll{overflow-x:auto}
.level,.sev{padding:0 .35rem;border-radius:3px;color:#fff;font-weight:600;white-space:nowrap}
tr.finding-critical td:first-child{border-left:4px solid #b71c1c}
tr.finding-high td:first-child{border-left:4px solid #e65100}
tr.finding-medium td:first-child{border-left:4px solid #c79100}
tr.finding-low td:first-child{border-left:4px solid #1565c0}
.level-critical,.sev-critical{background:#b71c1c}.level-high,.sev-high{background:#e65100}
.level-medium,.sev-medium{background:#c79100}.level-low,.sev-low{background:#1565c0}
.level-none{background:#2e7d32}.sev-info{background:#607d8b}.level-error{background:#6a1b9a}
tr.error-row td{background:#f3e5f5}.vm,.meta,.note,.hint{color:#666}
code{font-size:.85em;white-space:pre-wrap;word-break:break-all}
.chart .grid{stroke:#e0e0e0}.chart text{font-size:11px;fill:#424242}
.chart .label{font-size:12px}.chart .axis,.chart .legend{font-size:12px}
.charts{display:flex;flex-wrap:wrap;gap:2rem}td.why{min-width:14rem}
"""

# Constant, data-free: it only reorders rows by their cells' data-value (or text).
SCRIPT = """
(function () {
  "use strict";
  function keyOf(cell, numeric) {
    var raw = cell.hasAttribute("data-value") ? cell.getAttribute("data-value")
                                             : cell.textContent;
    if (!numeric) { return raw.trim().toLowerCase(); }
    if (raw === "") { return null; }
    var number = Number(raw);
    return isNaN(number) ? null : number;
  }
  function sortBy(table, column, header) {
    var numeric = header.getAttribute("data-type") === "number";
    var descending = header.getAttribute("aria-sort") === "ascending";
    var headers = table.tHead.rows[0].cells;
    for (var h = 0; h < headers.length; h++) { headers[h].setAttribute("aria-sort", "none"); }
    header.setAttribute("aria-sort", descending ? "descending" : "ascending");
    var body = table.tBodies[0];
    var items = Array.prototype.map.call(body.rows, function (row, index) {
      return {row: row, index: index, key: keyOf(row.cells[column], numeric)};
    });
    items.sort(function (a, b) {
      if (a.key === b.key) { return a.index - b.index; }
      if (a.key === null) { return 1; }   // no value: last, whichever the direction
      if (b.key === null) { return -1; }
      var order = numeric ? (a.key < b.key ? -1 : 1) : a.key.localeCompare(b.key);
      if (order === 0) { return a.index - b.index; }
      return descending ? -order : order;
    });
    items.forEach(function (item) { body.appendChild(item.row); });
  }
  Array.prototype.forEach.call(document.querySelectorAll("table.sortable"), function (table) {
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function (header, column) {
      var button = header.querySelector("button");
      if (button) {
        button.addEventListener("click", function () { sortBy(table, column, header); });
      }
    });
  });
})();
"""


def render(report: ScanReport) -> str:
    """The whole page; indices tie each table row to its image's findings section."""
    ordered = list(enumerate(sort_by_risk(report.results), start=1))
    results = [result for _, result in ordered]
    title = f"vmaudit report {report.finished_at}"
    scanned = parse_iso(report.started_at) or utc_now()
    details = "".join(_image_details(index, result, scanned) for index, result in ordered)
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{CONTENT_SECURITY_POLICY}">'
        '<meta name="referrer" content="no-referrer">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{_text(title)}</title><style>{STYLE}</style></head><body>"
        f'<header><h1>vmaudit report</h1><p class="meta">vmaudit {_text(vmaudit.__version__)}'
        f" · started {_text(report.started_at)} · finished {_text(report.finished_at)}</p>"
        "</header>"
        f"{_summary(report)}{_baselines(report)}"
        '<section id="charts"><h2>Risk</h2>'
        '<figure class="ranking"><figcaption>Images by exposure, stacked by severity'
        f"</figcaption>{ranking_chart(results)}</figure>"
        '<div class="charts">'
        f"<figure><figcaption>Score by application</figcaption>"
        f"{application_chart(risk_by_application(results))}</figure>"
        f"<figure><figcaption>By days idle</figcaption>{dormancy_chart(results)}</figure>"
        "</div></section>"
        f"{_images_table(ordered)}{_errors(ordered)}"
        f'<section id="findings"><h2>Findings by image</h2>{details}</section>'
        f"<script>{SCRIPT}</script></body></html>\n"
    )
