"""Real block devices for tests: loop devices on files, and an LVM volume group on one.

Everything is undone at the end even when the test fails: logical volumes removed, the
volume group removed, the physical volume wiped, the loop device detached. Needs root;
logical volumes need the kernel's device-mapper (``dm_available``), which some hosts
(containers, minimal VM kernels) lack: there the volume group exists but no LV can be
activated.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

LVM_ENV = {**os.environ, "LVM_SUPPRESS_FD_WARNINGS": "1"}


def usable() -> bool:
    return os.geteuid() == 0 and os.path.exists("/usr/sbin/losetup")


def dm_available() -> bool:
    """Whether device-mapper works here (LVs can be activated)."""
    try:
        with open("/proc/misc", encoding="ascii") as handle:
            return "device-mapper" in handle.read()
    except OSError:
        return False


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, check=False, env=LVM_ENV)


@contextmanager
def loop_device(backing: Path, read_only: bool = False) -> Iterator[str]:
    """A loop device on ``backing``; detached at the end."""
    flags = ["--read-only"] if read_only else []
    done = subprocess.run(
        ["losetup", *flags, "--find", "--show", str(backing)],
        capture_output=True,
        text=True,
        check=True,
    )
    device = done.stdout.strip()
    try:
        yield device
    finally:
        run("losetup", "-d", device)


@contextmanager
def volume_group(backing: Path, name: str, size_mb: int = 64) -> Iterator[str]:
    """A volume group ``name`` on a loop device over a new ``backing`` file; the VG, PV and
    loop device are removed at the end (LVs included)."""
    with open(backing, "wb") as handle:
        handle.truncate(size_mb * 1024 * 1024)
    with loop_device(backing) as device:
        try:
            created = run("pvcreate", "-q", "-y", device)
            assert created.returncode == 0, created.stderr
            created = run("vgcreate", "-q", name, device)
            assert created.returncode == 0, created.stderr
            yield device
        finally:
            run("vgchange", "-q", "-an", name)
            run("vgremove", "-q", "-f", "-y", name)
            run("pvremove", "-q", "-f", "-y", device)
