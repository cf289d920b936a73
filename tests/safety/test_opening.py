"""spec/safety.md "Opening the disk": a launch past its timeout is killed and reported, the
image untouched; and the ``vmaudit`` subprocess helpers the appliance tests share.

The hazards of opening (a raw image with a qcow2 header, backing files and extents on the
host, an orphan differencing VHD, a symlink and a FIFO named like images) are in the one
hostile datastore that tests/hostile/test_datastore.py scans once: refused with their
kinds, untouched, no host file content in any output, the scan going on.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.imaging import (
    convert,
    fingerprint,
    qemu_processes_mentioning,
    raw_disk_from_tree,
    write_tree,
)


def vmaudit(
    *args: str, env: dict[str, str] | None = None, timeout: float = 900
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "vmaudit.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
        check=False,
    )


def scan_env(tmp: Path) -> dict[str, str]:
    """Overlays in a folder of the test's own, so leftovers can be found by path."""
    (tmp / "tmpdir").mkdir(exist_ok=True)
    return {
        **os.environ,
        "TMPDIR": str(tmp / "tmpdir"),
        "LIBGUESTFS_CACHEDIR": os.environ.get("LIBGUESTFS_CACHEDIR", "/var/tmp"),
        "XDG_STATE_HOME": str(tmp / "state"),
    }


@pytest.mark.appliance
def test_timeout_kills_the_appliance_and_reports_the_image(tmp_path: Path) -> None:
    tree = write_tree(tmp_path / "tree")
    (tmp_path / "store").mkdir()
    convert(raw_disk_from_tree(tree, tmp_path / "g.raw"), "qcow2", tmp_path / "store" / "g.qcow2")
    before = fingerprint(tmp_path / "store")

    proc = vmaudit(
        "scan",
        str(tmp_path / "store"),
        "--format",
        "json",
        "--timeout",
        "3",
        env=scan_env(tmp_path),
    )

    assert proc.returncode == 3, proc.stderr
    image = json.loads(proc.stdout)["images"][0]
    assert image["status"] == "error" and image["error"]["kind"] == "timeout"
    assert fingerprint(tmp_path / "store") == before
    assert qemu_processes_mentioning(str(tmp_path / "tmpdir")) == []
