"""Every format renders the same scan, hostile guest strings neutralised for its medium."""

from __future__ import annotations

import csv
import io
import json
import xml.etree.ElementTree as ET
from dataclasses import replace

import jsonschema
import pytest

from tests.report.conftest import CLEAR_SCREEN, HOSTILE_HOST, HOSTILE_PACKAGE, HOSTILE_USER
from vmaudit.baseline.factsio import load_schema
from vmaudit.models import ScanReport
from vmaudit.report import Format, render
from vmaudit.report.csv import HEADER


@pytest.mark.parametrize("fmt", list(Format))
def test_every_format_member_has_a_formatter(report: ScanReport, fmt: Format) -> None:
    assert render(report, fmt).strip()


# ---------------------------------------------------------------- CSV


def _csv_rows(report: ScanReport) -> list[list[str]]:
    text = render(report, Format.CSV)
    assert text.endswith("\r\n")
    return list(csv.reader(io.StringIO(text, newline="")))


def test_csv_header_is_the_spec_header(report: ScanReport) -> None:
    header = (
        "image,vm,os,hostname,application,owner,criticality,risk_score,risk_level,"
        "days_idle,rule,severity,subject,message,baseline,vm_source,vm_template,vm_state"
    )
    assert _csv_rows(report)[0] == header.split(",")
    assert ",".join(HEADER) == header


def test_csv_one_row_per_finding_and_per_error(report: ScanReport) -> None:
    rows = [dict(zip(HEADER, row, strict=True)) for row in _csv_rows(report)[1:]]
    assert [row["rule"] for row in rows] == [  # riskiest image first, errors last
        "account.extra-uid0",
        "package.forbidden",
        "dormancy.stale",
        "scan.error",
    ]
    error = rows[3]
    assert (error["image"], error["subject"], error["risk_score"]) == (
        "/ds/evil.qcow2",
        "unsafe-backing-file",
        "",
    )
    assert error["message"] == "backing file /etc/shadow\x1b[31m is outside"


def test_csv_hostile_strings_read_back_as_text(report: ScanReport) -> None:
    rows = [dict(zip(HEADER, row, strict=True)) for row in _csv_rows(report)[1:]]
    uid0, forbidden = rows[0], rows[1]
    assert uid0["hostname"] == "'" + HOSTILE_HOST  # formula neutralised, rest intact
    assert uid0["subject"] == HOSTILE_USER.replace("\x00", "\\x00")  # comma, quotes, newline
    assert forbidden["subject"] == "'" + HOSTILE_PACKAGE
    assert uid0["owner"] == "'-finance"
    assert (uid0["risk_score"], uid0["risk_level"], uid0["days_idle"]) == ("58.8", "high", "270")


# ---------------------------------------------------------------- JSON


def test_json_is_valid_against_the_report_schema(report: ScanReport) -> None:
    document = json.loads(render(report, Format.JSON))
    jsonschema.Draft202012Validator(load_schema("report")).validate(document)


def test_json_content(report: ScanReport) -> None:
    text = render(report, Format.JSON)
    assert "\x1b" not in text  # escaped as \u001b by JSON itself
    document = json.loads(text)
    assert document["schema"] == "vmaudit.report/v1"
    assert document["summary"] == {
        "images": 3,
        "audited": 2,
        "errors": 1,
        "from_cache": 1,
        "findings": {"critical": 1, "high": 1, "medium": 1, "low": 0, "info": 0},
        "exit_code": 1,
    }
    risky, clean, broken = document["images"]  # riskiest first, errors last
    assert broken["status"] == "error" and broken["os"] is None
    assert broken["error"]["kind"] == "unsafe-backing-file"
    assert risky["os"]["hostname"] == HOSTILE_HOST  # JSON keeps the data exact
    assert risky["dormancy"] == {"days_idle": 270, "last_seen_running": "2026-03-02T09:30:00+00:00"}
    assert risky["findings"][0]["subject"] == HOSTILE_USER
    assert clean["vm"]["name"] == "web" and clean["from_cache"] is True
    # 68 x (1 + 270/365) x 1.5 = 177.4521; 100 x (1 - e^-0.887260) = 58.82
    assert risky["risk"] == {"score": 58.8, "level": "high", "exposure": 177.4521}
    assert clean["risk"] == {"score": 0.0, "level": "none", "exposure": 0.0}


def test_json_schema_refuses_a_wrong_report(report: ScanReport) -> None:
    document = json.loads(render(report, Format.JSON))
    document["images"][0]["risk"]["level"] = "severe"
    validator = jsonschema.Draft202012Validator(load_schema("report"))
    assert not validator.is_valid(document)


# ---------------------------------------------------------------- JUnit


def test_junit_suites_cases_failures_and_errors(report: ScanReport) -> None:
    root = ET.fromstring(render(report, Format.JUNIT))
    suites = {suite.get("name"): suite for suite in root.findall("testsuite")}
    assert set(suites) == {"/ds/web-01.qcow2", "/ds/evil.qcow2", "/ds/payroll-db-07.vmdk"}
    risky = suites["/ds/payroll-db-07.vmdk"]
    cases = {case.get("name"): case for case in risky.findall("testcase")}
    assert set(cases) == {
        "account.extra-uid0",
        "dormancy.stale",
        "firewall.disabled",
        "package.forbidden",
    }
    assert (risky.get("tests"), risky.get("failures")) == ("4", "2")
    assert cases["account.extra-uid0"].find("failure") is not None
    assert cases["package.forbidden"].find("failure") is not None
    medium = cases["dormancy.stale"]  # below --fail-on high: passes, finding in system-out
    assert medium.find("failure") is None
    assert "idle for 270 days" in (medium.findtext("system-out") or "")
    assert cases["firewall.disabled"].find("failure") is None
    assert list(cases["firewall.disabled"]) == []
    (error_case,) = suites["/ds/evil.qcow2"].findall("testcase")
    error = error_case.find("error")
    assert error is not None and error.get("type") == "unsafe-backing-file"
    assert root.get("tests") == "7" and root.get("failures") == "2" and root.get("errors") == "1"


def test_junit_escapes_markup_and_replaces_characters_illegal_in_xml(report: ScanReport) -> None:
    text = render(report, Format.JUNIT)
    assert "\x1b" not in text and "\x00" not in text and "\x07" not in text
    root = ET.fromstring(text)
    failure = root.find(".//testcase[@name='account.extra-uid0']/failure")
    assert failure is not None
    assert 'toor,"quoted"\nsecond line\\x00' in (failure.text or "")
    assert "\\x1b[2J" in (failure.text or "")


def test_junit_fail_on_never_has_no_failures(report: ScanReport) -> None:
    from dataclasses import replace

    root = ET.fromstring(render(replace(report, fail_on="never"), Format.JUNIT))
    assert root.findall(".//failure") == []
    assert len(root.findall(".//system-out")) == 3


# ---------------------------------------------------------------- table


def test_table_without_color_has_no_escape_at_all(report: ScanReport) -> None:
    text = render(report, Format.TABLE, color=False, width=300)
    assert "\x1b" not in text and "\x07" not in text and "\u202e" not in text
    assert "\\x1b]0;pwned\\x07" in text  # shown, escaped
    assert "[bold]x[/bold]" in text  # guest text is never read as rich markup
    assert "\\u202e" in text


def test_table_with_color_keeps_guest_escapes_out(report: ScanReport) -> None:
    text = render(report, Format.TABLE, color=True)
    assert "\x1b[" in text  # rich's own colours
    assert "\x1b]0;pwned" not in text and CLEAR_SCREEN not in text and "\x07" not in text


def test_table_sorts_images_by_risk_and_lists_the_riskiest_findings(report: ScanReport) -> None:
    text = render(report, Format.TABLE, width=200)
    assert text.index("payroll-db-07") < text.index("web-01") < text.index("evil.qcow2")
    assert "error: unsafe-backing-file" in text
    assert "vmaudit: images by risk under /ds" in text
    assert "\npayroll-db-07.vmdk (risk 58, high; exposure 177.5)" in text  # relative to /ds
    assert "idle for 270 days (limit 90)" in text
    assert "3 image(s), 2 audited, 1 in error" in text


def test_a_hypervisor_guest_is_named_on_its_own_line_under_the_image(report: ScanReport) -> None:
    first = report.results[0]
    image = replace(first.image, source="vmware", template=True, vm="gold\x1b[2J")
    text = render(
        replace(report, results=(replace(first, image=image), *report.results[1:])),
        Format.TABLE,
        color=False,
        width=300,
    )
    lines = text.splitlines()
    name = next(i for i, line in enumerate(lines) if line.lstrip().startswith(first.image.path[4:]))
    assert lines[name + 1].strip().startswith("vmware template")  # on a line of its own
    shown = "".join(line[:40].strip() for line in lines[name + 1 : name + 4])
    assert "gold\\x1b[2J" in shown and "\x1b" not in text  # the guest's name, escaped
    assert "\\x0avmware" not in text  # our line break is not escaped as guest text
