"""The resolved baseline: one frozen value per key of spec/baseline.md, after ``extends``.

``settings`` keeps the merged mapping exactly as validated (paths made absolute), so the
resolved baseline can be shown as YAML and a rule can ask whether a key was set at all.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from vmaudit.models import Facts, Severity
from vmaudit.versions import version_matches


@dataclass(frozen=True)
class Match:
    """Which guests a baseline applies to; empty fields match everything."""

    os: str | None = None
    distro: tuple[str, ...] = ()
    version: str | None = None

    def fits(self, facts: Facts) -> bool:
        """True when the guest's OS type, distro and version all fit."""
        if self.os is not None and facts.os.type != self.os:
            return False
        if self.distro:
            distro = (facts.os.distro or "").lower()
            if distro not in {name.lower() for name in self.distro}:
                return False
        return self.version is None or version_matches(self.version, facts.os.version)


@dataclass(frozen=True)
class AcceptedRisk:
    """One ``vulnerabilities.ignore`` entry: not reported through ``until`` (inclusive)."""

    id: str
    until: date
    reason: str = ""


@dataclass(frozen=True)
class VulnerabilityPolicy:
    """The ``vulnerabilities`` section: which ``vuln.cve`` findings are reported."""

    min_severity: Severity = "low"
    max_days_exposed: int | None = None
    ignore: tuple[AcceptedRisk, ...] = ()

    def accepted(self, ids: tuple[str, ...], today: date) -> tuple[AcceptedRisk | None, bool]:
        """The entry naming one of ``ids`` still in force, and whether one has expired."""
        if not self.ignore:
            return None, False
        wanted = {i.upper() for i in ids}
        named = [entry for entry in self.ignore if entry.id.upper() in wanted]
        current = next((entry for entry in named if entry.until >= today), None)
        return current, current is None and bool(named)


@dataclass(frozen=True)
class Baseline:
    """A baseline with its parents merged in; ``None`` or empty means "not checked"."""

    name: str
    description: str
    origin: str  # the file it was read from
    match: Match = Match()
    max_days_idle: int | None = None
    minimum_versions: Mapping[str, str] = field(default_factory=dict)
    repository_index: tuple[str, ...] = ()
    max_days_since_update: int | None = None
    hotfixes_required: tuple[str, ...] = ()
    minimum_build: str | None = None
    forbidden_packages: tuple[str, ...] = ()
    required_packages: tuple[str, ...] = ()
    revoked: tuple[str, ...] = ()  # ``accounts.revoked`` and the names of ``revoked_file``
    allowed_admins: tuple[str, ...] = ()
    forbid_empty_password: bool = False
    forbid_extra_uid0: bool = False
    max_password_age_days: int | None = None
    forbid_authorized_keys: tuple[str, ...] = ()
    permit_root_login: str | None = None
    password_authentication: bool | None = None
    firewall_required: bool = False
    default_inbound: str | None = None
    severity: Mapping[str, Severity] = field(default_factory=dict)
    extends: tuple[str, ...] = ()  # every file merged in, parents first
    settings: Mapping[str, Any] = field(default_factory=dict)

    @property
    def vulnerabilities(self) -> VulnerabilityPolicy | None:
        """The validated ``vulnerabilities`` section; None when the baseline has none."""
        section = self.get("vulnerabilities")
        if not isinstance(section, Mapping):
            return None
        ignore = tuple(
            AcceptedRisk(str(entry["id"]), entry["until"], str(entry.get("reason", "")))
            for entry in section.get("ignore", ())
        )
        return VulnerabilityPolicy(
            section.get("min_severity", "low"), section.get("max_days_exposed"), ignore
        )

    def _lookup(self, key: str) -> tuple[bool, Any]:
        """Whether a dotted key was given, and its merged value (None when it was not)."""
        node: Any = self.settings
        for part in key.split("."):
            if not isinstance(node, Mapping) or part not in node:
                return False, None
            node = node[part]
        return True, node

    def is_set(self, key: str) -> bool:
        """Whether a dotted key (``accounts.allowed_admins``) was given, here or by a parent."""
        return self._lookup(key)[0]

    def get(self, key: str) -> Any:
        """The merged value of a dotted key, or None."""
        return self._lookup(key)[1]
