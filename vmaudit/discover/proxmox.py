"""Proxmox VE's own inventory: ``qemu-server/VMID.conf`` and ``storage.cfg``, read offline.

A VM's configuration gives its name, ``template: 1``, ``tags``, its description (the
leading ``#`` lines, as Proxmox writes them) and its disks: the current drive keys
(``scsi0``, ``virtio1``, ..., ``efidisk0``, ``tpmstate0``; not ``unused*``, not
``media=cdrom``), read from the lines before its first snapshot section. A volume
``STORAGE:VOLNAME`` is resolved through ``storage.cfg``:

- ``dir``, ``nfs``, ``cifs``: the file ``<path>/images/VMID/NAME``;
- ``lvm`` and ``lvmthin``: the logical volume ``/dev/<vgname>/NAME``;
- ``zfspool``: the zvol ``/dev/zvol/<pool>/NAME``;
- an absolute path is taken as it is (a file, or a device under ``/dev``).

Every other storage (RBD, iSCSI, GlusterFS, ...) is described, not resolved: it cannot be
read from this host as a file or a local block device. Each file is read with a size cap;
volume names are checked against Proxmox's own patterns, never joined as they are written.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from vmaudit.discover.vms import DiskSpec, GuestDisks

DEFAULT_PVE_DIR = "/etc/pve"
MAX_CONFIG_BYTES = 1024 * 1024
MAX_VMS = 10_000
DISK_KEY = re.compile(r"(ide|sata|scsi|virtio|efidisk|tpmstate)\d+")
DIRECTORY_STORAGES = ("dir", "nfs", "cifs")
LVM_STORAGES = ("lvm", "lvmthin")
BLOCK_STORAGES = (*LVM_STORAGES, "zfspool")
VMID = re.compile(r"[1-9][0-9]{2,8}")
LV_NAME = re.compile(r"[A-Za-z0-9+_][A-Za-z0-9+_.-]*")  # lvm(8): no leading dash
ZFS_PATH = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]*(?:/[A-Za-z0-9][A-Za-z0-9_.:-]*)*")
MAX_TAGS = 32


@dataclass(frozen=True)
class Storage:
    """One ``storage.cfg`` entry (``TYPE: ID``) and the options that say where volumes lie."""

    type: str
    id: str
    path: str | None
    vgname: str | None
    pool: str | None

    @property
    def root(self) -> str | None:
        """The folder or ``/dev`` folder its volumes lie under; None for a remote storage."""
        if self.type in DIRECTORY_STORAGES:
            base = self.path or (f"/mnt/pve/{self.id}" if self.type != "dir" else None)
            return os.path.join(base, "images") if base else None
        if self.type in LVM_STORAGES and self.vgname and LV_NAME.fullmatch(self.vgname):
            return f"/dev/{self.vgname}"
        if self.type == "zfspool" and self.pool and ZFS_PATH.fullmatch(self.pool):
            return f"/dev/zvol/{self.pool}"
        return None


def read_capped(path: Path) -> str:
    """A configuration file's text, at most ``MAX_CONFIG_BYTES`` (``ValueError`` past it)."""
    with path.open("rb") as handle:
        data = handle.read(MAX_CONFIG_BYTES + 1)
    if len(data) > MAX_CONFIG_BYTES:
        raise ValueError(f"larger than {MAX_CONFIG_BYTES} bytes")
    if b"\0" in data:
        raise ValueError("binary content, not a configuration file")
    return data.decode("utf-8", errors="replace")


def parse_storage_cfg(text: str) -> dict[str, Storage]:
    """Storage id -> ``Storage`` from ``storage.cfg`` (``TYPE: ID`` then indented options)."""
    storages: dict[str, Storage] = {}
    current: str | None = None
    kind = ""
    options: dict[str, str] = {}

    def close() -> None:
        if current is not None:
            storages[current] = Storage(
                kind, current, options.get("path"), options.get("vgname"), options.get("pool")
            )

    for line in text.split("\n"):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        header = re.fullmatch(r"([a-z][a-z0-9]*):\s*([A-Za-z][A-Za-z0-9_.-]*)\s*", line)
        if header is not None and not line[0].isspace():
            close()
            kind, current, options = header.group(1), header.group(2), {}
            continue
        option = re.fullmatch(r"\s+(\S+)\s+(.*?)\s*", line)
        if option is not None and current is not None:
            options[option.group(1)] = option.group(2)
    close()
    return storages


def parse_storages(text: str) -> dict[str, tuple[str, str | None]]:
    """Storage id -> (type, path): the directory storages' view of ``parse_storage_cfg``."""
    return {key: (s.type, s.path) for key, s in parse_storage_cfg(text).items()}


def storage_roots(storages: dict[str, Storage]) -> tuple[str, ...]:
    """Where this host's storages keep their volumes: the roots a scan may read."""
    roots = (storage.root for storage in storages.values())
    return tuple(dict.fromkeys(root for root in roots if root is not None))


def resolve_volume(
    target: str, volume: str, fmt: str | None, storages: dict[str, Storage]
) -> DiskSpec:
    """A drive's volume as the file or device it is on this host, or described if remote."""
    if volume.startswith("/"):
        kind = "block" if volume.startswith("/dev/") else "file"
        return DiskSpec(target, kind, volume, "", fmt)
    storage_id, sep, name = volume.partition(":")
    if not sep or not name:
        return DiskSpec(target, "unknown", None, f"volume {volume!r}", fmt)
    storage = storages.get(storage_id)
    if storage is None:
        return DiskSpec(target, "unknown", None, f"storage {storage_id!r} not in storage.cfg", fmt)
    detail = f"{storage.type} storage {storage_id}: {name}"
    if storage.type in DIRECTORY_STORAGES:
        root = storage.root
        if root is None:
            return DiskSpec(target, "unknown", None, f"dir storage {storage_id!r} has no path", fmt)
        if not re.fullmatch(r"[0-9]+/[A-Za-z0-9][A-Za-z0-9_.+-]*", name):
            # also a linked clone's BASE/base-disk/VMID/disk: its parent chain is the
            # image's own backing file, which the audit follows inside the folder only
            return DiskSpec(target, "unknown", None, f"volume name {name!r} refused", fmt)
        extension = os.path.splitext(name)[1].lstrip(".")
        return DiskSpec(target, "file", os.path.join(root, name), "", fmt or extension or None)
    if storage.type in BLOCK_STORAGES:
        root = storage.root
        if root is None:
            return DiskSpec(target, "block", None, f"{detail}: no vgname/pool in storage.cfg", fmt)
        if not LV_NAME.fullmatch(name):
            return DiskSpec(target, "block", None, f"{detail}: volume name refused", fmt)
        return DiskSpec(target, "block", os.path.join(root, name), detail, fmt or "raw")
    return DiskSpec(target, "network", None, detail, fmt)


def _tags(value: str) -> tuple[str, ...]:
    return tuple(dict.fromkeys(t for t in re.split(r"[;,\s]+", value) if t))[:MAX_TAGS]


def parse_vm_config(
    vmid: str, text: str, storages: dict[str, Storage], config: str = ""
) -> GuestDisks:
    """The guest one ``VMID.conf`` describes (its current configuration only)."""
    name = f"vm{vmid}"
    disks: list[DiskSpec] = []
    description: list[str] = []
    template = False
    tags: tuple[str, ...] = ()
    for line in text.split("\n"):
        if line.startswith("["):
            break  # a snapshot section: not the VM's current configuration
        if line.startswith("#"):
            description.append(line[1:].strip())
            continue
        key, sep, value = line.partition(":")
        if not sep:
            continue
        key, value = key.strip(), value.strip()
        if key == "name" and value:
            name = value[:200]
        elif key == "template":
            template = value == "1"
        elif key == "tags":
            tags = _tags(value)
        elif key == "description":
            description.append(value)
        if not DISK_KEY.fullmatch(key):
            continue
        fields = value.split(",")
        options = dict(f.split("=", 1) for f in fields[1:] if "=" in f)
        if fields[0] == "none" or options.get("media") == "cdrom":
            continue
        disks.append(resolve_volume(key, fields[0], options.get("format"), storages))
    return GuestDisks(
        name,
        tuple(disks),
        source="proxmox",
        config=config,
        template=template,
        tags=tags,
        notes=" ".join(part for part in description if part)[:2000],
    )


def load_storages(pve_dir: str | Path) -> dict[str, Storage]:
    """``storage.cfg`` of a configuration folder (``OSError``/``ValueError`` if unreadable)."""
    return parse_storage_cfg(read_capped(Path(pve_dir) / "storage.cfg"))


def vm_disks(vmid: str, pve_dir: str = DEFAULT_PVE_DIR) -> GuestDisks:
    """The guest of VM ``vmid``; a ``problem`` when its configuration cannot be read."""
    if not VMID.fullmatch(vmid):
        return GuestDisks(None, (), problem=f"{vmid!r} is not a Proxmox VM id", source="proxmox")
    config_path = Path(pve_dir) / "qemu-server" / f"{vmid}.conf"
    where = str(config_path)  # what is being read, for the problem
    try:
        config = read_capped(config_path)
        where = f"{pve_dir}/storage.cfg"
        storages = load_storages(pve_dir)
    except (OSError, ValueError) as exc:
        problem = f"{where}: {_why(exc)}"
        config_file = str(config_path)
        return GuestDisks(f"vm{vmid}", (), problem=problem, source="proxmox", config=config_file)
    return parse_vm_config(vmid, config, storages, str(config_path))


def list_vms(pve_dir: str = DEFAULT_PVE_DIR) -> tuple[list[GuestDisks], tuple[str, ...]]:
    """Every VM of ``qemu-server/`` and the storages' roots; ``OSError``/``ValueError`` when
    ``storage.cfg`` or the folder cannot be read (a bad VM config is that VM's problem)."""
    storages = load_storages(pve_dir)
    folder = Path(pve_dir) / "qemu-server"
    names = sorted(os.listdir(folder))
    guests: list[GuestDisks] = []
    for name in names[:MAX_VMS]:
        vmid, dot, suffix = name.partition(".")
        if suffix != "conf" or not dot or not VMID.fullmatch(vmid):
            continue
        path = folder / name
        if path.is_symlink() or not path.is_file():
            continue
        try:
            text = read_capped(path)
        except (OSError, ValueError) as exc:
            guests.append(
                GuestDisks(
                    f"vm{vmid}",
                    (),
                    problem=f"{path}: {_why(exc)}",
                    source="proxmox",
                    config=str(path),
                )
            )
            continue
        guests.append(parse_vm_config(vmid, text, storages, str(path)))
    return guests, storage_roots(storages)


def _why(exc: Exception) -> str:
    return exc.strerror or str(exc) if isinstance(exc, OSError) else str(exc)
