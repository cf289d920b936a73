"""One datastore holding every hostile image, scanned once in one appliance (``--batch``).

Each test reads the shared scan: the scan finished, each image is reported with its kind
and the others audited, no image's bytes or mtime changed, no host file content appears,
nothing is left running. Guest-level facts (warnings) are read back from the scan's own
state database, without another appliance.
"""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.hostile.images import (
    BIG_SHADOW,
    BIG_SUDOERS,
    ESC_HOSTNAME,
    ESC_USER,
    EXPECTED,
    FORMULA_USER,
    SECRET,
    build_datastore,
)
from tests.imaging import fingerprint, qemu_processes_mentioning
from tests.safety.test_opening import scan_env, vmaudit
from vmaudit.discover.walk import discover
from vmaudit.models import Facts
from vmaudit.state.cache import open_cache

pytestmark = pytest.mark.appliance


@dataclass(frozen=True)
class Scan:
    work: Path
    store: Path
    host_dir: Path
    env: dict[str, str]
    proc: subprocess.CompletedProcess[str]
    report: dict[str, Any]
    before: dict[str, tuple[str, int]]
    after: dict[str, tuple[str, int]]
    host_before: dict[str, tuple[str, int]]
    lock_refused: str  # what plain qemu-img said of the held image during the scan
    holder_survived: bool

    def status(self) -> dict[str, tuple[str, str | None]]:
        return {
            os.path.relpath(i["path"], self.store): (i["status"], (i["error"] or {}).get("kind"))
            for i in self.report["images"]
        }

    def facts(self, rel: str) -> Facts:
        """The facts the scan recorded for one image, from its state database."""
        found = discover([str(self.store / rel)])
        cache = open_cache(str(self.work / "state" / "vmaudit" / "state.db"))
        try:
            facts = cache.cached_facts(found.images[0])
        finally:
            cache.close()
        assert facts is not None, f"no facts recorded for {rel}"
        return facts


@pytest.fixture(scope="module")
def scan(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scan]:
    work = tmp_path_factory.mktemp("hostile")
    host_dir = work / "host"
    store = build_datastore(work, host_dir)
    held = store / "inuse" / "held.qcow2"
    # A writer holding the image open, as a running VM does: qemu's write lock is taken.
    holder = subprocess.Popen(
        ["qemu-nbd", "-f", "qcow2", "-k", str(work / "nbd.sock"), "-t", str(held)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while not (work / "nbd.sock").exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        lock = subprocess.run(
            ["qemu-img", "info", str(held)], capture_output=True, text=True, check=False
        )
        before = fingerprint(store)
        host_before = fingerprint(host_dir)
        env = scan_env(work)
        proc = vmaudit(
            "scan",
            str(store),
            "--format",
            "json",
            "--fail-on",
            "never",
            "-j",
            "1",
            "--batch",
            "64",
            "--timeout",
            "300",
            env=env,
        )
        after = fingerprint(store)
        survived = holder.poll() is None
    finally:
        holder.terminate()
        holder.wait(timeout=30)
    report = json.loads(proc.stdout) if proc.stdout.startswith("{") else {}
    yield Scan(
        work, store, host_dir, env, proc, report, before, after, host_before, lock.stderr, survived
    )


def test_scan_finishes_and_reports_each_hazard_with_its_kind(scan: Scan) -> None:
    assert scan.proc.returncode == 3, scan.proc.stderr[-3000:]
    assert scan.status() == EXPECTED
    assert scan.report["summary"]["audited"] == sum(
        1 for status, _ in EXPECTED.values() if status == "audited"
    )


def test_no_image_changed(scan: Scan) -> None:
    assert scan.after == scan.before
    assert fingerprint(scan.store) == scan.before
    assert fingerprint(scan.host_dir) == scan.host_before


def test_no_host_file_content_in_any_output(scan: Scan) -> None:
    assert SECRET not in scan.proc.stdout
    assert SECRET not in scan.proc.stderr
    for rel in ("links/links.qcow2", "content/content.qcow2"):
        assert SECRET not in json.dumps(scan.facts(rel).to_dict())


def test_nothing_left_behind(scan: Scan) -> None:
    tmpdir = scan.work / "tmpdir"
    assert qemu_processes_mentioning(str(tmpdir)) == []
    assert qemu_processes_mentioning(str(scan.store)) == []
    assert os.listdir(tmpdir) == []


def test_good_guests_are_audited_in_full(scan: Scan) -> None:
    hostnames = {
        os.path.relpath(i["path"], scan.store): i["os"]["hostname"]
        for i in scan.report["images"]
        if i["status"] == "audited"
    }
    assert hostnames["good/good.qcow2"] == "good"
    assert hostnames["inuse/held.qcow2"] == "held"
    good = scan.facts("good/good.qcow2")
    assert [u.name for u in good.users] == ["root", "toor", "alice"]
    assert good.warnings == ()


def test_image_in_use_is_audited_without_taking_its_lock(scan: Scan) -> None:
    # The holder really had the write lock: plain qemu-img (no -U) was refused.
    assert "lock" in scan.lock_refused
    assert scan.status()["inuse/held.qcow2"] == ("audited", None)
    assert scan.holder_survived  # vmaudit did not disturb the VM's hold
    held = str(scan.store / "inuse" / "held.qcow2")
    assert scan.after[held] == scan.before[held]


def test_symlinks_out_of_the_root_resolve_inside_the_guest(scan: Scan) -> None:
    facts = scan.facts("links/links.qcow2")
    # /etc/hostname -> <host folder>/hostname: the guest's own file at that path was read.
    assert facts.os.hostname == "resolved-inside-guest"
    # /etc/passwd -> ../../../../etc/passwd is itself inside the guest: a loop, no users.
    assert facts.users == ()
    assert "accounts: /etc/passwd unreadable: too many levels of symbolic links" in facts.warnings
    assert facts.failed_sections() == {
        "accounts": "/etc/passwd unreadable: too many levels of symbolic links"
    }
    assert "/etc/ssh/sshd_config: too many levels of symbolic links" in facts.warnings
    assert "/etc/sudoers.d/loop-a: too many levels of symbolic links" in facts.warnings
    with open("/etc/passwd") as host_passwd:
        host_users = {line.split(":", 1)[0] for line in host_passwd if ":" in line}
    assert not host_users & {u.name for u in facts.users}


def test_huge_sparse_self_including_and_undecodable_files_are_warnings(scan: Scan) -> None:
    facts = scan.facts("content/content.qcow2")
    warnings = "\n".join(facts.warnings)
    assert f"/etc/shadow: {BIG_SHADOW} bytes, over" in warnings
    assert f"/etc/sudoers.d/00-huge: {BIG_SUDOERS} bytes, over" in warnings
    # A wtmp of any size is read from its tail (a ranged read), never refused whole.
    assert "/var/log/wtmp: 1073741824 bytes" not in warnings
    assert {c.section: c.status for c in facts.coverage}["dormancy"] == "read"
    assert "/etc/sudoers: sudoers include cycle, not read again" in warnings
    assert "/etc/sudoers.d/01-one-line: 1 line(s) over 65536 characters skipped" in warnings
    # A name that is not UTF-8 is named in a warning, not silently skipped.
    assert "/etc/sudoers.d/ops\\xff\\xfe: name is not UTF-8" in warnings
    # The 1 MB dpkg field costs that package nothing, nor the one after it.
    assert {(p.name, p.version) for p in facts.packages} >= {
        ("bloated", "1.0"),
        ("after-bloat", "2.0"),
    }
    assert {u.name for u in facts.users} >= {"root", "alice", FORMULA_USER, ESC_USER}


def test_two_operating_systems_one_audited_the_other_named(scan: Scan) -> None:
    facts = scan.facts("twoos/two.qcow2")
    assert facts.os.hostname == "first-os"
    [warning] = [w for w in facts.warnings if "operating systems found" in w]
    audited, _, other = warning.partition(", not ")
    assert audited.endswith("1") and other.endswith("2"), warning


def test_guest_escapes_never_reach_the_terminal_and_csv_has_no_formula(scan: Scan) -> None:
    image = str(scan.store / "content" / "content.qcow2")
    table = vmaudit("scan", image, "--format", "table", "--fail-on", "never", env=scan.env)
    assert table.returncode == 0, table.stderr
    assert "\x1b" not in table.stdout and "\x07" not in table.stdout
    assert "\x1b" not in table.stderr

    exported = vmaudit("scan", image, "--format", "csv", "--fail-on", "never", env=scan.env)
    assert exported.returncode == 0, exported.stderr
    rows = list(csv.DictReader(io.StringIO(exported.stdout)))
    assert rows
    # The hostname starts with "-": a formula for a spreadsheet unless quoted.
    assert all(row["hostname"].startswith("'" + ESC_HOSTNAME[:4]) for row in rows)
    subjects = {row["subject"] for row in rows}
    assert "'" + FORMULA_USER in subjects and FORMULA_USER not in subjects
    for row in rows:
        assert not any(cell[:1] in ("=", "+", "-", "@") for cell in row.values() if cell)

    report = json.loads(
        vmaudit("scan", image, "--format", "json", "--fail-on", "never", env=scan.env).stdout
    )
    assert report["images"][0]["from_cache"] is True  # no appliance was launched again
