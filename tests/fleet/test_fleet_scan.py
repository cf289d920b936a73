"""Fleet scans through a real ``LocalCluster``: a worker killed mid-audit loses no image, and
the report is the local scan's (spec/cli.md ``--scheduler``).

Economy (three appliance launches and one cut short): two tiny images; the local scan puts
both in one appliance; one fleet scan gives each image its own (``--batch 1``) and serves
both tests, a worker being killed as soon as it starts an audit. Launches start in software
emulation: these tests are about the fleet, not KVM.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from distributed import Client, LocalCluster

from tests.imaging import MINI_FILES, convert, raw_disk_from_tree, write_tree
from tests.safety.test_opening import scan_env, vmaudit

pytestmark = pytest.mark.appliance


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("fleet")
    store = root / "store"
    store.mkdir()
    for number, fmt in ((1, "qcow2"), (2, "vmdk")):
        files = {**MINI_FILES, "etc/hostname": f"mini-0{number}\n"}
        tree = write_tree(root / f"tree{number}", files)
        raw = raw_disk_from_tree(tree, root / f"g{number}.raw")
        convert(raw, fmt, store / f"g{number}.{fmt}")
        raw.unlink()
    return root


def processes_in(folder: Path) -> list[int]:
    """Processes whose TMPDIR lies in ``folder``: audits (and their qemu) started for us."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if any(v.startswith(b"TMPDIR=" + str(folder).encode()) for v in environ):
            found.append(int(pid))
    return found


def children_running_audits(parent: int) -> list[int]:
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == parent and b"vmaudit.run.worker" in cmdline:
            found.append(int(pid))
    return found


@pytest.fixture(scope="module")
def cluster(workspace: Path) -> Iterator[LocalCluster]:
    workers_tmp = workspace / "workers-tmp"
    workers_tmp.mkdir()
    with LocalCluster(
        n_workers=2,
        processes=True,
        threads_per_worker=1,
        dashboard_address=":0",
        local_directory=str(workspace / "dask"),
        env={"TMPDIR": str(workers_tmp)},
    ) as local_cluster:
        try:
            yield local_cluster
        finally:
            for pid in processes_in(workers_tmp):  # an audit orphaned by a killed worker
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)


def env_for(workspace: Path, run: str) -> dict[str, str]:
    (workspace / run).mkdir()
    return {**scan_env(workspace / run), "VMAUDIT_FORCE_TCG": "1"}


def without_timestamps(stdout: str) -> dict[str, Any]:
    report: dict[str, Any] = json.loads(stdout)
    report.pop("started_at")
    report.pop("finished_at")
    for entry in report["images"]:
        (entry.get("dormancy") or {}).pop("last_seen_running", None)
    return report


SCAN = ("--format", "json", "--fail-on", "never", "--no-cache")


@pytest.fixture(scope="module")
def local_report(workspace: Path) -> dict[str, Any]:
    proc = vmaudit(
        "scan", str(workspace / "store"), *SCAN, "--batch", "2", env=env_for(workspace, "local")
    )
    assert proc.returncode == 0, proc.stderr
    report = without_timestamps(proc.stdout)
    assert [i["status"] for i in report["images"]] == ["audited", "audited"]
    assert [i["os"]["hostname"] for i in report["images"]] == ["mini-01", "mini-02"]
    return report


@dataclass(frozen=True)
class FleetRun:
    returncode: int
    stdout: str
    stderr: str
    victim_replaced: bool


@pytest.fixture(scope="module")
def fleet_run(workspace: Path, cluster: LocalCluster) -> FleetRun:
    """A fleet scan, one image per task, during which a worker busy auditing is killed."""
    with Client(cluster, set_as_default=False) as client:
        worker_pids = set(client.run(os.getpid).values())
        scan = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "vmaudit.cli",
                "scan",
                str(workspace / "store"),
                *SCAN,
                "--batch",
                "1",
                "--scheduler",
                cluster.scheduler_address,
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env_for(workspace, "fleet"),
        )
        try:
            victim, audits = _first_worker_auditing(worker_pids, scan)
            os.kill(victim, signal.SIGKILL)
            # The host is lost with its worker: its appliance goes too (and frees the CPU).
            for audit in audits:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(audit, signal.SIGKILL)
            out, err = scan.communicate(timeout=900)
        finally:
            if scan.poll() is None:
                scan.kill()
                scan.wait()
        replaced = victim not in set(client.run(os.getpid).values())
    return FleetRun(scan.returncode, out, err, replaced)


def test_a_worker_killed_mid_audit_loses_no_image(fleet_run: FleetRun) -> None:
    assert fleet_run.victim_replaced
    assert fleet_run.returncode == 0, fleet_run.stderr
    report = json.loads(fleet_run.stdout)
    assert [(i["status"], i["os"]["hostname"]) for i in report["images"]] == [
        ("audited", "mini-01"),
        ("audited", "mini-02"),
    ]


def test_fleet_scan_reports_what_a_local_scan_reports(
    fleet_run: FleetRun, local_report: dict[str, Any]
) -> None:
    assert without_timestamps(fleet_run.stdout) == local_report


def _first_worker_auditing(
    worker_pids: set[int], scan: subprocess.Popen[str]
) -> tuple[int, list[int]]:
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and scan.poll() is None:
        for pid in worker_pids:
            audits = children_running_audits(pid)
            if audits:
                return pid, audits
        time.sleep(0.2)
    raise AssertionError("no Dask worker started an audit")
