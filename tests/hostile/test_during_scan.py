"""Hazards that strike while a scan runs: qemu killed mid-read, an image deleted or grown
under the appliance, a launch that hangs past ``--timeout``; and an unreadable image.

Each finds the scan's own processes through /proc by the private TMPDIR the test gives it.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.hostile.images import MIB, mini_guest, random_bytes, slow_to_list_guest
from tests.imaging import fingerprint, qemu_processes_mentioning
from tests.safety.test_opening import scan_env, vmaudit


def pids_mentioning(text: str, program: str = "") -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
        except OSError:
            continue
        if text.encode() in cmdline and program.encode() in cmdline.split(b"\0", 1)[0]:
            found.append(int(entry))
    return found


def has_open(pid: int, path: Path) -> bool:
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return False
    for fd in fds:
        try:
            if os.readlink(f"/proc/{pid}/fd/{fd}") == str(path):
                return True
        except OSError:
            continue
    return False


class Watcher(threading.Thread):
    """Polls until ``ready()`` gives a qemu pid, then runs ``act(pid)`` once."""

    def __init__(
        self, ready: Callable[[], int | None], act: Callable[[int], str], limit: float = 600
    ) -> None:
        super().__init__(daemon=True)
        self.ready, self.act, self.limit = ready, act, limit
        self.outcome = "never triggered"
        self.stop = threading.Event()

    def run(self) -> None:
        deadline = time.monotonic() + self.limit
        while not self.stop.is_set() and time.monotonic() < deadline:
            pid = self.ready()
            if pid is not None:
                self.outcome = self.act(pid)
                return
            time.sleep(0.01)


def status_of(stdout: str, root: Path) -> dict[str, tuple[str, str | None]]:
    report = json.loads(stdout)
    return {
        os.path.relpath(i["path"], root): (i["status"], (i["error"] or {}).get("kind"))
        for i in report["images"]
    }


@pytest.mark.appliance
def test_qemu_killed_while_reading_the_guest(tmp_path: Path) -> None:
    store = tmp_path / "store"
    store.mkdir()
    slow_to_list_guest(tmp_path, store / "a-victim.qcow2", "victim", entries=15000)
    mini_guest(tmp_path, store / "b-good.qcow2", "bystander")
    before = fingerprint(store)
    tmpdir = tmp_path / "tmpdir"

    def collecting() -> int | None:
        # ApplianceFS lists guest folders through ls0 into a file of the worker's private
        # folder: once one appears, the guest is mounted and being read.
        for workdir in tmpdir.glob("vmaudit-*"):
            try:
                listing = any(entry.name.startswith("tmp") for entry in workdir.iterdir())
            except OSError:  # the worker's folder went between glob and listing
                continue
            if listing:
                pids = pids_mentioning(str(workdir), "qemu-system")
                if pids:
                    return pids[0]
        return None

    def kill(pid: int) -> str:
        os.kill(pid, signal.SIGKILL)
        return "killed while collecting"

    watcher = Watcher(collecting, kill)
    watcher.start()
    try:
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
            "1",
            env=scan_env(tmp_path),
        )
    finally:
        watcher.stop.set()
        watcher.join()

    assert watcher.outcome == "killed while collecting"
    assert proc.returncode == 3, proc.stderr[-3000:]
    assert status_of(proc.stdout, store) == {
        "a-victim.qcow2": ("error", "appliance-failed"),
        "b-good.qcow2": ("audited", None),
    }
    assert fingerprint(store) == before
    assert qemu_processes_mentioning(str(tmpdir)) == []
    assert os.listdir(tmpdir) == []


@pytest.mark.appliance
def test_image_deleted_or_grown_during_the_scan(tmp_path: Path) -> None:
    store = tmp_path / "store"
    store.mkdir()
    for name in ("grows", "vanishes", "steady"):
        mini_guest(tmp_path, store / f"{name}.qcow2", name)
    grows, vanishes = store / "grows.qcow2", store / "vanishes.qcow2"
    original = grows.read_bytes()
    steady_before = fingerprint(store)[str(store / "steady.qcow2")]
    tmpdir = tmp_path / "tmpdir"

    def opened() -> int | None:
        for pid in pids_mentioning(str(tmpdir), "qemu-system"):
            if has_open(pid, grows) and has_open(pid, vanishes):
                return pid
        return None

    def change(_pid: int) -> str:
        with open(grows, "ab") as handle:
            handle.write(b"\0" * MIB)
        vanishes.unlink()
        return "changed under qemu"

    watcher = Watcher(opened, change)
    watcher.start()
    # Straight to software emulation: a failed KVM attempt would open the files first.
    env = {**scan_env(tmp_path), "VMAUDIT_FORCE_TCG": "1"}
    try:
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
            "3",
            env=env,
        )
    finally:
        watcher.stop.set()
        watcher.join()

    assert watcher.outcome == "changed under qemu"
    assert proc.returncode == 3, proc.stderr[-3000:]
    assert status_of(proc.stdout, store) == {
        "grows.qcow2": ("error", "image-changed"),
        "steady.qcow2": ("audited", None),
        "vanishes.qcow2": ("error", "image-changed"),
    }
    assert grows.read_bytes() == original + b"\0" * MIB  # only the test wrote to it
    assert fingerprint(store)[str(store / "steady.qcow2")] == steady_before
    assert qemu_processes_mentioning(str(tmpdir)) == []
    assert os.listdir(tmpdir) == []


@pytest.mark.appliance
def test_hanging_launch_times_out_in_batch_then_alone(tmp_path: Path) -> None:
    """A hypervisor that never answers: the batch is killed at its limit, each image is
    re-run alone and reported ``timeout``, and the hung processes are gone."""
    store = tmp_path / "store"
    store.mkdir()
    for name in ("one", "two"):
        subprocess.run(
            ["qemu-img", "create", "-q", "-f", "qcow2", str(store / f"{name}.qcow2"), "16M"],
            check=True,
        )
    before = fingerprint(store)
    marker = tmp_path / "hung-hypervisor"
    marker.write_text(
        f"#!/bin/sh\nexec {sys.executable} -c 'import time; time.sleep(3600)' {marker}\n"
    )
    marker.chmod(0o755)
    env = {**scan_env(tmp_path), "LIBGUESTFS_HV": str(marker), "VMAUDIT_FORCE_TCG": "1"}

    started = time.monotonic()
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
        "2",
        "--timeout",
        "4",
        env=env,
        timeout=300,
    )
    elapsed = time.monotonic() - started

    assert proc.returncode == 3, proc.stderr[-3000:]
    assert status_of(proc.stdout, store) == {
        "one.qcow2": ("error", "timeout"),
        "two.qcow2": ("error", "timeout"),
    }
    assert 16 <= elapsed < 120  # 8 s for the batch, then 4 s for each image alone
    assert fingerprint(store) == before
    assert pids_mentioning(str(marker)) == []
    assert os.listdir(tmp_path / "tmpdir") == []


@pytest.fixture
def world_readable_dir() -> Iterator[Path]:
    """A folder ``nobody`` can reach (pytest's own tmp folders are private to root)."""
    path = Path(tempfile.mkdtemp(prefix="vmaudit-hostile-"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def checkout_reachable_by_nobody() -> Iterator[None]:
    """``nobody`` must reach this checkout's code and venv, wherever the checkout lives (a
    ``mktemp -d`` folder is private to root): folders on the way that deny others search
    permission get it (search only, not listing) for the test, and lose it again after."""
    repo = Path(__file__).resolve().parents[2]
    changed: list[tuple[Path, int]] = []
    for target in (repo, Path(sys.prefix).resolve()):
        for folder in (target, *target.parents):
            mode = folder.stat().st_mode
            if not mode & stat.S_IXOTH and folder not in [path for path, _ in changed]:
                changed.append((folder, mode))
                folder.chmod(stat.S_IMODE(mode) | stat.S_IXOTH)
    try:
        yield
    finally:
        for folder, mode in reversed(changed):
            folder.chmod(stat.S_IMODE(mode))


@pytest.mark.skipif(shutil.which("setpriv") is None, reason="needs setpriv")
@pytest.mark.usefixtures("checkout_reachable_by_nobody")
def test_unreadable_image_and_folder_as_an_unprivileged_user(world_readable_dir: Path) -> None:
    """As root every file is readable, so the scan runs as ``nobody`` (setpriv): the
    unreadable image and folder are reported ``permission-denied``, the rest go on."""
    root = world_readable_dir
    store = root / "store"
    (store / "closed").mkdir(parents=True)
    subprocess.run(
        ["qemu-img", "create", "-q", "-f", "qcow2", str(store / "locked.qcow2"), "16M"], check=True
    )
    (store / "junk.vmdk").write_bytes(random_bytes(MIB, 9))
    subprocess.run(
        ["qemu-img", "create", "-q", "-f", "qcow2", str(store / "closed" / "hidden.qcow2"), "16M"],
        check=True,
    )
    (store / "locked.qcow2").chmod(0o000)
    (store / "closed").chmod(0o000)
    for folder in ("tmpdir", "state"):
        (root / folder).mkdir(mode=0o777)
        (root / folder).chmod(0o777)
    os.chmod(store, 0o755)
    before = fingerprint(store)
    env = {**scan_env(root), "HOME": str(root)}

    proc = subprocess.run(
        [
            "setpriv",
            "--reuid=nobody",
            "--regid=nogroup",
            "--clear-groups",
            sys.executable,
            "-m",
            "vmaudit.cli",
            "scan",
            str(store),
            "--format",
            "json",
            "--fail-on",
            "never",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
        cwd=root,
    )

    assert proc.returncode == 3, proc.stderr[-3000:]
    assert status_of(proc.stdout, store) == {
        "locked.qcow2": ("error", "permission-denied"),
        "closed": ("error", "permission-denied"),
        "junk.vmdk": ("error", "corrupt-image"),
    }
    assert fingerprint(store) == before
