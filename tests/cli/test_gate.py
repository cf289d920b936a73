"""The CI gate and the exit codes of spec/cli.md, through the real command line."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from tests.imaging import MINI_FILES, convert, raw_disk_from_tree, write_tree
from tests.safety.test_opening import scan_env, vmaudit

TELNETD = (
    "Package: telnetd\nStatus: install ok installed\nPriority: optional\nSection: net\n"
    "Installed-Size: 100\nMaintainer: Debian QA Group <packages@qa.debian.org>\n"
    "Architecture: amd64\nSource: netkit-telnet\nVersion: 0.17+reproducible-14\n"
    "Description: telnet server\n\n"
)
BASELINE = """apiVersion: vmaudit/v1
kind: Baseline
metadata:
  name: templates
  description: what our templates must be
match:
  os: linux
packages:
  forbidden: [telnetd]
"""


def template(folder: Path, with_telnetd: bool) -> Path:
    files = dict(MINI_FILES)
    if with_telnetd:
        files["var/lib/dpkg/status"] = MINI_FILES["var/lib/dpkg/status"] + TELNETD
    tree = write_tree(folder / ("tree-bad" if with_telnetd else "tree-good"), files)
    image = folder / "templates" / "debian12-template.qcow2"
    image.parent.mkdir(exist_ok=True)
    image.unlink(missing_ok=True)
    return convert(raw_disk_from_tree(tree, folder / "template.raw"), "qcow2", image)


@pytest.mark.appliance
def test_ci_gate_fails_on_an_out_of_baseline_template_and_passes_once_fixed(tmp_path: Path) -> None:
    (tmp_path / "mybaseline.yaml").write_text(BASELINE)
    template(tmp_path, with_telnetd=True)
    args = (
        "scan",
        str(tmp_path / "templates"),
        "-b",
        str(tmp_path / "mybaseline.yaml"),
        "--format",
        "junit",
        "-o",
        str(tmp_path / "report.xml"),
    )

    failing = vmaudit(*args, env=scan_env(tmp_path))
    assert failing.returncode == 1, failing.stderr
    assert failing.stdout == ""  # the report went to the file
    suites = ET.parse(tmp_path / "report.xml").getroot()
    failures = [
        case.get("name") for case in suites.iter("testcase") if case.find("failure") is not None
    ]
    assert failures == ["package.forbidden"]

    template(tmp_path, with_telnetd=False)
    passing = vmaudit(*args, env=scan_env(tmp_path))
    assert passing.returncode == 0, passing.stderr
    suites = ET.parse(tmp_path / "report.xml").getroot()
    assert [c for c in suites.iter("testcase") if c.find("failure") is not None] == []
    assert [c.get("name") for c in suites.iter("testcase")] == ["package.forbidden"]


def test_invalid_baseline_is_exit_2_and_nothing_is_scanned(tmp_path: Path) -> None:
    (tmp_path / "bad.yaml").write_text(BASELINE.replace("forbidden", "forbiden"))
    proc = vmaudit("scan", str(tmp_path), "-b", str(tmp_path / "bad.yaml"), env=scan_env(tmp_path))
    assert proc.returncode == 2
    assert "bad.yaml:9" in proc.stderr and "forbiden" in proc.stderr
    assert proc.stdout == ""


def test_missing_inventory_and_unknown_option_are_exit_2(tmp_path: Path) -> None:
    assert (
        vmaudit(
            "scan", str(tmp_path), "-i", str(tmp_path / "nope.yaml"), env=scan_env(tmp_path)
        ).returncode
        == 2
    )
    assert vmaudit("scan", str(tmp_path), "--frobnicate", env=scan_env(tmp_path)).returncode == 2
    assert (
        vmaudit("scan", str(tmp_path), "--fail-on", "sometimes", env=scan_env(tmp_path)).returncode
        == 2
    )


def test_only_unauditable_images_is_exit_3(tmp_path: Path) -> None:
    (tmp_path / "broken.qcow2").write_bytes(b"QFI\xfb" + b"\xff" * 10)
    (tmp_path / "empty.vmdk").write_bytes(b"")
    proc = vmaudit("scan", str(tmp_path), "--format", "json", env=scan_env(tmp_path))
    assert proc.returncode == 3, proc.stderr
    report = json.loads(proc.stdout)
    assert report["summary"]["errors"] == 2 and report["summary"]["exit_code"] == 3
    assert {i["status"] for i in report["images"]} == {"error"}


def test_empty_folder_is_exit_0(tmp_path: Path) -> None:
    (tmp_path / "store").mkdir()
    proc = vmaudit("scan", str(tmp_path / "store"), "--format", "csv", env=scan_env(tmp_path))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == [
        "image,vm,os,hostname,application,owner,criticality,risk_score,risk_level,days_idle,"
        "rule,severity,subject,message,baseline,vm_source,vm_template,vm_state"
    ]


def test_baselines_validate_reports_every_problem_and_exits_2(tmp_path: Path) -> None:
    good, bad = tmp_path / "good.yaml", tmp_path / "bad.yaml"
    good.write_text(BASELINE)
    bad.write_text(BASELINE.replace("os: linux", "os: beos").replace("[telnetd]", "telnetd"))
    assert vmaudit("baselines", "validate", str(good)).returncode == 0
    proc = vmaudit("baselines", "validate", str(good), str(bad))
    assert proc.returncode == 2
    assert "bad.yaml:7" in proc.stderr and "bad.yaml:9" in proc.stderr


def test_baselines_list_and_show(tmp_path: Path) -> None:
    listed = vmaudit("baselines", "list")
    assert listed.returncode == 0
    assert [line.split()[0] for line in listed.stdout.splitlines()] == [
        "cis-linux-l1",
        "default",
        "windows-default",
    ]
    (tmp_path / "child.yaml").write_text(BASELINE.replace("match:", "extends: [default]\nmatch:"))
    shown = vmaudit("baselines", "show", str(tmp_path / "child.yaml"))
    assert shown.returncode == 0
    assert "forbid_extra_uid0: true" in shown.stdout and "telnetd" in shown.stdout


def test_corrupt_state_database_is_exit_2_and_left_untouched(tmp_path: Path) -> None:
    state = tmp_path / "state.db"
    state.write_bytes(b"SQLite format 3\x00" + bytes(range(256)) * 8)
    before = state.read_bytes()
    (tmp_path / "store").mkdir()
    proc = vmaudit("scan", str(tmp_path / "store"), "--state", str(state), env=scan_env(tmp_path))
    assert proc.returncode == 2
    assert str(state) in proc.stderr
    assert state.read_bytes() == before
    assert vmaudit("report", "--state", str(state)).returncode == 2
    assert state.read_bytes() == before
