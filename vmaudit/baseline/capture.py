"""``vmaudit baselines capture``: a baseline that a golden image passes, from its facts.

A clone of the template passes it until it drifts: a package older than the template's,
an admin the template did not have, a firewall or SSH setting weaker than the template's.
Each candidate check is kept only when the rule that reads it reports nothing on the
golden facts (the rule code is the judge, so the two cannot disagree), which is what
"a baseline the image passes" means, whatever odd values the guest holds.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import PurePath
from typing import Any

import yaml

import vmaudit
from vmaudit.baseline.model import Baseline
from vmaudit.baseline.schema import API_VERSION, NAME
from vmaudit.errors import ConfigError
from vmaudit.judge.rules import ROOT_LOGIN_ORDER, RULES, os_label
from vmaudit.models import Facts
from vmaudit.text import terminal_safe
from vmaudit.timeutil import iso_utc
from vmaudit.versions import comparator_for, dotted_key

# Installed packages whose removal weakens a host: required when the golden image has them.
SECURITY_PACKAGES = (
    "openssh-server",
    "sudo",
    "ufw",
    "nftables",
    "iptables-persistent",
    "netfilter-persistent",
    "firewalld",
    "apparmor",
    "selinux-policy-targeted",
    "audit",
    "auditd",
    "unattended-upgrades",
    "dnf-automatic",
)
_ROOT_LOGIN_ALIASES = {"without-password": "prohibit-password"}
_KB = re.compile(r"(?i)KB\d+")
_BUILD = re.compile(r"\d+(\.\d+)*")


def _probe(**fields: Any) -> Baseline:
    """A throw-away baseline holding only the candidate values a rule reads."""
    return Baseline(name="capture-probe", description="", origin="", **fields)


def _hits(rule_id: str, facts: Facts, baseline: Baseline, now: datetime) -> list[str]:
    """Subjects the rule reports on the golden facts (none when it does not apply)."""
    rule = RULES[rule_id]
    if facts.os.type not in rule.os_types:
        return []
    return [hit.subject for hit in rule.check(facts, baseline, now)]


def _passes(rule_id: str, facts: Facts, baseline: Baseline, now: datetime) -> bool:
    return facts.os.type in RULES[rule_id].os_types and not _hits(rule_id, facts, baseline, now)


def _minimum_versions(facts: Facts, now: datetime) -> dict[str, str]:
    """Each installed package at its installed version, the lowest where a name repeats.

    A name repeats with multiarch (libc6 for amd64 and i386) and with Windows applications
    installed twice; the lowest version is the one every copy satisfies. Names are compared
    as the rule compares them (case-insensitively on Windows).
    """
    compare = comparator_for(facts)
    windows = facts.os.type == "windows"
    chosen: dict[str, tuple[str, str]] = {}  # rule key -> (name as shown, version)
    for package in facts.packages:
        version = package.version.strip()
        if not package.name.strip() or not version:
            continue
        key = package.name.lower() if windows else package.name
        known = chosen.get(key)
        try:
            if known is None or compare(version, known[1]) < 0:
                chosen[key] = (package.name, version)
        except (ValueError, TypeError):
            continue  # a version the guest's ordering cannot read: no minimum for it
    minimums = {name: version for name, version in sorted(chosen.values())}
    # Whatever the rule still reports (an unorderable version) is left out.
    failing = set(_hits("patch.missing", facts, _probe(minimum_versions=minimums), now))
    return {name: version for name, version in minimums.items() if name not in failing}


def _admins(facts: Facts) -> list[str]:
    return sorted({user.name for user in facts.users if user.admin})


def _major(version: str | None) -> str | None:
    numbers = dotted_key(version or "")
    return str(numbers[0]) if numbers else None


def _default_name(facts: Facts, image_label: str) -> str:
    stem = PurePath(image_label).name.split(".")[0] or (facts.os.hostname or "")
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", stem).strip("-._")
    return f"golden-{slug}" if slug else "golden-image"


def _match(facts: Facts) -> dict[str, Any]:
    """Same OS type, distro and major version: the template's clones and its point releases.

    ``"12"`` (no operator) means any 12.x, so a clone that took a point release still
    matches; another major release is another template and needs its own capture.
    """
    match: dict[str, Any] = {}
    if facts.os.type in ("linux", "windows"):
        match["os"] = facts.os.type
    if facts.os.distro and facts.os.distro.strip():
        match["distro"] = [facts.os.distro]
    major = _major(facts.os.version)
    if major is not None:
        match["version"] = major
    return match


def _accounts(facts: Facts, now: datetime) -> dict[str, Any]:
    accounts: dict[str, Any] = {}
    admins = _admins(facts)
    if _passes("account.unapproved-admin", facts, _probe(allowed_admins=tuple(admins)), now):
        accounts["allowed_admins"] = admins
    if _passes("account.empty-password", facts, _probe(forbid_empty_password=True), now):
        accounts["forbid_empty_password"] = True
    if _passes("account.extra-uid0", facts, _probe(forbid_extra_uid0=True), now):
        accounts["forbid_extra_uid0"] = True
    return accounts


def _ssh(facts: Facts, now: datetime) -> dict[str, Any]:
    """The template's sshd settings, only when sshd is there and its value is known."""
    ssh: dict[str, Any] = {}
    if not facts.ssh.installed:
        return ssh
    actual = (facts.ssh.permit_root_login or "").lower()
    actual = _ROOT_LOGIN_ALIASES.get(actual, actual)
    if actual in ROOT_LOGIN_ORDER and _passes(
        "ssh.root-login", facts, _probe(permit_root_login=actual), now
    ):
        ssh["permit_root_login"] = actual
    # ``true`` would check nothing; only a template with password logins off sets a rule.
    if facts.ssh.password_authentication is False and _passes(
        "ssh.password-auth", facts, _probe(password_authentication=False), now
    ):
        ssh["password_authentication"] = False
    return ssh


def _firewall(facts: Facts, now: datetime) -> dict[str, Any]:
    firewall: dict[str, Any] = {}
    if not any(backend.enabled for backend in facts.firewall.backends):
        return firewall
    if _passes("firewall.disabled", facts, _probe(firewall_required=True), now):
        firewall["required"] = True
    if _passes("firewall.default-accept", facts, _probe(default_inbound="deny"), now):
        firewall["default_inbound"] = "deny"
    return firewall


def _packages(facts: Facts) -> dict[str, Any]:
    installed = {package.name for package in facts.packages}
    required = [name for name in SECURITY_PACKAGES if name in installed]
    return {"required": required} if required else {}


def _windows_patches(facts: Facts, now: datetime) -> dict[str, Any]:
    windows: dict[str, Any] = {}
    hotfixes = sorted({h.id.upper() for h in facts.hotfixes if _KB.fullmatch(h.id)})
    if hotfixes:
        windows["hotfixes_required"] = hotfixes
    build = facts.os.build
    if (
        build is not None
        and _BUILD.fullmatch(build)
        and _passes("patch.build-below", facts, _probe(minimum_build=build), now)
    ):
        windows["minimum_build"] = build
    return windows


def _header(facts: Facts, image_label: str, now: datetime) -> str:
    # Guest and path text is made single-line first: a newline would end the comment and
    # let a hostile hostname write YAML keys of its own.
    when = iso_utc(now)
    os_text = terminal_safe(os_label(facts))
    host = terminal_safe(facts.os.hostname or "unknown host")
    return (
        f"# Baseline captured by vmaudit {vmaudit.__version__} from the golden image\n"
        f"#   {terminal_safe(image_label)}\n"
        f"# on {when}: {os_text}, host {host}, {len(facts.packages)} packages.\n"
        "# Its clones pass it until they drift (older packages, other admins, weaker\n"
        "# firewall or SSH). Review it, then check it: vmaudit baselines validate FILE\n"
    )


def capture_settings(facts: Facts, now: datetime) -> dict[str, Any]:
    """The baseline's sections (without header keys) that the golden facts pass."""
    settings: dict[str, Any] = {}
    match = _match(facts)
    if match:
        settings["match"] = match
    patches: dict[str, Any] = {}
    minimums = _minimum_versions(facts, now)
    if minimums:
        patches["minimum_versions"] = minimums
    if facts.os.type == "windows":
        windows = _windows_patches(facts, now)
        if windows:
            patches["windows"] = windows
    if patches:
        settings["patches"] = patches
    sections: Mapping[str, dict[str, Any]] = {
        "packages": _packages(facts),
        "accounts": _accounts(facts, now),
        "ssh": _ssh(facts, now),
        "firewall": _firewall(facts, now),
    }
    settings.update({key: value for key, value in sections.items() if value})
    return settings


def capture_baseline(facts: Facts, image_label: str, now: datetime, name: str | None = None) -> str:
    """YAML text of a ``vmaudit/v1`` baseline that the golden image of ``facts`` passes.

    ``image_label`` names the image in the comment header and the description; ``name``
    (default ``golden-<image stem>``) must be a baseline name: letters, digits, ``.``,
    ``_`` and ``-``. Raises ``ConfigError`` on a bad name.
    """
    baseline_name = name if name is not None else _default_name(facts, image_label)
    if not re.fullmatch(NAME, baseline_name):
        raise ConfigError(
            f"{baseline_name!r} is not a baseline name: letters, digits, '.', '_' and '-'"
        )
    label = terminal_safe(PurePath(image_label).name or image_label)
    document: dict[str, Any] = {
        "apiVersion": API_VERSION,
        "kind": "Baseline",
        "metadata": {
            "name": baseline_name,
            "description": f"Captured from golden image {label} on "
            f"{now.astimezone(UTC).date().isoformat()}",
        },
    }
    document.update(capture_settings(facts, now))
    body = yaml.safe_dump(
        document, sort_keys=False, allow_unicode=True, default_flow_style=False, width=100
    )
    return _header(facts, image_label, now) + body


__all__ = ["SECURITY_PACKAGES", "capture_baseline", "capture_settings"]
