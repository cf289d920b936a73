"""Watcher: settled appeared/modified/disappeared events, and in_use detection."""

from __future__ import annotations

import fcntl
import os
import shutil
import struct
import subprocess
import time
from pathlib import Path

import pytest
from state_helpers import make_image

from vmaudit.models import DiskRef, ImageRef, WatchEvent
from vmaudit.watch import Watcher, in_use

FLOCK = "hhqqi4x"


def qcow_discover(paths: list[str]) -> list[ImageRef]:
    """A stand-in for discover.discover: every ``*.qcow2`` under the paths."""
    found: list[ImageRef] = []
    for root in paths:
        for folder, _, names in os.walk(root):
            found.extend(
                make_image(Path(folder) / n) for n in sorted(names) if n.endswith(".qcow2")
            )
    return found


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def kinds(events: list[WatchEvent]) -> list[tuple[str, str]]:
    return [(e.kind, Path(e.image.path).name) for e in events]


def test_an_image_is_reported_once_it_has_been_quiet_for_settle_seconds(tmp_path: Path) -> None:
    clock = FakeClock()
    watcher = Watcher([str(tmp_path)], qcow_discover, settle=10, use_inotify=False, clock=clock)
    disk = tmp_path / "new.qcow2"
    disk.write_bytes(b"half written")
    assert watcher.poll() == []
    clock.now += 5
    disk.write_bytes(b"half written, more")  # still being copied
    assert watcher.poll() == []
    clock.now += 9
    assert watcher.poll() == []
    clock.now += 1
    assert kinds(watcher.poll()) == [("appeared", "new.qcow2")]
    clock.now += 60
    assert watcher.poll() == []


def test_modified_then_disappeared(tmp_path: Path) -> None:
    clock = FakeClock()
    disk = tmp_path / "vm.qcow2"
    disk.write_bytes(b"dormant")
    watcher = Watcher([str(tmp_path)], qcow_discover, settle=10, use_inotify=False, clock=clock)
    watcher.poll()
    clock.now += 10
    assert kinds(watcher.poll()) == [("appeared", "vm.qcow2")]
    disk.write_bytes(b"powered on and written")
    assert watcher.poll() == []
    clock.now += 10
    assert kinds(watcher.poll()) == [("modified", "vm.qcow2")]
    disk.unlink()
    assert kinds(watcher.poll()) == [("disappeared", "vm.qcow2")]
    assert watcher.poll() == []


def test_existing_images_can_be_taken_as_the_starting_point(tmp_path: Path) -> None:
    clock = FakeClock()
    (tmp_path / "old.qcow2").write_bytes(b"x")
    watcher = Watcher(
        [str(tmp_path)],
        qcow_discover,
        settle=1,
        report_existing=False,
        use_inotify=False,
        clock=clock,
    )
    assert watcher.poll() == []
    clock.now += 5
    assert watcher.poll() == []
    (tmp_path / "new.qcow2").write_bytes(b"y")
    watcher.poll()
    clock.now += 5
    assert kinds(watcher.poll()) == [("appeared", "new.qcow2")]


def test_an_image_that_vanishes_between_discovery_and_stat_does_not_crash(
    tmp_path: Path,
) -> None:
    clock = FakeClock()
    disk = tmp_path / "flaky.qcow2"
    disk.write_bytes(b"x")

    def discover_then_delete(paths: list[str]) -> list[ImageRef]:
        found = qcow_discover(paths)
        if disk.exists():
            disk.unlink()  # gone after discovery, before the watcher stats it
        return found

    watcher = Watcher(
        [str(tmp_path)], discover_then_delete, settle=0, use_inotify=False, clock=clock
    )
    assert watcher.poll() == []
    assert watcher.poll() == []


def test_a_discovery_that_fails_costs_one_round(tmp_path: Path) -> None:
    calls = []

    def failing(paths: list[str]) -> list[ImageRef]:
        calls.append(paths)
        if len(calls) == 1:
            raise FileNotFoundError("the datastore was unmounted")
        return qcow_discover(paths)

    (tmp_path / "a.qcow2").write_bytes(b"a")
    watcher = Watcher([str(tmp_path)], failing, settle=0, use_inotify=False)
    assert watcher.poll() == []
    assert kinds(watcher.poll()) == [("appeared", "a.qcow2")]


@pytest.mark.parametrize("use_inotify", [False, True])
def test_real_files_write_settle_modify_delete(tmp_path: Path, use_inotify: bool) -> None:
    """The whole loop on real time with short intervals."""
    disk = tmp_path / "sub" / "vm.qcow2"
    disk.parent.mkdir()
    watcher = Watcher(
        [str(tmp_path)], qcow_discover, interval=0.05, settle=0.3, use_inotify=use_inotify
    )
    stream = watcher.events()
    disk.write_bytes(b"first")
    written = time.monotonic()
    first = next(stream)
    assert (first.kind, first.image.path) == ("appeared", str(disk))
    assert time.monotonic() - written >= 0.3
    disk.write_bytes(b"second, longer")
    assert next(stream).kind == "modified"
    disk.unlink()
    assert next(stream).kind == "disappeared"
    watcher.stop()
    assert list(stream) == []
    watcher.close()


# ------------------------------------------------------------------ in use


def test_an_idle_image_is_not_in_use(tmp_path: Path) -> None:
    disk = tmp_path / "idle.qcow2"
    disk.write_bytes(b"x" * 1024)
    assert not in_use(make_image(disk))


def test_a_vmware_lck_folder_marks_the_disk_or_the_vmx_in_use(tmp_path: Path) -> None:
    vmx, vmdk = tmp_path / "web.vmx", tmp_path / "web.vmdk"
    vmx.write_text('displayName = "web"')
    vmdk.write_text("# Disk DescriptorFile")
    image = ImageRef(str(vmx), "vmdk", (DiskRef(str(vmdk), "vmdk", (str(vmdk),)),), vm="web")
    assert not in_use(image)
    (tmp_path / "web.vmdk.lck").mkdir()
    assert in_use(image)
    (tmp_path / "web.vmdk.lck").rmdir()
    (tmp_path / "web.vmx.lck").mkdir()
    assert in_use(image)


def test_a_lock_file_that_is_not_a_folder_does_not_count(tmp_path: Path) -> None:
    disk = tmp_path / "vm.vmdk"
    disk.write_bytes(b"x")
    (tmp_path / "vm.vmdk.lck").write_text("stale")
    assert not in_use(make_image(disk))


def test_qemu_style_ofd_locks_mark_the_image_in_use(tmp_path: Path) -> None:
    disk = tmp_path / "running.qcow2"
    disk.write_bytes(b"x" * 4096)
    holder = os.open(disk, os.O_RDWR)
    try:
        # as qemu does for a writer: shared locks on the "write" permission byte (101)
        # and on the "unshared write" byte (201)
        for byte in (100, 101, 201):
            fcntl.fcntl(
                holder,
                fcntl.F_OFD_SETLK,
                struct.pack(FLOCK, fcntl.F_RDLCK, os.SEEK_SET, byte, 1, 0),
            )
        assert in_use(make_image(disk))
        # probing took no lock and left the holder's locks in place
        assert in_use(make_image(disk))
    finally:
        os.close(holder)
    assert not in_use(make_image(disk))


@pytest.mark.skipif(
    shutil.which("qemu-nbd") is None or shutil.which("qemu-img") is None,
    reason="qemu-utils not installed",
)
def test_an_image_held_by_a_running_qemu_is_in_use(tmp_path: Path) -> None:
    disk = tmp_path / "live.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(disk), "1M"], check=True)
    server = subprocess.Popen(
        ["qemu-nbd", "-f", "qcow2", "-k", str(tmp_path / "nbd.sock"), str(disk)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while not in_use(make_image(disk)) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert in_use(make_image(disk))
    finally:
        server.terminate()
        server.wait(timeout=10)
    assert not in_use(make_image(disk))


def test_watch_events_carry_in_use(tmp_path: Path) -> None:
    disk = tmp_path / "vm.vmdk"
    disk.write_bytes(b"x")
    (tmp_path / "vm.vmdk.lck").mkdir()

    def discover(paths: list[str]) -> list[ImageRef]:
        return [make_image(disk)]

    watcher = Watcher([str(tmp_path)], discover, settle=0, use_inotify=False)
    (event,) = watcher.poll()
    assert event.image.in_use
