"""The scan report as JSON, schema ``vmaudit.report/v1`` (vmaudit/schemas/report.schema.json).

JSON escapes control characters itself; ``ensure_ascii`` keeps the output 7-bit so that
undecodable guest bytes (lone surrogates) cannot break the encoding of the file. Images
come riskiest first (by exposure, then path), as in every other format.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import vmaudit
from vmaudit.judge.missed import missed
from vmaudit.models import REPORT_SCHEMA, ImageResult, ScanReport, to_jsonable
from vmaudit.report.common import last_seen_running, severity_counts, sort_by_risk, vm_fields
from vmaudit.timeutil import parse_iso, utc_now


def _image(result: ImageResult, scanned: datetime) -> dict[str, Any]:
    facts = result.facts
    return {
        "path": result.image.path,
        "vm": vm_fields(result.image),
        "format": result.image.format,
        "status": result.status,
        "from_cache": result.from_cache,
        "in_use": result.image.in_use,
        "error": to_jsonable(result.error),
        "os": None
        if facts is None
        else {
            "type": facts.os.type,
            "distro": facts.os.distro,
            "version": facts.os.version,
            "hostname": facts.os.hostname,
        },
        "dormancy": None
        if facts is None
        else {
            "days_idle": facts.dormancy.days_idle,
            "last_seen_running": last_seen_running(result),
        },
        "business": to_jsonable(result.business),
        "risk": to_jsonable(result.risk),
        "findings": [to_jsonable(finding) for finding in result.findings],
        "complete": result.complete,
        "not_judged": [to_jsonable(entry) for entry in result.not_judged],
        "coverage": None if facts is None else [to_jsonable(c) for c in facts.coverage],
        "missed": to_jsonable(missed(result, scanned)),
    }


def report_dict(report: ScanReport) -> dict[str, Any]:
    """The report as the ``vmaudit.report/v1`` object."""
    results = report.results
    scanned = parse_iso(report.started_at) or utc_now()
    return {
        "schema": REPORT_SCHEMA,
        "tool": {"name": "vmaudit", "version": vmaudit.__version__},
        "started_at": report.started_at,
        "finished_at": report.finished_at,
        "baselines": list(report.baselines),
        "summary": {
            "images": len(results),
            "audited": sum(1 for r in results if r.error is None),
            "errors": sum(1 for r in results if r.error is not None),
            "from_cache": sum(1 for r in results if r.from_cache),
            "findings": severity_counts(f for r in results for f in r.findings),
            "exit_code": report.exit_code,
        },
        "images": [_image(result, scanned) for result in sort_by_risk(results)],
    }


def render(report: ScanReport) -> str:
    return json.dumps(report_dict(report), indent=2, ensure_ascii=True) + "\n"
