"""``vmaudit gate decisions``: the gate's recorded power-on decisions, as a table or JSON."""

from __future__ import annotations

import json
from collections.abc import Sequence

from tabulate import tabulate

from vmaudit.models import PowerOn, to_jsonable
from vmaudit.report.common import terminal_safe


def render_power_ons(decisions: Sequence[PowerOn], fmt: str) -> str:
    if fmt == "json":
        return json.dumps([to_jsonable(d) for d in decisions], indent=2) + "\n"
    rows = [
        [
            d.at,
            d.source,
            terminal_safe(d.domain or "-"),
            d.decision,
            "yes" if d.details.get("from_cache") else "no",
            terminal_safe(d.reason),
        ]
        for d in decisions
    ]
    headers = ["at", "source", "domain", "decision", "cached", "reason"]
    return tabulate(rows, headers=headers, tablefmt="simple", disable_numparse=True) + "\n"
