"""A hypervisor's guest as its own configuration describes it: name, state, disks, labels.

libvirt domain XMLs (vmaudit.discover.libvirt) and Proxmox VM configs
(vmaudit.discover.proxmox) are read into these; vmaudit.discover.hypervisor turns them into
``ImageRef`` for a scan, vmaudit.act.gate into a power-on decision. Nothing here is followed
or opened: a disk is only described.
"""

from __future__ import annotations

from dataclasses import dataclass

from vmaudit.models import VmSource


@dataclass(frozen=True)
class DiskSpec:
    """One disk as the hypervisor's configuration names it.

    ``kind`` is libvirt's disk type (file, block, network, volume, dir, nvme, vhostuser) or
    Proxmox's storage kind; ``path`` is set for file and block disks (a pool volume or a
    Proxmox block storage once resolved); ``detail`` says what the disk is in the
    hypervisor's words (``rbd pool/image``, ``volume default/vm.qcow2``,
    ``lvmthin storage local-lvm: vm-101-disk-0``).
    """

    target: str
    kind: str
    path: str | None
    detail: str = ""
    declared_format: str | None = None

    def describe(self) -> str:
        where = self.path if self.path is not None else self.detail
        return f"{self.target}: {self.kind} {where}".rstrip()


@dataclass(frozen=True)
class GuestDisks:
    """A guest to audit or decide on: its name, its disks, and what could not be read.

    The remaining fields are what the hypervisor says of the guest, for the report and the
    inventory: ``state`` as the hypervisor words it (``shut off``, ``running``; None when it
    was read offline), ``in_use`` when a hypervisor runs it now.
    """

    name: str | None
    disks: tuple[DiskSpec, ...]
    uuid: str | None = None
    problem: str | None = None  # the configuration itself could not be read
    source: VmSource = "libvirt"
    config: str = ""  # where the configuration was read: a file, or URI#domain
    state: str | None = None
    in_use: bool = False
    template: bool = False
    tags: tuple[str, ...] = ()
    notes: str = ""
    labels: tuple[tuple[str, str], ...] = ()
