"""Host firewalls and whether they would load rules at the next boot (spec/baseline.md).

ufw is enabled only with ``ENABLED=yes`` in ``/etc/ufw/ufw.conf`` (its unit is enabled on
every install and loads nothing without it). nftables, netfilter-persistent
(iptables-persistent) and firewalld are enabled when their unit is linked from
``/etc/systemd/system/*.target.wants/`` and not masked (``/etc/systemd/system/<unit>`` a
symlink to ``/dev/null``). A backend is listed when installed (package, binary or unit file).
"""

from __future__ import annotations

import re
from collections.abc import Callable

from vmaudit.errors import GuestFileError
from vmaudit.guest.base import GuestFS, is_file, read_lines, read_text, safe_path
from vmaudit.models import FirewallBackend, FirewallFacts, Package

from .common import guest_glob, packages_by_name, shell_assignments

UNIT_DIRS = ("/etc/systemd/system", "/lib/systemd/system", "/usr/lib/systemd/system")
CONFIG_CAP = 4 * 1024 * 1024
MAX_NFT_FILES = 64


def unit_masked(fs: GuestFS, unit: str) -> bool:
    path = f"/etc/systemd/system/{unit}"
    st = fs.lstat(path)
    if st is None:
        return False
    if st.kind == "link":
        try:
            return fs.readlink(path).rstrip("/") == "/dev/null"
        except GuestFileError:  # a link we cannot read masks nothing we can prove
            return False
    return False


def unit_wanted_at_boot(fs: GuestFS, unit: str, warnings: list[str]) -> bool:
    """Linked from a ``*.target.wants`` directory and not masked."""
    if unit_masked(fs, unit):
        return False
    for wants in guest_glob(fs, "/etc/systemd/system/*.target.wants", warnings):
        if fs.lstat(f"{wants}/{unit}") is not None:
            return True
    return False


def unit_exists(fs: GuestFS, unit: str) -> bool:
    return any(fs.lstat(f"{directory}/{unit}") is not None for directory in UNIT_DIRS)


def _installed(fs: GuestFS, packages: dict[str, Package], names: tuple[str, ...],
               binaries: tuple[str, ...], unit: str) -> bool:
    return (
        any(name in packages for name in names)
        or any(is_file(fs, path) for path in binaries)
        or unit_exists(fs, unit)
    )


def _ufw(fs: GuestFS, packages: dict[str, Package], warnings: list[str]) -> FirewallBackend:
    installed = _installed(fs, packages, ("ufw",), ("/usr/sbin/ufw", "/sbin/ufw"), "ufw.service")
    conf = shell_assignments(read_lines(fs, "/etc/ufw/ufw.conf", warnings, cap=CONFIG_CAP) or [])
    enabled = (
        installed and conf.get("ENABLED", "").lower() == "yes"
        and not unit_masked(fs, "ufw.service")
    )  # fmt: skip
    defaults = shell_assignments(read_lines(fs, "/etc/default/ufw", warnings, cap=CONFIG_CAP) or [])
    policy = defaults.get("DEFAULT_INPUT_POLICY", "").upper()
    inbound = {"DROP": "deny", "REJECT": "deny", "ACCEPT": "accept"}.get(policy)
    return FirewallBackend("ufw", installed, enabled, inbound)


def _strip_nft_comments(text: str) -> str:
    return re.sub(r"#[^\n]*", "", text)


def nft_input_policy(fs: GuestFS, path: str, warnings: list[str]) -> str | None:
    """deny when a base chain on the input hook drops by default, accept when none does.

    Every base chain on a hook sees the packet, so one ``policy drop`` is enough. Includes
    are followed (absolute, or relative to /etc). None when the file is missing.
    """
    seen: list[str] = []
    policies: list[str] = []

    def visit(file: str) -> bool:
        if file in seen or len(seen) >= MAX_NFT_FILES:
            return True
        seen.append(file)
        text = read_text(fs, file, warnings, cap=CONFIG_CAP)
        if text is None:
            return False
        text = _strip_nft_comments(text)
        for include in re.findall(r'^\s*include\s+"([^"]+)"', text, flags=re.MULTILINE):
            pattern = include if include.startswith("/") else "/etc/" + include
            matches = guest_glob(fs, pattern, warnings) if any(c in pattern for c in "*?[") else [
                pattern]
            for match in matches:
                visit(match)
        # A chain body: "chain NAME {" up to its closing brace (chains do not nest).
        for body in re.findall(r"\bchain\s+\S+\s*\{([^{}]*)\}", text):
            if not re.search(r"\btype\s+filter\s+hook\s+input\b", body):
                continue
            match = re.search(r"\bpolicy\s+(\w+)", body)
            policies.append(match.group(1).lower() if match else "accept")
        return True

    if not visit(path):
        return None
    return "deny" if "drop" in policies else "accept"


def _nftables(fs: GuestFS, packages: dict[str, Package], warnings: list[str]) -> FirewallBackend:
    unit = "nftables.service"
    installed = _installed(fs, packages, ("nftables",), ("/usr/sbin/nft", "/sbin/nft"), unit)
    enabled = installed and unit_wanted_at_boot(fs, unit, warnings)
    inbound = nft_input_policy(fs, "/etc/nftables.conf", warnings) if installed else None
    return FirewallBackend("nftables", installed, enabled, inbound)


def iptables_input_policy(fs: GuestFS, warnings: list[str]) -> str | None:
    lines = read_lines(fs, "/etc/iptables/rules.v4", warnings, cap=CONFIG_CAP)
    if lines is None:
        return None
    table = None
    for line in lines:
        line = line.strip()
        if line.startswith("*"):
            table = line[1:].strip()
        elif table == "filter" and line.startswith(":INPUT "):
            policy = line.split()[1].upper() if len(line.split()) > 1 else ""
            return {"DROP": "deny", "ACCEPT": "accept"}.get(policy)
    # No filter table or no INPUT line: iptables-restore leaves the built-in ACCEPT.
    return "accept"


def _iptables(fs: GuestFS, packages: dict[str, Package], warnings: list[str]) -> FirewallBackend:
    unit = "netfilter-persistent.service"
    installed = _installed(
        fs, packages, ("iptables-persistent", "netfilter-persistent"),
        ("/usr/sbin/netfilter-persistent",), unit,
    )  # fmt: skip
    enabled = installed and unit_wanted_at_boot(fs, unit, warnings)
    inbound = iptables_input_policy(fs, warnings) if installed else None
    return FirewallBackend("iptables-persistent", installed, enabled, inbound)


FIREWALLD_TARGETS = {"drop": "deny", "%%reject%%": "deny", "reject": "deny", "default": "deny",
                     "accept": "accept"}  # fmt: skip


def firewalld_inbound(fs: GuestFS, warnings: list[str]) -> str | None:
    """From the default zone's target; a zone without target rejects (firewalld's default)."""
    conf = shell_assignments(
        read_lines(fs, "/etc/firewalld/firewalld.conf", warnings, cap=CONFIG_CAP) or []
    )
    zone = conf.get("DefaultZone") or "public"
    if not re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", zone):
        warnings.append(f"firewalld: DefaultZone {safe_path(zone)!r} is not a zone name")
        return None
    for directory in ("/etc/firewalld/zones", "/usr/lib/firewalld/zones"):
        text = read_text(fs, f"{directory}/{zone}.xml", warnings, cap=CONFIG_CAP)
        if text is None:
            continue
        # A regex, not an XML parser: a guest file must not get entity expansion.
        match = re.search(r"<zone\b[^>]*\btarget\s*=\s*[\"']([^\"']*)[\"']", text)
        return FIREWALLD_TARGETS.get(match.group(1).lower()) if match else "deny"
    builtin: dict[str, str] = {"trusted": "accept"}
    return builtin.get(zone, "deny")


def _firewalld(fs: GuestFS, packages: dict[str, Package], warnings: list[str]) -> FirewallBackend:
    unit = "firewalld.service"
    installed = _installed(fs, packages, ("firewalld",), ("/usr/sbin/firewalld",), unit)
    enabled = installed and unit_wanted_at_boot(fs, unit, warnings)
    inbound = firewalld_inbound(fs, warnings) if installed else None
    return FirewallBackend("firewalld", installed, enabled, inbound)


BACKENDS: tuple[Callable[[GuestFS, dict[str, Package], list[str]], FirewallBackend], ...] = (
    _ufw, _nftables, _iptables, _firewalld,
)


def collect_firewall(fs: GuestFS, packages: list[Package], warnings: list[str]) -> FirewallFacts:
    """The installed firewalls; enabled when any of them would load rules at boot."""
    index = packages_by_name(packages)
    backends = tuple(
        backend for backend in (probe(fs, index, warnings) for probe in BACKENDS)
        if backend.installed
    )  # fmt: skip
    return FirewallFacts(enabled=any(b.enabled for b in backends), backends=backends)
