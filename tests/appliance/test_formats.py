"""One guest as qcow2, VMDK, VHD, VHDX and raw: the same ``os`` from each, in one appliance."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.imaging import convert, fingerprint, raw_disk_from_tree, write_tree
from tests.safety.test_opening import scan_env, vmaudit

FORMATS = ("qcow2", "vmdk", "vhd", "vhdx", "raw")
SUFFIX = {"qcow2": "qcow2", "vmdk": "vmdk", "vhd": "vhd", "vhdx": "vhdx", "raw": "img"}


@pytest.mark.appliance
def test_same_guest_in_every_format_gives_the_same_os(tmp_path: Path) -> None:
    raw = raw_disk_from_tree(write_tree(tmp_path / "tree"), tmp_path / "guest.raw")
    store = tmp_path / "store"
    store.mkdir()
    for fmt in FORMATS:
        convert(raw, fmt, store / f"guest.{SUFFIX[fmt]}")
    before = fingerprint(store)

    proc = vmaudit(
        "scan",
        str(store),
        "--format",
        "json",
        "--fail-on",
        "never",
        "--batch",
        str(len(FORMATS)),
        "-j",
        "1",
        env=scan_env(tmp_path),
    )

    assert proc.returncode == 0, proc.stderr
    images = json.loads(proc.stdout)["images"]
    assert sorted(i["format"] for i in images) == sorted(FORMATS)
    assert all(i["status"] == "audited" for i in images), images
    oses = {json.dumps(i["os"], sort_keys=True) for i in images}
    assert len(oses) == 1
    assert json.loads(oses.pop()) == {
        "type": "linux",
        "distro": "debian",
        "version": "12.8",
        "hostname": "mini-01",
    }
    assert fingerprint(store) == before
