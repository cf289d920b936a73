"""The cheap identity of an image on disk: what tells an unchanged image from a changed one.

For every file qemu would read for the guest (each disk's chain, leaf first, plus the VM
descriptor when the image is a ``.vmx``/``.xml``/``.ovf``), the identity keeps its path,
size, mtime, inode, device and the SHA-256 of its first MiB: one ``fstat`` and one 1 MiB
read per file. Two scans that see the same ``digest`` see the same files, so the facts of
the first can be reused by the second without opening the image.

A block device (vmaudit.discover.blockdev) has no meaningful mtime or inode: its identity is
the device (``rdev``), its size, the SHA-256 of its first 8 MiB (past a partition table's
first MiB, where a filesystem's superblock and its mount times lie) and, for an LVM logical
volume, its volume group's metadata sequence number.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
from dataclasses import dataclass
from typing import Any

from vmaudit.discover.blockdev import check_device, lvm_seqno
from vmaudit.errors import ErrorKind, VmauditError, os_error_kind
from vmaudit.models import ImageRef

HEAD_BYTES = 1024 * 1024
DEVICE_HEAD_BYTES = 8 * HEAD_BYTES
DESCRIPTOR_SUFFIXES = (".vmx", ".vmtx", ".xml", ".ovf")
_IDENTITY_VERSION = 1


@dataclass(frozen=True)
class FileIdentity:
    """One file of an image as ``stat`` and its first MiB see it."""

    path: str  # absolute
    size: int
    mtime_ns: int
    inode: int
    device: int
    sha256_head: str
    lvm_seqno: int | None = None  # a logical volume's VG metadata seqno; None for the rest

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "path": self.path,
            "size": self.size,
            "mtime_ns": self.mtime_ns,
            "inode": self.inode,
            "device": self.device,
            "sha256_head": self.sha256_head,
        }
        if self.lvm_seqno is not None:  # absent for files: their digests stay as they were
            data["lvm_seqno"] = self.lvm_seqno
        return data

    @staticmethod
    def from_dict(data: dict[str, Any]) -> FileIdentity:
        return FileIdentity(
            path=str(data["path"]),
            size=int(data["size"]),
            mtime_ns=int(data["mtime_ns"]),
            inode=int(data["inode"]),
            device=int(data["device"]),
            sha256_head=str(data["sha256_head"]),
            lvm_seqno=int(data["lvm_seqno"]) if data.get("lvm_seqno") is not None else None,
        )


@dataclass(frozen=True)
class Identity:
    """Every file of one image; ``primary`` is the image's absolute path (the cache key)."""

    primary: str
    files: tuple[FileIdentity, ...]

    @property
    def digest(self) -> str:
        """A stable hex digest of ``primary`` and every file's identity, in order."""
        canonical = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode("ascii")).hexdigest()

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": _IDENTITY_VERSION,
            "primary": self.primary,
            "files": [f.to_dict() for f in self.files],
        }

    @staticmethod
    def from_dict(data: dict[str, Any]) -> Identity:
        return Identity(
            primary=str(data["primary"]),
            files=tuple(FileIdentity.from_dict(f) for f in data["files"]),
        )


def image_files(image: ImageRef) -> list[str]:
    """Absolute paths of every file of the image: descriptor first, then each chain, leaf first.

    A disk without a recorded chain counts as its own one-file chain; a file shared by two
    disks is listed once.
    """
    files: list[str] = []
    if image.path.lower().endswith(DESCRIPTOR_SUFFIXES):
        files.append(os.path.abspath(image.path))
    for disk in image.disks:
        files.extend(os.path.abspath(p) for p in (disk.chain or (disk.path,)))
    if not files:
        files.append(os.path.abspath(image.path))
    return list(dict.fromkeys(files))


def _open_readonly(path: str) -> int:
    # O_NOFOLLOW: the identity must describe the file itself, never a symlink's target;
    # O_NONBLOCK: opening a FIFO must not hang; O_NOATIME spares the image's atime where
    # the kernel lets us (owner or CAP_FOWNER).
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)
    noatime = getattr(os, "O_NOATIME", 0)
    if noatime:
        try:
            return os.open(path, flags | noatime)
        except PermissionError:
            pass
    return os.open(path, flags)


def _identity_error(path: str, exc: OSError) -> VmauditError:
    kind = os_error_kind(exc, missing=ErrorKind.IMAGE_CHANGED)
    why = {
        ErrorKind.PERMISSION_DENIED: "permission denied",
        ErrorKind.NOT_A_REGULAR_FILE: "is a symbolic link",
        ErrorKind.IMAGE_CHANGED: "vanished while being read",
    }.get(kind, exc.strerror or exc)
    return VmauditError(kind, f"{path}: {why}")


def file_identity(path: str) -> FileIdentity:
    """Stat and hash the first MiB of one regular file (``VmauditError`` otherwise)."""
    absolute = os.path.abspath(path)
    try:
        fd = _open_readonly(absolute)
    except OSError as exc:
        raise _identity_error(absolute, exc) from exc
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise VmauditError(ErrorKind.NOT_A_REGULAR_FILE, f"{absolute}: not a regular file")
        digest = _hash_head(fd)
    except OSError as exc:
        raise _identity_error(absolute, exc) from exc
    finally:
        os.close(fd)
    return FileIdentity(
        path=absolute,
        size=info.st_size,
        mtime_ns=info.st_mtime_ns,
        inode=info.st_ino,
        device=info.st_dev,
        sha256_head=digest,
    )


def _hash_head(fd: int, size: int = HEAD_BYTES) -> str:
    hasher = hashlib.sha256()
    remaining = size
    offset = 0
    while remaining > 0:
        chunk = os.pread(fd, remaining, offset)
        if not chunk:
            break
        hasher.update(chunk)
        offset += len(chunk)
        remaining -= len(chunk)
    return hasher.hexdigest()


def device_identity(path: str) -> FileIdentity:
    """A checked block device's identity: rdev, size, head hash, LVM seqno (``VmauditError``)."""
    device = check_device(path)
    try:
        fd = os.open(device.node, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        raise _identity_error(device.path, exc) from exc
    try:
        digest = _hash_head(fd, DEVICE_HEAD_BYTES)
    except OSError as exc:
        raise _identity_error(device.path, exc) from exc
    finally:
        os.close(fd)
    return FileIdentity(
        path=device.path,
        size=device.size,
        mtime_ns=0,  # a device node's times say nothing of what it holds
        inode=0,
        device=device.rdev,
        sha256_head=digest,
        lvm_seqno=lvm_seqno(device.lvm[0]) if device.lvm is not None else None,
    )


def sha256_head(path: str | os.PathLike[str], block: bool = False) -> str:
    """SHA-256 (hex) of the first MiB of a regular file (the whole file when smaller), or of
    the first 8 MiB of a block device."""
    if block:
        return device_identity(os.fspath(path)).sha256_head
    return file_identity(os.fspath(path)).sha256_head


def image_identity(image: ImageRef) -> Identity:
    """The identity of every file of the image; ``VmauditError`` when one cannot be read."""
    devices = {os.path.abspath(p) for disk in image.disks if disk.block for p in disk.chain}
    return Identity(
        primary=os.path.abspath(image.path),
        files=tuple(
            device_identity(path) if path in devices else file_identity(path)
            for path in image_files(image)
        ),
    )


def changed_files(old: Identity, new: Identity) -> list[dict[str, Any]]:
    """What differs file by file: ``{"path", "change": added|removed|modified, "fields"}``."""
    old_by_path = {f.path: f for f in old.files}
    new_by_path = {f.path: f for f in new.files}
    changes: list[dict[str, Any]] = []
    for path, new_file in new_by_path.items():
        old_file = old_by_path.get(path)
        if old_file is None:
            changes.append({"path": path, "change": "added"})
            continue
        fields = [
            name
            for name in ("size", "mtime_ns", "inode", "device", "sha256_head", "lvm_seqno")
            if getattr(old_file, name) != getattr(new_file, name)
        ]
        if fields:
            changes.append({"path": path, "change": "modified", "fields": fields})
    changes.extend(
        {"path": path, "change": "removed"} for path in old_by_path if path not in new_by_path
    )
    return changes


Signature = tuple[tuple[str, int, int, int], ...]


def signature(image: ImageRef) -> Signature | None:
    """Path, size, mtime and inode of every file of the image (no hashing: a cheap
    "did it change?"); None when one of them is missing right now."""
    parts = []
    for path in image_files(image):
        try:
            info = os.stat(path)
        except OSError:
            return None
        parts.append((path, info.st_size, info.st_mtime_ns, info.st_ino))
    return tuple(parts)
