"""Hypervisors' guests as images to audit: each disk checked, resolved, grouped into one guest.

A guest read from a hypervisor's own inventory (vmaudit.discover.libvirt, .proxmox) names
its disks by path; nothing it says is believed. A file disk must be a regular file whose
folder lies inside one of the allowed roots (the hypervisor's own storage pools and the
PATHs the user gave), read as a folder scan reads it (format from content, chain inside
its folder); a block disk must be a device the name really is (vmaudit.discover.blockdev),
inside the roots too (``/dev/VG`` of a logical pool, ``/dev/zvol/POOL``). Network disks
cannot be read from this host. Whatever fails is the guest's error row, named as the
hypervisor names it; the scan goes on.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable, Sequence
from dataclasses import replace

from vmaudit.discover.blockdev import block_disk
from vmaudit.discover.vms import DiskSpec, GuestDisks
from vmaudit.discover.walk import DiscoveryResult, discover
from vmaudit.errors import ErrorKind, VmauditError
from vmaudit.models import DiskRef, ImageRef, Skipped

# libvirt's <driver type=...> names as vmaudit's formats (discover.formats)
LIBVIRT_FORMATS = {"raw": "raw", "qcow2": "qcow2", "vmdk": "vmdk", "vpc": "vhd", "vhdx": "vhdx"}


def inside(path: str, roots: Sequence[str]) -> bool:
    """Whether ``path``'s real folder lies in one of the roots' real folders, or ``path`` is
    itself a root (a device or an image given by hand)."""
    folder = os.path.realpath(os.path.dirname(path))
    for root in roots:
        if os.path.normpath(path) == os.path.normpath(root):
            return True
        real = os.path.realpath(root)
        if folder == real or folder.startswith(real.rstrip("/") + "/"):
            return True
    return False


def _checked_path(disk: DiskSpec, roots: Sequence[str]) -> str:
    path = disk.path or ""
    if not os.path.isabs(path) or "\0" in path:
        raise VmauditError(ErrorKind.CORRUPT_IMAGE, f"{path!r} is not an absolute path")
    path = os.path.normpath(path)
    if not inside(path, roots):
        raise VmauditError(
            ErrorKind.OUTSIDE_DATASTORE,
            f"{path} is outside the allowed datastores ({', '.join(roots) or 'none given'})",
        )
    return path


def _declared(disk: DiskSpec, path: str, found: str) -> None:
    declared = LIBVIRT_FORMATS.get(disk.declared_format or "", disk.declared_format)
    if declared is not None and declared != found:
        raise VmauditError(
            ErrorKind.FORMAT_MISMATCH,
            f"{path}: {ErrorKind.FORMAT_MISMATCH}: the hypervisor opens it as "
            f"{disk.declared_format} but its content is {found}",
        )


def disk_ref(disk: DiskSpec, roots: Sequence[str]) -> tuple[DiskRef, bool]:
    """The disk as a scan would find it, and whether a hypervisor holds it (a qemu lock).

    ``VmauditError`` (with its kind) when the disk cannot be audited from this host.
    """
    if disk.kind == "network":
        raise VmauditError(
            ErrorKind.UNSUPPORTED_FORMAT,
            f"network disk ({disk.detail}) cannot be audited from this host",
        )
    if disk.kind == "block":
        if not disk.path:
            raise VmauditError(
                ErrorKind.UNSUPPORTED_FORMAT, f"block disk {disk.detail}: no device to read"
            )
        path = _checked_path(disk, roots)
        ref = block_disk(path)
        _declared(disk, path, ref.format)
        return ref, False
    if disk.kind != "file":
        raise VmauditError(
            ErrorKind.UNSUPPORTED_FORMAT, f"{disk.describe()}: a {disk.kind} disk cannot be audited"
        )
    if not disk.path:
        raise VmauditError(ErrorKind.CORRUPT_IMAGE, "file disk without a source file")
    path = _checked_path(disk, roots)
    try:
        info = os.lstat(path)
    except OSError as exc:
        raise VmauditError(ErrorKind.CORRUPT_IMAGE, f"{path}: {exc.strerror or exc}") from None
    if not stat.S_ISREG(info.st_mode):
        raise VmauditError(ErrorKind.NOT_A_REGULAR_FILE, f"{path} is not a regular file")
    found = discover([path])
    for skipped in found.skipped:
        raise VmauditError(skipped.kind, f"{path}: {skipped.kind}: {skipped.message}")
    matching = [image for image in found.images if image.path == path]
    if len(matching) != 1 or len(matching[0].disks) != 1:
        raise VmauditError(ErrorKind.CORRUPT_IMAGE, f"{path} is not recognised as a disk image")
    ref = matching[0].disks[0]
    _declared(disk, path, ref.format)
    return ref, matching[0].in_use


def _described(guest: GuestDisks, path: str) -> ImageRef:
    """The guest's report identity before (or without) its disks."""
    return ImageRef(
        path=path,
        format="unknown",
        disks=(),
        vm=guest.name,
        in_use=guest.in_use,
        source=guest.source,
        template=guest.template,
        state=guest.state,
        tags=guest.tags,
        notes=guest.notes,
        labels=guest.labels,
    )


def guest_image(guest: GuestDisks, roots: Sequence[str]) -> ImageRef:
    """The guest as one image to audit, keyed by its first disk (as the gate keys it).

    ``VmauditError`` when it cannot be audited: the message names the disk that stops it.
    """
    if guest.problem is not None:
        raise VmauditError(ErrorKind.CORRUPT_IMAGE, guest.problem)
    if not guest.disks:
        raise VmauditError(ErrorKind.CORRUPT_IMAGE, "the configuration names no disk")
    disks: list[DiskRef] = []
    held = guest.in_use
    for disk in guest.disks:
        try:
            ref, locked = disk_ref(disk, roots)
        except VmauditError as exc:
            raise VmauditError(exc.kind, f"{disk.target}: {exc.message}") from None
        disks.append(ref)
        held = held or locked
    image = _described(guest, disks[0].path)
    return replace(image, format=disks[0].format, disks=tuple(disks), in_use=held)


def _row_path(guest: GuestDisks) -> str:
    """Where an unauditable guest's error row points: its first disk, else its config."""
    for disk in guest.disks:
        if disk.path:
            return os.path.normpath(disk.path) if os.path.isabs(disk.path) else disk.path
    return guest.config or (guest.name or "unnamed guest")


def discover_guests(guests: Iterable[GuestDisks], roots: Sequence[str]) -> DiscoveryResult:
    """Every guest as an image to audit, or as a ``Skipped`` row carrying its name and source."""
    result = DiscoveryResult()
    for guest in guests:
        try:
            result.images.append(guest_image(guest, roots))
        except VmauditError as exc:
            path = _row_path(guest)
            result.skipped.append(Skipped(path, exc.kind, exc.message, _described(guest, path)))
        except Exception as exc:  # one guest's bug is its own row, never the scan's end
            path = _row_path(guest)
            result.skipped.append(
                Skipped(
                    path,
                    ErrorKind.INTERNAL,
                    f"reading the guest failed: {type(exc).__name__}: {exc}",
                    _described(guest, path),
                )
            )
    return result


def merge(found: DiscoveryResult, hypervisors: DiscoveryResult) -> DiscoveryResult:
    """A folder walk and hypervisors' guests together; a file a hypervisor's guest claims is
    that guest's (its name and state), not a second, anonymous image."""
    claimed = {path for image in hypervisors.images for disk in image.disks for path in disk.chain}
    claimed.update(image.path for image in hypervisors.images)
    images = [
        image
        for image in found.images
        if not any(path in claimed for disk in image.disks for path in disk.chain)
    ]
    images.extend(hypervisors.images)
    images.sort(key=lambda ref: ref.path)
    return DiscoveryResult(images, [*found.skipped, *hypervisors.skipped])


def inventories(
    libvirt: Sequence[str],
    proxmox: Sequence[str],
    paths: Sequence[str],
    timeout: float = 10.0,
) -> DiscoveryResult:
    """The guests of every libvirt (a URI, or a folder of domain XMLs) and Proxmox
    configuration folder given; one that cannot be read is an error row and the rest go on.

    A disk is allowed in the hypervisor's own storage (its pools, its storages) and in the
    ``paths`` the user gave.
    """
    from vmaudit.discover import libvirt as libvirt_inventory
    from vmaudit.discover import proxmox as proxmox_inventory

    given = tuple(os.path.abspath(p) for p in paths)
    result = DiscoveryResult()
    for source in libvirt:
        if os.path.isdir(source):
            folder = os.path.abspath(source)
            pools = libvirt_inventory.pools_in_folder(
                os.path.join(os.path.dirname(folder), "storage")
            )
            guests = libvirt_inventory.read_folder(folder)
            roots = (*libvirt_inventory.pool_roots(list(pools.values())), *given)
        else:
            try:
                listing = libvirt_inventory.list_domains(source, timeout)
            except VmauditError as exc:
                result.skipped.append(Skipped(source, exc.kind, exc.message))
                continue
            guests = list(listing.guests)
            roots = (*libvirt_inventory.pool_roots(listing.pools), *given)
        found = discover_guests(guests, roots)
        result.images.extend(found.images)
        result.skipped.extend(found.skipped)
    for folder in proxmox:
        try:
            vms, storage_roots = proxmox_inventory.list_vms(folder)
        except (OSError, ValueError) as exc:
            why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            result.skipped.append(
                Skipped(
                    os.path.abspath(folder),
                    ErrorKind.CORRUPT_IMAGE,
                    f"Proxmox configuration: {why}",
                )
            )
            continue
        found = discover_guests(vms, (*storage_roots, *given))
        result.images.extend(found.images)
        result.skipped.extend(found.skipped)
    return result
