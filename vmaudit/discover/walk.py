"""Walk datastores for disk images: formats from content, VMs from descriptors, chains to leaves.

The result is a list of ``ImageRef`` (one per guest to audit, a VM's disks grouped, each
disk at the leaf of its snapshot chain) and a list of ``Skipped`` files that look like
images but cannot be audited, each with an error kind. Nothing here opens an image with
qemu: links are read from headers in Python and checked to stay inside the image's folder.

Discovery has the audits' protection: every file is read with a size cap and parsed in
linear time, and whatever one file does (a header pointing past its end, a descriptor of
newlines, a bug of ours it triggers) becomes that file's ``Skipped`` entry, never an
exception out of ``discover()``: one hostile file cannot stall or stop a scan.
"""

from __future__ import annotations

import fnmatch
import os
import re
import stat
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace

from vmaudit.discover.blockdev import DEV, block_disk, is_block_device
from vmaudit.discover.formats import (
    DESCRIPTOR_SUFFIXES,
    MAX_DESCRIPTOR,
    VHD_DIFFERENCING,
    Header,
    expected_format,
    read_head,
    sniff,
)
from vmaudit.discover.locks import in_use
from vmaudit.errors import ErrorKind, VmauditError
from vmaudit.models import DiskRef, ImageRef, Skipped, VmSource

MAX_CHAIN = 64
MAX_VM_DESCRIPTOR = 4 * MAX_DESCRIPTOR  # a .vmx, .ovf or domain XML is a few kilobytes


@dataclass
class DiscoveryResult:
    images: list[ImageRef] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)


class UnsafeLink(VmauditError):
    """A link (backing file, extent, VM disk) that must not be followed."""


def _file_error(exc: Exception, what: str) -> VmauditError:
    """Any failure reading one file, as that file's error: never an exception for the scan."""
    if isinstance(exc, VmauditError):
        return exc
    if isinstance(exc, PermissionError):
        return VmauditError(ErrorKind.PERMISSION_DENIED, "permission denied")
    if isinstance(exc, OSError):  # a loop or a name too long here is no usable image either
        return VmauditError(ErrorKind.CORRUPT_IMAGE, exc.strerror or str(exc))
    # Not a fault we know of: a bug this file triggers costs this file, reported as ours.
    return VmauditError(ErrorKind.INTERNAL, f"{what} failed: {type(exc).__name__}: {exc}")


def _skip(path: str, error: VmauditError) -> Skipped:
    return Skipped(path, error.kind, error.message)


def _excluded(path: str, excludes: Sequence[str]) -> bool:
    name = os.path.basename(path)
    return any(fnmatch.fnmatch(path, pat) or fnmatch.fnmatch(name, pat) for pat in excludes)


def _walk(paths: Sequence[str], excludes: Sequence[str], out: DiscoveryResult) -> Iterator[str]:
    """Every candidate file path; special files and unreadable folders become ``Skipped``."""
    for top in paths:
        top = os.path.abspath(top)
        try:
            st = os.lstat(top)
        except FileNotFoundError:
            out.skipped.append(Skipped(top, ErrorKind.CORRUPT_IMAGE, "no such file or directory"))
            continue
        except OSError as exc:  # permission, a name too long, a loop in the path...
            out.skipped.append(_skip(top, _file_error(exc, "lstat")))
            continue
        if stat.S_ISDIR(st.st_mode):

            def onerror(exc: OSError) -> None:
                kind = (
                    ErrorKind.PERMISSION_DENIED
                    if isinstance(exc, PermissionError)
                    else ErrorKind.CORRUPT_IMAGE
                )
                out.skipped.append(Skipped(str(exc.filename), kind, exc.strerror or str(exc)))

            # followlinks=False: a symlinked folder (or a loop of them) is never entered,
            # but a symlink named like an image is still yielded, to be reported.
            for folder, dirs, files in os.walk(top, onerror=onerror, followlinks=False):
                linked = [d for d in dirs if os.path.islink(os.path.join(folder, d))]
                dirs[:] = sorted(
                    d
                    for d in dirs
                    if d not in linked
                    and not d.endswith(".lck")
                    and not _excluded(os.path.join(folder, d), excludes)
                )
                for name in sorted(files + linked):
                    path = os.path.join(folder, name)
                    if not _excluded(path, excludes):
                        yield path
        elif not _excluded(top, excludes):
            yield top


def name_is_candidate(name: str) -> bool:
    suffix = os.path.splitext(name)[1].lower()
    return expected_format(name) not in (None, "") or suffix in DESCRIPTOR_SUFFIXES


def _inside(folder: str, target: str) -> str:
    """``target`` (as written in a header) as an absolute path that must stay in ``folder``."""
    if not target or "\0" in target:
        raise UnsafeLink(ErrorKind.UNSAFE_BACKING_FILE, "empty or malformed link")
    if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.IGNORECASE) and not os.path.isabs(target):
        raise UnsafeLink(
            ErrorKind.UNSAFE_BACKING_FILE, f"link {target!r} is a protocol or json: target"
        )
    resolved = os.path.normpath(os.path.join(folder, target))
    if os.path.dirname(resolved) != os.path.normpath(folder):
        raise UnsafeLink(
            ErrorKind.UNSAFE_BACKING_FILE, f"link {target!r} points outside the image's folder"
        )
    try:
        st = os.lstat(resolved)
    except FileNotFoundError:
        raise UnsafeLink(ErrorKind.MISSING_PARENT, f"linked file {target!r} is missing") from None
    if not stat.S_ISREG(st.st_mode):
        raise UnsafeLink(ErrorKind.UNSAFE_BACKING_FILE, f"link {target!r} is not a regular file")
    return resolved


class _Catalog:
    """Headers of the files seen, read once; a file that cannot be read fails the same way
    every time it is asked for (as a leaf, a parent or a VM's disk)."""

    def __init__(self) -> None:
        self.headers: dict[str, Header | VmauditError] = {}

    def header(self, path: str) -> Header:
        """The file's header; raises ``VmauditError`` (only) when it cannot be read."""
        if path not in self.headers:
            try:
                self.headers[path] = sniff(path)
            except Exception as exc:  # one file's failure is that file's error
                self.headers[path] = _file_error(exc, "reading the header")
        found = self.headers[path]
        if isinstance(found, VmauditError):
            raise found
        return found


def build_chain(path: str, catalog: _Catalog) -> DiskRef:
    """The disk whose leaf is ``path``, with every file qemu will read, checked link by link."""
    chain: list[str] = []
    formats: list[str] = []
    current = path
    while True:
        if current in chain:
            raise UnsafeLink(ErrorKind.UNSAFE_BACKING_FILE, "backing chain loops")
        if len(chain) >= MAX_CHAIN:
            raise UnsafeLink(ErrorKind.UNSAFE_BACKING_FILE, "backing chain too long")
        header = catalog.header(current)
        if header.format is None:
            raise UnsafeLink(
                ErrorKind.CORRUPT_IMAGE, f"{os.path.basename(current)} is not a disk image"
            )
        if header.vmdk_kind == "descriptor" and not header.extents:
            raise UnsafeLink(
                ErrorKind.CORRUPT_IMAGE,
                f"{os.path.basename(current)}: VMDK descriptor names no data extent",
            )
        folder = os.path.dirname(current)
        chain.append(current)
        formats.append(header.format)
        for extent in header.extents:
            ext_path = _inside_extent(folder, extent)
            if ext_path != current:
                chain.append(ext_path)
                formats.append("extent")
        if header.format == "vhd" and header.vhd_type == VHD_DIFFERENCING and not header.backing:
            raise UnsafeLink(
                ErrorKind.MISSING_PARENT, "VHD differencing disk without a readable parent locator"
            )
        if not header.backing:
            break
        parent = _inside(folder, header.backing)
        parent_header = catalog.header(parent)
        if header.backing_format and parent_header.format != header.backing_format:
            raise UnsafeLink(
                ErrorKind.FORMAT_MISMATCH,
                f"{os.path.basename(current)} names a {header.backing_format} parent, but "
                f"{os.path.basename(parent)} is {parent_header.format or 'not an image'}",
            )
        current = parent
    return DiskRef(path=path, format=formats[0], chain=tuple(chain), chain_formats=tuple(formats))


def _inside_extent(folder: str, extent: str) -> str:
    try:
        return _inside(folder, extent)
    except UnsafeLink as exc:
        kind = (
            ErrorKind.MISSING_PARENT
            if exc.kind == ErrorKind.MISSING_PARENT
            else ErrorKind.UNSAFE_EXTENT
        )
        raise UnsafeLink(kind, f"VMDK extent: {exc.message}") from None


# ---------------------------------------------------------------- VM descriptors


@dataclass(frozen=True)
class _VmDescriptor:
    path: str
    name: str
    disks: tuple[str, ...]  # as written, relative to the descriptor's folder
    source: VmSource = "folder"
    template: bool = False  # a vSphere template (.vmtx)
    notes: str = ""  # a vmx annotation


def _read_descriptor(path: str) -> _VmDescriptor | None:
    data = read_head(path, MAX_VM_DESCRIPTOR + 1)
    if len(data) > MAX_VM_DESCRIPTOR:
        return None  # no VM descriptor is that big: not one
    text = data.decode("utf-8", errors="replace")
    suffix = os.path.splitext(path)[1].lower()
    default_name = os.path.splitext(os.path.basename(path))[0]
    if suffix in (".vmx", ".vmtx"):
        return _parse_vmx(path, text, default_name, template=suffix == ".vmtx")
    try:
        root = ET.fromstring(text)
    except ET.ParseError:
        return None
    if suffix == ".xml" and root.tag == "domain":
        name = root.findtext("name") or default_name
        disks = tuple(
            src.get("file", "")
            for disk in root.iter("disk")
            if disk.get("device", "disk") == "disk"
            for src in disk.iter("source")
            if src.get("file")
        )
        return _VmDescriptor(path, name, disks, source="libvirt")
    if suffix == ".ovf":
        hrefs = tuple(
            value
            for element in root.iter()
            if _local(element.tag) == "File"
            for key, value in element.attrib.items()
            if _local(key) == "href" and value
        )
        ovf_name = next(
            (el.text for el in root.iter() if _local(el.tag) == "Name" and el.text), None
        )
        return _VmDescriptor(path, ovf_name or default_name, hrefs)
    return None


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


# One ``key = "value"`` a line, as VMware writes them; keys are case-insensitive. One
# regex pass whose matches never cross a newline (``[^\S\n]``, not ``\s``, which under re.M
# made the old patterns quadratic on a file of newlines): linear in the file's size.
_VMX_LINE = re.compile(
    r'^[^\S\n]*+([A-Za-z][\w:.-]*+)[^\S\n]*+=[^\S\n]*+"([^"\n]*+)"', re.MULTILINE
)
_VMX_DEVICE = re.compile(r"((?:scsi|sata|ide|nvme)\d+:\d+)\.(filename|present|devicetype)")


def _vmx_text(value: str) -> str:
    """A vmx value as written by VMware: ``|XX`` is the character of hex code XX."""
    return re.sub(r"\|([0-9A-Fa-f]{2})", lambda m: chr(int(m.group(1), 16)), value)


def _parse_vmx(path: str, text: str, default_name: str, template: bool = False) -> _VmDescriptor:
    present: dict[str, str] = {}
    devtype: dict[str, str] = {}
    files: list[tuple[str, str]] = []
    name: str | None = None
    notes = ""
    for match in _VMX_LINE.finditer(text):
        key, value = match.group(1).lower(), match.group(2)
        if key == "displayname":
            name = value if name is None else name
            continue
        if key == "annotation":
            notes = notes or " ".join(_vmx_text(value).split())[:2000]
            continue
        if key == "templatevm":  # a template registered as such in its own .vmx
            template = template or value.lower() == "true"
            continue
        device = _VMX_DEVICE.fullmatch(key)
        if device is None:
            continue
        slot, field_name = device.groups()
        if field_name == "filename":
            files.append((slot, value))
        elif field_name == "present":
            present[slot] = value.lower()
        else:
            devtype[slot] = value.lower()
    disks = tuple(
        file_name
        for slot, file_name in files
        if present.get(slot, "true") == "true"
        and "cdrom" not in devtype.get(slot, "")
        and file_name.lower().endswith(".vmdk")
    )
    return _VmDescriptor(
        path, name if name is not None else default_name, disks, "vmware", template, notes
    )


# ---------------------------------------------------------------- discovery


def discover(paths: Sequence[str], excludes: Sequence[str] = ()) -> DiscoveryResult:
    """Every guest to audit under ``paths``, and what looked like an image but cannot be.

    Never raises for what a file holds: each file's failure is its own ``Skipped`` entry.
    Three steps: sort the walked files into image files and VM descriptors; turn each
    descriptor into a VM (claiming its disks); turn each unclaimed image file into a guest
    at the leaf of its chain.
    """
    result = DiscoveryResult()
    catalog = _Catalog()
    devices = [p for p in paths if os.path.abspath(p).startswith(DEV + "/")]
    result.images.extend(_device_guests(devices, excludes, result))
    paths = [p for p in paths if p not in devices]
    images, descriptors = _sort_files(_walk(paths, excludes, result), catalog, result)
    claimed: set[str] = set()  # files that are a link, an extent or a VM's disk
    vm_images = _vms(descriptors, catalog, result, claimed)
    result.images.extend(_single_disk_guests(images, catalog, result, claimed))
    result.images.extend(vm_images)
    result.images.sort(key=lambda ref: ref.path)
    result.skipped = [s for s in result.skipped if s.path not in claimed]
    return result


def _device_guests(
    paths: Sequence[str], excludes: Sequence[str], result: DiscoveryResult
) -> list[ImageRef]:
    """A guest per block device given (a ``/dev`` folder: each device in it, not below)."""
    guests: list[ImageRef] = []
    for top in paths:
        top = os.path.normpath(os.path.abspath(top))
        candidates = [top]
        if os.path.isdir(top) and not os.path.islink(top):
            try:
                names = sorted(os.listdir(top))
            except OSError as exc:
                result.skipped.append(_skip(top, _file_error(exc, "listing")))
                continue
            candidates = [
                os.path.join(top, n) for n in names if is_block_device(os.path.join(top, n))
            ]
        for path in candidates:
            if _excluded(path, excludes):
                continue
            try:
                disk = block_disk(path)
            except VmauditError as exc:
                result.skipped.append(_skip(path, exc))
                continue
            guests.append(ImageRef(path=path, format=disk.format, disks=(disk,)))
    return guests


def _sort_files(
    walked: Iterable[str],
    catalog: _Catalog,
    result: DiscoveryResult,
) -> tuple[list[str], list[str]]:
    """(image files, VM descriptors) among the walked paths; the rest is passed over."""
    images: list[str] = []
    descriptors: list[str] = []
    for path in walked:
        try:
            st = os.lstat(path)
        except OSError as exc:
            result.skipped.append(_skip(path, _file_error(exc, "lstat")))
            continue
        if not stat.S_ISREG(st.st_mode):
            if name_is_candidate(os.path.basename(path)):
                what = "symlink" if stat.S_ISLNK(st.st_mode) else "not a regular file"
                result.skipped.append(
                    Skipped(
                        path,
                        ErrorKind.NOT_A_REGULAR_FILE,
                        f"{what}: only regular files are audited",
                    )
                )
            continue
        if os.path.splitext(path)[1].lower() in DESCRIPTOR_SUFFIXES:
            descriptors.append(path)
        elif _is_image_file(path, catalog, result):
            images.append(path)
    return images, descriptors


def _is_image_file(path: str, catalog: _Catalog, result: DiscoveryResult) -> bool:
    """Named like a disk image, or an extensionless file whose content is a raw disk."""
    expected = expected_format(path)
    if expected is None:
        return False
    if expected != "":
        return True
    try:
        header = catalog.header(path)
    except VmauditError as exc:
        if exc.kind == ErrorKind.PERMISSION_DENIED:
            result.skipped.append(_skip(path, exc))
        return False  # an extensionless file that is no readable disk: not ours
    return header.format == "raw"


def _vms(
    descriptors: Sequence[str], catalog: _Catalog, result: DiscoveryResult, claimed: set[str]
) -> list[ImageRef]:
    """One guest per VM descriptor that names disks; its disk files join ``claimed``."""
    vm_images: list[ImageRef] = []
    for desc_path in descriptors:
        try:
            descriptor = _read_descriptor(desc_path)
        except Exception as exc:  # one descriptor's failure is its own
            result.skipped.append(_skip(desc_path, _file_error(exc, "reading the descriptor")))
            continue
        if descriptor is None or not descriptor.disks:
            continue
        ref = _vm_ref(descriptor, catalog, result, claimed)
        if ref is not None:
            vm_images.append(ref)
    return vm_images


def _single_disk_guests(
    images: Sequence[str], catalog: _Catalog, result: DiscoveryResult, claimed: set[str]
) -> list[ImageRef]:
    """A guest per image file that is no VM's disk and no other image's backing file."""
    disks: dict[str, DiskRef] = {}
    for path in images:
        if path in claimed:
            continue
        try:
            disks[path] = _leaf_disk(path, catalog)
        except VmauditError as exc:
            result.skipped.append(_skip(path, exc))
    for disk in disks.values():
        claimed.update(disk.chain[1:])
    guests = []
    for path, disk in disks.items():
        if path not in claimed:
            ref = ImageRef(path=path, format=disk.format, disks=(disk,))
            guests.append(replace(ref, in_use=in_use(ref)))
    return guests


def _leaf_disk(path: str, catalog: _Catalog) -> DiskRef:
    """The disk whose leaf is the image file ``path``; ``VmauditError`` when it is none."""
    header = catalog.header(path)
    expected = expected_format(path)
    if header.format is None:
        raise VmauditError(
            ErrorKind.CORRUPT_IMAGE,
            f"named like a {expected} image but its content is not a recognised disk image",
        )
    if expected and header.format != expected:
        raise VmauditError(
            ErrorKind.FORMAT_MISMATCH, f"named {expected} but its content is {header.format}"
        )
    try:
        return build_chain(path, catalog)
    except VmauditError:
        raise
    except Exception as exc:  # one chain's failure is its leaf's error
        raise _file_error(exc, "following the chain") from None


def _vm_ref(
    descriptor: _VmDescriptor, catalog: _Catalog, result: DiscoveryResult, claimed: set[str]
) -> ImageRef | None:
    folder = os.path.dirname(descriptor.path)
    disks: list[DiskRef] = []
    for written in descriptor.disks:
        try:
            disk_path = _inside(folder, written)
            disks.append(build_chain(disk_path, catalog))
        except UnsafeLink as exc:
            result.skipped.append(
                Skipped(descriptor.path, exc.kind, f"disk {written!r}: {exc.message}")
            )
            claimed.update(os.path.normpath(os.path.join(folder, d)) for d in descriptor.disks)
            return None
        except Exception as exc:  # one VM's failure is its own
            error = _file_error(exc, "following the chain")
            result.skipped.append(
                Skipped(descriptor.path, error.kind, f"disk {written!r}: {error.message}")
            )
            claimed.update(os.path.normpath(os.path.join(folder, d)) for d in descriptor.disks)
            return None
    for disk in disks:
        claimed.update(disk.chain)
    ref = ImageRef(
        path=descriptor.path,
        format=disks[0].format,
        disks=tuple(disks),
        vm=descriptor.name,
        source=descriptor.source,
        template=descriptor.template,
        notes=descriptor.notes,
    )
    return replace(ref, in_use=in_use(ref))
