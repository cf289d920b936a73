"""The scan as JUnit XML for CI servers: a testsuite per image, a testcase per rule checked.

A finding at or above ``--fail-on`` fails its testcase; one below it passes with the
finding in ``<system-out>``; an image in error is one testcase with ``<error>``. Guest
text is escaped by the XML writer and stripped of what XML 1.0 cannot carry.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET

from vmaudit.judge.verdict import at_or_above
from vmaudit.models import SEVERITIES, Finding, ImageResult, ScanReport
from vmaudit.report.common import sort_by_risk, xml_safe


def _line(finding: Finding) -> str:
    return (
        f"[{finding.severity}] {finding.rule} {finding.subject}: {finding.message}"
        f" (baseline {finding.baseline})"
    )


def _element(parent: ET.Element, tag: str, text: str | None = None, **attrs: str) -> ET.Element:
    element = ET.SubElement(parent, tag, {k: xml_safe(v) for k, v in attrs.items()})
    if text is not None:
        element.text = xml_safe(text)
    return element


def _suite(root: ET.Element, result: ImageResult, fail_on: str, timestamp: str) -> None:
    name = result.image.path
    if result.error is not None:
        suite = _element(
            root,
            "testsuite",
            name=name,
            tests="1",
            failures="0",
            errors="1",
            skipped="0",
            timestamp=timestamp,
        )
        case = _element(suite, "testcase", name="scan", classname=name)
        _element(
            case,
            "error",
            result.error.message,
            message=result.error.message,
            type=result.error.kind,
        )
        return
    rule_ids = sorted({*result.rules_evaluated, *(f.rule for f in result.findings)})
    cases: list[tuple[str, list[Finding], list[Finding]]] = []
    for rule_id in rule_ids:
        findings = [f for f in result.findings if f.rule == rule_id]
        failing = [f for f in findings if at_or_above(f.severity, fail_on)]
        passing = [f for f in findings if not at_or_above(f.severity, fail_on)]
        cases.append((rule_id, failing, passing))
    failures = sum(1 for _, failing, _ in cases if failing)
    suite = _element(
        root,
        "testsuite",
        name=name,
        tests=str(len(cases) + len(result.not_judged)),
        failures=str(failures),
        errors="0",
        skipped=str(len(result.not_judged)),
        timestamp=timestamp,
    )
    for entry in result.not_judged:  # never a pass: the rule could not look
        case = _element(suite, "testcase", name=entry.rule, classname=name)
        _element(case, "skipped", message=f"not judged: {entry.reason}")
    for rule_id, failing, passing in cases:
        case = _element(suite, "testcase", name=rule_id, classname=name)
        if failing:
            worst = min((f.severity for f in failing), key=SEVERITIES.index)
            _element(
                case,
                "failure",
                "\n".join(_line(f) for f in failing),
                message=f"{len(failing)} finding(s) at or above {fail_on}",
                type=worst,
            )
        if passing:
            _element(case, "system-out", "\n".join(_line(f) for f in passing))


def render(report: ScanReport) -> str:
    root = ET.Element("testsuites", {"name": "vmaudit"})
    for result in sort_by_risk(report.results):
        _suite(root, result, report.fail_on, report.finished_at)
    root.set("tests", str(sum(int(s.get("tests", "0")) for s in root)))
    root.set("failures", str(sum(int(s.get("failures", "0")) for s in root)))
    root.set("errors", str(sum(int(s.get("errors", "0")) for s in root)))
    ET.indent(root)
    body = ET.tostring(root, encoding="unicode")
    return f'<?xml version="1.0" encoding="UTF-8"?>\n{body}\n'
