"""Block devices as disks: which device a name really is, its size, format and LVM seqno.

A disk that is no file (an LVM logical volume, a ZFS zvol, a disk given by hand) is
audited like an image file, so it must be checked like one, with the rules of a device:

- the device node lies under ``/dev`` (a node ``mknod``-ed into a datastore is refused), and
  a symbolic link is followed only when it too lies under ``/dev`` (udev's and LVM's own:
  ``/dev/VG/LV``, ``/dev/zvol/POOL/NAME``, ``/dev/disk/by-id/...``); a link elsewhere, or one
  whose target is not a block device, is refused;
- a name says which device it must be, and the kernel is asked whether it is: ``/dev/VG/LV``
  and ``/dev/mapper/NAME`` must resolve to the device-mapper device of that very volume
  (``/sys/dev/block/MAJ:MIN/dm/name``), ``/dev/zvol/...`` to a ``zd`` device;
- the format is raw unless the device's first bytes are a qcow2 header; nothing else a guest
  may have written there (a VMDK or VHD signature) is believed.

Nothing here opens a device for writing; LVM is asked with ``--readonly``.
"""

from __future__ import annotations

import os
import re
import stat
import subprocess
from dataclasses import dataclass

from vmaudit.errors import ErrorKind, VmauditError
from vmaudit.models import DiskRef

DEV = "/dev"
# /dev folders that are no volume group's (a VG cannot be named like these: lvm(8))
_NOT_VGS = {
    "mapper",
    "disk",
    "zvol",
    "block",
    "char",
    "loop",
    "md",
    "dri",
    "input",
    "bus",
    "shm",
    "pts",
    "net",
    "snd",
    "cpu",
    "vfio",
    "hugepages",
    "mqueue",
}
LVM_TIMEOUT = 15


@dataclass(frozen=True)
class Device:
    """A block device a disk names, checked: the name, the node it is, what it holds."""

    path: str  # as named, normalised
    node: str  # the device node it resolves to (/dev/dm-3, /dev/loop0)
    rdev: int
    size: int
    lvm: tuple[str, str] | None = None  # (VG, LV) of a logical volume


def _refused(path: str, why: str) -> VmauditError:
    return VmauditError(ErrorKind.NOT_A_REGULAR_FILE, f"{path}: {why}")


def _under_dev(path: str) -> bool:
    return path.startswith(DEV + "/")


def is_block_device(path: str) -> bool:
    """Whether ``path`` is (or is a link to) a block device; never raises."""
    try:
        return stat.S_ISBLK(os.stat(path).st_mode)
    except (OSError, ValueError):
        return False


def _dm_name(rdev: int) -> tuple[str, str] | None:
    """(name, uuid) of a device-mapper device, from sysfs; None for any other device."""
    folder = f"/sys/dev/block/{os.major(rdev)}:{os.minor(rdev)}/dm"
    try:
        with open(f"{folder}/name", encoding="ascii", errors="replace") as handle:
            name = handle.read(512).strip()
        with open(f"{folder}/uuid", encoding="ascii", errors="replace") as handle:
            uuid = handle.read(512).strip()
    except OSError:
        return None
    return name, uuid


def lvm_dm_name(vg: str, lv: str) -> str:
    """The device-mapper name LVM gives VG/LV: dashes doubled, joined by one dash."""
    return vg.replace("-", "--") + "-" + lv.replace("-", "--")


def _split_dm_name(name: str) -> tuple[str, str] | None:
    match = re.fullmatch(r"((?:[^-]|--)+)-((?:[^-]|--)+)", name)
    if match is None:
        return None
    return match.group(1).replace("--", "-"), match.group(2).replace("--", "-")


def device_size(fd: int) -> int:
    """The size in bytes of an open block device (or file)."""
    return os.lseek(fd, 0, os.SEEK_END)


def check_device(path: str) -> Device:
    """The block device ``path`` names, checked as the module says; ``VmauditError`` if not."""
    if not os.path.isabs(path) or "\0" in path:
        raise _refused(path, "not an absolute path")
    path = os.path.normpath(path)
    try:
        link = os.lstat(path)
    except OSError as exc:
        raise VmauditError(ErrorKind.CORRUPT_IMAGE, f"{path}: {exc.strerror or exc}") from None
    node = path
    if stat.S_ISLNK(link.st_mode):
        if not _under_dev(path):
            raise _refused(path, "a symbolic link outside /dev: only /dev's own links are followed")
        node = os.path.realpath(path)
        if not _under_dev(node):
            raise _refused(path, f"links to {node}, outside /dev")
    try:
        info = os.stat(node)
    except OSError as exc:
        raise VmauditError(ErrorKind.CORRUPT_IMAGE, f"{path}: {exc.strerror or exc}") from None
    if not stat.S_ISBLK(info.st_mode):
        raise _refused(path, "not a block device")
    if not _under_dev(node):
        raise _refused(path, "a device node outside /dev")
    dm = _dm_name(info.st_rdev)
    lvm = _split_dm_name(dm[0]) if dm is not None and dm[1].startswith("LVM-") else None
    _check_name(path, node, dm, lvm)
    try:
        fd = os.open(node, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        kind = (
            ErrorKind.PERMISSION_DENIED
            if isinstance(exc, PermissionError)
            else ErrorKind.CORRUPT_IMAGE
        )
        raise VmauditError(kind, f"{path}: {exc.strerror or exc}") from None
    try:
        size = device_size(fd)
    finally:
        os.close(fd)
    return Device(path, node, info.st_rdev, size, lvm)


def _check_name(
    path: str,
    node: str,
    dm: tuple[str, str] | None,
    lvm: tuple[str, str] | None,
) -> None:
    """A name that says which device it is must be that device (a link to another refused)."""
    parts = path[len(DEV) + 1 :].split("/")
    if parts[0] == "mapper" and len(parts) == 2:
        if dm is None or dm[0] != parts[1]:
            raise _refused(path, f"is {node}, not the device-mapper device {parts[1]}")
    elif parts[0] == "zvol":
        if not os.path.basename(node).startswith("zd"):
            raise _refused(path, f"is {node}, not a ZFS volume")
    elif len(parts) == 2 and parts[0] not in _NOT_VGS and lvm != (parts[0], parts[1]):
        raise _refused(path, f"is {node}, not the logical volume {parts[0]}/{parts[1]}")


def device_format(node: str) -> str:
    """``qcow2`` when the device starts with a qcow2 header, otherwise ``raw``."""
    fd = os.open(node, os.O_RDONLY | os.O_CLOEXEC)
    try:
        head = os.pread(fd, 4, 0)
    finally:
        os.close(fd)
    return "qcow2" if head == b"QFI\xfb" else "raw"


def lvm_seqno(vg: str) -> int | None:
    """The metadata sequence number of volume group ``vg``, read-only; None if unknown.

    It grows with every change LVM makes to the group (a volume created, resized or
    snapshotted, a tag set), which a volume's first bytes would not show.
    """
    try:
        done = subprocess.run(
            ["vgs", "--readonly", "--noheadings", "--nosuffix", "-o", "vg_seqno", "--", vg],
            capture_output=True,
            text=True,
            timeout=LVM_TIMEOUT,
            check=False,
            env={
                "PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
                "LC_ALL": "C",
                "LVM_SUPPRESS_FD_WARNINGS": "1",
            },
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    text = done.stdout.strip()
    return int(text) if done.returncode == 0 and text.isdigit() else None


def block_disk(path: str) -> DiskRef:
    """A checked block device as a disk: raw unless it starts as a qcow2 (``VmauditError``)."""
    device = check_device(path)
    try:
        fmt = device_format(device.node)
    except OSError as exc:
        denied = isinstance(exc, PermissionError)
        kind = ErrorKind.PERMISSION_DENIED if denied else ErrorKind.CORRUPT_IMAGE
        raise VmauditError(kind, f"{device.path}: {exc.strerror or exc}") from None
    return DiskRef(device.path, fmt, chain=(device.path,), chain_formats=(fmt,), block=True)
