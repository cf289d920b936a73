"""The full ``vmaudit.facts/v1`` of a Linux guest, assembled from the per-artefact collectors.

Order matters only where facts feed each other: packages first (sshd's defaults depend on the
OpenSSH version, firewalls on installed packages), then sshd and sudoers (accounts need the
AuthorizedKeysFile and the sudo grants), then dormancy (last update from dpkg's log or rpm).
Each section runs on its own: an unexpected failure in one is a warning, the others still
come out.
"""

from __future__ import annotations

from datetime import UTC, datetime

from vmaudit.guest.base import GuestFS, is_file
from vmaudit.models import (
    ConfigFacts,
    Dormancy,
    Facts,
    FirewallFacts,
    ImageInfo,
    OsInfo,
    Package,
    SshFacts,
    User,
)

from . import apk, dpkg, pacman, rpm
from .accounts import collect_users
from .common import CoverageLog, guarded
from .config_linux import collect_linux_config
from .dormancy import collect_dormancy, guest_timezone
from .firewall import collect_firewall
from .sshd import SshdConfig, collect_sshd
from .sudoers import Sudoers, parse_sudoers


def _packages(
    fs: GuestFS, os_info: OsInfo, warnings: list[str], coverage: CoverageLog
) -> tuple[list[Package], datetime | None]:
    """Installed packages and, for rpm, the newest install time."""
    package_format = os_info.package_format
    if package_format is None and is_file(fs, dpkg.STATUS_PATH):
        package_format = "deb"
    if package_format == "deb":
        return dpkg.collect_dpkg(fs, warnings), None
    if package_format == "rpm":
        db = rpm.collect_rpm(fs, warnings)
        return list(db.packages), db.last_install
    if package_format == "apk":
        return apk.collect_apk(fs, warnings), None
    if package_format == "pacman":
        return pacman.collect_pacman(fs, warnings), None
    warnings.append("packages: no known package database found")
    coverage.absent("packages", "no known package database")
    return [], None


def collect_linux(
    fs: GuestFS, image: ImageInfo, os_info: OsInfo, now: datetime, warnings: list[str]
) -> Facts:
    """Everything vmaudit reads from a Linux guest; ``warnings`` gathers every problem."""
    if now.tzinfo is None:
        now = now.replace(tzinfo=UTC)
    coverage = CoverageLog()
    coverage.read("os")
    coverage.absent("hotfixes", "not a Windows guest")
    no_packages: tuple[list[Package], datetime | None] = ([], None)
    packages, rpm_last_install = guarded(
        "packages",
        warnings,
        no_packages,
        lambda: _packages(fs, os_info, warnings, coverage),
        coverage=coverage,
    )
    sshd = guarded(
        "ssh", warnings,
        SshdConfig(False, "prohibit-password", True, False, ()),
        lambda: collect_sshd(fs, packages, warnings),
        coverage=coverage,
    )  # fmt: skip
    if not sshd.installed:
        coverage.absent("ssh", "no OpenSSH server installed")
    if not is_file(fs, "/etc/sudoers"):
        coverage.absent("sudo", "no /etc/sudoers")
    sudoers = guarded(
        "sudo", warnings, Sudoers((), {}), lambda: parse_sudoers(fs, warnings), coverage=coverage
    )
    users: list[User] = guarded(
        "accounts",
        warnings,
        [],
        lambda: collect_users(fs, now, sshd, sudoers, warnings),
        coverage=coverage,
    )
    firewall = guarded(
        "firewall", warnings, FirewallFacts(False, ()),
        lambda: collect_firewall(fs, packages, warnings),
        coverage=coverage,
    )  # fmt: skip
    if not any(backend.installed for backend in firewall.backends):
        coverage.absent("firewall", "no firewall installed")

    def dormancy() -> Dormancy:
        last_update = rpm_last_install
        if os_info.package_format in ("deb", None) or last_update is None:
            logged = dpkg.last_update(fs, guest_timezone(fs, warnings), warnings)
            if logged is not None and (last_update is None or logged > last_update):
                last_update = logged
        return collect_dormancy(fs, image.mtime, now, last_update, warnings)

    dormancy_facts = guarded(
        "dormancy", warnings, Dormancy(None, None, None, None), dormancy, coverage=coverage
    )
    linux_config = guarded(
        "config", warnings, None,
        lambda: collect_linux_config(fs, packages, warnings),
        coverage=coverage,
    )  # fmt: skip
    ssh_facts: SshFacts = sshd.facts()
    return Facts(
        image=image,
        os=os_info,
        packages=tuple(packages),
        hotfixes=(),
        users=tuple(users),
        ssh=ssh_facts,
        firewall=firewall,
        dormancy=dormancy_facts,
        warnings=tuple(dict.fromkeys(warnings)),
        coverage=coverage.entries(),
        config=ConfigFacts(linux=linux_config),
    )
