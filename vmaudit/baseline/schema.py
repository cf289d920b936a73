"""What a valid baseline or inventory file is: a small typed schema walked over YAML nodes.

The walk works on ``yaml.compose`` nodes, so every problem keeps the line it was found
on; it collects every problem of a file instead of stopping at the first. Each key
carries a one-line description that the generated reference reuses.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Any

import yaml

from vmaudit.judge.rules import ROOT_LOGIN_ORDER, RULES
from vmaudit.models import SEVERITIES
from vmaudit.versions import is_version_expression

MAX_NODES = 100_000  # aliases can make a small file a huge graph ("billion laughs")
MAX_DEPTH = 64  # collections inside collections; a real baseline nests four deep
MAX_INTEGER = 2**63 - 1  # what a C long holds; anything larger is a typo or an attack
MAX_NUMBER_CHARS = 100  # an integer's text (digits, '_', '0x', ':'): read in bounded time
MERGE_TAG = "tag:yaml.org,2002:merge"


@dataclass(frozen=True)
class Problem:
    """One thing wrong in a file, with the line (1-based) and dotted key it concerns."""

    file: str
    line: int | None
    key: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line is not None else self.file
        return f"{where}: {self.key}: {self.message}" if self.key else f"{where}: {self.message}"


class Invalid:
    """Marks a value that failed validation (its problem is already recorded)."""


INVALID = Invalid()


@dataclass
class Walk:
    """State of one file's validation: where it is, what went wrong."""

    file: str
    base_dir: Path
    problems: list[Problem] = field(default_factory=list)
    nodes: int = 0

    def problem(self, node: yaml.Node | None, key: str, message: str) -> Invalid:
        line = node.start_mark.line + 1 if node is not None else None
        self.problems.append(Problem(self.file, line, key, message))
        return INVALID


@dataclass(frozen=True)
class Unreadable:
    """A scalar that has no value vmaudit accepts; ``what`` names it for the problem."""

    what: str


def _scalar(node: yaml.Node) -> Any:
    """The Python value of a scalar node as YAML 1.1 (PyYAML's safe loader) reads it.

    What PyYAML cannot build (a 5,000-digit integer, a 31st of February, an unknown tag) or
    builds only in unbounded time (a long sexagesimal ``1:2:3:...``), and integers beyond
    ``MAX_INTEGER``, come back as ``Unreadable``: a problem for the key, not a traceback.
    """
    tag = str(node.tag)
    if tag == "tag:yaml.org,2002:int" and len(str(node.value)) > MAX_NUMBER_CHARS:
        return Unreadable(f"an integer of {len(str(node.value))} characters, too large")
    try:
        value = yaml.SafeLoader("").construct_object(node)
    except (ValueError, OverflowError) as exc:
        kind = "a date or time" if tag == "tag:yaml.org,2002:timestamp" else "a value"
        return Unreadable(f"{kind} that cannot be read ({exc})")
    except yaml.YAMLError:
        return Unreadable(f"a value tagged {tag!r}, which is not supported")
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) > MAX_INTEGER:
        return Unreadable(f"an integer beyond {MAX_INTEGER}")
    return value


def _type_name(node: yaml.Node) -> str:
    if isinstance(node, yaml.MappingNode):
        return "a mapping"
    if isinstance(node, yaml.SequenceNode):
        return "a list"
    value = _scalar(node)
    if isinstance(value, Unreadable):
        return value.what
    if value is None:
        return "null"
    return {bool: "a boolean", int: "an integer", float: "a number", str: "a string"}.get(
        type(value), type(value).__name__
    )


class Spec:
    """How one value is checked; ``describe`` is its type as the reference shows it."""

    describe = "value"

    def check(self, node: yaml.Node, walk: Walk, key: str) -> Any:
        raise NotImplementedError


@dataclass(frozen=True)
class Refused:
    """Why a scalar's value is not accepted; its check records this as the key's problem."""

    why: str


class Scalar(Spec):
    """One value: ``read`` gets it as YAML reads it (None for a mapping or a list) and
    returns the checked value, or ``Refused``."""

    def check(self, node: yaml.Node, walk: Walk, key: str) -> Any:
        value = _scalar(node) if isinstance(node, yaml.ScalarNode) else None
        checked = self.read(value, node)
        return walk.problem(node, key, checked.why) if isinstance(checked, Refused) else checked

    def read(self, value: Any, node: yaml.Node) -> Any:
        raise NotImplementedError


@dataclass(frozen=True)
class Text(Scalar):
    """A value taken as text (``text``) that must match ``pattern``, if given, in full;
    ``explain`` says what the pattern stands for."""

    pattern: str | None = None
    explain: str = ""

    def read(self, value: Any, node: yaml.Node) -> Any:
        text = self.text(value, node)
        if isinstance(text, Refused) or self.pattern is None or re.fullmatch(self.pattern, text):
            return text
        return Refused(f"{text!r} is not {self.explain}")

    def text(self, value: Any, node: yaml.Node) -> str | Refused:
        raise NotImplementedError


class Str(Text):
    describe = "string"

    def text(self, value: Any, node: yaml.Node) -> str | Refused:
        if not isinstance(value, str):
            return Refused(f"expected a string, got {_type_name(node)}")
        return value if value.strip() else Refused("must not be empty")


class Version(Text):
    """A version string; integers are accepted, YAML floats refused (``1.10`` reads 1.1)."""

    describe = "version string"

    def text(self, value: Any, node: yaml.Node) -> str | Refused:
        if isinstance(value, bool | Unreadable) or value is None:
            return Refused(f"expected a version string, got {_type_name(node)}")
        if isinstance(value, float):
            return Refused(
                f"write the version in quotes: YAML reads {node.value!r} as the number {value!r}"
            )
        return str(value)


class Word(Scalar):
    """A string or an integer, kept as text (a sysctl value: ``0``, ``"1"``, ``4096 87380``)."""

    describe = "string or integer"

    def read(self, value: Any, node: yaml.Node) -> Any:
        if isinstance(value, bool) or not isinstance(value, int | str) or not str(value).strip():
            return Refused(f"expected a string or an integer, got {_type_name(node)}")
        return str(value)


@dataclass(frozen=True)
class Const(Scalar):
    value: str = ""

    @property
    def describe(self) -> str:  # type: ignore[override]
        return f"`{self.value}`"

    def read(self, value: Any, node: yaml.Node) -> Any:
        if value == self.value:
            return value
        readable = value is not None and not isinstance(value, Unreadable)
        shown = repr(value) if readable else _type_name(node)
        return Refused(f"must be {self.value!r}, got {shown}")


class Bool(Scalar):
    describe = "boolean"

    def read(self, value: Any, node: yaml.Node) -> Any:
        if isinstance(value, bool):
            return value
        return Refused(f"expected true or false, got {_type_name(node)}")


@dataclass(frozen=True)
class Int(Scalar):
    minimum: int = 0
    describe = "integer"

    def read(self, value: Any, node: yaml.Node) -> Any:
        if not isinstance(value, int) or isinstance(value, bool):
            return Refused(f"expected an integer, got {_type_name(node)}")
        if value < self.minimum:
            return Refused(f"must be at least {self.minimum}, got {value}")
        return value


@dataclass(frozen=True)
class Enum(Scalar):
    values: tuple[str, ...] = ()
    # YAML 1.1 reads an unquoted no/yes as a boolean; where the words are values
    # (PermitRootLogin), the boolean says unambiguously which one was meant.
    booleans: Mapping[bool, str] = field(default_factory=dict)

    @property
    def describe(self) -> str:  # type: ignore[override]
        return " \\| ".join(f"`{v}`" for v in self.values)

    def read(self, value: Any, node: yaml.Node) -> Any:
        if isinstance(value, bool) and value in self.booleans:
            return self.booleans[value]
        if isinstance(value, str) and value in self.values:
            return value
        shown = repr(value) if isinstance(value, str) else _type_name(node)
        return Refused(f"must be one of {', '.join(self.values)}; got {shown}")


class Date(Scalar):
    """A calendar date, ``2027-01-31`` (YAML reads it as a date; a quoted one is parsed)."""

    describe = "date (YYYY-MM-DD)"

    def read(self, value: Any, node: yaml.Node) -> Any:
        if isinstance(value, str):
            try:
                return date.fromisoformat(value.strip())
            except ValueError:
                return Refused(f"{value!r} is not a date such as 2027-01-31")
        if isinstance(value, datetime) or not isinstance(value, date):
            return Refused(f"expected a date such as 2027-01-31, got {_type_name(node)}")
        return value


class VersionExpr(Scalar):
    describe = 'version test (`"12"`, `">=12"`, `"<11"`, `"==12.4"`, comma = and)'

    def read(self, value: Any, node: yaml.Node) -> Any:
        text = Version().read(value, node)
        if isinstance(text, Refused) or is_version_expression(text):
            return text
        return Refused(f'{text!r} is not a version test such as ">=12", "<11", "==12.4" or "12"')


@dataclass(frozen=True)
class FilePath(Spec):
    """A path relative to the file that names it; must exist. Checked value is absolute."""

    describe: str = "path (relative to this file)"

    def check(self, node: yaml.Node, walk: Walk, key: str) -> Any:
        value = Str().check(node, walk, key)
        if isinstance(value, Invalid):
            return value
        path = (walk.base_dir / value).resolve()
        if not path.is_file():
            return walk.problem(node, key, f"file not found: {path}")
        return str(path)


@dataclass(frozen=True)
class ListOf(Spec):
    item: Spec = field(default_factory=Str)
    single_ok: bool = False  # a lone scalar counts as a list of one

    @property
    def describe(self) -> str:  # type: ignore[override]
        each = f"list of {self.item.describe}"
        return f"{self.item.describe} or {each}" if self.single_ok else each

    def check(self, node: yaml.Node, walk: Walk, key: str) -> Any:
        if self.single_ok and isinstance(node, yaml.ScalarNode):
            value = self.item.check(node, walk, key)
            return value if isinstance(value, Invalid) else [value]
        if not isinstance(node, yaml.SequenceNode):
            return walk.problem(node, key, f"expected a list, got {_type_name(node)}")
        items = []
        for position, child in enumerate(node.value):
            walk.nodes += 1
            if walk.nodes > MAX_NODES:
                return walk.problem(child, key, f"more than {MAX_NODES} values")
            value = self.item.check(child, walk, f"{key}[{position}]")
            if not isinstance(value, Invalid):
                items.append(value)
        return items


def _pairs(node: yaml.MappingNode, walk: Walk, key: str) -> list[tuple[str, yaml.Node, yaml.Node]]:
    pairs: list[tuple[str, yaml.Node, yaml.Node]] = []
    seen: set[str] = set()
    for key_node, value_node in node.value:
        if key_node.tag == MERGE_TAG:
            walk.problem(
                key_node,
                f"{key}.<<" if key else "<<",
                "merge keys ('<<') are not supported: write the keys out",
            )
            continue
        name = _scalar(key_node) if isinstance(key_node, yaml.ScalarNode) else None
        if not isinstance(name, str):
            walk.problem(
                key_node, key or "(top)", f"keys must be strings, got {_type_name(key_node)}"
            )
            continue
        full = f"{key}.{name}" if key else name
        if name in seen:
            walk.problem(key_node, full, "duplicate key")
            continue
        seen.add(name)
        pairs.append((name, key_node, value_node))
    return pairs


@dataclass(frozen=True)
class MapOf(Spec):
    """A mapping of free-form keys (package names, rule ids) to checked values."""

    value: Spec = field(default_factory=Str)
    key_check: Callable[[str], str | None] | None = None  # returns a problem or None
    key_describe: str = "name"

    @property
    def describe(self) -> str:  # type: ignore[override]
        return f"mapping of {self.key_describe} to {self.value.describe}"

    def check(self, node: yaml.Node, walk: Walk, key: str) -> Any:
        if not isinstance(node, yaml.MappingNode):
            return walk.problem(node, key, f"expected a mapping, got {_type_name(node)}")
        result: dict[str, Any] = {}
        for name, key_node, value_node in _pairs(node, walk, key):
            full = f"{key}.{name}"
            if self.key_check is not None:
                complaint = self.key_check(name)
                if complaint is not None:
                    walk.problem(key_node, full, complaint)
                    continue
            value = self.value.check(value_node, walk, full)
            if not isinstance(value, Invalid):
                result[name] = value
        return result


@dataclass(frozen=True)
class Key:
    spec: Spec
    doc: str
    required: bool = False


@dataclass(frozen=True)
class Section(Spec):
    keys: Mapping[str, Key] = field(default_factory=dict)
    describe: str = "mapping"

    def check(self, node: yaml.Node, walk: Walk, key: str) -> Any:
        if not isinstance(node, yaml.MappingNode):
            return walk.problem(node, key or "(top)", f"expected a mapping, got {_type_name(node)}")
        result: dict[str, Any] = {}
        for name, key_node, value_node in _pairs(node, walk, key):
            full = f"{key}.{name}" if key else name
            known = self.keys.get(name)
            if known is None:
                where = f"in {key}" if key else "at the top level"
                allowed = ", ".join(self.keys)
                walk.problem(key_node, full, f"unknown key {where} (known: {allowed})")
                continue
            value = known.spec.check(value_node, walk, full)
            if not isinstance(value, Invalid):
                result[name] = value
        for name, known in self.keys.items():
            if (
                known.required
                and name not in result
                and not any(p.key == (f"{key}.{name}" if key else name) for p in walk.problems)
            ):
                walk.problem(node, f"{key}.{name}" if key else name, "required key is missing")
        return result


OCTAL_MODE = Str(r"0?[0-7]{3}", 'an octal mode in quotes, such as "0640"')
FILE_LIMITS = Section(
    {
        "mode": Key(OCTAL_MODE, "Most permissive mode allowed: any other bit fails."),
        "owner": Key(ListOf(Str(), single_ok=True), "Owner names allowed."),
        "group": Key(ListOf(Str(), single_ok=True), "Group names allowed."),
        "if_package": Key(Str(), "Judged only when this package is installed."),
    }
)


def _known_rule(name: str) -> str | None:
    if name in RULES:
        return None
    return f"unknown rule id (known: {', '.join(sorted(RULES))})"


NAME = r"[A-Za-z0-9][A-Za-z0-9._-]*"
API_VERSION = "vmaudit/v1"

BASELINE = Section(
    {
        "apiVersion": Key(Const(API_VERSION), "Schema version of the file.", required=True),
        "kind": Key(Const("Baseline"), "What the file is.", required=True),
        "metadata": Key(
            Section(
                {
                    "name": Key(
                        Str(NAME, "a name of letters, digits, '.', '_' and '-'"),
                        "Name of the baseline, shown in findings.",
                        required=True,
                    ),
                    "description": Key(Str(), "One line about what it checks."),
                }
            ),
            "Name and description.",
            required=True,
        ),
        "extends": Key(
            ListOf(Str(), single_ok=True),
            "Built-in baseline names or paths relative to this file, merged first; later wins.",
        ),
        "match": Key(
            Section(
                {
                    "os": Key(Enum(("linux", "windows")), "Guest OS type."),
                    "distro": Key(ListOf(Str(), single_ok=True), "libguestfs distro names."),
                    "version": Key(VersionExpr(), "Test on the OS major.minor version."),
                }
            ),
            "Which guests the baseline applies to; absent = all.",
        ),
        "dormancy": Key(
            Section(
                {
                    "max_days_idle": Key(Int(0), "`dormancy.stale` past this many idle days."),
                }
            ),
            "Dormancy.",
        ),
        "patches": Key(
            Section(
                {
                    "minimum_versions": Key(
                        MapOf(Version(), key_describe="package"),
                        "Package to lowest acceptable version (the distro's ordering).",
                    ),
                    "repository_index": Key(
                        ListOf(FilePath(), single_ok=True),
                        "Debian Packages indexes (plain, .gz, .xz), relative to this file.",
                    ),
                    "max_days_since_update": Key(
                        Int(0), "`patch.stale` past this many days without an install/upgrade."
                    ),
                    "windows": Key(
                        Section(
                            {
                                "hotfixes_required": Key(
                                    ListOf(Str(r"(?i)KB\d+", "a KB id such as KB5034441")),
                                    "KB ids that must be installed.",
                                ),
                                "minimum_build": Key(
                                    Version(r"\d+(\.\d+)*", 'a build such as "17763.5458"'),
                                    "Lowest acceptable CurrentBuild.UBR.",
                                ),
                            }
                        ),
                        "Windows patches.",
                    ),
                }
            ),
            "Patch level.",
        ),
        "packages": Key(
            Section(
                {
                    "forbidden": Key(ListOf(Str()), "Packages that must not be installed."),
                    "required": Key(ListOf(Str()), "Packages that must be installed."),
                }
            ),
            "Installed packages.",
        ),
        "accounts": Key(
            Section(
                {
                    "revoked": Key(ListOf(Str()), "Accounts whose entitlement has ended."),
                    "revoked_file": Key(
                        FilePath(),
                        "File of revoked names, one a line, '#' comments; relative to this file.",
                    ),
                    "allowed_admins": Key(
                        ListOf(Str()), "Only these accounts may hold admin rights."
                    ),
                    "forbid_empty_password": Key(
                        Bool(), "No login-capable account with an empty password."
                    ),
                    "forbid_extra_uid0": Key(Bool(), "No uid 0 besides root."),
                    "max_password_age_days": Key(Int(1), "Longest accepted password age."),
                    "forbid_authorized_keys": Key(
                        ListOf(Str()), "Accounts that must have no authorized SSH keys."
                    ),
                }
            ),
            "Accounts and entitlements.",
        ),
        "ssh": Key(
            Section(
                {
                    "permit_root_login": Key(
                        Enum(ROOT_LOGIN_ORDER, {False: "no", True: "yes"}),
                        "Most permissive PermitRootLogin allowed.",
                    ),
                    "password_authentication": Key(
                        Bool(), "false: PasswordAuthentication must be no."
                    ),
                }
            ),
            "SSH daemon.",
        ),
        "permissions": Key(
            Section(
                {
                    "critical_files": Key(
                        MapOf(FILE_LIMITS, key_describe="guest path or glob"),
                        "`perm.critical-file`: path to its mode, owner and group limits.",
                    ),
                    "forbid_world_writable": Key(
                        Bool(), "`perm.world-writable`: no world-writable file or open directory."
                    ),
                }
            ),
            "Permissions of guest files (Linux).",
        ),
        "executables": Key(
            Section(
                {
                    "setuid_allowed": Key(
                        ListOf(Str()), "Setuid/setgid programs allowed (paths, globs)."
                    ),
                    "forbidden": Key(
                        ListOf(Str()), "Programs that must not be there (PATH names or paths)."
                    ),
                }
            ),
            "Allowed and disallowed programs (Linux).",
        ),
        "services": Key(
            Section(
                {
                    "forbidden": Key(
                        ListOf(Str()), "Services that must not start at boot (names, globs)."
                    ),
                }
            ),
            "Services at boot (Linux: systemd, inetd, SysV).",
        ),
        "startup": Key(
            Section(
                {
                    "allowed": Key(
                        ListOf(Str()),
                        "What may run at power-on: @reboot commands, persistent timers, "
                        "rc.local, unpackaged units (globs).",
                    ),
                }
            ),
            "What runs at power-on (Linux).",
        ),
        "lockdown": Key(
            Section(
                {
                    "selinux": Key(
                        Enum(("enforcing", "permissive")), "Weakest SELinux mode accepted."
                    ),
                    "apparmor": Key(Bool(), "AppArmor (or SELinux) must be on at boot."),
                    "auditd": Key(Bool(), "auditd must start at boot."),
                    "sysctl": Key(
                        MapOf(Word(), key_describe="sysctl key"),
                        "Kernel parameter to the value it must have at boot.",
                    ),
                }
            ),
            "Lockdowns (Linux): mandatory access control, audit, kernel parameters.",
        ),
        "firewall": Key(
            Section(
                {
                    "required": Key(Bool(), "A host firewall must be enabled at boot."),
                    "default_inbound": Key(
                        Enum(("deny", "any")), "deny: default inbound must not accept."
                    ),
                }
            ),
            "Host firewall.",
        ),
        "windows": Key(
            Section(
                {
                    "require_uac": Key(Bool(), "User Account Control (EnableLUA) must be on."),
                    "forbid_smb1": Key(Bool(), "The SMB 1 server must be off."),
                    "require_rdp_nla": Key(Bool(), "Remote Desktop, when on, must require NLA."),
                    "forbid_autologon_password": Key(
                        Bool(), "No plaintext Winlogon DefaultPassword."
                    ),
                    "forbid_guest": Key(Bool(), "The built-in Guest account must be disabled."),
                    "require_lsa_protection": Key(Bool(), "LSA protection (RunAsPPL) must be on."),
                    "update_servers": Key(
                        ListOf(Str(), single_ok=True),
                        "Approved update sources: WSUS URLs, or `microsoft-update`.",
                    ),
                    "require_defender": Key(
                        Bool(), "Microsoft Defender Antivirus must be installed and on."
                    ),
                    "max_signature_age_days": Key(
                        Int(0), "`win.defender-signatures-stale` past this many days."
                    ),
                    "autoruns_allowed": Key(
                        MapOf(Str(), key_describe="Run value name or glob"),
                        "HKLM Run/RunOnce entries allowed, each with why.",
                    ),
                    "services_allowed": Key(
                        MapOf(Str(), key_describe="service name or glob"),
                        "Auto-start services allowed, each with why.",
                    ),
                }
            ),
            "Windows security configuration (`win.*` rules).",
        ),
        "vulnerabilities": Key(
            Section(
                {
                    "min_severity": Key(
                        Enum(SEVERITIES), "Report `vuln.cve` at or above this (default low)."
                    ),
                    "max_days_exposed": Key(
                        Int(0), "Only advisories whose fix has been out longer than this."
                    ),
                    "ignore": Key(
                        ListOf(
                            Section(
                                {
                                    "id": Key(
                                        Str(
                                            r"[A-Za-z0-9][A-Za-z0-9._:+-]{0,127}",
                                            "a CVE or advisory id",
                                        ),
                                        "CVE id (or advisory id) of the accepted risk.",
                                        required=True,
                                    ),
                                    "reason": Key(Str(), "Why the risk is accepted."),
                                    "until": Key(
                                        Date(),
                                        "Last day the acceptance holds; after it, it is reported.",
                                        required=True,
                                    ),
                                }
                            )
                        ),
                        "Accepted risks: id, reason and until (required).",
                    ),
                }
            ),
            "Vulnerability feeds (`vuln.cve`, with `--feeds-db`) and `os.end-of-life`.",
        ),
        "severity": Key(
            MapOf(Enum(SEVERITIES), _known_rule, "rule id"),
            "Rule id to severity, overriding the default in this baseline.",
        ),
    }
)


@dataclass(frozen=True)
class OneOrListOf(ListOf):
    """A list, or one mapping standing for a list of one (``match: {tag: payroll}``)."""

    def check(self, node: yaml.Node, walk: Walk, key: str) -> Any:
        if isinstance(node, yaml.MappingNode):
            value = self.item.check(node, walk, key)
            return value if isinstance(value, Invalid) else [value]
        return super().check(node, walk, key)


@dataclass(frozen=True)
class EitherSection(Section):
    """A section that needs at least one of ``either`` (reported on the first's key)."""

    either: tuple[str, ...] = ()

    def check(self, node: yaml.Node, walk: Walk, key: str) -> Any:
        result = super().check(node, walk, key)
        if isinstance(result, dict) and self.either and not any(k in result for k in self.either):
            names = [f"{key}.{name}" for name in self.either]
            if not any(p.key in names for p in walk.problems):
                walk.problem(
                    node, names[0], f"required key is missing (or {', '.join(self.either[1:])})"
                )
        return result


INVENTORY = Section(
    {
        "apiVersion": Key(Const(API_VERSION), "Schema version of the file.", required=True),
        "kind": Key(Const("Inventory"), "What the file is.", required=True),
        "applications": Key(
            ListOf(
                EitherSection(
                    {
                        "name": Key(Str(), "Application name.", required=True),
                        "owner": Key(Str(), "Owning team or person."),
                        "criticality": Key(
                            Enum(("low", "medium", "high", "critical")),
                            "Business criticality (default medium).",
                        ),
                        "images": Key(
                            ListOf(Str(), single_ok=True),
                            "Globs on the image path relative to the scanned root, or VM names"
                            " (images or match is required).",
                        ),
                        "match": Key(
                            OneOrListOf(
                                Section(
                                    {
                                        "name": Key(Str(), "Glob on the VM name."),
                                        "source": Key(
                                            Enum(("folder", "libvirt", "proxmox", "vmware")),
                                            "Where the VM was found.",
                                        ),
                                        "tag": Key(Str(), "Glob on one Proxmox tag."),
                                        "notes": Key(
                                            Str(),
                                            "Glob on the libvirt title and description, the"
                                            " Proxmox description or the vmx annotation.",
                                        ),
                                        "metadata": Key(
                                            MapOf(Str(), key_describe="element name"),
                                            "libvirt <metadata> leaves: element name to glob"
                                            " on its text.",
                                        ),
                                        "template": Key(Bool(), "A template, or a VM."),
                                    }
                                ),
                            ),
                            "What the hypervisor says of the VM; all keys of one entry must"
                            " hold, any entry suffices.",
                        ),
                    },
                    either=("images", "match"),
                )
            ),
            "Applications and the images they run on.",
            required=True,
        ),
    }
)


def walk_keys(section: Section, prefix: str = "") -> list[tuple[str, Key]]:
    """Every dotted key of a section with its definition, depth first."""
    found: list[tuple[str, Key]] = []
    for name, key in section.keys.items():
        dotted = f"{prefix}.{name}" if prefix else name
        found.append((dotted, key))
        if isinstance(key.spec, Section):
            found.extend(walk_keys(key.spec, dotted))
    return found


class _TooDeep(Exception):
    def __init__(self, line: int, key: str) -> None:
        super().__init__(key)
        self.line = line
        self.key = key


class _BoundedLoader(yaml.SafeLoader):
    """PyYAML's safe loader with nesting bounded before its recursive composer overflows.

    PyYAML composes a node inside its parent by recursion; 3,000 nested ``[`` end in a
    ``RecursionError``. Here the dotted key of each node is tracked so a document nested
    deeper than ``MAX_DEPTH`` stops with the line and key where it crossed the limit.
    """

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._keys: list[str] = []

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node | None:
        outer = self._keys[-1] if self._keys else ""
        if isinstance(parent, yaml.SequenceNode):
            here = f"{outer}[{index}]"
        elif isinstance(parent, yaml.MappingNode) and index is not None:
            name = str(index.value) if isinstance(index, yaml.ScalarNode) else "(key)"
            here = f"{outer}.{name}" if outer else name
        else:  # the document, or a mapping's key: where its mapping is
            here = outer
        if len(self._keys) >= MAX_DEPTH:
            event = self.peek_event()  # type: ignore[no-untyped-call]
            raise _TooDeep(event.start_mark.line + 1, here)
        self._keys.append(here)
        try:
            node: yaml.Node | None = super().compose_node(parent, index)
        finally:
            self._keys.pop()
        return node


def read_document(text: str, walk: Walk) -> yaml.Node | None:
    """The single YAML document of ``text`` as a node tree, or None with a problem."""
    try:
        node = yaml.compose(text, Loader=_BoundedLoader)
    except _TooDeep as exc:
        walk.problems.append(
            Problem(walk.file, exc.line, exc.key, f"nested deeper than {MAX_DEPTH} levels")
        )
        return None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else None
        walk.problems.append(Problem(walk.file, line, "", f"YAML syntax: {exc.problem}"))
        return None
    except yaml.YAMLError as exc:
        walk.problems.append(Problem(walk.file, None, "", f"YAML syntax: {exc}"))
        return None
    if node is None:
        walk.problems.append(Problem(walk.file, 1, "", "empty file"))
    return node
