"""Discovery: formats from content, names checked, VMs grouped, chains audited at their leaf."""

from __future__ import annotations

import os
import struct
from pathlib import Path

import pytest

from tests.imaging import vhd_checksum
from vmaudit.discover.formats import sniff
from vmaudit.discover.walk import discover

from .conftest import qemu_img, raw_with_mbr


def kinds(result: object) -> dict[str, str]:
    return {os.path.basename(s.path): str(s.kind) for s in result.skipped}  # type: ignore[attr-defined]


def leaves(result: object) -> list[str]:
    return [os.path.basename(i.path) for i in result.images]  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("name", "args", "expected"),
    [
        ("a.qcow2", ["-f", "qcow2"], "qcow2"),
        ("a.vmdk", ["-f", "vmdk"], "vmdk"),
        ("a.vhd", ["-f", "vpc"], "vhd"),
        ("fixed.vhd", ["-f", "vpc", "-o", "subformat=fixed"], "vhd"),
        ("a.vhdx", ["-f", "vhdx"], "vhdx"),
    ],
)
def test_format_is_read_from_content(
    tmp_path: Path, name: str, args: list[str], expected: str
) -> None:
    qemu_img("create", *args, str(tmp_path / name), "16M")
    assert sniff(str(tmp_path / name)).format == expected
    result = discover([str(tmp_path)])
    assert [(i.format, os.path.basename(i.path)) for i in result.images] == [(expected, name)]


def test_stream_optimized_and_flat_vmdk(tmp_path: Path) -> None:
    raw = raw_with_mbr(tmp_path / "src.raw")
    qemu_img(
        "convert",
        "-O",
        "vmdk",
        "-o",
        "subformat=streamOptimized",
        str(raw),
        str(tmp_path / "stream.vmdk"),
    )
    qemu_img(
        "create", "-f", "vmdk", "-o", "subformat=monolithicFlat", str(tmp_path / "flat.vmdk"), "8M"
    )
    result = discover([str(tmp_path)])
    assert leaves(result) == ["flat.vmdk", "src.raw", "stream.vmdk"]
    flat = next(i for i in result.images if i.path.endswith("flat.vmdk"))
    assert [os.path.basename(p) for p in flat.disks[0].chain] == ["flat.vmdk", "flat-flat.vmdk"]
    assert result.skipped == []


def test_raw_needs_a_partition_table_when_it_has_no_extension(tmp_path: Path) -> None:
    raw_with_mbr(tmp_path / "disk")
    (tmp_path / "notes").write_bytes(b"hello\n" * 200)
    (tmp_path / "readme.txt").write_bytes(b"QFI\xfb" + b"\0" * 100)
    assert leaves(discover([str(tmp_path)])) == ["disk"]


def test_name_and_content_disagreeing_is_reported(tmp_path: Path) -> None:
    qemu_img("create", "-f", "qcow2", str(tmp_path / "disk.raw"), "16M")
    result = discover([str(tmp_path)])
    assert result.images == []
    assert kinds(result) == {"disk.raw": "format-mismatch"}


def test_garbage_with_image_names_is_reported(tmp_path: Path) -> None:
    (tmp_path / "empty.qcow2").write_bytes(b"")
    (tmp_path / "random.vmdk").write_bytes(os.urandom(70000))
    (tmp_path / "trunc.vhdx").write_bytes(b"vhdx")
    result = discover([str(tmp_path)])
    assert result.images == []
    assert kinds(result) == {
        "empty.qcow2": "corrupt-image",
        "random.vmdk": "corrupt-image",
        "trunc.vhdx": "corrupt-image",
    }


def test_qcow2_chain_is_audited_once_at_its_leaf(tmp_path: Path) -> None:
    qemu_img("create", "-f", "qcow2", str(tmp_path / "base.qcow2"), "16M")
    qemu_img(
        "create", "-f", "qcow2", "-b", "base.qcow2", "-F", "qcow2", str(tmp_path / "leaf.qcow2")
    )
    result = discover([str(tmp_path)])
    assert leaves(result) == ["leaf.qcow2"]
    assert [os.path.basename(p) for p in result.images[0].disks[0].chain] == [
        "leaf.qcow2",
        "base.qcow2",
    ]


def test_backing_file_outside_the_folder_is_refused(tmp_path: Path) -> None:
    (tmp_path / "vm").mkdir()
    qemu_img("create", "-f", "qcow2", str(tmp_path / "base.qcow2"), "16M")
    qemu_img(
        "create",
        "-f",
        "qcow2",
        "-u",
        "-b",
        "../base.qcow2",
        "-F",
        "qcow2",
        str(tmp_path / "vm" / "leaf.qcow2"),
        "16M",
    )
    qemu_img(
        "create",
        "-f",
        "qcow2",
        "-u",
        "-b",
        "/etc/passwd",
        "-F",
        "raw",
        str(tmp_path / "vm" / "host.qcow2"),
        "16M",
    )
    qemu_img(
        "create",
        "-f",
        "qcow2",
        "-u",
        "-b",
        "nbd://127.0.0.1:10809/x",
        "-F",
        "raw",
        str(tmp_path / "vm" / "nbd.qcow2"),
        "16M",
    )
    result = discover([str(tmp_path / "vm")])
    assert result.images == []
    assert kinds(result) == {
        "leaf.qcow2": "unsafe-backing-file",
        "host.qcow2": "unsafe-backing-file",
        "nbd.qcow2": "unsafe-backing-file",
    }


def test_vmdk_extent_naming_a_host_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "evil.vmdk").write_text(
        "# Disk DescriptorFile\nversion=1\nCID=fffffffe\nparentCID=ffffffff\n"
        'createType="monolithicFlat"\n\nRW 2048 FLAT "/etc/passwd" 0\n'
    )
    result = discover([str(tmp_path)])
    assert result.images == []
    assert kinds(result) == {"evil.vmdk": "unsafe-extent"}


def make_differencing_vhd(path: Path, parent_name: str) -> None:
    """A dynamic VHD made by qemu-img, turned into a differencing disk naming ``parent_name``."""
    qemu_img("create", "-f", "vpc", str(path), "16M")
    data = bytearray(path.read_bytes())
    for offset in (0, len(data) - 512):
        footer = data[offset : offset + 512]
        footer[60:64] = struct.pack(">I", 4)
        vhd_checksum(footer)
        data[offset : offset + 512] = footer
    dyn = struct.unpack(">Q", data[16:24])[0]
    name = parent_name.encode("utf-16-be")
    data[dyn + 0x40 : dyn + 0x40 + len(name)] = name
    path.write_bytes(bytes(data))


def test_vhd_differencing_disk_without_its_parent_is_refused(tmp_path: Path) -> None:
    make_differencing_vhd(tmp_path / "child.vhd", "parent.vhd")
    result = discover([str(tmp_path)])
    assert result.images == []
    assert kinds(result) == {"child.vhd": "missing-parent"}


def test_vhd_differencing_disk_with_its_parent_is_grouped(tmp_path: Path) -> None:
    qemu_img("create", "-f", "vpc", str(tmp_path / "parent.vhd"), "16M")
    make_differencing_vhd(tmp_path / "child.vhd", "parent.vhd")
    result = discover([str(tmp_path)])
    assert leaves(result) == ["child.vhd"]


def test_symlink_fifo_and_folder_named_like_images_are_reported(tmp_path: Path) -> None:
    qemu_img("create", "-f", "qcow2", str(tmp_path / "real.qcow2"), "16M")
    os.symlink("/etc/passwd", tmp_path / "link.qcow2")
    os.mkfifo(tmp_path / "pipe.qcow2")
    os.symlink(tmp_path, tmp_path / "loop")  # a symlink loop of folders is never entered
    result = discover([str(tmp_path)])
    assert leaves(result) == ["real.qcow2"]
    assert kinds(result) == {"link.qcow2": "not-a-regular-file", "pipe.qcow2": "not-a-regular-file"}


def test_symlink_given_directly_is_reported_not_followed(tmp_path: Path) -> None:
    qemu_img("create", "-f", "qcow2", str(tmp_path / "real.qcow2"), "16M")
    os.symlink(tmp_path / "real.qcow2", tmp_path / "alias.qcow2")
    result = discover([str(tmp_path / "alias.qcow2")])
    assert result.images == []
    assert kinds(result) == {"alias.qcow2": "not-a-regular-file"}


def test_vmx_groups_disks_and_snapshot_delta(tmp_path: Path) -> None:
    qemu_img("create", "-f", "vmdk", str(tmp_path / "sys.vmdk"), "16M")
    qemu_img(
        "create", "-f", "vmdk", "-b", "sys.vmdk", "-F", "vmdk", str(tmp_path / "sys-000001.vmdk")
    )
    qemu_img("create", "-f", "vmdk", str(tmp_path / "data.vmdk"), "16M")
    (tmp_path / "erp.vmx").write_text(
        'displayName = "legacy-erp"\n'
        'scsi0:0.present = "TRUE"\nscsi0:0.fileName = "sys-000001.vmdk"\n'
        'scsi0:1.present = "TRUE"\nscsi0:1.fileName = "data.vmdk"\n'
        'ide1:0.present = "TRUE"\nide1:0.deviceType = "cdrom-image"\n'
        'ide1:0.fileName = "install.iso"\n'
    )
    (tmp_path / "erp.nvram").write_bytes(os.urandom(100))
    result = discover([str(tmp_path)])
    assert result.skipped == []
    assert len(result.images) == 1
    vm = result.images[0]
    assert vm.vm == "legacy-erp"
    assert [os.path.basename(d.path) for d in vm.disks] == ["sys-000001.vmdk", "data.vmdk"]
    assert [os.path.basename(p) for p in vm.disks[0].chain] == ["sys-000001.vmdk", "sys.vmdk"]


def test_libvirt_domain_xml_groups_disks(tmp_path: Path) -> None:
    qemu_img("create", "-f", "qcow2", str(tmp_path / "a.qcow2"), "16M")
    qemu_img("create", "-f", "qcow2", str(tmp_path / "b.qcow2"), "16M")
    (tmp_path / "db.xml").write_text(
        "<domain type='kvm'><name>db-01</name><devices>"
        "<disk type='file' device='disk'><driver name='qemu' type='qcow2'/>"
        "<source file='a.qcow2'/></disk>"
        "<disk type='file' device='disk'><source file='b.qcow2'/></disk>"
        "</devices></domain>"
    )
    result = discover([str(tmp_path)])
    assert [(i.vm, len(i.disks)) for i in result.images] == [("db-01", 2)]


def test_vmx_naming_a_disk_outside_its_folder_is_refused(tmp_path: Path) -> None:
    (tmp_path / "vm").mkdir()
    qemu_img("create", "-f", "vmdk", str(tmp_path / "other.vmdk"), "16M")
    (tmp_path / "vm" / "x.vmx").write_text('scsi0:0.fileName = "../other.vmdk"\n')
    result = discover([str(tmp_path / "vm")])
    assert result.images == []
    assert kinds(result) == {"x.vmx": "unsafe-backing-file"}


def test_lck_folder_marks_image_in_use(tmp_path: Path) -> None:
    qemu_img("create", "-f", "vmdk", str(tmp_path / "live.vmdk"), "16M")
    (tmp_path / "live.vmdk.lck").mkdir()
    result = discover([str(tmp_path)])
    assert [(leaves(result)[0], result.images[0].in_use)] == [("live.vmdk", True)]


def test_excludes_and_unreadable_folder(tmp_path: Path) -> None:
    qemu_img("create", "-f", "qcow2", str(tmp_path / "keep.qcow2"), "16M")
    qemu_img("create", "-f", "qcow2", str(tmp_path / "skip.qcow2"), "16M")
    result = discover([str(tmp_path)], excludes=["*/skip.*"])
    assert leaves(result) == ["keep.qcow2"]
