"""spec/safety.md "Opening the disk", each hazard built here: refused with its kind, the
image untouched, no host file content in any output, the scan going on to the next image."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.discover.test_discover import make_differencing_vhd
from tests.imaging import (
    convert,
    fingerprint,
    qemu_processes_mentioning,
    raw_disk_from_tree,
    write_tree,
)

SECRET = "HOST-SECRET-7f3a9c-do-not-leak"


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


def secret_raw_file(path: Path) -> Path:
    """A host file whose content must never show up: a raw disk full of the marker."""
    block = (SECRET + "\n").encode() * 64
    with open(path, "wb") as handle:
        for _ in range(1024 * 1024 // len(block) + 1):
            handle.write(block)
    return path


def build_hostile_datastore(root: Path, secret: Path) -> Path:
    store = root / "datastore"
    (store / "good").mkdir(parents=True)
    tree = write_tree(root / "tree")
    raw = raw_disk_from_tree(tree, root / "good.raw")
    convert(raw, "qcow2", store / "good" / "good.qcow2")

    # A raw image whose first sector is a qcow2 header with a backing file on the host.
    (store / "probe").mkdir()
    subprocess.run(
        [
            "qemu-img",
            "create",
            "-q",
            "-f",
            "qcow2",
            "-u",
            "-b",
            str(secret),
            "-F",
            "raw",
            str(store / "probe" / "evil.img"),
            "1M",
        ],
        check=True,
    )
    # A qcow2 whose backing file is outside its folder.
    (store / "escape").mkdir()
    subprocess.run(
        [
            "qemu-img",
            "create",
            "-q",
            "-f",
            "qcow2",
            "-u",
            "-b",
            str(secret),
            "-F",
            "raw",
            str(store / "escape" / "leaf.qcow2"),
            "1M",
        ],
        check=True,
    )
    # A VMDK descriptor whose extent is a host file.
    (store / "extent").mkdir()
    (store / "extent" / "evil.vmdk").write_text(
        "# Disk DescriptorFile\nversion=1\nCID=fffffffe\nparentCID=ffffffff\n"
        f'createType="monolithicFlat"\n\nRW 2048 FLAT "{secret}" 0\n'
    )
    # A VHD differencing disk without its parent.
    (store / "orphan").mkdir()
    make_differencing_vhd(store / "orphan" / "child.vhd", "parent.vhd")
    # A symlink and a FIFO named like images.
    (store / "special").mkdir()
    os.symlink(secret, store / "special" / "link.qcow2")
    os.mkfifo(store / "special" / "fifo.qcow2")
    return store


@pytest.mark.appliance
def test_hostile_images_are_refused_and_nothing_changes(tmp_path: Path) -> None:
    secret = secret_raw_file(tmp_path / "secret.raw")
    store = build_hostile_datastore(tmp_path, secret)
    before = fingerprint(store)
    secret_before = fingerprint(tmp_path)[str(secret)]

    proc = vmaudit(
        "scan",
        str(store),
        "--format",
        "json",
        "--fail-on",
        "never",
        "-j",
        "1",
        env=scan_env(tmp_path),
    )

    assert proc.returncode == 3, proc.stderr
    report = json.loads(proc.stdout)
    status = {
        os.path.relpath(i["path"], store): (i["status"], (i["error"] or {}).get("kind"))
        for i in report["images"]
    }
    assert status == {
        "good/good.qcow2": ("audited", None),
        "probe/evil.img": ("error", "format-mismatch"),
        "escape/leaf.qcow2": ("error", "unsafe-backing-file"),
        "extent/evil.vmdk": ("error", "unsafe-extent"),
        "orphan/child.vhd": ("error", "missing-parent"),
        "special/link.qcow2": ("error", "not-a-regular-file"),
        "special/fifo.qcow2": ("error", "not-a-regular-file"),
    }
    good = next(i for i in report["images"] if i["path"].endswith("good.qcow2"))
    assert good["os"]["hostname"] == "mini-01"
    assert SECRET not in proc.stdout and SECRET not in proc.stderr
    assert fingerprint(store) == before
    assert fingerprint(tmp_path)[str(secret)] == secret_before
    assert qemu_processes_mentioning(str(tmp_path / "tmpdir")) == []
    assert os.listdir(tmp_path / "tmpdir") == []


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
