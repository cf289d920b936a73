"""``vmaudit history IMAGE``: one image's recorded scans and events, as a table or JSON.

The score reads as in ``vmaudit report``'s table; the exposure beside it is what compares
across scans. A score recorded by the capped formula of an older vmaudit that could not be
recomputed (``vmaudit.state.schema``, v3) has no exposure and says so.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from tabulate import tabulate

from vmaudit.models import HistoryEntry, HistoryEvent, to_jsonable
from vmaudit.report.common import exposure_text, score_text, terminal_safe

CAPPED = "unknown (capped score of schema v2)"


def change_summary(changes: dict[str, Any]) -> str:
    """A short line naming what changed: ``packages: 3 upgraded; users: 1 added``."""
    parts = []
    for section, detail in sorted(changes.items()):
        if isinstance(detail, dict):
            counts = [
                f"{len(v)} {k}"
                for k, v in sorted(detail.items())
                if isinstance(v, (list, dict)) and v
            ]
            parts.append(f"{section}: {', '.join(counts)}" if counts else section)
        else:
            parts.append(section)
    return "; ".join(parts)


def event_text(event: HistoryEvent) -> str:
    """``modified (packages: 3 upgraded)``; a gate's decision as ``power-on: refuse (libvirt)``."""
    if event.kind == "power-on":
        return f"power-on: {event.changes.get('decision')} ({event.changes.get('source')})"
    return event.kind + (f" ({change_summary(event.changes)})" if event.changes else "")


def render_history(entries: Sequence[HistoryEntry], fmt: str) -> str:
    if fmt == "json":
        return json.dumps([to_jsonable(entry) for entry in entries], indent=2) + "\n"
    rows = []
    for entry in entries:
        events = ", ".join(event_text(event) for event in entry.events)
        if entry.risk is None or entry.error is not None:
            risk, exposure = "-", "-"
        else:
            risk = f"{score_text(entry.risk)} {entry.risk.level}"
            exposure = CAPPED if entry.risk.exposure is None else exposure_text(entry.risk)
        status = entry.status if entry.error is None else f"error: {entry.error.kind}"
        rows.append(
            [
                entry.scan_started_at,
                status,
                risk,
                exposure,
                entry.findings_count,
                "yes" if entry.from_cache else "no",
                terminal_safe(events) or "-",
            ]
        )
    headers = ["scan", "status", "risk", "exposure", "findings", "cached", "events"]
    return tabulate(rows, headers=headers, tablefmt="simple", disable_numparse=True) + "\n"
