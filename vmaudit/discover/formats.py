"""Disk image formats decided from a file's own bytes, and the links each header names.

Nothing here asks qemu: headers are parsed in Python from bounded reads, so sniffing a
hostile file cannot make anything follow its backing file. Every offset and size read from
a header is checked against the file (and the format's own limits) before it is used: a
header that points outside its file is a ``HeaderError`` of kind ``corrupt-image``, never a
``seek`` error. Text descriptors are parsed line by line, in time linear in their size.
Format names are the ones users see (``qcow2``, ``vmdk``, ``vhd``, ``vhdx``, ``raw``);
``qemu_driver`` maps them to qemu's.
"""

from __future__ import annotations

import os
import re
import stat
import struct
from dataclasses import dataclass

from vmaudit.errors import ErrorKind, VmauditError

HEAD_BYTES = 64 * 1024
MAX_DESCRIPTOR = 64 * 1024  # a VMDK text descriptor is a few hundred bytes
SECTOR = 512
# qemu reads a VMDK's parentFileNameHint from this many bytes (DESC_SIZE in block/vmdk.c),
# at offset 0 of a descriptor file and at 0x200 of a sparse one, whatever its header says.
QEMU_VMDK_DESC_SIZE = 20 * SECTOR
QEMU_VMDK_SPARSE_DESC_OFFSET = 0x200
QCOW2_MIN_HEADER = 72  # version 2 header; version 3 adds fields up to header_length
QCOW2_MAX_BACKING_NAME = 1023

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
DESCRIPTOR_SUFFIXES = {".vmx", ".vmtx", ".ovf", ".xml"}  # .vmtx: a vSphere template

QEMU_DRIVERS = {"qcow2": "qcow2", "vmdk": "vmdk", "vhd": "vpc", "vhdx": "vhdx", "raw": "raw"}

VHD_FIXED, VHD_DYNAMIC, VHD_DIFFERENCING = 2, 3, 4


class HeaderError(VmauditError):
    """A header whose fields cannot describe the file they are in."""

    def __init__(self, path: str, what: str) -> None:
        super().__init__(ErrorKind.CORRUPT_IMAGE, f"{os.path.basename(path)}: {what}")


def qemu_driver(fmt: str) -> str:
    return QEMU_DRIVERS[fmt]


def qcow2_over(fmt: str, backing: str) -> list[str]:
    """``qemu-img`` arguments of a qcow2 overlay on ``backing``, its format pinned."""
    return ["-f", "qcow2", "-F", qemu_driver(fmt), "-b", backing]


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


class _Image:
    """One regular file opened once, read only at offsets checked against its size.

    Opened with ``O_NONBLOCK | O_NOFOLLOW`` and checked with ``fstat``: a file swapped for a
    FIFO or a symlink after discovery's ``lstat`` is refused, never waited on.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            st = os.fstat(fd)
        except OSError:
            os.close(fd)
            raise
        if not stat.S_ISREG(st.st_mode):
            os.close(fd)
            raise VmauditError(
                ErrorKind.NOT_A_REGULAR_FILE, f"{os.path.basename(path)}: not a regular file"
            )
        self.fd = fd
        self.size = st.st_size

    def close(self) -> None:
        os.close(self.fd)

    def read(self, offset: int, size: int, what: str) -> bytes:
        """``size`` bytes at ``offset`` (fewer at the end of the file); outside it: corrupt."""
        if offset < 0 or size < 0 or offset > self.size:
            raise HeaderError(
                self.path, f"{what} at offset {offset} lies outside the file ({self.size} bytes)"
            )
        return os.pread(self.fd, min(size, self.size - offset), offset)


def read_head(path: str, size: int) -> bytes:
    """The first ``size`` bytes of a regular file, opened as ``sniff`` opens it."""
    image = _Image(path)
    try:
        return image.read(0, size, "start")
    finally:
        image.close()


def sniff(path: str) -> Header:
    """Decide an (already lstat-checked) regular file's format from its content.

    Raises ``HeaderError`` for a header that points outside its file, ``VmauditError`` for a
    file that is no longer regular, ``OSError`` when it cannot be read.
    """
    image = _Image(path)
    try:
        return _sniff(image)
    finally:
        image.close()


def _sniff(image: _Image) -> Header:
    size = image.size
    head = image.read(0, HEAD_BYTES, "start")
    if head.startswith(b"QFI\xfb"):
        return _qcow2(image, head)
    if head.startswith(b"KDMV"):
        return _vmdk_sparse(image, head)
    if head.startswith(b"COWD"):
        parent = _qemu_vmdk_parent(image, QEMU_VMDK_SPARSE_DESC_OFFSET)
        return Header(
            "vmdk", vmdk_kind="cowd", backing=parent, backing_format="vmdk" if parent else None
        )
    if head.startswith(b"vhdxfile"):
        return Header("vhdx")
    if head.startswith(b"conectix") or (
        size >= SECTOR and image.read(size - SECTOR, 8, "VHD footer") == b"conectix"
    ):
        return _vhd(image)
    if size <= MAX_DESCRIPTOR and _looks_like_vmdk_descriptor(head):
        parsed = vmdk_descriptor(head.decode("utf-8", errors="replace"))
        parent = _qemu_vmdk_parent(image, 0)
        return Header(
            "vmdk",
            vmdk_kind="descriptor",
            backing=parent,
            backing_format="vmdk" if parent else None,
            extents=parsed.extents,
            create_type=parsed.create_type,
        )
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


def _qcow2(image: _Image, head: bytes) -> Header:
    """The backing file and its format, bounded as qemu's qcow2_do_open bounds them."""
    if len(head) < QCOW2_MIN_HEADER:
        raise HeaderError(image.path, f"qcow2 header truncated ({len(head)} bytes)")
    version, backing_offset, backing_size, cluster_bits = struct.unpack(">IQII", head[4:24])
    if not 9 <= cluster_bits <= 21:
        raise HeaderError(image.path, f"qcow2 cluster_bits {cluster_bits} outside 9..21")
    cluster_size = 1 << cluster_bits
    backing = None
    if backing_offset:
        if backing_offset > cluster_size:
            raise HeaderError(
                image.path,
                f"qcow2 backing file name at offset {backing_offset}, "
                f"outside the header cluster ({cluster_size} bytes)",
            )
        if backing_size > min(QCOW2_MAX_BACKING_NAME, cluster_size - backing_offset):
            raise HeaderError(
                image.path, f"qcow2 backing file name of {backing_size} bytes is too long"
            )
        raw = image.read(backing_offset, backing_size, "qcow2 backing file name")
        if len(raw) != backing_size:
            raise HeaderError(image.path, "qcow2 backing file name runs past the end of the file")
        backing = raw.decode("utf-8", errors="replace") or None
    backing_format = None
    if version >= 3 and len(head) >= 104:
        (header_length,) = struct.unpack(">I", head[100:104])
        if not 104 <= header_length <= cluster_size:
            raise HeaderError(
                image.path, f"qcow2 header_length {header_length} outside 104..{cluster_size}"
            )
        end = backing_offset if backing_offset else cluster_size
        backing_format = _qcow2_backing_format(head[: min(end, len(head))], header_length)
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


def _vmdk_sparse(image: _Image, head: bytes) -> Header:
    """A hosted sparse extent: its embedded descriptor, and the parent qemu would follow."""
    if len(head) < 44:
        raise HeaderError(image.path, f"VMDK sparse header truncated ({len(head)} bytes)")
    capacity, _grain, desc_sector, desc_sectors = struct.unpack("<QQQQ", head[12:44])
    parent = _qemu_vmdk_parent(image, QEMU_VMDK_SPARSE_DESC_OFFSET)
    parsed = Header("vmdk")
    if desc_sector and desc_sectors:
        # Python ints never overflow: desc_sector * 512 is compared, never seeked to blindly.
        text = image.read(
            desc_sector * SECTOR,
            min(desc_sectors * SECTOR, MAX_DESCRIPTOR),
            "VMDK embedded descriptor",
        )
        parsed = vmdk_descriptor(text.split(b"\0", 1)[0].decode("utf-8", errors="replace"))
    # With a capacity of 0, qemu opens the embedded descriptor as a descriptor file, extents
    # included; otherwise the extent is this file.
    extents = parsed.extents if capacity == 0 else ()
    return Header(
        "vmdk",
        vmdk_kind="sparse",
        backing=parent,
        backing_format="vmdk" if parent else None,
        extents=extents,
        create_type=parsed.create_type,
    )


def _qemu_vmdk_parent(image: _Image, offset: int) -> str | None:
    """``parentFileNameHint`` as qemu's vmdk_parent_open finds it: the first occurrence in
    ``QEMU_VMDK_DESC_SIZE`` bytes from ``offset``, up to a NUL, wherever it stands (a comment
    included), and the text from two bytes after the name to the next ``"``."""
    if offset >= image.size:
        return None
    text = image.read(offset, QEMU_VMDK_DESC_SIZE, "VMDK descriptor").split(b"\0", 1)[0]
    name = b"parentFileNameHint"
    at = text.find(name)
    if at < 0:
        return None
    start = at + len(name) + 2
    end = text.find(b'"', start)
    if end < 0:
        return None
    return text[start:end].decode("utf-8", errors="replace") or None


def _looks_like_vmdk_descriptor(head: bytes) -> bool:
    text = head[:4096]
    return b"createType" in text and (b"# Disk DescriptorFile" in text or b"RW " in text)


# One pass of one regex over the whole text, each match within one line: ``[^\S\n]`` is a
# blank that is not a newline, so no match can run across lines (``\s*`` under re.M did,
# and was quadratic on a descriptor of newlines), and possessive quantifiers leave nothing
# to backtrack into (``"?([^"]*)"?\s*`` was quadratic on a line of blanks). Linear in the
# text's size; blank lines are stepped over by the regex engine, not by Python.
_DESCRIPTOR_LINE = re.compile(
    r"^[^\S\n]*+(?:"
    r'(?:RW|RDONLY|NOACCESS)[^\S\n]++\d++[^\S\n]++(?P<type>\w++)[^\S\n]++"(?P<extent>[^"\n]*+)"'
    r'|(?P<key>[A-Za-z][\w.]*+)[^\S\n]*+=[^\S\n]*+"?+(?P<value>[^"\n]*+)'
    r")",
    re.MULTILINE,
)


def vmdk_descriptor(text: str) -> Header:
    """Extents and keys of a VMDK text descriptor; a key's first line counts, as in qemu."""
    keys: dict[str, str] = {}
    extents: list[str] = []
    for line in _DESCRIPTOR_LINE.finditer(text):
        if line.group("extent") is not None:
            if line.group("type").upper() != "ZERO":
                extents.append(line.group("extent"))
        else:
            keys.setdefault(line.group("key"), line.group("value").strip())
    parent = keys.get("parentFileNameHint")
    return Header(
        "vmdk",
        vmdk_kind="descriptor",
        backing=parent or None,
        backing_format="vmdk" if parent else None,
        extents=tuple(extents),
        create_type=keys.get("createType"),
    )


def _vhd(image: _Image) -> Header:
    size = image.size
    footer = image.read(size - SECTOR, SECTOR, "VHD footer")
    if footer[:8] != b"conectix":
        footer = image.read(0, SECTOR, "VHD footer copy")
    disk_type = struct.unpack(">I", footer[60:64])[0] if len(footer) >= 64 else None
    backing = None
    if disk_type == VHD_DIFFERENCING and len(footer) >= 24:
        (data_offset,) = struct.unpack(">Q", footer[16:24])
        if 0 < data_offset < size:
            dynamic = image.read(data_offset, 1024, "VHD dynamic header")
            if dynamic[:8] == b"cxsparse" and len(dynamic) >= 0x240:
                backing = dynamic[0x40:0x240].decode("utf-16-be", errors="replace").rstrip("\0")
    return Header(
        "vhd",
        vhd_type=disk_type,
        backing=backing or None,
        backing_format="vhd" if backing else None,
    )
