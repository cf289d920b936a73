"""A libvirt domain XML, read as hostile input: the guest's name and the disks it names.

The XML is parsed by expat with every DTD feature refused (a ``<!DOCTYPE``, an entity
declaration, an external entity: the document is rejected, as defusedxml would), under caps
on size, depth and element count, into a small tree of our own. Nothing in it is followed:
a disk is only described here; whether it may be audited is the decision's business.
"""

from __future__ import annotations

import xml.parsers.expat
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

MAX_XML_BYTES = 4 * 1024 * 1024  # a domain XML is a few kilobytes; metadata may add some
MAX_DEPTH = 64
MAX_ELEMENTS = 100_000
AUDITED_DEVICES = ("disk", "lun")  # a cdrom or floppy is media, not the guest's own disk


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


@dataclass(frozen=True)
class DiskSpec:
    """One disk as the hypervisor's configuration names it.

    ``kind`` is libvirt's disk type (file, block, network, volume, dir, nvme, vhostuser) or
    Proxmox's storage kind; ``path`` is set for file and block disks; ``detail`` says what
    a disk without a path is (``rbd pool/image``, ``volume default/vm.qcow2``).
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
    """A guest to decide on: its name, its disks, and what could not be read."""

    name: str | None
    disks: tuple[DiskSpec, ...]
    uuid: str | None = None
    problem: str | None = None  # the configuration itself could not be read


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


def _disk(element: _Element, position: int) -> DiskSpec:
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
        detail = f"volume {attrib.get('pool', '?')}/{attrib.get('volume', '?')}"
        return DiskSpec(target, kind, None, detail, declared)
    return DiskSpec(target, kind, attrib.get("dir") or attrib.get("path"), "", declared)


def domain_disks(data: bytes) -> GuestDisks:
    """The guest a libvirt domain XML describes; a ``problem`` when it is unreadable."""
    try:
        root = parse_xml(data)
    except DomainXMLError as exc:
        return GuestDisks(None, (), problem=f"domain XML: {exc}")
    if root.tag != "domain":
        return GuestDisks(None, (), problem=f"domain XML: root element is <{root.tag[:40]}>")
    name_element = root.find("name")
    uuid_element = root.find("uuid")
    name = name_element.text.strip() if name_element is not None else None
    uuid = uuid_element.text.strip() if uuid_element is not None else None
    devices = root.find("devices")
    elements = devices.findall("disk") if devices is not None else []
    disks = tuple(
        _disk(element, position)
        for position, element in enumerate(elements)
        if element.attrib.get("device", "disk") in AUDITED_DEVICES
    )
    return GuestDisks(name or None, disks, uuid or None)
