"""Which MSRC product a Windows guest is: its build number, server or client, Server Core
or Desktop Experience, and architecture, as CVRF's ``FullProductName`` spells them.

The build decides the release (17763 = Windows Server 2019 or Windows 10 1809); the
registry's ``InstallationType`` (``Server``, ``Server Core``, ``Client``) decides which,
and Server Core. Without it the product name decides server or client, and both the
Server Core and the full product are candidates (their fixes carry the same build).
"""

from __future__ import annotations

from dataclasses import dataclass

from vmaudit.models import OsInfo
from vmaudit.versions import dotted_key

# Build number -> the server release's product name in CVRF.
SERVER_RELEASES = {
    6002: "Windows Server 2008 for {arch} Service Pack 2",
    6003: "Windows Server 2008 for {arch} Service Pack 2",
    7601: "Windows Server 2008 R2 for x64-based Systems Service Pack 1",
    9200: "Windows Server 2012",
    9600: "Windows Server 2012 R2",
    14393: "Windows Server 2016",
    17763: "Windows Server 2019",
    19041: "Windows Server, version 2004",
    19042: "Windows Server, version 20H2",
    20348: "Windows Server 2022",
    25398: "Windows Server 2022, 23H2 Edition",
    26100: "Windows Server 2025",
}
CORE_ONLY = {19041, 19042, 25398}  # semi-annual releases: Server Core only
CLIENT_RELEASES = {
    7601: "Windows 7 for {arch} Service Pack 1",
    9600: "Windows 8.1 for {arch}",
    10240: "Windows 10 for {arch}",
    14393: "Windows 10 Version 1607 for {arch}",
    17763: "Windows 10 Version 1809 for {arch}",
    19044: "Windows 10 Version 21H2 for {arch}",
    19045: "Windows 10 Version 22H2 for {arch}",
    22000: "Windows 11 version 21H2 for {arch}",
    22621: "Windows 11 Version 22H2 for {arch}",
    22631: "Windows 11 Version 23H2 for {arch}",
    26100: "Windows 11 Version 24H2 for {arch}",
}
ARCHES = {
    "x86_64": "x64-based Systems",
    "i386": "32-bit Systems",
    "i686": "32-bit Systems",
    "aarch64": "ARM64-based Systems",
}
CORE = " (Server Core installation)"


@dataclass(frozen=True)
class WindowsGuest:
    """A guest's build and the CVRF product names (lower case) it can be."""

    build: int
    revision: int  # UBR
    products: tuple[str, ...]


def parse_build(text: str | None) -> tuple[int, int] | None:
    """``17763.5936`` or ``10.0.17763.6054`` -> the build and its revision (UBR)."""
    numbers = dotted_key(text or "")
    return (numbers[-2], numbers[-1]) if len(numbers) >= 2 else None


def windows_guest(os_info: OsInfo) -> WindowsGuest | None:
    """The guest's products; None when its build is unknown or not a release vmaudit knows."""
    parsed = parse_build(os_info.build)
    if parsed is None:
        return None
    build, revision = parsed
    arch = ARCHES.get(os_info.arch or "x86_64", "x64-based Systems")
    kind = (os_info.installation_type or "").strip().lower()
    product_name = (os_info.product or "").lower()
    server = kind.startswith("server") if kind else "server" in product_name
    names: list[str] = []
    if server and build in SERVER_RELEASES:
        base = SERVER_RELEASES[build].format(arch=arch)
        if build in CORE_ONLY or kind == "server core":
            names.append(base + CORE)
        elif kind == "server":
            names.append(base)
        else:  # installation type unknown: either
            names.extend((base, base + CORE))
    elif not server and build in CLIENT_RELEASES:
        names.append(CLIENT_RELEASES[build].format(arch=arch))
    if not names:
        return None
    return WindowsGuest(build, revision, tuple(name.lower() for name in names))
