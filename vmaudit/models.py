"""Frozen dataclasses that flow between the pipeline's stages.

discover -> ``ImageRef``; open + collect -> ``Facts``; evaluate -> ``Finding``;
score -> ``Risk``; the CLI gathers ``ImageResult`` into a ``ScanReport``.
Facts serialise to ``vmaudit.facts/v1`` (spec/report.md) with ``to_dict``; every value comes
back through the one decoder, ``from_jsonable``.
"""

from __future__ import annotations

import dataclasses
import enum
import types
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import (
    Any,
    ClassVar,
    Literal,
    TypeVar,
    Union,
    cast,
    get_args,
    get_origin,
    get_type_hints,
)

from vmaudit.errors import ErrorKind

FACTS_SCHEMA = "vmaudit.facts/v1"
REPORT_SCHEMA = "vmaudit.report/v1"

Severity = Literal["critical", "high", "medium", "low", "info"]
SEVERITIES: tuple[Severity, ...] = ("critical", "high", "medium", "low", "info")
PasswordState = Literal["set", "empty", "locked", "none"]
VmSource = Literal["folder", "libvirt", "proxmox", "vmware"]


def to_jsonable(value: Any) -> Any:
    """Dataclasses, tuples and mappings as plain JSON-ready values."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    return value


class CodecError(ValueError):
    """A JSON value that does not have the shape of the dataclass asked for; says where."""


T = TypeVar("T")


def from_jsonable(cls: type[T], data: Any, where: str = "") -> T:
    """The inverse of ``to_jsonable``, driven by the dataclass's own type hints.

    The one decoder of every value that crosses a process or the state database: fields
    with a default may be missing, unknown keys are refused, and each value must have its
    declared type (``tuple[X, ...]``, ``X | None``, ``Literal``, enums, nested dataclasses).
    A decoder is built once per type; the error names the key path where the value went
    wrong.
    """
    try:
        return cast(T, _decoder(cls)(data))
    except CodecError as exc:
        raise _at(where or getattr(cls, "__name__", "value"), exc) from None


Decoder = Callable[[Any], Any]
_DECODERS: dict[Any, Decoder] = {}


def _decoder(hint: Any) -> Decoder:
    """The decoding function of one type hint, built on first use."""
    found = _DECODERS.get(hint)
    if found is None:
        found = _DECODERS[hint] = _build(hint)
    return found


def _at(where: str, exc: CodecError) -> CodecError:
    """An error from below, with its place prefixed (paths are built only on failure)."""
    text = str(exc)
    return CodecError(where + (text if text[:1] in ".[:" else f": {text}"))


def _build(hint: Any) -> Decoder:
    origin = get_origin(hint)
    if hint is Any:
        return lambda data: data
    if origin in (Union, types.UnionType):
        nullable = type(None) in get_args(hint)
        options = [_decoder(o) for o in get_args(hint) if o is not type(None)]

        def union(data: Any) -> Any:
            if data is None and nullable:
                return None
            errors = []
            for option in options:
                try:
                    return option(data)
                except CodecError as exc:
                    errors.append(str(exc).lstrip(": "))
            raise CodecError("; ".join(errors) or "null not allowed")

        return union
    if origin is Literal:
        allowed = get_args(hint)

        def literal(data: Any) -> Any:
            if data not in allowed:
                raise CodecError(f"{data!r} is not one of {list(allowed)}")
            return data

        return literal
    if origin is tuple:
        item = _decoder(get_args(hint)[0])

        def sequence(data: Any) -> Any:
            _expect(data, list, "a list")
            try:
                return tuple(map(item, data))
            except CodecError as exc:
                index = next(i for i, v in enumerate(data) if _fails(item, v))
                raise _at(f"[{index}]", exc) from None

        return sequence
    if origin is dict:
        value_of = _decoder(get_args(hint)[1])

        def mapping(data: Any) -> Any:
            _expect(data, dict, "an object")
            out = {}
            for key, value in data.items():
                try:
                    out[str(key)] = value_of(value)
                except CodecError as exc:
                    raise _at(f".{key}", exc) from None
            return out

        return mapping
    if dataclasses.is_dataclass(hint) and isinstance(hint, type):
        return _build_dataclass(hint)
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        members = hint

        def member(data: Any) -> Any:
            try:
                return members(data)
            except ValueError:
                raise CodecError(f"{data!r} is not a {members.__name__}") from None

        return member
    if hint is float:

        def number(data: Any) -> Any:
            if isinstance(data, (int, float)) and not isinstance(data, bool):
                return float(data)
            raise CodecError(f"expected float, got {data!r:.60}")

        return number
    if isinstance(hint, type):
        wanted = hint

        def plain(data: Any) -> Any:
            if isinstance(data, wanted) and not (wanted is int and isinstance(data, bool)):
                return data
            raise CodecError(f"expected {wanted.__name__}, got {data!r:.60}")

        return plain
    raise TypeError(f"no decoder for {hint!r}")


def _expect(data: Any, kind: type, what: str) -> None:
    """Refuse a JSON value that is not a ``kind``; ``what`` names it in the error."""
    if not isinstance(data, kind):
        raise CodecError(f"expected {what}")


def _fails(decode: Decoder, value: Any) -> bool:
    try:
        decode(value)
    except CodecError:
        return True
    return False


def _build_dataclass(cls: type[Any]) -> Decoder:
    hints = get_type_hints(cls)
    fields = [f for f in dataclasses.fields(cls) if f.init]
    known = {f.name for f in fields}
    plan = [
        (
            f.name,
            _decoder(hints[f.name]),
            f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING,
        )
        for f in fields
    ]

    def dataclass_value(data: Any) -> Any:
        _expect(data, dict, "an object")
        if not known.issuperset(data):
            raise CodecError(f": unknown key {sorted(set(data) - known)[0]!r}")
        values = {}
        for name, decode, required in plan:
            if name in data:
                try:
                    values[name] = decode(data[name])
                except CodecError as exc:
                    raise _at(f".{name}", exc) from None
            elif required:
                raise CodecError(f": missing key {name!r}")
        return cls(**values)

    return dataclass_value


# ---------------------------------------------------------------- discovery


@dataclass(frozen=True)
class DiskRef:
    """One disk of a guest, at its leaf, with the chain of files below it (leaf first)."""

    path: str
    format: str  # qcow2 | vmdk | vhd | vhdx | raw
    chain: tuple[str, ...] = ()  # every file qemu will read for this disk, leaf first
    chain_formats: tuple[str, ...] = ()  # format of each file of ``chain`` ("extent": VMDK data)
    # a block device (an LV, a zvol, a disk given by hand) rather than an image file; its
    # ``path`` is the device as named (``/dev/vg/lv``), ``chain`` its one resolved node
    block: bool = False


@dataclass(frozen=True)
class ImageRef:
    """One guest to audit: a single disk image or a VM with several disks."""

    path: str  # the image (or the VM descriptor) as found
    format: str  # format of the first disk; "vm" never appears here
    disks: tuple[DiskRef, ...]
    vm: str | None = None  # VM name when grouped by a descriptor
    in_use: bool = False
    # where the guest was found: a folder walk, or a hypervisor's own inventory
    source: VmSource = "folder"
    template: bool = False  # a template (``.vmtx``, Proxmox ``template: 1``), not a VM
    state: str | None = None  # the hypervisor's word for it: "shut off", "running", ...
    tags: tuple[str, ...] = ()  # Proxmox tags
    notes: str = ""  # libvirt title and description, Proxmox description, vmx annotation
    labels: tuple[tuple[str, str], ...] = ()  # libvirt <metadata> leaves: (name, text)


@dataclass(frozen=True)
class Skipped:
    """A file that looks like an image but cannot be audited, with its reason."""

    path: str
    kind: ErrorKind
    message: str
    # the guest as a hypervisor named it (its VM name, source, state) when it is one
    image: ImageRef | None = None


# ---------------------------------------------------------------- facts


@dataclass(frozen=True)
class ImageInfo:
    path: str
    format: str
    size_bytes: int
    mtime: str
    sha256_head: str
    vm: str | None
    disks: tuple[str, ...]


@dataclass(frozen=True)
class OsInfo:
    type: str  # linux | windows | unknown
    distro: str | None = None
    version: str | None = None
    product: str | None = None
    hostname: str | None = None
    arch: str | None = None
    package_format: str | None = None
    build: str | None = None  # Windows: CurrentBuild.UBR
    edition: str | None = None  # Windows: EditionID
    installation_type: str | None = None  # Windows: InstallationType (Server, Server Core, Client)


@dataclass(frozen=True)
class Package:
    name: str
    version: str
    arch: str | None = None
    source: str | None = None
    publisher: str | None = None  # Windows applications


@dataclass(frozen=True)
class Hotfix:
    id: str
    installed_at: str | None = None


@dataclass(frozen=True)
class User:
    name: str
    uid: int | None
    gid: int | None
    shell: str | None
    home: str | None
    password: PasswordState
    last_change: str | None
    max_days: int | None
    expires: str | None
    can_login: bool
    groups: tuple[str, ...]
    admin: bool
    admin_via: tuple[str, ...]
    authorized_keys: int
    rid: int | None = None  # Windows
    disabled: bool | None = None  # Windows
    last_logon: str | None = None  # Windows


@dataclass(frozen=True)
class SshFacts:
    installed: bool
    permit_root_login: str | None
    password_authentication: bool | None


@dataclass(frozen=True)
class FirewallBackend:
    name: str
    installed: bool
    enabled: bool
    default_inbound: str | None  # deny | accept | None when unknown


@dataclass(frozen=True)
class FirewallFacts:
    enabled: bool
    backends: tuple[FirewallBackend, ...]


@dataclass(frozen=True)
class Dormancy:
    last_boot: str | None
    last_login: str | None
    last_update: str | None
    days_idle: int | None


SECTIONS = (
    "os",
    "packages",
    "hotfixes",
    "accounts",
    "sudo",
    "ssh",
    "firewall",
    "dormancy",
    "config",
)
CoverageStatus = Literal["read", "absent", "failed"]


@dataclass(frozen=True)
class Coverage:
    """Whether one section of the facts was read, is absent from the guest, or failed."""

    section: str
    status: CoverageStatus
    reason: str | None = None


CONFIG_NOT_READ = (
    "not read: these facts were collected before vmaudit read the config section "
    "(scan again with --no-cache)"
)


@dataclass(frozen=True)
class FileMode:
    """Type, permission bits and owner of one guest file, as its ``stat`` gives them."""

    path: str  # as named; ``link`` is set when it is a symlink (the target's stat is shown)
    kind: str  # file | dir | other
    mode: int  # permission bits, 0o7777
    uid: int
    gid: int
    owner: str | None = None  # the guest's name for uid (/etc/passwd), None when it has none
    group: str | None = None  # the guest's name for gid (/etc/group)
    link: str | None = None  # the resolved path when ``path`` is a symlink


@dataclass(frozen=True)
class ModeScan:
    """A bounded walk of the guest's file systems (all but /proc, /sys, /dev and /run)."""

    roots: tuple[str, ...]
    visited: int
    truncated: bool  # the visit cap was reached: the counts below are lower bounds
    world_writable: int  # files, and directories without the sticky bit, writable by all
    world_writable_paths: tuple[FileMode, ...]  # the first of them
    setuid: int  # regular files with the setuid or setgid bit


@dataclass(frozen=True)
class SetuidFile:
    """A regular file with the setuid or setgid bit, and the package whose file list has it."""

    path: str
    mode: int  # permission bits, 0o7777
    uid: int
    gid: int
    owner: str | None
    group: str | None
    package: str | None  # None: in no package's file list (or lists not read: see owners)


@dataclass(frozen=True)
class StartupEntry:
    """One thing that runs at power-on without anyone logging in."""

    kind: str  # cron-reboot | timer-persistent | rc-local | unit-unpackaged
    name: str  # unit name, ``/etc/rc.local``, or the @reboot command
    source: str  # the file that says so
    user: str | None = None  # who a cron entry runs as
    not_active: str | None = None  # why it would not run (no cron installed); None: it runs


@dataclass(frozen=True)
class SysctlValue:
    """A kernel parameter as the guest's sysctl files set it at boot (the last one wins)."""

    key: str  # dotted: net.ipv4.ip_forward
    value: str  # whitespace-normalised
    source: str  # the file of the setting that wins


@dataclass(frozen=True)
class LinuxConfig:
    """Security configuration of a Linux guest (issue 19): permissions, executables, startup.

    ``owners`` names where setuid files' and units' packages came from: ``dpkg`` (its
    ``info/*.list`` file lists) or None when the guest's package format gives no file list
    vmaudit reads (rpm, apk, pacman): then no file counts as unpackaged.
    """

    critical_files: tuple[FileMode, ...] = ()
    modes: ModeScan = ModeScan((), 0, False, 0, (), 0)
    setuid_files: tuple[SetuidFile, ...] = ()
    owners: str | None = None
    executables: tuple[str, ...] = ()  # programs in the default PATH directories
    systemd: bool = False  # a boot target loads: systemd decides what starts
    boot_units: tuple[str, ...] = ()  # services, sockets, timers and paths started at boot
    inetd_services: tuple[str, ...] = ()  # enabled in inetd.conf or xinetd.d
    inetd_not_active: tuple[str, ...] = ()  # enabled there, but no inetd / xinetd installed
    sysv_services: tuple[str, ...] = ()  # S links of runlevels 2-5 with no systemd unit
    startup: tuple[StartupEntry, ...] = ()
    selinux: str | None = None  # enforcing | permissive | disabled; None: not configured
    apparmor: str = "absent"  # enabled | disabled (kernel command line) | absent
    kernel_cmdline: tuple[str, ...] = ()  # words of the bootloader's kernel command lines
    auditd: bool = False  # auditd starts at boot
    sysctl: tuple[SysctlValue, ...] = ()


@dataclass(frozen=True)
class Autorun:
    """One value of an HKLM ``Run`` / ``RunOnce`` key: a command started at every logon."""

    key: str  # the key it is in, e.g. ``Run``, ``RunOnce``, ``WOW6432Node\\Run``
    name: str
    command: str


@dataclass(frozen=True)
class AutoService:
    """A Windows service (not a driver) that the Service Control Manager starts at boot."""

    name: str
    display_name: str | None
    image_path: str | None
    delayed: bool = False  # DelayedAutostart


@dataclass(frozen=True)
class WindowsConfig:
    """Security configuration of a Windows guest read from its hives (issue 19).

    Each setting is its effective value at the next boot (Group Policy first, then the local
    value, then the Windows default); None when the hive that holds it could not say.
    """

    uac_enabled: bool | None = None  # EnableLUA
    smb1_server: bool | None = None  # the Server service accepts SMB 1
    rdp_enabled: bool | None = None  # fDenyTSConnections off and TermService not disabled
    rdp_nla: bool | None = None  # UserAuthentication: Network Level Authentication required
    autologon: bool | None = None  # Winlogon AutoAdminLogon
    autologon_user: str | None = None
    # a non-empty Winlogon DefaultPassword is stored in the registry; the password itself
    # is never read into the facts
    autologon_password_stored: bool | None = None
    guest_enabled: bool | None = None  # the SAM's RID 501, None when the SAM was not read
    lsa_protected: bool | None = None  # RunAsPPL
    update_server: str | None = None  # WUServer policy, when UseWUServer is on
    defender_installed: bool | None = None  # the WinDefend service exists
    defender_disabled_by: tuple[str, ...] = ()  # the policies or service state turning it off
    defender_signatures_updated: str | None = None  # ISO UTC, from Signature Updates
    defender_signature_version: str | None = None  # AVSignatureVersion
    autoruns: tuple[Autorun, ...] = ()
    auto_services: tuple[AutoService, ...] = ()


@dataclass(frozen=True)
class ConfigFacts:
    """The ``config`` section: the part for the guest's OS type, None when not read."""

    linux: LinuxConfig | None = None
    windows: WindowsConfig | None = None


@dataclass(frozen=True)
class Facts:
    """Everything read from one guest: ``vmaudit.facts/v1``."""

    image: ImageInfo
    os: OsInfo
    packages: tuple[Package, ...] = ()
    hotfixes: tuple[Hotfix, ...] = ()
    users: tuple[User, ...] = ()
    ssh: SshFacts = SshFacts(False, None, None)
    firewall: FirewallFacts = FirewallFacts(False, ())
    dormancy: Dormancy = Dormancy(None, None, None, None)
    warnings: tuple[str, ...] = ()
    coverage: tuple[Coverage, ...] = ()  # empty in facts cached before coverage existed
    config: ConfigFacts = ConfigFacts()  # empty in facts cached before it was read

    def failed_sections(self) -> dict[str, str]:
        """Section -> why it could not be read; a rule reading one of them is not judged.

        Facts cached by a vmaudit that recorded coverage but not yet the ``config`` section
        hold none: for a Linux or Windows guest it counts as not read (the audit is not
        complete), so its rules are not judged, never passed.
        """
        failed = {c.section: c.reason or "failed" for c in self.coverage if c.status == "failed"}
        if self.coverage and self.config_not_read():
            failed["config"] = CONFIG_NOT_READ
        return failed

    def config_not_read(self) -> bool:
        """A Linux or Windows guest whose facts hold no config part and no coverage entry
        saying why: facts collected before vmaudit read the ``config`` section."""
        if any(c.section == "config" for c in self.coverage):
            return False
        part = {"linux": self.config.linux, "windows": self.config.windows}
        return self.os.type in part and part[self.os.type] is None

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"schema": FACTS_SCHEMA}
        data.update(to_jsonable(self))
        if not self.coverage:  # facts from before coverage existed stay as they were
            del data["coverage"]
        if self.config == ConfigFacts():  # likewise facts from before the config section
            del data["config"]
        if self.os.installation_type is None:  # Windows only; other facts keep their shape
            del data["os"]["installation_type"]
        return data


# ---------------------------------------------------------------- evaluation


@dataclass(frozen=True)
class Finding:
    rule: str
    severity: Severity
    subject: str
    message: str
    evidence: dict[str, Any] = field(default_factory=dict)
    baseline: str = ""


@dataclass(frozen=True)
class Risk:
    score: float  # 0.0-100.0, one decimal
    level: str  # critical | high | medium | low | none
    # W x D x C, what images sort by; None only for a score recorded by the capped formula
    # of an older vmaudit that could not be recomputed (vmaudit.state.schema, v3).
    exposure: float | None = 0.0


@dataclass(frozen=True)
class Business:
    application: str | None
    owner: str | None
    criticality: str  # low | medium | high | critical


@dataclass(frozen=True)
class NotJudged:
    """A rule that applied to the guest but read a section that could not be read."""

    rule: str
    reason: str


@dataclass(frozen=True)
class ImageError:
    kind: ErrorKind
    message: str


@dataclass(frozen=True)
class AuditedImage:
    """An image audited: its facts, what the rules found, its risk."""

    image: ImageRef
    facts: Facts
    findings: tuple[Finding, ...] = ()
    risk: Risk = Risk(0.0, "none")
    business: Business = Business(None, None, "medium")
    from_cache: bool = False
    rules_evaluated: tuple[str, ...] = ()
    not_judged: tuple[NotJudged, ...] = ()
    error: ClassVar[None] = None
    status: ClassVar[str] = "audited"

    @property
    def complete(self) -> bool:
        """Every section read (or absent from the guest): nothing was left unjudged."""
        return not self.facts.failed_sections()


@dataclass(frozen=True)
class FailedImage:
    """An image that could not be audited, and why: no facts, no findings, no score."""

    image: ImageRef
    error: ImageError
    business: Business = Business(None, None, "medium")
    from_cache: bool = False
    facts: ClassVar[None] = None
    findings: ClassVar[tuple[Finding, ...]] = ()
    risk: ClassVar[Risk] = Risk(0.0, "none")
    rules_evaluated: ClassVar[tuple[str, ...]] = ()
    not_judged: ClassVar[tuple[NotJudged, ...]] = ()
    status: ClassVar[str] = "error"
    complete: ClassVar[bool] = False


ImageResult = AuditedImage | FailedImage  # one image's outcome


# ---------------------------------------------------------------- history


@dataclass(frozen=True)
class HistoryEvent:
    """``appeared``, ``modified`` (``changes`` says what) or ``disappeared``."""

    kind: str
    at: str
    changes: dict[str, Any]


@dataclass(frozen=True)
class PowerOn:
    """One power-on decision of the gate (vmaudit.act), as recorded.

    ``image`` is the guest's image key path when the decision concerned one; ``details``
    holds the disks, the findings that refused, the error that ``on_error`` was applied to.
    """

    at: str
    source: str  # libvirt | proxmox | check
    domain: str | None
    decision: str  # allow | refuse
    reason: str
    image: str | None
    details: dict[str, Any]


@dataclass(frozen=True)
class HistoryEntry:
    """One scan as seen by one image; ``status`` is audited, error or absent (disappeared)."""

    scan_id: int
    scan_started_at: str
    recorded_at: str | None
    status: str
    risk: Risk | None
    findings_count: int
    from_cache: bool
    error: ImageError | None
    events: tuple[HistoryEvent, ...]


WatchKind = Literal["appeared", "modified", "disappeared"]


@dataclass(frozen=True)
class WatchEvent:
    """An image that appeared, changed or disappeared; ``image.in_use`` set when held."""

    kind: WatchKind
    image: ImageRef
    at: float  # time.time() when the event was raised


@dataclass(frozen=True)
class ScanReport:
    started_at: str
    finished_at: str
    baselines: tuple[str, ...]
    fail_on: str
    results: tuple[ImageResult, ...]
    exit_code: int


def image_ref_from_dict(data: dict[str, Any]) -> ImageRef:
    """Inverse of ``to_jsonable(ImageRef)``: how an image crosses a process boundary."""
    return from_jsonable(ImageRef, data)
