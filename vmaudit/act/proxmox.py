"""Proxmox VE hookscripts: a VM's disks from ``qemu-server/VMID.conf`` and ``storage.cfg``.

Proxmox runs a VM's hookscript as ``SCRIPT VMID PHASE``; a non-zero exit in ``pre-start``
aborts the start. The disks are the VM's current drive keys (``scsi0``, ``virtio1``, ...,
``efidisk0``, ``tpmstate0``; not ``unused*``, not ``media=cdrom``), read from the lines
before its first snapshot section. A volume ``STORAGE:VOLNAME`` lies under
``<path>/images/`` of a directory storage (``dir``, ``nfs``, ``cifs``); an absolute path
volume is taken as it is. Every other storage type is described, not resolved: block
storages (LVM, LVM-thin, ZFS) and network storages (RBD, iSCSI, GlusterFS) cannot be read as
an image file, so the decision applies ``on_error`` to them.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from vmaudit.act.domain import DiskSpec, GuestDisks

DEFAULT_PVE_DIR = "/etc/pve"
MAX_CONFIG_BYTES = 1024 * 1024
DISK_KEY = re.compile(r"(ide|sata|scsi|virtio|efidisk|tpmstate)\d+")
DIRECTORY_STORAGES = ("dir", "nfs", "cifs")
BLOCK_STORAGES = ("lvm", "lvmthin", "zfspool")
VMID = re.compile(r"[1-9][0-9]{2,8}")


def _read(path: Path) -> str:
    with path.open("rb") as handle:
        data = handle.read(MAX_CONFIG_BYTES + 1)
    if len(data) > MAX_CONFIG_BYTES:
        raise ValueError(f"larger than {MAX_CONFIG_BYTES} bytes")
    return data.decode("utf-8", errors="replace")


def parse_storages(text: str) -> dict[str, tuple[str, str | None]]:
    """Storage id -> (type, path) from ``storage.cfg`` (``TYPE: ID`` then indented options)."""
    storages: dict[str, tuple[str, str | None]] = {}
    current: str | None = None
    kind = ""
    path: str | None = None
    for line in text.split("\n"):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        header = re.fullmatch(r"([a-z][a-z0-9]*):\s*([A-Za-z][A-Za-z0-9_.-]*)\s*", line)
        if header is not None and not line[0].isspace():
            if current is not None:
                storages[current] = (kind, path)
            kind, current, path = header.group(1), header.group(2), None
            continue
        option = re.fullmatch(r"\s+(\S+)\s+(.*?)\s*", line)
        if option is not None and current is not None and option.group(1) == "path":
            path = option.group(2)
    if current is not None:
        storages[current] = (kind, path)
    return storages


def _volume(
    target: str, volume: str, fmt: str | None, storages: dict[str, tuple[str, str | None]]
) -> DiskSpec:
    if volume.startswith("/"):
        kind = "block" if volume.startswith("/dev/") else "file"
        return DiskSpec(target, kind, volume, "", fmt)
    storage, sep, name = volume.partition(":")
    if not sep or not name:
        return DiskSpec(target, "unknown", None, f"volume {volume!r}", fmt)
    if storage not in storages:
        return DiskSpec(target, "unknown", None, f"storage {storage!r} not in storage.cfg", fmt)
    kind, path = storages[storage]
    if kind in DIRECTORY_STORAGES:
        base = path or (f"/mnt/pve/{storage}" if kind != "dir" else None)
        if base is None:
            return DiskSpec(target, "unknown", None, f"dir storage {storage!r} has no path", fmt)
        if not re.fullmatch(r"[0-9]+/[A-Za-z0-9][A-Za-z0-9_.+-]*", name):
            # also a linked clone's BASE/base-disk/VMID/disk: its parent chain is the
            # image's own backing file, which the audit follows inside the folder only
            return DiskSpec(target, "unknown", None, f"volume name {name!r} refused", fmt)
        extension = os.path.splitext(name)[1].lstrip(".")
        return DiskSpec(
            target, "file", os.path.join(base, "images", name), "", fmt or extension or None
        )
    disk_kind = "block" if kind in BLOCK_STORAGES else "network"
    return DiskSpec(target, disk_kind, None, f"{kind} storage {storage}: {name}", fmt)


def vm_disks(vmid: str, pve_dir: str = DEFAULT_PVE_DIR) -> GuestDisks:
    """The guest of VM ``vmid``; a ``problem`` when its configuration cannot be read."""
    if not VMID.fullmatch(vmid):
        return GuestDisks(None, (), problem=f"{vmid!r} is not a Proxmox VM id")
    config_path = Path(pve_dir) / "qemu-server" / f"{vmid}.conf"
    try:
        config = _read(config_path)
    except (OSError, ValueError) as exc:
        return GuestDisks(f"vm{vmid}", (), problem=f"{config_path}: {_why(exc)}")
    try:
        storages = parse_storages(_read(Path(pve_dir) / "storage.cfg"))
    except (OSError, ValueError) as exc:
        return GuestDisks(f"vm{vmid}", (), problem=f"{pve_dir}/storage.cfg: {_why(exc)}")
    name = f"vm{vmid}"
    disks: list[DiskSpec] = []
    for line in config.split("\n"):
        if line.startswith("["):
            break  # a snapshot section: not the VM's current configuration
        key, sep, value = line.partition(":")
        if not sep:
            continue
        key, value = key.strip(), value.strip()
        if key == "name" and value:
            name = value
        if not DISK_KEY.fullmatch(key):
            continue
        fields = value.split(",")
        options = dict(f.split("=", 1) for f in fields[1:] if "=" in f)
        if fields[0] == "none" or options.get("media") == "cdrom":
            continue
        disks.append(_volume(key, fields[0], options.get("format"), storages))
    return GuestDisks(name, tuple(disks))


def _why(exc: Exception) -> str:
    return exc.strerror or str(exc) if isinstance(exc, OSError) else str(exc)
