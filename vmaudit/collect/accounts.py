"""Local accounts from passwd, shadow and group, with their password state and admin rights.

``password``: ``set`` (a crypt hash), ``empty`` (no password at all), ``locked`` (``!`` or
``*`` prefix, or anything that is not a hash, so nothing can match it), ``none`` (no shadow
entry and ``x`` in passwd: no password login).

``can_login`` is decided as PAM (pam_unix) and sshd would at ``now``:

- the shell is a login shell: not nologin/false/true/sync/shutdown/halt, and it exists in the
  guest (an empty field means ``/bin/sh``). ``/etc/shells`` is not required: neither login
  nor sshd consults it (only pam_shells, off by default, and chsh/ftpd do);
- the account is not expired (shadow expire day reached, or password expired longer ago than
  its inactivity period), as pam_unix's account check refuses it for every login method;
- and either a usable password (``set`` or ``empty``) or authorized SSH keys that sshd would
  accept: root needs PermitRootLogin other than ``no``; with UsePAM (Debian's and RHEL's
  configuration) a ``!``-locked password does not stop key logins, without it it does.
"""

from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass
from datetime import datetime

from vmaudit.guest.base import GuestFS, is_file, read_lines, safe_path
from vmaudit.models import PasswordState, User

from .common import day_to_date
from .sshd import SshdConfig
from .sudoers import Sudoers

NON_LOGIN_SHELLS = frozenset({"nologin", "false", "true", "sync", "shutdown", "halt"})
ADMIN_GROUPS = ("sudo", "wheel", "admin")
KEYS_CAP = 4 * 1024 * 1024
HASH = re.compile(r"^(\$[0-9a-z]+\$[^:]+|[./0-9A-Za-z]{13})$")
MAX_USERS = 100_000


@dataclass(frozen=True)
class PasswdEntry:
    name: str
    password: str
    uid: int | None
    gid: int | None
    home: str
    shell: str


@dataclass(frozen=True)
class ShadowEntry:
    name: str
    password: str
    last_change: int | None
    max_days: int | None
    inactive: int | None
    expire: int | None


@dataclass(frozen=True)
class GroupEntry:
    name: str
    gid: int | None
    members: tuple[str, ...]


def _int(text: str) -> int | None:
    text = text.strip()
    if not re.fullmatch(r"-?\d{1,10}", text):
        return None
    return int(text)


def _records(fs: GuestFS, path: str, fields: int, warnings: list[str]) -> list[list[str]]:
    """Colon-separated records with at least ``fields`` fields; NIS ``+``/``-`` lines skipped."""
    lines = read_lines(fs, path, warnings, missing_ok=path != "/etc/passwd")
    records: list[list[str]] = []
    malformed = 0
    for line in lines or ():
        if not line.strip() or line.startswith("#") or line[:1] in ("+", "-"):
            continue
        parts = line.split(":")
        if len(parts) < fields or not parts[0]:
            malformed += 1
            continue
        records.append(parts)
        if len(records) >= MAX_USERS:
            warnings.append(f"{safe_path(path)}: over {MAX_USERS} entries, the rest ignored")
            break
    if malformed:
        warnings.append(f"{safe_path(path)}: {malformed} malformed line(s) skipped")
    return records


def read_passwd(fs: GuestFS, warnings: list[str]) -> list[PasswdEntry]:
    entries: list[PasswdEntry] = []
    seen: set[str] = set()
    for parts in _records(fs, "/etc/passwd", 7, warnings):
        if parts[0] in seen:
            continue  # getpwnam returns the first
        seen.add(parts[0])
        entries.append(PasswdEntry(parts[0], parts[1], _int(parts[2]), _int(parts[3]),
                                   parts[5], parts[6]))
    return entries


def read_shadow(fs: GuestFS, warnings: list[str]) -> dict[str, ShadowEntry]:
    entries: dict[str, ShadowEntry] = {}
    for parts in _records(fs, "/etc/shadow", 2, warnings):
        parts += [""] * (9 - len(parts))
        entries.setdefault(parts[0], ShadowEntry(
            name=parts[0], password=parts[1], last_change=_int(parts[2]), max_days=_int(parts[4]),
            inactive=_int(parts[6]), expire=_int(parts[7]),
        ))  # fmt: skip
    return entries


def read_group(fs: GuestFS, warnings: list[str]) -> list[GroupEntry]:
    entries: list[GroupEntry] = []
    for parts in _records(fs, "/etc/group", 4, warnings):
        members = tuple(member.strip() for member in parts[3].split(",") if member.strip())
        entries.append(GroupEntry(parts[0], _int(parts[2]), members))
    return entries


def password_state(passwd: PasswdEntry, shadow: ShadowEntry | None) -> PasswordState:
    """The spec's password state from the shadow entry (or the passwd field without one)."""
    if shadow is None:
        if passwd.password == "x":
            return "none"
        field = passwd.password
    else:
        field = shadow.password
    if field == "":
        return "empty"
    if field.startswith(("!", "*")) or not HASH.match(field):
        return "locked"
    return "set"


def is_expired(shadow: ShadowEntry | None, today: int) -> bool:
    """pam_unix's account check: expire day reached, or password expired beyond inactivity."""
    if shadow is None:
        return False
    if shadow.expire is not None and shadow.expire >= 0 and today >= shadow.expire:
        return True
    last, max_days, inactive = shadow.last_change, shadow.max_days, shadow.inactive
    return (
        last is not None and last > 0 and max_days is not None and max_days >= 0
        and inactive is not None and inactive >= 0 and today - last > max_days + inactive
    )  # fmt: skip


def has_login_shell(fs: GuestFS, shell: str) -> bool:
    shell = shell.strip() or "/bin/sh"
    if posixpath.basename(shell) in NON_LOGIN_SHELLS:
        return False
    return shell.startswith("/") and is_file(fs, shell)


def keys_paths(templates: tuple[str, ...], entry: PasswdEntry) -> list[str]:
    """AuthorizedKeysFile entries with %h/%u/%U/%% expanded, relative ones under home."""
    paths: list[str] = []
    for template in templates:
        expanded = re.sub(
            r"%([%hHuU])",
            lambda m: {"%": "%", "h": entry.home, "u": entry.name,
                       "U": str(entry.uid), "H": entry.home}[m.group(1)],
            template,
        )  # fmt: skip
        if not expanded.startswith("/"):
            expanded = entry.home.rstrip("/") + "/" + expanded
        if expanded not in paths:
            paths.append(expanded)
    return paths


def count_keys(fs: GuestFS, paths: list[str], warnings: list[str]) -> int:
    count = 0
    for path in paths:
        for line in read_lines(fs, path, warnings, cap=KEYS_CAP) or ():
            stripped = line.strip()
            if stripped and not stripped.startswith("#"):
                count += 1
    return count


def collect_users(
    fs: GuestFS, now: datetime, sshd: SshdConfig, sudoers: Sudoers, warnings: list[str]
) -> list[User]:
    """Every passwd account with its password, login, group and admin facts."""
    shadow = read_shadow(fs, warnings)
    groups = read_group(fs, warnings)
    group_by_gid: dict[int, str] = {}
    for group in groups:
        if group.gid is not None:
            group_by_gid.setdefault(group.gid, group.name)
    today = (now - datetime(1970, 1, 1, tzinfo=now.tzinfo)).days

    users: list[User] = []
    for entry in read_passwd(fs, warnings):
        names: list[str] = []
        gids: set[int] = set()
        if entry.gid is not None:
            gids.add(entry.gid)
            if entry.gid in group_by_gid:
                names.append(group_by_gid[entry.gid])
        for group in groups:
            if entry.name in group.members:
                if group.name not in names:
                    names.append(group.name)
                if group.gid is not None:
                    gids.add(group.gid)

        admin_via: list[str] = []
        if entry.uid == 0:
            admin_via.append("uid0")
        admin_via += [f"group:{name}" for name in ADMIN_GROUPS if name in names]
        admin_via += [
            f"sudoers:{file}"
            for file in sudoers.admin_files(entry.name, entry.uid, set(names), gids)
        ]

        sp = shadow.get(entry.name)
        state = password_state(entry, sp)
        keys = count_keys(fs, keys_paths(sshd.authorized_keys_files, entry), warnings)
        field = sp.password if sp is not None else entry.password
        key_login = (
            keys > 0 and sshd.installed
            and not (entry.uid == 0 and sshd.permit_root_login == "no")
            and (sshd.use_pam or not field.startswith("!"))
        )  # fmt: skip
        can_login = (
            has_login_shell(fs, entry.shell)
            and not is_expired(sp, today)
            and (state in ("set", "empty") or key_login)
        )
        users.append(User(
            name=entry.name, uid=entry.uid, gid=entry.gid, shell=entry.shell or None,
            home=entry.home or None, password=state,
            last_change=day_to_date(sp.last_change) if sp and sp.last_change is not None else None,
            max_days=sp.max_days if sp else None,
            expires=day_to_date(sp.expire) if sp and sp.expire is not None else None,
            can_login=can_login, groups=tuple(names), admin=bool(admin_via),
            admin_via=tuple(admin_via), authorized_keys=keys,
        ))  # fmt: skip
    return users
