"""Disk image formats decided from a file's own bytes, and the links each header names.

Nothing here asks qemu: headers are parsed in Python from bounded reads, so sniffing a
hostile file cannot make anything follow its backing file. Format names are the ones users
see (``qcow2``, ``vmdk``, ``vhd``, ``vhdx``, ``raw``); ``qemu_driver`` maps them to qemu's.
"""

from __future__ import annotations

import os
import re
import struct
from dataclasses import dataclass

HEAD_BYTES = 64 * 1024
MAX_DESCRIPTOR = 64 * 1024  # a VMDK text descriptor is a few hundred bytes

IMAGE_SUFFIXES = {
    ".qcow2": "qcow2",
    ".qcow": "qcow2",
    ".vmdk": "vmdk",
    ".vhd": "vhd",
    ".vhdx": "vhdx",
    ".avhd": "vhd",
    ".avhdx": "vhdx",
    ".img": "raw",
    ".raw": "raw",
}
DESCRIPTOR_SUFFIXES = {".vmx", ".ovf", ".xml"}

QEMU_DRIVERS = {"qcow2": "qcow2", "vmdk": "vmdk", "vhd": "vpc", "vhdx": "vhdx", "raw": "raw"}

VHD_FIXED, VHD_DYNAMIC, VHD_DIFFERENCING = 2, 3, 4


def qemu_driver(fmt: str) -> str:
    return QEMU_DRIVERS[fmt]


def expected_format(path: str) -> str | None:
    """The format a file's name promises, '' for no extension, None for not an image name."""
    suffix = os.path.splitext(path)[1].lower()
    if suffix in IMAGE_SUFFIXES:
        return IMAGE_SUFFIXES[suffix]
    if suffix == "" or not re.fullmatch(r"\.[a-z]{1,5}", suffix):
        return ""
    return None


@dataclass(frozen=True)
class Header:
    """What a file's first and last bytes say it is."""

    format: str | None  # None: not recognised as an image
    vmdk_kind: str | None = None  # "sparse", "descriptor", "cowd"
    vhd_type: int | None = None
    backing: str | None = None  # the parent named in the header, as written
    backing_format: str | None = None
    extents: tuple[str, ...] = ()  # VMDK descriptor extent files, as written
    create_type: str | None = None


def _read_bounded(path: str, offset: int, size: int) -> bytes:
    with open(path, "rb") as handle:
        handle.seek(offset)
        return handle.read(size)


def sniff(path: str) -> Header:
    """Decide an (already lstat-checked) regular file's format from its content."""
    size = os.path.getsize(path)
    head = _read_bounded(path, 0, HEAD_BYTES)
    if head.startswith(b"QFI\xfb"):
        return _qcow2(path, head)
    if head.startswith(b"KDMV"):
        return _vmdk_sparse(path, head)
    if head.startswith(b"COWD"):
        return Header("vmdk", vmdk_kind="cowd")
    if head.startswith(b"vhdxfile"):
        return Header("vhdx")
    if head.startswith(b"conectix") or (
        size >= 512 and _read_bounded(path, size - 512, 8) == b"conectix"
    ):
        return _vhd(path, size)
    if size <= MAX_DESCRIPTOR and _looks_like_vmdk_descriptor(head):
        return _vmdk_descriptor(head.decode("utf-8", errors="replace"))
    if len(head) >= 1024 and (head[510:512] == b"\x55\xaa" or head[512:520] == b"EFI PART"):
        return Header("raw")
    if len(head) >= 1082 and head[1080:1082] == b"\x53\xef":  # bare ext2/3/4 filesystem
        return Header("raw")
    if head[3:11] == b"NTFS    " or head[0x36:0x3E] in (b"FAT12   ", b"FAT16   "):
        return Header("raw")
    if len(head) >= 4096 + 8 and (head[4096:4104] == b"LABELONE" or head[512:520] == b"LABELONE"):
        return Header("raw")
    if head[:6] == b"LUKS\xba\xbe":
        return Header("raw")
    return Header(None)


def _qcow2(path: str, head: bytes) -> Header:
    if len(head) < 32:
        return Header("qcow2")
    backing_offset, backing_size = struct.unpack(">QI", head[8:20])
    backing = None
    if backing_offset and 0 < backing_size <= 1023:
        raw = _read_bounded(path, backing_offset, backing_size)
        backing = raw.decode("utf-8", errors="replace")
    backing_format = None
    version = struct.unpack(">I", head[4:8])[0]
    if version >= 3 and len(head) >= 104:
        header_length = struct.unpack(">I", head[100:104])[0]
        backing_format = _qcow2_backing_format(head, header_length)
    return Header("qcow2", backing=backing, backing_format=backing_format)


def _qcow2_backing_format(head: bytes, header_length: int) -> str | None:
    offset = header_length
    for _ in range(64):  # header extensions, bounded
        if offset + 8 > len(head):
            return None
        ext_type, ext_len = struct.unpack(">II", head[offset : offset + 8])
        if ext_type == 0:
            return None
        if ext_type == 0xE2792ACA:
            return head[offset + 8 : offset + 8 + ext_len].decode("ascii", errors="replace")
        offset += 8 + ((ext_len + 7) & ~7)
    return None


def _vmdk_sparse(path: str, head: bytes) -> Header:
    if len(head) < 44:
        return Header("vmdk", vmdk_kind="sparse")
    desc_sector, desc_sectors = struct.unpack("<QQ", head[28:44])
    if not desc_sector or not desc_sectors or desc_sectors * 512 > MAX_DESCRIPTOR:
        return Header("vmdk", vmdk_kind="sparse")
    text = _read_bounded(path, desc_sector * 512, desc_sectors * 512)
    parsed = _vmdk_descriptor(text.split(b"\0", 1)[0].decode("utf-8", errors="replace"))
    return Header(
        "vmdk", vmdk_kind="sparse", backing=parsed.backing, backing_format=parsed.backing_format,
        create_type=parsed.create_type,
    )


def _looks_like_vmdk_descriptor(head: bytes) -> bool:
    text = head[:4096]
    return b"createType" in text and (b"# Disk DescriptorFile" in text or b"RW " in text)


_EXTENT = re.compile(r'^\s*(RW|RDONLY|NOACCESS)\s+\d+\s+(\w+)\s+"([^"]*)"', re.MULTILINE)
_KEY = re.compile(r'^\s*([A-Za-z][\w.]*)\s*=\s*"?([^"\n]*)"?\s*$', re.MULTILINE)


def _vmdk_descriptor(text: str) -> Header:
    keys = {m.group(1): m.group(2) for m in _KEY.finditer(text)}
    extents = tuple(m.group(3) for m in _EXTENT.finditer(text) if m.group(2).upper() != "ZERO")
    parent = keys.get("parentFileNameHint")
    return Header(
        "vmdk", vmdk_kind="descriptor", backing=parent or None,
        backing_format="vmdk" if parent else None, extents=extents,
        create_type=keys.get("createType"),
    )


def _vhd(path: str, size: int) -> Header:
    footer = _read_bounded(path, size - 512, 512)
    if footer[:8] != b"conectix":
        footer = _read_bounded(path, 0, 512)
    disk_type = struct.unpack(">I", footer[60:64])[0] if len(footer) >= 64 else None
    backing = None
    if disk_type == VHD_DIFFERENCING and len(footer) >= 24:
        data_offset = struct.unpack(">Q", footer[16:24])[0]
        if 0 < data_offset < size:
            dynamic = _read_bounded(path, data_offset, 1024)
            if dynamic[:8] == b"cxsparse" and len(dynamic) >= 0x240:
                backing = dynamic[0x40:0x240].decode("utf-16-be", errors="replace").rstrip("\0")
    return Header("vhd", vhd_type=disk_type, backing=backing or None,
                  backing_format="vhd" if backing else None)
