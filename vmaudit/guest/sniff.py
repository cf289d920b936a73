"""A filesystem's type from its first bytes, as blkid names it, without a process in the appliance.

libguestfs's ``vfs_type`` runs blkid inside the appliance: in software emulation a process
start costs 0.2 to 0.4 s, more than reading the device's first 68 KiB with ``pread_device``.
Only unambiguous signatures are named here (exactly one of the known ones); anything else,
or two signatures on one device, is left to blkid (``None``). RAID superblocks kept at a
device's end (md 0.90 and 1.0) cannot be seen from its head: callers ask blkid whenever
the appliance assembled an md array.
"""

from __future__ import annotations

import struct
import uuid

HEAD_BYTES = 65536 + 4096  # btrfs's superblock is at 64 KiB
EXT_SUPERBLOCK = 1024
MD_MAGIC = 0xA92B4EFC
# ext3's own features (libblkid's EXT3_FEATURE_*_SUPP): any other makes it ext4.
EXT3_INCOMPAT = 0x0002 | 0x0004 | 0x0010  # filetype, recover, meta_bg
EXT3_RO_COMPAT = 0x0001 | 0x0002 | 0x0004  # sparse_super, large_file, btree_dir
EXT_JOURNAL_DEV = 0x0008
EXT_HAS_JOURNAL = 0x0004


def _ext(head: bytes) -> str | None:
    base = EXT_SUPERBLOCK
    if len(head) < base + 104 or head[base + 56 : base + 58] != b"\x53\xef":
        return None
    compat, incompat, ro_compat = struct.unpack_from("<III", head, base + 92)
    if incompat & EXT_JOURNAL_DEV:
        return "jbd"
    if incompat & ~EXT3_INCOMPAT or ro_compat & ~EXT3_RO_COMPAT:
        return "ext4"
    if compat & EXT_HAS_JOURNAL:
        return "ext3"
    return "ext2"


def _fat(head: bytes) -> bool:
    return head[510:512] == b"\x55\xaa" and (
        head[54:62] in (b"FAT12   ", b"FAT16   ") or head[82:90] == b"FAT32   "
    )


def _lvm(head: bytes) -> bool:
    for sector in range(4):
        label = head[sector * 512 : sector * 512 + 32]
        if label[:8] == b"LABELONE" and label[24:32] == b"LVM2 001":
            return True
    return False


def _md(head: bytes) -> bool:
    return any(
        len(head) >= offset + 4 and struct.unpack_from("<I", head, offset)[0] == MD_MAGIC
        for offset in (0, 4096)  # metadata 1.1 and 1.2
    )


def sniff_fs_type(head: bytes) -> str | None:
    """blkid's name for the one filesystem or container signature in ``head``, else None."""
    found = {
        name
        for name, present in (
            ("xfs", head[:4] == b"XFSB"),
            ("ntfs", head[3:11] == b"NTFS    "),
            ("BitLocker", head[3:11] == b"-FVE-FS-"),
            ("crypto_LUKS", head[:6] == b"LUKS\xba\xbe"),
            ("btrfs", head[65536 + 64 : 65536 + 72] == b"_BHRfS_M"),
            ("swap", head[4086:4096] in (b"SWAPSPACE2", b"SWAP-SPACE")),
            ("LVM2_member", _lvm(head)),
            ("linux_raid_member", _md(head)),
            ("vfat", _fat(head)),
        )
        if present
    }
    ext = _ext(head)
    if ext is not None:
        found.add(ext)
    return found.pop() if len(found) == 1 else None


def sniff_ids(head: bytes, fs_type: str) -> tuple[str, str] | None:
    """(UUID, label) as blkid gives them, for ext2/3/4 and xfs; None for other types.

    fstab names filesystems by ``UUID=`` or ``LABEL=``: reading both from the superblock
    spares two blkid processes per filesystem.
    """
    if fs_type in ("ext2", "ext3", "ext4"):
        raw_uuid = head[EXT_SUPERBLOCK + 104 : EXT_SUPERBLOCK + 120]
        raw_label = head[EXT_SUPERBLOCK + 120 : EXT_SUPERBLOCK + 136]
    elif fs_type == "xfs":
        raw_uuid, raw_label = head[32:48], head[108:120]
    else:
        return None
    if len(raw_uuid) != 16:
        return None
    text = "" if raw_uuid == bytes(16) else str(uuid.UUID(bytes=bytes(raw_uuid)))
    label = raw_label.split(b"\0", 1)[0].decode("utf-8", errors="replace")
    return text, label
