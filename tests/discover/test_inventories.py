"""Hypervisor inventories read offline, and block devices as disks, without an appliance.

An offline libvirt folder laid out as /etc/libvirt (qemu/*.xml beside storage/*.xml),
Proxmox configuration written in the syntax of its documentation (qemu-server/VMID.conf,
storage.cfg with dir, lvm, lvmthin and zfspool storages), a vSphere ``.vmtx`` template, and
real loop devices. Facts are cached under the disks' real identities, so the scans judge
them without opening an image; what cannot be audited is an error row and the scan goes on.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import socket
import stat
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.act.gatehelpers import COMPLIANT, OUT_OF_BASELINE, build_image, cache_facts
from tests.discover.hvhelpers import by_vm, dir_pool, domain, file_disk, scan, volume_disk
from tests.loopdev import dm_available, loop_device, run, usable, volume_group
from vmaudit.discover.blockdev import check_device, lvm_seqno
from vmaudit.discover.hypervisor import inventories
from vmaudit.discover.identity import device_identity, image_identity
from vmaudit.discover.proxmox import list_vms
from vmaudit.discover.walk import discover
from vmaudit.errors import ErrorKind, VmauditError

needs_root = pytest.mark.skipif(not usable(), reason="needs root and losetup")

STORAGE_CFG = """dir: local
\tpath {local}
\tcontent iso,vztmpl,backup,images

lvmthin: local-lvm
\tthinpool data
\tvgname {vg}
\tcontent rootdir,images

lvm: fake-lvm
\tvgname vmauditfakevg
\tcontent images

zfspool: local-zfs
\tpool rpool/data
\tsparse 1
\tcontent images,rootdir

rbd: ceph
\tpool vms
\tcontent images
"""
INVENTORY = """apiVersion: vmaudit/v1
kind: Inventory
applications:
  - name: payroll
    owner: finance-it
    criticality: high
    match: {tag: payroll}
  - name: golden-images
    match: {template: true, notes: "*golden*"}
"""


def _env(tmp: Path) -> dict[str, str]:
    return {**os.environ, "XDG_DATA_HOME": str(tmp / "data"), "XDG_STATE_HOME": str(tmp / "st")}


# ---------------------------------------------------------------- libvirt, offline


@pytest.fixture
def etc_libvirt(tmp_path: Path) -> dict[str, Path]:
    store = tmp_path / "pool"
    legacy, legacy_tree = build_image(store, "legacy.img", OUT_OF_BASELINE)
    state = tmp_path / "state.db"
    cache_facts(state, legacy, legacy_tree)
    qemu = tmp_path / "etc" / "libvirt" / "qemu"
    storage = tmp_path / "etc" / "libvirt" / "storage"
    qemu.mkdir(parents=True)
    storage.mkdir()
    (storage / "default.xml").write_text(dir_pool("default", store))
    (qemu / "legacy.xml").write_text(domain("legacy", volume_disk("default", "legacy.img")))
    (qemu / "escape.xml").write_text(domain("escape", volume_disk("default", "../../etc/shadow")))
    (qemu / "nopool.xml").write_text(domain("nopool", volume_disk("gone", "x.img")))
    (qemu / "outside.xml").write_text(domain("outside", file_disk("/etc/hostname")))
    (qemu / "entity.xml").write_text(
        "<!DOCTYPE d [<!ENTITY e SYSTEM 'file:///etc/shadow'>]><domain>&e;</domain>"
    )
    with open(qemu / "garbage.xml", "wb") as handle:  # megabytes of binary garbage
        handle.write(hashlib.sha512(b"x").digest() * (6 * 1024 * 1024 // 64))
    return {"qemu": qemu, "store": store, "state": state, "legacy": legacy}


def test_an_offline_libvirt_folder_is_read_with_its_pools(
    etc_libvirt: dict[str, Path], tmp_path: Path
) -> None:
    code, report, err = scan(
        "--libvirt",
        str(etc_libvirt["qemu"]),
        "--state",
        str(etc_libvirt["state"]),
        env=_env(tmp_path),
    )
    assert code == 1, err
    guests = by_vm(report)
    legacy = guests["legacy"]
    assert legacy["path"] == str(etc_libvirt["legacy"]) and legacy["from_cache"]
    assert legacy["vm"] == {"name": "legacy", "source": "libvirt", "template": False, "state": None}
    assert "volume name refused" in guests["escape"]["error"]["message"]
    assert "pool 'gone' is not defined" in guests["nopool"]["error"]["message"]
    assert guests["outside"]["error"]["kind"] == "outside-datastore"
    messages = [i["error"]["message"] for i in report["images"] if i["status"] == "error"]
    assert any("a DOCTYPE refused" in m for m in messages)
    assert any("larger than" in m for m in messages)  # the garbage file, capped
    assert len(report["images"]) == 6


# ---------------------------------------------------------------- Proxmox


@pytest.fixture
def pve(tmp_path: Path) -> Iterator[dict[str, Any]]:
    local = tmp_path / "vz"
    good, good_tree = build_image(local / "images" / "100", "vm-100-disk-0.raw", COMPLIANT)
    bad, bad_tree = build_image(local / "images" / "101", "vm-101-disk-0.raw", OUT_OF_BASELINE)
    state = tmp_path / "state.db"
    cache_facts(state, good, good_tree)
    cache_facts(state, bad, bad_tree)
    root = tmp_path / "pve"
    (root / "qemu-server").mkdir(parents=True)
    vg = "vmauditpvevg"
    (root / "storage.cfg").write_text(STORAGE_CFG.format(local=local, vg=vg))
    confs = {
        "100": "#golden image for the web tier\ntemplate: 1\nname: web-gold\n"
        "scsi0: local:100/vm-100-disk-0.raw,size=16M\n",
        "101": "boot: order=scsi0\nname: payroll-db\ntags: payroll;prod\n"
        "scsi0: local:101/vm-101-disk-0.raw,size=16M\nide2: local:iso/debian.iso,media=cdrom\n"
        "unused0: local:101/vm-101-disk-9.raw\n\n[before-upgrade]\nscsi0: local:101/old.raw\n",
        "102": "name: thin\nscsi0: local-lvm:vm-102-disk-0,size=16M\n",
        "103": "name: zvol\nvirtio0: local-zfs:vm-103-disk-0,size=8G\n",
        "104": "name: ceph\nvirtio0: ceph:vm-104-disk-0,size=8G\n",
        "105": "name: aliased\nscsi0: fake-lvm:vm-105-disk-0,size=16M\n",
    }
    for vmid, text in confs.items():
        (root / "qemu-server" / f"{vmid}.conf").write_text(text)
    with open(root / "qemu-server" / "106.conf", "wb") as handle:
        handle.write(b"\x00\xff" * (3 * 1024 * 1024))
    (root / "qemu-server" / "107.conf").write_bytes(b"\x00garbage" * 100)
    yield {"root": root, "state": state, "local": local, "vg": vg, "tmp": tmp_path}


def test_proxmox_vms_with_names_templates_tags_and_resolved_storages(pve: dict[str, Any]) -> None:
    guests, roots = list_vms(str(pve["root"]))
    by_id = {Path(g.config).stem: g for g in guests}
    assert set(by_id) == {"100", "101", "102", "103", "104", "105", "106", "107"}
    gold, payroll = by_id["100"], by_id["101"]
    assert (
        gold.template and gold.name == "web-gold" and gold.notes == "golden image for the web tier"
    )
    assert payroll.tags == ("payroll", "prod") and not payroll.template
    assert [d.target for d in payroll.disks] == ["scsi0"]  # no cdrom, unused or snapshot
    assert by_id["102"].disks[0].path == f"/dev/{pve['vg']}/vm-102-disk-0"
    assert by_id["103"].disks[0].path == "/dev/zvol/rpool/data/vm-103-disk-0"
    assert by_id["104"].disks[0].kind == "network"
    assert "larger than 1048576 bytes" in str(by_id["106"].problem)
    assert "binary content" in str(by_id["107"].problem)
    assert str(pve["local"] / "images") in roots and f"/dev/{pve['vg']}" in roots


def test_scan_proxmox_judges_its_vms_and_maps_them_by_tag(pve: dict[str, Any]) -> None:
    inventory = pve["tmp"] / "inventory.yaml"
    inventory.write_text(INVENTORY)
    code, report, err = scan(
        "--proxmox",
        str(pve["root"]),
        "--state",
        str(pve["state"]),
        "-i",
        str(inventory),
        env=_env(pve["tmp"]),
    )
    assert code == 1, err
    guests = by_vm(report)
    payroll, gold = guests["payroll-db"], guests["web-gold"]
    assert payroll["vm"]["source"] == "proxmox" and payroll["from_cache"]
    assert payroll["business"] == {
        "application": "payroll",
        "owner": "finance-it",
        "criticality": "high",
    }
    assert gold["vm"]["template"] is True and gold["business"]["application"] == "golden-images"
    assert guests["ceph"]["error"]["kind"] == "unsupported-format"
    assert "cannot be audited from this host" in guests["ceph"]["error"]["message"]
    assert guests["zvol"]["status"] == "error" and guests["thin"]["status"] == "error"
    assert guests["vm106"]["status"] == guests["vm107"]["status"] == "error"


@needs_root
@pytest.mark.skipif(not dm_available(), reason="no device-mapper in this kernel: no LV")
def test_a_proxmox_lvmthin_disk_is_a_real_logical_volume(pve: dict[str, Any]) -> None:
    image = pve["local"] / "images" / "100" / "vm-100-disk-0.raw"
    with volume_group(pve["tmp"] / "pv.img", pve["vg"], size_mb=96):
        try:
            for args in (
                ("lvcreate", "-q", "-y", "-L", "48M", "-T", f"{pve['vg']}/data"),
                (
                    "lvcreate",
                    "-q",
                    "-y",
                    "-V",
                    "16M",
                    "-T",
                    f"{pve['vg']}/data",
                    "-n",
                    "vm-102-disk-0",
                ),
            ):
                made = run(*args)
                assert made.returncode == 0, made.stderr
            lv = f"/dev/{pve['vg']}/vm-102-disk-0"
            assert run("qemu-img", "convert", "-n", "-O", "raw", str(image), lv).returncode == 0
            found = inventories([], [str(pve["root"])], [])
            (thin,) = [i for i in found.images if i.vm == "thin"]
            assert thin.disks[0].block and thin.disks[0].path == lv
            assert image_identity(thin).files[0].lvm_seqno is not None
        finally:
            run("lvremove", "-q", "-f", "-y", pve["vg"])


@pytest.fixture
def fake_vg_link(pve: dict[str, Any]) -> Iterator[str]:
    """``/dev/vmauditfakevg/vm-105-disk-0``: a link named like an LV to a loop device."""
    folder = Path("/dev/vmauditfakevg")
    backing = pve["tmp"] / "other-disk.img"
    backing.write_bytes(b"\0" * 1024 * 1024)
    folder.mkdir()
    try:
        with loop_device(backing, read_only=True) as loop:
            os.symlink(loop, folder / "vm-105-disk-0")
            yield loop
    finally:
        shutil.rmtree(folder)


@needs_root
def test_a_link_named_like_a_logical_volume_to_another_device_is_refused(
    pve: dict[str, Any], fake_vg_link: str
) -> None:
    found = inventories([], [str(pve["root"])], [])
    (row,) = [s for s in found.skipped if s.image is not None and s.image.vm == "aliased"]
    assert row.kind is ErrorKind.NOT_A_REGULAR_FILE
    assert f"is {fake_vg_link}, not the logical volume vmauditfakevg/vm-105-disk-0" in row.message


# ---------------------------------------------------------------- VMware templates


def test_a_vmtx_template_is_a_flagged_vm_with_its_annotation(tmp_path: Path) -> None:
    folder = tmp_path / "ds" / "gold"
    build_image(folder, "gold.img", COMPLIANT)
    os.rename(folder / "gold.img", folder / "gold-flat.vmdk")
    (folder / "gold.vmdk").write_text(
        "# Disk DescriptorFile\nversion=1\nCID=fffffffe\nparentCID=ffffffff\n"
        'createType="monolithicFlat"\n\nRW 32768 FLAT "gold-flat.vmdk" 0\n'
    )
    (folder / "gold.vmtx").write_text(
        '.encoding = "UTF-8"\ndisplayName = "gold-template"\n'
        'annotation = "golden image|0Afor payroll"\nscsi0:0.present = "TRUE"\n'
        'scsi0:0.fileName = "gold.vmdk"\n'
    )
    (image,) = discover([str(tmp_path / "ds")]).images
    assert (image.path, image.vm, image.template) == (
        str(folder / "gold.vmtx"),
        "gold-template",
        True,
    )
    assert image.source == "vmware" and image.notes == "golden image for payroll"


# ---------------------------------------------------------------- block devices


@needs_root
def test_a_block_device_identity_is_device_size_and_head(tmp_path: Path) -> None:
    backing = tmp_path / "disk.raw"
    backing.write_bytes(b"\1" * (12 * 1024 * 1024))
    with loop_device(backing) as loop:
        first = device_identity(loop)
        assert first.size == 12 * 1024 * 1024 and first.lvm_seqno is None
        assert first.device == os.stat(loop).st_rdev and first.mtime_ns == 0
        assert device_identity(loop) == first
        with open(loop, "r+b") as handle:  # inside the 8 MiB head: another identity
            handle.seek(5 * 1024 * 1024)
            handle.write(b"changed")
        assert device_identity(loop).sha256_head != first.sha256_head
        (ref,) = discover([loop]).images
        assert ref.disks[0].block and ref.format == "raw"
        assert image_identity(ref).files == (device_identity(loop),)


@needs_root
def test_a_device_starting_with_a_qcow2_header_is_qcow2_anything_else_raw(tmp_path: Path) -> None:
    backing = tmp_path / "disk.raw"
    backing.write_bytes(b"conectix" + b"\0" * (2 * 1024 * 1024))  # a VHD signature: not believed
    with loop_device(backing) as loop:
        assert discover([loop]).images[0].format == "raw"
    run("qemu-img", "create", "-q", "-f", "qcow2", str(backing), "16M")
    with loop_device(backing) as loop:
        assert discover([loop]).images[0].format == "qcow2"


@needs_root
def test_device_nodes_and_links_outside_dev_are_refused(tmp_path: Path) -> None:
    backing = tmp_path / "disk.raw"
    backing.write_bytes(b"\0" * 1024 * 1024)
    with loop_device(backing, read_only=True) as loop:
        link = tmp_path / "disk-link"
        os.symlink(loop, link)
        with pytest.raises(VmauditError, match="a symbolic link outside /dev"):
            check_device(str(link))
        node = tmp_path / "node"
        os.mknod(node, stat.S_IFBLK | 0o600, os.stat(loop).st_rdev)
        with pytest.raises(VmauditError, match="a device node outside /dev"):
            check_device(str(node))
        with pytest.raises(VmauditError, match="not a block device"):
            check_device("/dev/null")


def test_a_silent_libvirt_is_an_error_row_and_the_scan_goes_on(
    etc_libvirt: dict[str, Path], tmp_path: Path
) -> None:
    path = tmp_path / "silent.sock"
    with socket.socket(socket.AF_UNIX) as silent:
        silent.bind(str(path))
        silent.listen(1)  # accepts, never answers
        started = time.monotonic()
        code, report, err = scan(
            "--libvirt",
            f"qemu:///system?socket={path}",
            "--libvirt",
            str(etc_libvirt["qemu"]),
            "--state",
            str(etc_libvirt["state"]),
            env=_env(tmp_path),
        )
    assert time.monotonic() - started < 60
    assert code == 1, err  # the offline folder's legacy guest was still judged
    (row,) = [i for i in report["images"] if i["path"].startswith("qemu:///system")]
    assert row["error"]["kind"] == "hypervisor-unreachable"
    assert "no answer within 10 s" in row["error"]["message"]
    assert by_vm(report)["legacy"]["status"] == "audited"


@needs_root
def test_a_volume_groups_seqno_grows_with_each_metadata_change(tmp_path: Path) -> None:
    with volume_group(tmp_path / "pv.img", "vmauditseqvg"):
        first = lvm_seqno("vmauditseqvg")
        assert first is not None
        assert run("vgchange", "-q", "--addtag", "audited", "vmauditseqvg").returncode == 0
        assert lvm_seqno("vmauditseqvg") == first + 1
    assert lvm_seqno("vmauditseqvg") is None  # gone
