"""Proxmox VE hookscripts: a VM's disks from ``qemu-server/VMID.conf`` and ``storage.cfg``.

Proxmox runs a VM's hookscript as ``SCRIPT VMID PHASE``; a non-zero exit in ``pre-start``
aborts the start. The configuration is read by vmaudit.discover.proxmox (shared with
``vmaudit scan --proxmox``): directory storages resolve to image files, LVM, LVM-thin and
ZFS pool storages to block devices, which the gate audits read-only like files; network
storages (RBD, iSCSI, GlusterFS) cannot be read from this host, so the decision applies
``on_error`` to them.
"""

from __future__ import annotations

from vmaudit.discover.proxmox import (
    BLOCK_STORAGES,
    DEFAULT_PVE_DIR,
    DIRECTORY_STORAGES,
    DISK_KEY,
    MAX_CONFIG_BYTES,
    VMID,
    parse_storages,
    vm_disks,
)

__all__ = [
    "BLOCK_STORAGES",
    "DEFAULT_PVE_DIR",
    "DIRECTORY_STORAGES",
    "DISK_KEY",
    "MAX_CONFIG_BYTES",
    "VMID",
    "parse_storages",
    "vm_disks",
]
