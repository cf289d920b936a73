"""Opening a block device as a guest's disk: checked again at open time, under our overlay.

Discovery checked the device (vmaudit.discover.blockdev); here, just before qemu is given
it, the name is checked again (a link under ``/dev`` may have changed since), qemu's own
reading of its header must agree with ours, and a qcow2 on a device may name no backing
file and no external data file (a device has no folder for them to stay in). The overlay's
backing node is qemu's ``host_device`` driver on the resolved node, format pinned, opened
read-only (it is a backing file) and without locks, as image files are.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from vmaudit.discover.blockdev import check_device, device_format
from vmaudit.errors import ErrorKind, VmauditError
from vmaudit.models import DiskRef


def validate_block_disk(disk: DiskRef, qemu_img_info: Callable[[str, str], dict[str, Any]]) -> int:
    """Check a block disk as qemu will read it; its virtual size (``VmauditError`` if unsafe)."""
    device = check_device(disk.path)
    try:
        found = device_format(device.node)
    except OSError as exc:
        raise VmauditError(ErrorKind.CORRUPT_IMAGE, f"{disk.path}: {exc.strerror or exc}") from None
    if found != disk.format:
        raise VmauditError(
            ErrorKind.IMAGE_CHANGED, f"{disk.path}: was {disk.format} at discovery, now {found}"
        )
    info = qemu_img_info(device.node, disk.format)
    if info.get("backing-filename") is not None:
        raise VmauditError(
            ErrorKind.UNSAFE_BACKING_FILE,
            f"{disk.path}: a qcow2 on a block device names a backing file; refused",
        )
    specific = info.get("format-specific", {}).get("data", {})
    if isinstance(specific, dict) and specific.get("data-file"):
        raise VmauditError(ErrorKind.UNSAFE_DATA_FILE, f"{disk.path}: external data file refused")
    size = int(info.get("virtual-size", 0) or 0)
    if size <= 0:
        raise VmauditError(ErrorKind.CORRUPT_IMAGE, f"{disk.path}: no virtual size")
    return size


def device_file_node(disk: DiskRef, locking: bool = False) -> dict[str, str]:
    """The overlay's protocol node for a block disk: the checked, resolved device node."""
    device = check_device(disk.path)
    return {"driver": "host_device", "filename": device.node, "locking": "on" if locking else "off"}
