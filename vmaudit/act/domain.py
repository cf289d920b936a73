"""The domain XML a libvirt hook is given, read as hostile input (vmaudit.discover.libvirt).

The parsing lives in discover, shared with ``vmaudit scan --libvirt``; the hook adds only
where its pool volumes lie: libvirt holds its lock while the hook runs, so a
``<disk type='volume'>`` is resolved from the pools' own XMLs in ``/etc/libvirt/storage``,
never by asking the daemon.
"""

from __future__ import annotations

from vmaudit.discover import libvirt
from vmaudit.discover.libvirt import MAX_XML_BYTES, DomainXMLError, parse_xml
from vmaudit.discover.vms import DiskSpec, GuestDisks

DEFAULT_POOLS_DIR = "/etc/libvirt/storage"

__all__ = [
    "DEFAULT_POOLS_DIR",
    "MAX_XML_BYTES",
    "DiskSpec",
    "DomainXMLError",
    "GuestDisks",
    "domain_disks",
    "parse_xml",
]


def domain_disks(data: bytes, pools_dir: str = DEFAULT_POOLS_DIR) -> GuestDisks:
    """The guest a domain XML describes, its pool volumes resolved through ``pools_dir``."""
    guest = libvirt.domain_disks(data)
    if any(disk.kind == "volume" for disk in guest.disks):
        guest = libvirt.domain_disks(data, libvirt.pools_in_folder(pools_dir))
    return guest
