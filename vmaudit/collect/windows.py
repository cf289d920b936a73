"""Facts of a Windows guest, read from its registry hives (SOFTWARE, SYSTEM, SAM).

Where each fact comes from (HKLM paths; ``CCS`` is the control set named by
``SYSTEM\\Select\\Current``):

- os: ``SOFTWARE\\Microsoft\\Windows NT\\CurrentVersion`` ProductName, EditionID, InstallationType,
  CurrentBuild + UBR (build ``17763.5576``), version as libguestfs reports it
  (CurrentMajor/MinorVersionNumber, else CurrentVersion); hostname from
  ``CCS\\Services\\Tcpip\\Parameters\\Hostname`` as virt-inspector reads it, else
  ``CCS\\Control\\ComputerName\\ComputerName``; arch from
  ``CCS\\Control\\Session Manager\\Environment\\PROCESSOR_ARCHITECTURE``, else the PE header
  of ``System32\\cmd.exe`` (as libguestfs does).
- packages: every subkey with a DisplayName of ``Microsoft\\Windows\\CurrentVersion\\Uninstall``
  in the 64-bit and the ``WOW6432Node`` views: the list virt-inspector shows.
- hotfixes: KB ids of Component Based Servicing packages whose CurrentState is installed
  (0x70) or permanent (0x80), from the package name (``Package_for_KB…``,
  ``Package_1_for_KB…``) or else its InstallLocation (rollups, servicing stacks); plus the older
  ``Windows NT\\CurrentVersion\\HotFix`` and ``Microsoft\\Updates`` records. Staged, pending
  and superseded packages do not count.
- users: ``windows_sam``.
- firewall: one backend per profile, ``Domain``, ``Private``, ``Public``, from
  ``CCS\\Services\\SharedAccess\\Parameters\\FirewallPolicy\\{Domain,Standard,Public}Profile``,
  overridden by Group Policy (``SOFTWARE\\Policies\\Microsoft\\WindowsFirewall``). Missing
  values take the Windows defaults (enabled, inbound blocked); a disabled MpsSvc service
  turns every profile off. ``FirewallFacts.enabled`` is true only when every profile is on.
- config: ``windows_config`` (UAC, SMB 1, RDP, autologon, Guest, LSA, Windows Update,
  Defender, Run keys, auto-start services); it needs both SOFTWARE and SYSTEM.
- dormancy: ``last_boot`` stays null (no hive records it); ``last_login`` is the newest SAM
  logon; ``last_update`` the newest hotfix install; ``days_idle`` counts from the latest of
  those and ``CCS\\Control\\Windows\\ShutdownTime``, else from the image file's mtime.

A hive that is missing, over the cap or corrupt is a warning; the other facts still come out.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import TypeVar

from vmaudit.errors import GuestFileError
from vmaudit.guest.base import GuestFS, join
from vmaudit.models import (
    ConfigFacts,
    Dormancy,
    Facts,
    FirewallBackend,
    FirewallFacts,
    Hotfix,
    ImageInfo,
    OsInfo,
    Package,
    User,
    WindowsConfig,
)
from vmaudit.timeutil import iso_utc, parse_iso

from .common import Collector, CoverageLog, SectionFailed, guarded
from .windows_config import collect_windows_config, guest_enabled
from .windows_registry import (
    Hive,
    HiveError,
    filetime_to_datetime,
    opened_hive,
    resolve_nocase,
)
from .windows_sam import collect_sam_users

T = TypeVar("T")
SYSTEM_ROOTS = ("/Windows", "/WINNT")
CURRENT_VERSION = ["Microsoft", "Windows NT", "CurrentVersion"]
UNINSTALL_VIEWS = (
    ["Microsoft", "Windows", "CurrentVersion", "Uninstall"],
    ["WOW6432Node", "Microsoft", "Windows", "CurrentVersion", "Uninstall"],
)
CBS_PACKAGES = ["Microsoft", "Windows", "CurrentVersion", "Component Based Servicing", "Packages"]
CBS_INSTALLED = (0x70, 0x80)  # Installed, Permanent
KB_IN_PACKAGE = re.compile(r"_for_(KB\d{6,8})(?:~|_|$)", re.IGNORECASE)
KB_ANYWHERE = re.compile(r"(?<![A-Za-z0-9])(KB\d{6,8})(?!\d)", re.IGNORECASE)
ARCHITECTURES = {"AMD64": "x86_64", "X86": "i386", "ARM64": "aarch64", "IA64": "ia64", "ARM": "arm"}
PE_MACHINES = {0x8664: "x86_64", 0x014C: "i386", 0xAA64: "aarch64", 0x0200: "ia64"}
FIREWALL_PROFILES = (  # backend name, local key, Group Policy key
    ("Domain", "DomainProfile", "DomainProfile"),
    ("Private", "StandardProfile", "PrivateProfile"),
    ("Public", "PublicProfile", "PublicProfile"),
)
SERVICE_DISABLED = 4
MAX_PACKAGES = 100_000
CMD_EXE_CAP = 16 * 1024 * 1024


@dataclass(frozen=True)
class WindowsPaths:
    system_root: str
    config: str

    def hive(self, fs: GuestFS, name: str) -> str:
        return resolve_nocase(fs, join(self.config, name)) or join(self.config, name)


def find_windows(fs: GuestFS) -> WindowsPaths | None:
    """The system root whose ``System32/config/SOFTWARE`` exists, names matched ignoring case."""
    for candidate in SYSTEM_ROOTS:
        software = resolve_nocase(fs, f"{candidate}/System32/config/SOFTWARE")
        if software is not None:
            config = software.rsplit("/", 1)[0]
            return WindowsPaths(config.rsplit("/", 2)[0], config)
    return None


def _section(
    section: str,
    warnings: list[str],
    fallback: T,
    run: Callable[[], T],
    coverage: CoverageLog | None = None,
) -> T:
    return guarded(section, warnings, fallback, run, expected=(HiveError,), coverage=coverage)


# ---------------------------------------------------------------- os


def current_control_set(system: Hive, warnings: list[str]) -> str:
    select = system.key("Select")
    current = system.dword(select, "Current") if select is not None else None
    if current is None or not 0 < current < 1000:
        warnings.append("SYSTEM: no Select\\Current; ControlSet001 assumed")
        return "ControlSet001"
    return f"ControlSet{current:03d}"


def _version(software: Hive, node: int) -> str | None:
    major = software.dword(node, "CurrentMajorVersionNumber")
    minor = software.dword(node, "CurrentMinorVersionNumber")
    if major is not None and minor is not None:
        return f"{major}.{minor}"
    legacy = software.string(node, "CurrentVersion")
    if legacy and re.fullmatch(r"\d+\.\d+", legacy.strip()):
        return legacy.strip()
    return None


def _software_os(software: Hive) -> dict[str, str | None]:
    node = software.key(CURRENT_VERSION)
    if node is None:
        return {}
    build = software.string(node, "CurrentBuild") or software.string(node, "CurrentBuildNumber")
    ubr = software.dword(node, "UBR")
    if build is not None:
        build = build.strip()
        if ubr is not None:
            build = f"{build}.{ubr}"
    return {
        "product": software.string(node, "ProductName"),
        "edition": software.string(node, "EditionID"),
        "installation_type": software.string(node, "InstallationType"),
        "version": _version(software, node),
        "build": build or None,
    }


def _system_os(system: Hive, warnings: list[str]) -> dict[str, str | None]:
    ccs = current_control_set(system, warnings)
    hostname = None
    tcpip = system.key([ccs, "Services", "Tcpip", "Parameters"])
    if tcpip is not None:
        hostname = system.string(tcpip, "Hostname")
    if not hostname:
        computer = system.key([ccs, "Control", "ComputerName", "ComputerName"])
        hostname = system.string(computer, "ComputerName") if computer is not None else None
    environment = system.key([ccs, "Control", "Session Manager", "Environment"])
    arch = None
    if environment is not None:
        cpu = system.string(environment, "PROCESSOR_ARCHITECTURE")
        arch = ARCHITECTURES.get((cpu or "").strip().upper())
    return {"hostname": hostname or None, "arch": arch}


def pe_architecture(data: bytes) -> str | None:
    """The architecture named by a PE file's COFF header, None when it is not a PE file."""
    if len(data) < 0x40 or data[:2] != b"MZ":
        return None
    offset = struct.unpack_from("<I", data, 0x3C)[0]
    if offset + 6 > len(data) or data[offset : offset + 4] != b"PE\0\0":
        return None
    return PE_MACHINES.get(struct.unpack_from("<H", data, offset + 4)[0])


def _cmd_exe_arch(fs: GuestFS, paths: WindowsPaths, warnings: list[str]) -> str | None:
    cmd = resolve_nocase(fs, join(paths.system_root, "System32/cmd.exe"))
    if cmd is None:
        return None
    try:
        return pe_architecture(fs.read(cmd, CMD_EXE_CAP))
    except GuestFileError as exc:
        warnings.append(f"{cmd}: {exc.reason}")
        return None


def windows_os(
    fs: GuestFS,
    paths: WindowsPaths,
    software: Hive | None,
    system: Hive | None,
    warnings: list[str],
) -> OsInfo:
    """The OS facts of the open SOFTWARE and SYSTEM hives (either may be unreadable)."""
    fields: dict[str, str | None] = {}
    no_fields: dict[str, str | None] = {}
    if software is not None:
        fields.update(_section("SOFTWARE", warnings, no_fields, lambda: _software_os(software)))
    if system is not None:
        fields.update(_section("SYSTEM", warnings, no_fields, lambda: _system_os(system, warnings)))
    if not fields.get("arch"):
        fields["arch"] = _cmd_exe_arch(fs, paths, warnings)
    return OsInfo(
        type="windows",
        distro="windows",
        version=fields.get("version"),
        product=fields.get("product"),
        hostname=fields.get("hostname"),
        arch=fields.get("arch"),
        package_format=None,
        build=fields.get("build"),
        edition=fields.get("edition"),
        installation_type=fields.get("installation_type"),
    )


def detect_windows(fs: GuestFS, warnings: list[str]) -> OsInfo | None:
    """The guest's OS when it is Windows (it has ``/Windows/System32/config/SOFTWARE``)."""
    paths = find_windows(fs)
    if paths is None:
        return None
    with (
        opened_hive(fs, paths.hive(fs, "SOFTWARE"), "SOFTWARE", warnings) as software,
        opened_hive(fs, paths.hive(fs, "SYSTEM"), "SYSTEM", warnings) as system,
    ):
        return windows_os(fs, paths, software, system, warnings)


# ---------------------------------------------------------------- software


def collect_applications(software: Hive, warnings: list[str]) -> list[Package]:
    """Installed applications from both Uninstall views (entries with a DisplayName)."""
    packages: list[Package] = []
    for view in UNINSTALL_VIEWS:
        node = software.key(view)
        if node is None:
            continue
        for _key, entry in software.subkeys(node):
            name = software.string(entry, "DisplayName")
            if name is None:
                continue
            packages.append(
                Package(
                    name=name.strip(),
                    version=(software.string(entry, "DisplayVersion") or "").strip(),
                    publisher=(software.string(entry, "Publisher") or "").strip() or None,
                )
            )
        if len(packages) > MAX_PACKAGES:
            warnings.append(f"SOFTWARE: over {MAX_PACKAGES} Uninstall entries, the rest ignored")
            break
    packages = packages[:MAX_PACKAGES]
    return sorted(packages, key=lambda p: (p.name.casefold(), p.name, p.version))


def _newer(a: datetime | None, b: datetime | None) -> datetime | None:
    if a is None:
        return b
    if b is None:
        return a
    return max(a, b)


def collect_hotfixes(software: Hive, warnings: list[str]) -> list[Hotfix]:
    """Installed KBs, one per id, with the newest install time known for it."""
    found: dict[str, datetime | None] = {}

    def record(kb: str, moment: datetime | None) -> None:
        kb = kb.upper()
        found[kb] = _newer(found.get(kb), moment)

    packages = software.key(CBS_PACKAGES)
    if packages is not None:
        for name, node in software.subkeys(packages):
            if software.dword(node, "CurrentState") not in CBS_INSTALLED:
                continue
            match = KB_IN_PACKAGE.search(name)
            if match is None:  # a rollup or servicing stack: the KB names its .cab
                match = KB_ANYWHERE.search(software.string(node, "InstallLocation") or "")
            if match is None:
                continue
            high = software.dword(node, "InstallTimeHigh")
            low = software.dword(node, "InstallTimeLow")
            moment = None
            if high is not None and low is not None:
                moment = filetime_to_datetime((high << 32) | low)
            record(match.group(1), moment)
    # Windows XP / 2003 era records: CurrentVersion\HotFix\KB…, Microsoft\Updates\<product>\…
    hotfix = software.key([*CURRENT_VERSION, "HotFix"])
    if hotfix is not None:
        for name, node in software.subkeys(hotfix):
            match = KB_ANYWHERE.fullmatch(name)
            if match and software.dword(node, "Installed") in (None, 1):
                record(match.group(1), None)
    updates = software.key(["Microsoft", "Updates"])
    if updates is not None:
        stack = [(updates, 0)]
        while stack:
            node, depth = stack.pop()
            for name, child in software.subkeys(node):
                match = KB_ANYWHERE.fullmatch(name)
                if match:
                    record(match.group(1), None)
                elif depth < 3:
                    stack.append((child, depth + 1))
    hotfixes = [
        Hotfix(kb, None if moment is None else iso_utc(moment)) for kb, moment in found.items()
    ]
    return sorted(hotfixes, key=lambda h: (len(h.id), h.id))


# ---------------------------------------------------------------- system


def _setting(sources: tuple[tuple[Hive | None, int | None], ...], name: str, default: int) -> int:
    """The first DWORD ``name`` found in ``sources`` (Group Policy first), else ``default``."""
    for hive, node in sources:
        if hive is not None and node is not None:
            value = hive.dword(node, name)
            if value is not None:
                return value
    return default


def collect_firewall(system: Hive, software: Hive | None, warnings: list[str]) -> FirewallFacts:
    """The three Windows Firewall profiles as backends."""
    ccs = current_control_set(system, warnings)
    policy_root = system.key([ccs, "Services", "SharedAccess", "Parameters", "FirewallPolicy"])
    service = system.key([ccs, "Services", "MpsSvc"])
    installed = policy_root is not None or service is not None
    if not installed:
        warnings.append("SYSTEM: no Windows Firewall service or policy found")
        return FirewallFacts(False, ())
    service_off = service is not None and system.dword(service, "Start") == SERVICE_DISABLED
    gpo_root = None
    if software is not None:
        gpo_root = software.key(["Policies", "Microsoft", "WindowsFirewall"])
    backends = []
    for backend, local_key, gpo_key in FIREWALL_PROFILES:
        local = system.key([local_key], start=policy_root) if policy_root is not None else None
        gpo = software.key([gpo_key], start=gpo_root) if software and gpo_root else None

        sources = ((software, gpo), (system, local))
        enabled = _setting(sources, "EnableFirewall", 1) != 0 and not service_off
        inbound = _setting(sources, "DefaultInboundAction", 1)
        default_inbound = {1: "deny", 0: "accept"}.get(inbound)
        backends.append(FirewallBackend(backend, True, enabled, default_inbound))
    return FirewallFacts(all(b.enabled for b in backends), tuple(backends))


def shutdown_time(system: Hive, warnings: list[str]) -> datetime | None:
    ccs = current_control_set(system, warnings)
    node = system.key([ccs, "Control", "Windows"])
    data = system.binary(node, "ShutdownTime") if node is not None else None
    if data is None or len(data) < 8:
        return None
    return filetime_to_datetime(struct.unpack_from("<Q", data)[0])


def windows_dormancy(
    shutdown: datetime | None,
    users: list[User],
    hotfixes: list[Hotfix],
    image_mtime: str,
    now: datetime,
    warnings: list[str],
) -> Dormancy:
    """Last login and update, and whole days idle since the latest sign of running."""
    last_login = None
    for user in users:
        last_login = _newer(last_login, parse_iso(user.last_logon))
    last_update = None
    for hotfix in hotfixes:
        last_update = _newer(last_update, parse_iso(hotfix.installed_at))
    signs = [moment for moment in (shutdown, last_login, last_update) if moment is not None]
    future = [moment for moment in signs if moment > now]
    if future:
        warnings.append(f"dormancy: {len(future)} registry time(s) after the scan time ignored")
    signs = [moment for moment in signs if moment <= now]
    latest = max(signs) if signs else parse_iso(image_mtime)
    days_idle = None if latest is None else max(0, (now - latest).days)
    return Dormancy(
        last_boot=None,
        last_login=None if last_login is None else iso_utc(last_login),
        last_update=None if last_update is None else iso_utc(last_update),
        days_idle=days_idle,
    )


# ---------------------------------------------------------------- all


@dataclass(frozen=True)
class WindowsGuest:
    """One Windows guest's hives while its facts are read; None for a hive not readable."""

    software: Hive | None
    system: Hive | None
    sam: Hive | None
    now: datetime
    warnings: list[str]


def _needs(*names: str) -> Callable[[WindowsGuest], str | None]:
    """A collector that reads these hives fails, before reading, when one is not readable."""

    def applies(guest: WindowsGuest) -> str | None:
        for name in names:
            if getattr(guest, name.lower()) is None:
                raise SectionFailed(f"the {name} hive is not readable")
        return None

    return applies


def _hive(hive: Hive | None) -> Hive:
    if hive is None:  # the collector's applies() said so first
        raise SectionFailed("a hive it reads is not readable")
    return hive


def _config(guest: WindowsGuest) -> WindowsConfig:
    system = _hive(guest.system)
    control_set = current_control_set(system, guest.warnings)
    return collect_windows_config(_hive(guest.software), system, control_set, guest.warnings)


# The sections of a Windows guest and the hives each reads (os and dormancy read what there is).
WINDOWS_PACKAGES: Collector[WindowsGuest, list[Package]] = Collector(
    "packages",
    lambda g: collect_applications(_hive(g.software), g.warnings),
    [],
    _needs("SOFTWARE"),
    expected=(HiveError,),
)
HOTFIXES: Collector[WindowsGuest, list[Hotfix]] = Collector(
    "hotfixes",
    lambda g: collect_hotfixes(_hive(g.software), g.warnings),
    [],
    _needs("SOFTWARE"),
    expected=(HiveError,),
)
WINDOWS_FIREWALL: Collector[WindowsGuest, FirewallFacts] = Collector(
    "firewall",
    lambda g: collect_firewall(_hive(g.system), g.software, g.warnings),
    FirewallFacts(False, ()),
    _needs("SYSTEM"),
    expected=(HiveError,),
)
SHUTDOWN: Collector[WindowsGuest, datetime | None] = Collector(
    "dormancy",
    lambda g: shutdown_time(g.system, g.warnings) if g.system is not None else None,
    None,
    expected=(HiveError,),
)
WINDOWS_CONFIG: Collector[WindowsGuest, WindowsConfig | None] = Collector(
    "config", _config, None, _needs("SOFTWARE", "SYSTEM"), expected=(HiveError,)
)
USERS: Collector[WindowsGuest, list[User]] = Collector(
    "accounts",
    lambda g: collect_sam_users(_hive(g.sam), g.now, g.warnings),
    [],
    _needs("SAM"),
    expected=(HiveError,),
)


def collect_windows(fs: GuestFS, image: ImageInfo, now: datetime, warnings: list[str]) -> Facts:
    """Everything vmaudit reads from a Windows guest, each hive downloaded once;
    ``warnings`` gathers every problem."""
    if now.tzinfo is None:
        now = now.replace(tzinfo=UTC)
    paths = find_windows(fs)
    coverage = CoverageLog()
    coverage.absent("ssh", "not read on Windows guests")
    coverage.absent("sudo", "not a Linux guest")
    if paths is None:
        warnings.append("windows: no Windows/System32/config/SOFTWARE found")
        for section in ("os", "packages", "hotfixes", "accounts", "firewall", "config"):
            coverage.failed(section, "no Windows/System32/config found")
        return _facts(image, OsInfo("windows", distro="windows"), coverage, warnings, now)
    with ExitStack() as hives:
        software, system, sam = (
            hives.enter_context(opened_hive(fs, paths.hive(fs, name), name, warnings))
            for name in ("SOFTWARE", "SYSTEM", "SAM")
        )
        guest = WindowsGuest(software, system, sam, now, warnings)
        os_info = windows_os(fs, paths, software, system, warnings)
        coverage.read("os")
        if software is None:
            coverage.failed("os", "the SOFTWARE hive is not readable")
        return _facts(image, os_info, coverage, warnings, now, guest)


def _facts(
    image: ImageInfo,
    os_info: OsInfo,
    coverage: CoverageLog,
    warnings: list[str],
    now: datetime,
    guest: WindowsGuest | None = None,
) -> Facts:
    packages: list[Package] = []
    hotfixes: list[Hotfix] = []
    users: list[User] = []
    firewall = FirewallFacts(False, ())
    shutdown = None
    config = None
    if guest is not None:
        packages = WINDOWS_PACKAGES.collect(guest, warnings, coverage)
        hotfixes = HOTFIXES.collect(guest, warnings, coverage)
        firewall = WINDOWS_FIREWALL.collect(guest, warnings, coverage)
        shutdown = SHUTDOWN.collect(guest, warnings, coverage)
        config = WINDOWS_CONFIG.collect(guest, warnings, coverage)
        users = USERS.collect(guest, warnings, coverage)
        if config is not None:  # unknown (None) when the SAM could not be read
            config = replace(config, guest_enabled=guest_enabled(users))
    coverage.read("dormancy")
    dormancy = windows_dormancy(shutdown, users, hotfixes, image.mtime, now, warnings)
    return Facts(
        image=image,
        os=os_info,
        packages=tuple(packages),
        hotfixes=tuple(hotfixes),
        users=tuple(users),
        firewall=firewall,
        dormancy=dormancy,
        config=ConfigFacts(windows=config),
        warnings=tuple(dict.fromkeys(warnings)),
        coverage=coverage.entries(),
    )
