"""A VHD differencing chain merged into one raw disk: byte for byte the disk it stands for."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.imaging import differencing_vhd, fingerprint, raw_disk_from_tree, write_tree
from tests.safety.test_opening import scan_env, vmaudit
from vmaudit.discover.walk import discover
from vmaudit.errors import VmauditError
from vmaudit.guest.vhd import merge_chain, read_layer

HOSTNAME_AT = b"mini-01\n"


def parent_and_child(tmp: Path) -> tuple[Path, Path]:
    parent = raw_disk_from_tree(write_tree(tmp / "tree"), tmp / "parent.raw")
    data = bytearray(parent.read_bytes())
    at = data.index(HOSTNAME_AT)
    data[at : at + len(HOSTNAME_AT)] = b"vhd-002\n"
    child = tmp / "child.raw"
    child.write_bytes(bytes(data))
    return parent, child


def test_chain_merges_to_the_child_disk_exactly(tmp_path: Path) -> None:
    parent_raw, child_raw = parent_and_child(tmp_path)
    subprocess.run(
        [
            "qemu-img",
            "convert",
            "-O",
            "vpc",
            "-o",
            "force_size=on",
            str(parent_raw),
            str(tmp_path / "parent.vhd"),
        ],
        check=True,
    )
    differencing_vhd(parent_raw, child_raw, "parent.vhd", tmp_path / "child.vhd")
    child = read_layer(str(tmp_path / "child.vhd"))
    assert child.disk_type == 4
    assert sum(1 for entry in child.bat if entry != 0xFFFFFFFF) == 1  # one block differs

    [image] = discover([str(tmp_path / "child.vhd")]).images
    assert [Path(p).name for p in image.disks[0].chain] == ["child.vhd", "parent.vhd"]
    size = merge_chain(image.disks[0].chain, str(tmp_path / "merged.raw"))
    merged = (tmp_path / "merged.raw").read_bytes()
    assert size == child_raw.stat().st_size
    assert merged == child_raw.read_bytes()
    assert (tmp_path / "merged.raw").stat().st_blocks * 512 < size  # kept sparse


def test_fixed_parent_and_bad_headers(tmp_path: Path) -> None:
    parent_raw, child_raw = parent_and_child(tmp_path)
    subprocess.run(
        [
            "qemu-img",
            "convert",
            "-O",
            "vpc",
            "-o",
            "subformat=fixed,force_size=on",
            str(parent_raw),
            str(tmp_path / "fixed.vhd"),
        ],
        check=True,
    )
    differencing_vhd(parent_raw, child_raw, "fixed.vhd", tmp_path / "child.vhd")
    chain = [str(tmp_path / "child.vhd"), str(tmp_path / "fixed.vhd")]
    merge_chain(chain, str(tmp_path / "merged.raw"))
    assert (tmp_path / "merged.raw").read_bytes() == child_raw.read_bytes()

    # A block table entry pointing far past the end of the file is refused, not followed.
    data = bytearray((tmp_path / "child.vhd").read_bytes())
    layer = read_layer(str(tmp_path / "child.vhd"))
    dyn = int.from_bytes(data[16:24], "big")
    table = int.from_bytes(data[dyn + 16 : dyn + 24], "big")
    index = next(i for i, entry in enumerate(layer.bat) if entry != 0xFFFFFFFF)
    data[table + 4 * index : table + 4 * index + 4] = (0x7FFFFFF0).to_bytes(4, "big")
    (tmp_path / "evil.vhd").write_bytes(bytes(data))
    with pytest.raises(VmauditError, match="outside the file"):
        merge_chain(
            [str(tmp_path / "evil.vhd"), str(tmp_path / "fixed.vhd")], str(tmp_path / "out.raw")
        )
    # Layers of different sizes are no chain.
    subprocess.run(
        [
            "qemu-img",
            "create",
            "-q",
            "-f",
            "vpc",
            "-o",
            "force_size=on",
            str(tmp_path / "small.vhd"),
            "1M",
        ],
        check=True,
    )
    with pytest.raises(VmauditError, match="differ in size"):
        merge_chain(
            [str(tmp_path / "child.vhd"), str(tmp_path / "small.vhd")], str(tmp_path / "out.raw")
        )


@pytest.mark.appliance
def test_differencing_vhd_with_its_parent_is_audited_as_the_child(tmp_path: Path) -> None:
    parent_raw, child_raw = parent_and_child(tmp_path)
    store = tmp_path / "store"
    store.mkdir()
    subprocess.run(
        [
            "qemu-img",
            "convert",
            "-O",
            "vpc",
            "-o",
            "force_size=on",
            str(parent_raw),
            str(store / "parent.vhd"),
        ],
        check=True,
    )
    differencing_vhd(parent_raw, child_raw, "parent.vhd", store / "child.vhd")
    before = fingerprint(store)

    proc = vmaudit("inspect", str(store), env=scan_env(tmp_path))

    assert proc.returncode == 0, proc.stderr
    facts = json.loads(proc.stdout)
    assert facts["image"]["path"] == str(store / "child.vhd")
    assert facts["os"]["hostname"] == "vhd-002"  # the child's sector, over the parent's disk
    assert {u["name"] for u in facts["users"]} >= {"root", "toor", "alice"}
    assert fingerprint(store) == before
