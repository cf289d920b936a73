"""The full ``vmaudit.facts/v1`` of a Linux guest, assembled from the per-artefact collectors.

Order matters only where facts feed each other: packages first (sshd's defaults depend on the
OpenSSH version, firewalls on installed packages), then sshd and sudoers (accounts need the
AuthorizedKeysFile and the sudo grants), then dormancy (last update from dpkg's log or rpm).
Each section is a declared ``Collector`` (collect/common.py): whether it applies, its facts,
or its failure with the reason; a failure in one costs none of the others.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

from vmaudit.guest.base import GuestFS, is_file
from vmaudit.models import (
    ConfigFacts,
    Dormancy,
    Facts,
    FirewallFacts,
    ImageInfo,
    LinuxConfig,
    OsInfo,
    Package,
    User,
)

from . import apk, dpkg, pacman, rpm
from .accounts import collect_users
from .common import Collector, CoverageLog
from .config_linux import collect_linux_config
from .dormancy import collect_dormancy, guest_timezone
from .firewall import collect_firewall
from .sshd import SshdConfig, collect_sshd
from .sudoers import Sudoers, parse_sudoers

NO_SSHD = SshdConfig(False, "prohibit-password", True, False, ())
NO_SUDOERS = Sudoers((), {})


@dataclass
class LinuxGuest:
    """One Linux guest while its facts are read: where from, and the sections read so far
    that later collectors need (sshd's defaults need the packages, accounts the sudo grants
    and the AuthorizedKeysFile, dormancy rpm's newest install)."""

    fs: GuestFS
    image: ImageInfo
    os: OsInfo
    now: datetime
    warnings: list[str]
    packages: list[Package] = field(default_factory=list)
    rpm_last_install: datetime | None = None
    sshd: SshdConfig = NO_SSHD
    sudoers: Sudoers = NO_SUDOERS


def _package_format(guest: LinuxGuest) -> str | None:
    if guest.os.package_format is None and is_file(guest.fs, dpkg.STATUS_PATH):
        return "deb"
    return guest.os.package_format


def _package_database(guest: LinuxGuest) -> str | None:
    if _package_format(guest) in ("deb", "rpm", "apk", "pacman"):
        return None
    guest.warnings.append("packages: no known package database found")
    return "no known package database"


def _packages(guest: LinuxGuest) -> tuple[list[Package], datetime | None]:
    """Installed packages and, for rpm, the newest install time."""
    fs, warnings = guest.fs, guest.warnings
    match _package_format(guest):
        case "rpm":
            db = rpm.collect_rpm(fs, warnings)
            return list(db.packages), db.last_install
        case "apk":
            return apk.collect_apk(fs, warnings), None
        case "pacman":
            return pacman.collect_pacman(fs, warnings), None
        case _:
            return dpkg.collect_dpkg(fs, warnings), None


def _dormancy(guest: LinuxGuest) -> Dormancy:
    fs, warnings = guest.fs, guest.warnings
    last_update = guest.rpm_last_install
    if guest.os.package_format in ("deb", None) or last_update is None:
        logged = dpkg.last_update(fs, guest_timezone(fs, warnings), warnings)
        if logged is not None and (last_update is None or logged > last_update):
            last_update = logged
    return collect_dormancy(fs, guest.image.mtime, guest.now, last_update, warnings)


def _no_sudoers(guest: LinuxGuest) -> str | None:
    return None if is_file(guest.fs, "/etc/sudoers") else "no /etc/sudoers"


# The sections of a Linux guest, in the order their facts feed each other.
PACKAGES: Collector[LinuxGuest, tuple[list[Package], datetime | None]] = Collector(
    "packages", _packages, ([], None), applies=_package_database
)
SSH: Collector[LinuxGuest, SshdConfig] = Collector(
    "ssh",
    lambda g: collect_sshd(g.fs, g.packages, g.warnings),
    NO_SSHD,
    absent=lambda sshd: None if sshd.installed else "no OpenSSH server installed",
)
SUDO: Collector[LinuxGuest, Sudoers] = Collector(
    "sudo", lambda g: parse_sudoers(g.fs, g.warnings), NO_SUDOERS, _no_sudoers
)
ACCOUNTS: Collector[LinuxGuest, list[User]] = Collector(
    "accounts", lambda g: collect_users(g.fs, g.now, g.sshd, g.sudoers, g.warnings), []
)
FIREWALL: Collector[LinuxGuest, FirewallFacts] = Collector(
    "firewall",
    lambda g: collect_firewall(g.fs, g.packages, g.warnings),
    FirewallFacts(False, ()),
    absent=lambda fw: None if any(b.installed for b in fw.backends) else "no firewall installed",
)
DORMANCY: Collector[LinuxGuest, Dormancy] = Collector(
    "dormancy", _dormancy, Dormancy(None, None, None, None)
)
CONFIG: Collector[LinuxGuest, LinuxConfig | None] = Collector(
    "config", lambda g: collect_linux_config(g.fs, g.packages, g.warnings), None
)


def collect_linux(
    fs: GuestFS, image: ImageInfo, os_info: OsInfo, now: datetime, warnings: list[str]
) -> Facts:
    """Everything vmaudit reads from a Linux guest; ``warnings`` gathers every problem."""
    if now.tzinfo is None:
        now = now.replace(tzinfo=UTC)
    guest = LinuxGuest(fs, image, os_info, now, warnings)
    coverage = CoverageLog()
    coverage.read("os")
    coverage.absent("hotfixes", "not a Windows guest")
    guest.packages, guest.rpm_last_install = PACKAGES.collect(guest, warnings, coverage)
    guest.sshd = SSH.collect(guest, warnings, coverage)
    guest.sudoers = SUDO.collect(guest, warnings, coverage)
    users = ACCOUNTS.collect(guest, warnings, coverage)
    firewall = FIREWALL.collect(guest, warnings, coverage)
    dormancy = DORMANCY.collect(guest, warnings, coverage)
    config = CONFIG.collect(guest, warnings, coverage)
    return Facts(
        image=image,
        os=os_info,
        packages=tuple(guest.packages),
        hotfixes=(),
        users=tuple(users),
        ssh=guest.sshd.facts(),
        firewall=firewall,
        dormancy=dormancy,
        warnings=tuple(dict.fromkeys(warnings)),
        coverage=coverage.entries(),
        config=ConfigFacts(linux=config),
    )
