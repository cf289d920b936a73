"""Filesystem types from a device's first bytes agree with blkid, on filesystems mkfs made."""

from __future__ import annotations

import shutil
import struct
import subprocess
from pathlib import Path

import pytest

from vmaudit.guest.sniff import HEAD_BYTES, sniff_fs_type, sniff_ids

MAKERS = {
    "ext2": ["mkfs.ext2", "-q", "-F"],
    "ext3": ["mkfs.ext3", "-q", "-F"],
    "ext4": ["mkfs.ext4", "-q", "-F"],
    "xfs": ["mkfs.xfs", "-q", "-f"],
    "btrfs": ["mkfs.btrfs", "-q", "-f"],
    "ntfs": ["mkntfs", "-q", "-F", "-f"],
    "swap": ["mkswap", "-q"],
    "vfat": ["mkfs.vfat"],
    "crypto_LUKS": [
        "cryptsetup", "luksFormat", "-q", "--batch-mode", "--pbkdf", "pbkdf2",
        "--pbkdf-force-iterations", "1000", "--key-file",
    ],
}  # fmt: skip


def blkid_type(path: Path) -> str:
    proc = subprocess.run(
        ["blkid", "-p", "-o", "value", "-s", "TYPE", str(path)], capture_output=True, text=True
    )
    return proc.stdout.strip()


@pytest.mark.parametrize("expected", sorted(MAKERS))
def test_a_fresh_filesystem_is_named_as_blkid_names_it(tmp_path: Path, expected: str) -> None:
    command = MAKERS[expected]
    if shutil.which(command[0]) is None:
        pytest.skip(f"{command[0]} is not installed")
    device = tmp_path / "device"
    with device.open("wb") as handle:
        handle.truncate(320 * 1024 * 1024 if expected == "xfs" else 128 * 1024 * 1024)
    if command[0] == "cryptsetup":
        key = tmp_path / "key"
        key.write_bytes(b"not a secret")
        command = [*command, str(key)]
    subprocess.run([*command, str(device)], check=True, capture_output=True)
    assert blkid_type(device) == expected  # the oracle agrees on what mkfs made
    head = device.read_bytes()[:HEAD_BYTES]
    assert sniff_fs_type(head) == expected


def test_an_lvm_label_in_the_second_sector() -> None:
    head = bytearray(HEAD_BYTES)
    head[512:520] = b"LABELONE"
    head[536:544] = b"LVM2 001"
    assert sniff_fs_type(bytes(head)) == "LVM2_member"


def test_an_md_superblock_at_4_kib_is_a_raid_member() -> None:
    head = bytearray(HEAD_BYTES)
    struct.pack_into("<I", head, 4096, 0xA92B4EFC)
    assert sniff_fs_type(bytes(head)) == "linux_raid_member"


def test_nothing_known_or_two_signatures_are_left_to_blkid(tmp_path: Path) -> None:
    assert sniff_fs_type(bytes(HEAD_BYTES)) is None
    assert sniff_fs_type(b"") is None
    device = tmp_path / "device"
    with device.open("wb") as handle:
        handle.truncate(64 * 1024 * 1024)
    subprocess.run(["mkfs.ext4", "-q", "-F", str(device)], check=True, capture_output=True)
    head = bytearray(device.read_bytes()[:HEAD_BYTES])
    head[:4] = b"XFSB"  # an xfs signature left over beside the ext4 superblock
    assert sniff_fs_type(bytes(head)) is None


def test_a_journal_device_is_not_an_ext4_filesystem(tmp_path: Path) -> None:
    device = tmp_path / "journal"
    with device.open("wb") as handle:
        handle.truncate(64 * 1024 * 1024)
    subprocess.run(["mke2fs", "-q", "-F", "-O", "journal_dev", str(device)], check=True)
    assert sniff_fs_type(device.read_bytes()[:HEAD_BYTES]) == blkid_type(device) == "jbd"


@pytest.mark.parametrize("fs_type", ["ext4", "ext2", "xfs"])
def test_uuid_and_label_read_as_blkid_reads_them(tmp_path: Path, fs_type: str) -> None:
    device = tmp_path / "device"
    with device.open("wb") as handle:
        handle.truncate(320 * 1024 * 1024)
    label = ["-L", "ROOT-A"]
    subprocess.run([*MAKERS[fs_type], *label, str(device)], check=True, capture_output=True)
    head = device.read_bytes()[:HEAD_BYTES]

    def blkid(tag: str) -> str:
        return subprocess.run(
            ["blkid", "-p", "-o", "value", "-s", tag, str(device)], capture_output=True, text=True
        ).stdout.strip()

    assert sniff_ids(head, fs_type) == (blkid("UUID"), blkid("LABEL")) == (blkid("UUID"), "ROOT-A")


def test_ids_of_other_types_are_left_to_blkid() -> None:
    assert sniff_ids(bytes(HEAD_BYTES), "ntfs") is None
    assert sniff_ids(bytes(HEAD_BYTES), "ext4") == ("", "")
