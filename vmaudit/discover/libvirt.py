"""libvirt's own inventory: domain XMLs, storage pools, and a daemon listed read-only.

A domain XML is hostile input: it is parsed by expat with every DTD feature refused (a
``<!DOCTYPE``, an entity declaration, an external entity: the document is rejected, as
defusedxml would), under caps on size, depth and element count, into a small tree of our
own. Its name, ``<title>``, ``<description>``, the leaves of its ``<metadata>`` and its
disks are read; a pool volume (``<disk type='volume'>``) is resolved through the pool's own
XML (a ``dir`` pool's target folder, a ``logical`` pool's ``/dev/VG``, a ``zfs`` pool's
``/dev/zvol/POOL``). Nothing is followed or opened here.

A daemon is asked through libvirt-python on a read-only connection (``openReadOnly``:
nothing is ever written to it), in a thread bounded by a timeout, so a URI that does not
answer is an error after a few seconds, not a hung scan. Offline, a folder of domain XMLs
(``/etc/libvirt/qemu``) is read with the pools of ``/etc/libvirt/storage`` beside it.
"""

from __future__ import annotations

import os
import re
import threading
import xml.parsers.expat
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from vmaudit.discover.vms import DiskSpec, GuestDisks
from vmaudit.errors import ErrorKind, VmauditError

MAX_XML_BYTES = 4 * 1024 * 1024  # a domain XML is a few kilobytes; metadata may add some
MAX_DEPTH = 64
MAX_ELEMENTS = 100_000
MAX_DOMAINS = 10_000
MAX_LABELS = 64
MAX_NOTES = 2000
AUDITED_DEVICES = ("disk", "lun")  # a cdrom or floppy is media, not the guest's own disk
DEFAULT_TIMEOUT = 10.0
# virDomainState, in virsh's words
STATES = {
    0: "no state",
    1: "running",
    2: "blocked",
    3: "paused",
    4: "shutting down",
    5: "shut off",
    6: "crashed",
    7: "suspended",
}
DORMANT_STATES = ("shut off", "crashed")  # no qemu holds the disks
VOLUME_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+:-]*")


class DomainXMLError(ValueError):
    """The text is no domain XML we read: the reason, one line."""


@dataclass
class _Element:
    tag: str
    attrib: dict[str, str]
    children: list[_Element] = field(default_factory=list)
    text: str = ""

    def find(self, tag: str) -> _Element | None:
        return next((child for child in self.children if child.tag == tag), None)

    def findall(self, tag: str) -> list[_Element]:
        return [child for child in self.children if child.tag == tag]

    def findtext(self, tag: str) -> str:
        found = self.find(tag)
        return found.text.strip() if found is not None else ""


def _refuse(what: str) -> Callable[..., Any]:
    def handler(*_args: object) -> Any:
        raise DomainXMLError(f"{what} refused (DTDs and entities are not read)")

    return handler


def parse_xml(data: bytes) -> _Element:
    """The document's root element; ``DomainXMLError`` for anything but plain, bounded XML."""
    if len(data) > MAX_XML_BYTES:
        raise DomainXMLError(f"larger than {MAX_XML_BYTES} bytes")
    parser = xml.parsers.expat.ParserCreate()
    parser.SetParamEntityParsing(xml.parsers.expat.XML_PARAM_ENTITY_PARSING_NEVER)
    parser.StartDoctypeDeclHandler = _refuse("a DOCTYPE")
    parser.EntityDeclHandler = _refuse("an entity declaration")
    parser.UnparsedEntityDeclHandler = _refuse("an entity declaration")
    parser.ExternalEntityRefHandler = _refuse("an external entity")
    stack: list[_Element] = []
    roots: list[_Element] = []
    count = 0

    def start(tag: str, attrib: dict[str, str]) -> None:
        nonlocal count
        count += 1
        if count > MAX_ELEMENTS:
            raise DomainXMLError(f"more than {MAX_ELEMENTS} elements")
        if len(stack) >= MAX_DEPTH:
            raise DomainXMLError(f"nested deeper than {MAX_DEPTH} levels")
        element = _Element(tag, dict(attrib))
        (stack[-1].children if stack else roots).append(element)
        stack.append(element)

    def end(_tag: str) -> None:
        stack.pop()

    def text(chunk: str) -> None:
        if stack and len(stack[-1].text) < 4096:
            stack[-1].text += chunk

    parser.StartElementHandler = start
    parser.EndElementHandler = end
    parser.CharacterDataHandler = text
    try:
        parser.Parse(data, True)
    except xml.parsers.expat.ExpatError as exc:
        raise DomainXMLError(f"not well-formed XML ({exc})") from None
    if not roots:
        raise DomainXMLError("no root element")
    return roots[0]


# ---------------------------------------------------------------- storage pools


@dataclass(frozen=True)
class Pool:
    """A storage pool as its XML defines it; ``root`` is where its volumes live."""

    name: str
    type: str  # dir, fs, netfs, logical, zfs, disk, iscsi, rbd, ...
    root: str | None  # a folder, /dev/VG or /dev/zvol/POOL; None: not on this host's paths


def parse_pool(data: bytes) -> Pool | None:
    """The pool a ``<pool>`` XML defines; None when it is none we can read."""
    try:
        root = parse_xml(data)
    except DomainXMLError:
        return None
    if root.tag != "pool" or not root.findtext("name"):
        return None
    kind = root.attrib.get("type", "")
    target = root.find("target")
    path = target.findtext("path") if target is not None else ""
    source = root.find("source")
    source_name = source.findtext("name") if source is not None else ""
    where: str | None = None
    if kind in ("dir", "fs", "netfs") and path.startswith("/"):
        where = os.path.normpath(path)
    elif kind == "logical" and (source_name or path):
        vg = source_name or os.path.basename(path)
        where = f"/dev/{vg}" if VOLUME_NAME.fullmatch(vg) else None
    elif kind == "zfs" and source_name and ".." not in source_name.split("/"):
        where = f"/dev/zvol/{source_name}"
    return Pool(root.findtext("name"), kind, where)


def pools_in_folder(folder: str | Path) -> dict[str, Pool]:
    """Pools of a libvirt storage folder (``/etc/libvirt/storage/*.xml``) by name."""
    pools: dict[str, Pool] = {}
    try:
        names = sorted(os.listdir(folder))
    except OSError:
        return pools
    for name in names:
        if not name.endswith(".xml"):
            continue
        try:
            data = _read_capped(Path(folder) / name)
        except (OSError, DomainXMLError):
            continue
        pool = parse_pool(data)
        if pool is not None:
            pools[pool.name] = pool
    return pools


def resolve_volume(disk: DiskSpec, pool_name: str, volume: str, pools: dict[str, Pool]) -> DiskSpec:
    """A ``<disk type='volume'>`` as the file or block device its pool keeps it in."""
    pool = pools.get(pool_name)
    if pool is None:
        return replace(disk, detail=f"{disk.detail}: pool {pool_name!r} is not defined")
    if pool.root is None:
        return replace(disk, detail=f"{disk.detail}: a {pool.type} pool is not read here")
    if not VOLUME_NAME.fullmatch(volume) or volume in (".", ".."):
        return replace(disk, detail=f"{disk.detail}: volume name refused")
    kind = "file" if pool.type in ("dir", "fs", "netfs") else "block"
    return replace(disk, kind=kind, path=os.path.join(pool.root, volume))


# ---------------------------------------------------------------- domains


def _disk(element: _Element, position: int, pools: dict[str, Pool] | None) -> DiskSpec:
    kind = element.attrib.get("type", "file")
    target_element = element.find("target")
    target = (target_element.attrib.get("dev") if target_element is not None else None) or (
        f"disk{position}"
    )
    driver = element.find("driver")
    declared = driver.attrib.get("type") if driver is not None else None
    source = element.find("source")
    attrib = source.attrib if source is not None else {}
    if kind == "file":
        return DiskSpec(target, kind, attrib.get("file"), "", declared)
    if kind == "block":
        return DiskSpec(target, kind, attrib.get("dev"), "", declared)
    if kind == "network":
        protocol = attrib.get("protocol", "unknown")
        return DiskSpec(
            target, kind, None, f"{protocol} {attrib.get('name', '')}".strip(), declared
        )
    if kind == "volume":
        pool, volume = attrib.get("pool", "?"), attrib.get("volume", "?")
        spec = DiskSpec(target, kind, None, f"volume {pool}/{volume}", declared)
        return resolve_volume(spec, pool, volume, pools) if pools is not None else spec
    return DiskSpec(target, kind, attrib.get("dir") or attrib.get("path"), "", declared)


def _labels(metadata: _Element | None) -> tuple[tuple[str, str], ...]:
    """The leaves of ``<metadata>`` as (local name, text), and their attributes likewise."""
    found: list[tuple[str, str]] = []

    def visit(element: _Element) -> None:
        for child in element.children:
            if len(found) >= MAX_LABELS:
                return
            local = child.tag.rsplit(":", 1)[-1]
            for key, value in child.attrib.items():
                if not key.startswith("xmlns"):
                    found.append((key.rsplit(":", 1)[-1], value.strip()[:200]))
            if child.children:
                visit(child)
            elif child.text.strip():
                found.append((local, child.text.strip()[:200]))

    if metadata is not None:
        visit(metadata)
    return tuple(found[:MAX_LABELS])


def domain_disks(data: bytes, pools: dict[str, Pool] | None = None, config: str = "") -> GuestDisks:
    """The guest a libvirt domain XML describes; a ``problem`` when it is unreadable.

    With ``pools``, volume disks are resolved to their files or devices.
    """
    try:
        root = parse_xml(data)
    except DomainXMLError as exc:
        return GuestDisks(None, (), problem=f"domain XML: {exc}", config=config)
    if root.tag != "domain":
        return GuestDisks(
            None, (), problem=f"domain XML: root element is <{root.tag[:40]}>", config=config
        )
    name = root.findtext("name")
    uuid = root.findtext("uuid")
    devices = root.find("devices")
    elements = devices.findall("disk") if devices is not None else []
    disks = tuple(
        _disk(element, position, pools)
        for position, element in enumerate(elements)
        if element.attrib.get("device", "disk") in AUDITED_DEVICES
    )
    notes = " ".join(
        part for part in (root.findtext("title"), root.findtext("description")) if part
    )
    return GuestDisks(
        name or None,
        disks,
        uuid or None,
        config=config,
        notes=notes[:MAX_NOTES],
        labels=_labels(root.find("metadata")),
    )


def _read_capped(path: Path) -> bytes:
    with path.open("rb") as handle:
        data = handle.read(MAX_XML_BYTES + 1)
    if len(data) > MAX_XML_BYTES:
        raise DomainXMLError(f"larger than {MAX_XML_BYTES} bytes")
    return data


def read_folder(folder: str | Path, pools_folder: str | Path | None = None) -> list[GuestDisks]:
    """Every domain of a folder of domain XMLs (``/etc/libvirt/qemu``), read without a daemon.

    Pools come from ``pools_folder``, by default the ``storage`` folder beside it (as in
    ``/etc/libvirt``). A file that cannot be read is a guest with its ``problem``.
    """
    folder = Path(folder)
    pools = pools_in_folder(pools_folder if pools_folder is not None else folder.parent / "storage")
    guests: list[GuestDisks] = []
    for path in sorted(folder.glob("*.xml"))[:MAX_DOMAINS]:
        if path.is_symlink() or not path.is_file():
            continue
        try:
            data = _read_capped(path)
        except (OSError, DomainXMLError) as exc:
            why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            guests.append(GuestDisks(None, (), problem=f"domain XML: {why}", config=str(path)))
            continue
        guests.append(domain_disks(data, pools, config=str(path)))
    return guests


# ---------------------------------------------------------------- a daemon, read-only


@dataclass(frozen=True)
class Listing:
    """What a libvirt daemon holds: its domains (disks resolved) and its pools."""

    guests: tuple[GuestDisks, ...]
    pools: tuple[Pool, ...]


def _ask(uri: str) -> Listing:
    import libvirt  # Debian's python3-libvirt; imported only when a daemon is asked

    libvirt.registerErrorHandler(lambda _ctx, _err: None, None)  # errors are raised, not printed
    conn = libvirt.openReadOnly(uri)
    try:
        pools: dict[str, Pool] = {}
        for pool in conn.listAllStoragePools():
            parsed = parse_pool(pool.XMLDesc(0).encode())
            if parsed is not None:
                pools[parsed.name] = parsed
        guests = []
        for domain in conn.listAllDomains()[:MAX_DOMAINS]:
            state = STATES.get(domain.state()[0], "no state")
            guest = domain_disks(domain.XMLDesc(0).encode(), pools, config=f"{uri}#{domain.name()}")
            guests.append(
                replace(guest, state=state, in_use=state not in DORMANT_STATES, source="libvirt")
            )
        return Listing(tuple(guests), tuple(pools.values()))
    finally:
        conn.close()


def list_domains(uri: str, timeout: float = DEFAULT_TIMEOUT) -> Listing:
    """Every domain a libvirt daemon defines, with its state, on a read-only connection.

    ``VmauditError`` (``hypervisor-unreachable``) when the daemon cannot be asked or does
    not answer within ``timeout`` seconds; the asking thread is then left to libvirt.
    """
    outcome: list[Listing | BaseException] = []

    def ask() -> None:
        try:
            outcome.append(_ask(uri))
        except BaseException as exc:  # handed to the caller below
            outcome.append(exc)

    worker = threading.Thread(target=ask, name=f"libvirt {uri}", daemon=True)
    worker.start()
    worker.join(timeout)
    if not outcome:
        raise VmauditError(
            ErrorKind.HYPERVISOR_UNREACHABLE, f"libvirt {uri}: no answer within {timeout:g} s"
        )
    found = outcome[0]
    if isinstance(found, ImportError):
        raise VmauditError(
            ErrorKind.HYPERVISOR_UNREACHABLE,
            "libvirt-python is not installed (Debian: python3-libvirt)",
        )
    if isinstance(found, BaseException):
        message = str(found).strip().splitlines()
        raise VmauditError(
            ErrorKind.HYPERVISOR_UNREACHABLE,
            f"libvirt {uri}: {message[0] if message else type(found).__name__}",
        )
    return found


def pool_roots(pools: Sequence[Pool]) -> tuple[str, ...]:
    """Where the pools keep their volumes: the folders and devices a scan may read."""
    return tuple(pool.root for pool in pools if pool.root is not None)
