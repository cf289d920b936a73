"""``vmaudit watch`` output: one JSON line or one table row per event."""

from __future__ import annotations

import json

from vmaudit.models import ImageResult, WatchEvent
from vmaudit.report.common import exposure_text, score_text, terminal_safe
from vmaudit.timeutil import iso_from_timestamp


def render_event(event: WatchEvent, result: ImageResult | None, fmt: str) -> str:
    at = iso_from_timestamp(event.at)
    data: dict[str, object] = {
        "event": event.kind,
        "at": at,
        "path": event.image.path,
        "vm": event.image.vm,
        "in_use": event.image.in_use,
    }
    if result is not None:
        data["status"] = result.status
        data["error"] = (
            {"kind": result.error.kind, "message": result.error.message} if result.error else None
        )
        data["risk"] = {
            "score": result.risk.score,
            "level": result.risk.level,
            "exposure": result.risk.exposure,
        }
        data["findings"] = [
            {"rule": f.rule, "severity": f.severity, "subject": f.subject} for f in result.findings
        ]
        data["hostname"] = result.facts.os.hostname if result.facts else None
    if fmt == "json":
        return json.dumps(data, ensure_ascii=False)
    cells = [at, event.kind, event.image.path]
    if result is not None:
        cells.append(
            f"error {result.error.kind}"
            if result.error
            else f"risk {score_text(result.risk)} {result.risk.level} "
            f"(exposure {exposure_text(result.risk)}), "
            f"{len(result.findings)} finding(s)"
        )
    if event.image.in_use:
        cells.append("in use")
    return terminal_safe("  ".join(cells))
