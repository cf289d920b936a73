"""Walk datastores for disk images: formats from content, VMs from descriptors, chains to leaves.

The result is a list of ``ImageRef`` (one per guest to audit, a VM's disks grouped, each
disk at the leaf of its snapshot chain) and a list of ``Skipped`` files that look like
images but cannot be audited, each with an error kind. Nothing here opens an image with
qemu: links are read from headers in Python and checked to stay inside the image's folder.
"""

from __future__ import annotations

import fnmatch
import os
import re
import stat
import xml.etree.ElementTree as ET
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace

from vmaudit.errors import ErrorKind
from vmaudit.formats import (
    DESCRIPTOR_SUFFIXES,
    MAX_DESCRIPTOR,
    VHD_DIFFERENCING,
    Header,
    expected_format,
    sniff,
)
from vmaudit.locks import in_use
from vmaudit.models import DiskRef, ImageRef, Skipped

MAX_CHAIN = 64


@dataclass
class DiscoveryResult:
    images: list[ImageRef] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)


class UnsafeLink(Exception):
    def __init__(self, kind: ErrorKind, message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message


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
        except PermissionError:
            out.skipped.append(Skipped(top, ErrorKind.PERMISSION_DENIED, "permission denied"))
            continue
        if stat.S_ISDIR(st.st_mode):

            def onerror(exc: OSError) -> None:
                kind = (ErrorKind.PERMISSION_DENIED if isinstance(exc, PermissionError)
                        else ErrorKind.CORRUPT_IMAGE)
                out.skipped.append(Skipped(str(exc.filename), kind, exc.strerror or str(exc)))

            # followlinks=False: a symlinked folder (or a loop of them) is never entered,
            # but a symlink named like an image is still yielded, to be reported.
            for folder, dirs, files in os.walk(top, onerror=onerror, followlinks=False):
                linked = [d for d in dirs if os.path.islink(os.path.join(folder, d))]
                dirs[:] = sorted(d for d in dirs if d not in linked and not d.endswith(".lck")
                                 and not _excluded(os.path.join(folder, d), excludes))
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
        raise UnsafeLink(ErrorKind.UNSAFE_BACKING_FILE,
                         f"link {target!r} is a protocol or json: target")
    resolved = os.path.normpath(os.path.join(folder, target))
    if os.path.dirname(resolved) != os.path.normpath(folder):
        raise UnsafeLink(ErrorKind.UNSAFE_BACKING_FILE,
                         f"link {target!r} points outside the image's folder")
    try:
        st = os.lstat(resolved)
    except FileNotFoundError:
        raise UnsafeLink(ErrorKind.MISSING_PARENT, f"linked file {target!r} is missing") from None
    if not stat.S_ISREG(st.st_mode):
        raise UnsafeLink(ErrorKind.UNSAFE_BACKING_FILE,
                         f"link {target!r} is not a regular file")
    return resolved


class _Catalog:
    """Headers of the files seen, read once."""

    def __init__(self) -> None:
        self.headers: dict[str, Header] = {}

    def header(self, path: str) -> Header:
        if path not in self.headers:
            self.headers[path] = sniff(path)
        return self.headers[path]


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
            raise UnsafeLink(ErrorKind.CORRUPT_IMAGE,
                             f"{os.path.basename(current)} is not a disk image")
        folder = os.path.dirname(current)
        chain.append(current)
        formats.append(header.format)
        for extent in header.extents:
            ext_path = _inside_extent(folder, extent)
            if ext_path != current:
                chain.append(ext_path)
                formats.append("extent")
        if header.format == "vhd" and header.vhd_type == VHD_DIFFERENCING and not header.backing:
            raise UnsafeLink(ErrorKind.MISSING_PARENT,
                             "VHD differencing disk without a readable parent locator")
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
        kind = ErrorKind.MISSING_PARENT if exc.kind == ErrorKind.MISSING_PARENT \
            else ErrorKind.UNSAFE_EXTENT
        raise UnsafeLink(kind, f"VMDK extent: {exc.message}") from None


# ---------------------------------------------------------------- VM descriptors


@dataclass(frozen=True)
class _VmDescriptor:
    path: str
    name: str
    disks: tuple[str, ...]  # as written, relative to the descriptor's folder


def _read_descriptor(path: str) -> _VmDescriptor | None:
    if os.path.getsize(path) > 4 * MAX_DESCRIPTOR:
        return None
    with open(path, "rb") as handle:
        text = handle.read().decode("utf-8", errors="replace")
    suffix = os.path.splitext(path)[1].lower()
    default_name = os.path.splitext(os.path.basename(path))[0]
    if suffix == ".vmx":
        return _parse_vmx(path, text, default_name)
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
        return _VmDescriptor(path, name, disks)
    if suffix == ".ovf":
        hrefs = tuple(
            value
            for element in root.iter()
            if _local(element.tag) == "File"
            for key, value in element.attrib.items()
            if _local(key) == "href" and value
        )
        ovf_name = next((el.text for el in root.iter() if _local(el.tag) == "Name" and el.text),
                        None)
        return _VmDescriptor(path, ovf_name or default_name, hrefs)
    return None


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


_VMX_DEVICE = r'^\s*((?:scsi|sata|ide|nvme)\d+:\d+)\.'
_VMX_DISK = re.compile(_VMX_DEVICE + r'fileName\s*=\s*"([^"]*)"', re.I | re.M)
_VMX_PRESENT = re.compile(_VMX_DEVICE + r'present\s*=\s*"(\w+)"', re.I | re.M)
_VMX_DEVTYPE = re.compile(_VMX_DEVICE + r'deviceType\s*=\s*"([^"]*)"', re.I | re.M)
_VMX_NAME = re.compile(r'^\s*displayName\s*=\s*"([^"]*)"', re.I | re.M)


def _parse_vmx(path: str, text: str, default_name: str) -> _VmDescriptor:
    present = {m.group(1).lower(): m.group(2).lower() for m in _VMX_PRESENT.finditer(text)}
    devtype = {m.group(1).lower(): m.group(2).lower() for m in _VMX_DEVTYPE.finditer(text)}
    disks = tuple(
        m.group(2)
        for m in _VMX_DISK.finditer(text)
        if present.get(m.group(1).lower(), "true") == "true"
        and "cdrom" not in devtype.get(m.group(1).lower(), "")
        and m.group(2).lower().endswith(".vmdk")
    )
    name_match = _VMX_NAME.search(text)
    return _VmDescriptor(path, name_match.group(1) if name_match else default_name, disks)


# ---------------------------------------------------------------- discovery


def discover(paths: Sequence[str], excludes: Sequence[str] = ()) -> DiscoveryResult:
    """Every guest to audit under ``paths``, and what looked like an image but cannot be."""
    result = DiscoveryResult()
    catalog = _Catalog()
    images: list[str] = []
    descriptors: list[str] = []
    for path in _walk(paths, excludes, result):
        try:
            st = os.lstat(path)
        except OSError as exc:
            result.skipped.append(Skipped(path, ErrorKind.CORRUPT_IMAGE, str(exc)))
            continue
        suffix = os.path.splitext(path)[1].lower()
        if not stat.S_ISREG(st.st_mode):
            if name_is_candidate(os.path.basename(path)):
                what = "symlink" if stat.S_ISLNK(st.st_mode) else "not a regular file"
                result.skipped.append(Skipped(path, ErrorKind.NOT_A_REGULAR_FILE,
                                              f"{what}: only regular files are audited"))
            continue
        if suffix in DESCRIPTOR_SUFFIXES:
            descriptors.append(path)
            continue
        expected = expected_format(path)
        if expected is None:
            continue
        try:
            header = catalog.header(path)
        except PermissionError:
            result.skipped.append(Skipped(path, ErrorKind.PERMISSION_DENIED, "permission denied"))
            continue
        except OSError as exc:
            result.skipped.append(Skipped(path, ErrorKind.CORRUPT_IMAGE, str(exc)))
            continue
        if expected == "":
            if header.format == "raw":
                images.append(path)
            continue  # an extensionless file that is no disk: not ours
        images.append(path)

    claimed: set[str] = set()  # files that are a link, an extent or a VM's disk
    vm_images: list[ImageRef] = []
    for desc_path in descriptors:
        try:
            descriptor = _read_descriptor(desc_path)
        except OSError as exc:
            result.skipped.append(Skipped(desc_path, ErrorKind.PERMISSION_DENIED
                                          if isinstance(exc, PermissionError)
                                          else ErrorKind.CORRUPT_IMAGE, str(exc)))
            continue
        if descriptor is None or not descriptor.disks:
            continue
        ref = _vm_ref(descriptor, catalog, result, claimed)
        if ref is not None:
            vm_images.append(ref)

    disks: dict[str, DiskRef] = {}
    for path in images:
        if path in claimed:
            continue
        known = _safe_header(path, catalog, result)
        if known is None:
            continue
        header = known
        expected = expected_format(path)
        if header.format is None:
            result.skipped.append(Skipped(path, ErrorKind.CORRUPT_IMAGE,
                                          f"named like a {expected} image but its content is not "
                                          "a recognised disk image"))
            continue
        if expected and header.format != expected:
            result.skipped.append(Skipped(path, ErrorKind.FORMAT_MISMATCH,
                                          f"named {expected} but its content is {header.format}"))
            continue
        try:
            disks[path] = build_chain(path, catalog)
        except UnsafeLink as exc:
            result.skipped.append(Skipped(path, exc.kind, exc.message))
            continue
        except OSError as exc:
            result.skipped.append(Skipped(path, ErrorKind.CORRUPT_IMAGE, str(exc)))
    for disk in disks.values():
        claimed.update(disk.chain[1:])
    for path, disk in disks.items():
        if path in claimed:
            continue
        ref = ImageRef(path=path, format=disk.format, disks=(disk,))
        result.images.append(replace(ref, in_use=in_use(ref)))
    result.images.extend(vm_images)
    result.images.sort(key=lambda ref: ref.path)
    result.skipped = [s for s in result.skipped if s.path not in claimed]
    return result


def _safe_header(path: str, catalog: _Catalog, result: DiscoveryResult) -> Header | None:
    try:
        return catalog.header(path)
    except OSError as exc:
        kind = ErrorKind.PERMISSION_DENIED if isinstance(exc, PermissionError) \
            else ErrorKind.CORRUPT_IMAGE
        result.skipped.append(Skipped(path, kind, str(exc)))
        return None


def _vm_ref(descriptor: _VmDescriptor, catalog: _Catalog, result: DiscoveryResult,
            claimed: set[str]) -> ImageRef | None:
    folder = os.path.dirname(descriptor.path)
    disks: list[DiskRef] = []
    for written in descriptor.disks:
        try:
            disk_path = _inside(folder, written)
            disks.append(build_chain(disk_path, catalog))
        except UnsafeLink as exc:
            result.skipped.append(Skipped(descriptor.path, exc.kind, f"disk {written!r}: "
                                          f"{exc.message}"))
            claimed.update(os.path.normpath(os.path.join(folder, d)) for d in descriptor.disks)
            return None
        except OSError as exc:
            result.skipped.append(Skipped(descriptor.path, ErrorKind.CORRUPT_IMAGE, str(exc)))
            return None
    for disk in disks:
        claimed.update(disk.chain)
    ref = ImageRef(path=descriptor.path, format=disks[0].format, disks=tuple(disks),
                   vm=descriptor.name)
    return replace(ref, in_use=in_use(ref))
