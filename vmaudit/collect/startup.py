"""What starts at power-on: systemd units of the boot transaction, inetd and xinetd
services, SysV rc links, ``@reboot`` crontab entries, persistent timers and ``rc.local``.

systemd's part is ``units.boot_units`` (checked against ``systemctl --root``); the rest is
read from the files each daemon reads, with the same caps as every collector. A crontab or
an inetd.conf is only read by its daemon: when the guest's package list shows no cron (or
no inetd, no xinetd) installed, what those files name is kept as not active.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

from vmaudit.guest.base import GuestFS, join, list_dir, read_lines, safe_path
from vmaudit.models import StartupEntry

from .units import BootUnits, boot_units, chase

BOOT_TYPES = ("service", "socket", "timer", "path")
CONFIG_CAP = 1024 * 1024
MAX_ENTRIES = 1000  # crontab lines, inetd services: a real guest has a handful
RC_DIRS = ("/etc/rc2.d", "/etc/rc3.d", "/etc/rc4.d", "/etc/rc5.d")
SYSTEM_CRONTABS = ("/etc/crontab",)
USER_CRONTAB_DIRS = ("/var/spool/cron/crontabs", "/var/spool/cron")  # Debian, then Red Hat
CRON_NAME = re.compile(r"^[A-Za-z0-9_-]+$")  # run-parts' and cron's rule for cron.d names
RC_LINK = re.compile(r"^S\d\d(.+)$")
# Packages whose daemon runs @reboot crontab lines, serves inetd.conf, serves xinetd.d.
CRON_PACKAGES = ("cron", "cronie", "systemd-cron", "bcron")
INETD_PACKAGES = ("openbsd-inetd", "inetutils-inetd")
XINETD_PACKAGES = ("xinetd",)


@dataclass(frozen=True)
class Startup:
    """What the collector hands to the config section."""

    boot: BootUnits
    boot_units: tuple[str, ...]
    fragments: dict[str, str]  # unit id -> the resolved guest path of its unit file
    inetd: tuple[str, ...]
    inetd_not_active: tuple[str, ...]  # named in inetd.conf / xinetd.d, no daemon installed
    sysv: tuple[str, ...]
    entries: tuple[StartupEntry, ...]  # cron, timers, rc.local (unpackaged units: the caller)


def _missing(installed: set[str] | None, daemons: tuple[str, ...], what: str) -> str | None:
    """Why entries for ``daemons`` would not run, or None when one is installed or the
    guest's package list is unknown (then they count as active: never a false pass)."""
    if installed is None or installed & set(daemons):
        return None
    return f"no {what} installed ({', '.join(daemons)})"


def collect_startup(fs: GuestFS, warnings: list[str], installed: set[str] | None) -> Startup:
    """``installed``: the guest's package names, None when they could not be read."""
    boot = boot_units(fs, warnings)
    started = sorted(u for u in boot.started if u.rsplit(".", 1)[-1] in BOOT_TYPES)
    fragments: dict[str, str] = {}
    for unit_id in started:
        loaded = boot.unit_map.load(unit_id)
        if loaded is None:
            continue
        resolved = chase(fs, loaded.fragment)
        if resolved is not None:
            fragments[unit_id] = resolved[0]
    no_cron = _missing(installed, CRON_PACKAGES, "cron")
    entries = [
        *(replace(e, not_active=no_cron) for e in _cron_reboot(fs, warnings)),
        *_persistent_timers(fs, boot, fragments, warnings),
        *_rc_local(fs, boot),
    ]
    inetd, xinetd = _inetd(fs, warnings), _xinetd(fs, warnings)
    active: set[str] = set()
    not_active: set[str] = set()
    for names, reason in (
        (inetd, _missing(installed, INETD_PACKAGES, "inetd")),
        (xinetd, _missing(installed, XINETD_PACKAGES, "xinetd")),
    ):
        (not_active if reason else active).update(names)
    return Startup(
        boot,
        tuple(started),
        fragments,
        tuple(sorted(active))[:MAX_ENTRIES],
        tuple(sorted(not_active - active))[:MAX_ENTRIES],
        tuple(_sysv(fs, boot, warnings)),
        tuple(entries),
    )


def _cron_reboot(fs: GuestFS, warnings: list[str]) -> list[StartupEntry]:
    """``@reboot`` lines: system crontabs carry a user field, users' crontabs do not."""
    found: list[StartupEntry] = []
    system = list(SYSTEM_CRONTABS)
    system += [
        join("/etc/cron.d", name)
        for name in list_dir(fs, "/etc/cron.d", warnings)
        if CRON_NAME.match(name)
    ]
    for path in system:
        for words in _crontab_lines(fs, path, warnings):
            if words[0] == "@reboot" and len(words) >= 3:
                found.append(StartupEntry("cron-reboot", words[2], path, words[1]))
    for directory in USER_CRONTAB_DIRS:
        for name in list_dir(fs, directory, warnings):
            path = join(directory, name)
            st = fs.lstat(path)
            if st is None or st.kind != "file":
                continue  # cron reads regular files only (crontabs/ is a directory on Debian)
            for words in _crontab_lines(fs, path, warnings):
                if words[0] == "@reboot" and len(words) >= 2:
                    found.append(StartupEntry("cron-reboot", words[1], path, safe_path(name)))
    return found[:MAX_ENTRIES]


def _crontab_lines(fs: GuestFS, path: str, warnings: list[str]) -> list[list[str]]:
    """Each entry split as ``@reboot [user] command...``: first words, then the rest."""
    lines = read_lines(fs, path, warnings, cap=CONFIG_CAP) or []
    out: list[list[str]] = []
    for line in lines[: MAX_ENTRIES * 10]:
        text = line.strip()
        if not text.startswith("@reboot"):
            continue
        words = text.split(None, 2)
        if len(words) >= 2:
            out.append([words[0], *words[1:]])
    return out


def _unit_setting(lines: list[str], section: str, key: str) -> str | None:
    """The last ``key=`` of ``[section]`` (systemd: a later assignment overrides)."""
    current = ""
    value: str | None = None
    for raw in lines:
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("["):
            current = line.strip("[]")
            continue
        name, sep, rest = line.partition("=")
        if sep and current == section and name.strip() == key:
            value = rest.strip()
    return value


def _persistent_timers(
    fs: GuestFS, boot: BootUnits, fragments: dict[str, str], warnings: list[str]
) -> list[StartupEntry]:
    """Timers of the boot transaction with ``Persistent=true``: after a long sleep they
    fire at once, since their last trigger was missed (drop-ins override the file)."""
    found: list[StartupEntry] = []
    for unit_id, path in sorted(fragments.items()):
        if not unit_id.endswith(".timer"):
            continue
        value = _unit_setting(
            read_lines(fs, path, warnings, cap=CONFIG_CAP) or [], "Timer", "Persistent"
        )
        for name in boot.unit_map.names_of(unit_id):
            for directory, entry in boot.unit_map.subdir_entries(f"{name}.d"):
                if entry.endswith(".conf"):
                    lines = read_lines(fs, f"{directory}/{entry}", warnings, cap=CONFIG_CAP)
                    value = _unit_setting(lines or [], "Timer", "Persistent") or value
        if value is not None and value.lower() in ("yes", "true", "1", "on", "y", "t"):
            found.append(StartupEntry("timer-persistent", unit_id, path))
    return found


def _rc_local(fs: GuestFS, boot: BootUnits) -> list[StartupEntry]:
    """systemd's rc-local generator runs ``/etc/rc.local`` when it is executable; SysV's
    ``rc.local`` script does the same."""
    resolved = chase(fs, "/etc/rc.local")
    if resolved is None or resolved[1] is None or resolved[1].kind != "file":
        return []
    if not resolved[1].mode & 0o111:
        return []
    return [StartupEntry("rc-local", "/etc/rc.local", "/etc/rc.local")]


def _inetd(fs: GuestFS, warnings: list[str]) -> set[str]:
    """Services inetd would serve (``/etc/inetd.conf``)."""
    names: list[str] = []
    for line in read_lines(fs, "/etc/inetd.conf", warnings, cap=CONFIG_CAP) or []:
        words = line.split()
        if len(words) >= 6 and not words[0].startswith("#"):
            names.append(words[0].split(":")[-1])  # [address:]service
    return {safe_path(name) for name in names}


def _xinetd(fs: GuestFS, warnings: list[str]) -> set[str]:
    """Services xinetd would serve (``/etc/xinetd.conf``, ``/etc/xinetd.d``)."""
    names: list[str] = []
    paths = ["/etc/xinetd.conf"]
    paths += [
        join("/etc/xinetd.d", name)
        for name in list_dir(fs, "/etc/xinetd.d", warnings)
        if "." not in name and not name.endswith("~")  # xinetd skips these, as run-parts
    ]
    for path in paths:
        names += _xinetd_services(read_lines(fs, path, warnings, cap=CONFIG_CAP) or [])
    return {safe_path(name) for name in names}


def _xinetd_services(lines: list[str]) -> list[str]:
    found: list[str] = []
    service: str | None = None
    disabled = False
    for raw in lines:
        line = raw.split("#", 1)[0].strip()
        if line.startswith("service "):
            service, disabled = line.split(None, 1)[1].strip(), False
        elif line.startswith("}") and service is not None:
            if not disabled:
                found.append(service)
            service = None
        elif service is not None and "=" in line:
            key, _, value = line.partition("=")
            if key.strip() == "disable" and value.strip() == "yes":
                disabled = True
    return found


def _sysv(fs: GuestFS, boot: BootUnits, warnings: list[str]) -> list[str]:
    """``S``-links of runlevels 2 to 5 that no systemd unit stands in for."""
    names: set[str] = set()
    for directory in RC_DIRS:
        for entry in list_dir(fs, directory, warnings)[:MAX_ENTRIES]:
            match = RC_LINK.match(entry)
            if match is None:
                continue
            name = match.group(1)
            if boot.systemd and boot.unit_map.load(f"{name}.service") is not None:
                continue  # the native unit decides, not the link
            names.add(safe_path(name))
    return sorted(names)
