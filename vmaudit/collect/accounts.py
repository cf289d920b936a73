"""Local accounts from passwd, shadow and group, read as glibc's ``files`` backend reads them.

Each file is split on ``\\n`` only (``guest_lines``); as ``__nss_readline`` does, a line ends at
its first NUL byte, leading C blanks (`` \\t\\n\\v\\f\\r``) are skipped, and empty and ``#``
lines are comments. Fields are then walked with the macros of glibc 2.36's ``files-parse.c``:
a ``\\r`` is an ordinary character of a text field (``/bin/sh\\r`` is a shell that does not
exist), numbers are ``strtoul`` base 10 (leading blanks, ``+``/``-``, leading zeros, so
``+0`` and ``000`` are uid 0), and a line whose number is empty where one is required, has
trailing garbage, or is above 2^32-1 (``-1`` included) is rejected whole. A passwd line needs
only ``name:pw:uid:gid``; its shell is the rest of the line, colons included. Shadow numbers
are 32-bit signed (``4294967295`` is -1, "unset"); shadow has glibc's odd field counts (5 with
a max, 6 or 9). Group members keep trailing blanks. Names starting with ``+`` or ``-`` are
nss_compat (NIS) references that ``getpwnam``/``getpwuid``/``getgrgid`` never return, so they
are not accounts; their gids still count for members, as ``initgroups`` counts them.

``password``: ``set`` (a crypt hash), ``empty`` (no password at all), ``locked`` (``!`` or
``*`` prefix, or anything that is not a hash, so nothing can match it), ``none`` (``x`` in
passwd and no shadow entry: no password login). As pam_unix does, the shadow entry is used
only when the passwd field is ``x`` (or ``##name``); any other passwd field is the password.

``can_login`` is decided as PAM (pam_unix) and sshd would at ``now``:

- the shell is a login shell: not nologin/false/true/sync/shutdown/halt, and it exists in the
  guest (an empty field means ``/bin/sh``). ``/etc/shells`` is not required: neither login
  nor sshd consults it (only pam_shells, off by default, and chsh/ftpd do);
- the account is not expired, by pam_unix's own arithmetic on the shadow entry (expire day
  reached, or password expired longer ago than its inactivity period);
- and either a usable password (``set`` or ``empty``) or authorized SSH keys that sshd would
  accept: root needs PermitRootLogin other than ``no``; with UsePAM (Debian's and RHEL's
  configuration) a ``!``-locked password does not stop key logins, without it it does.

Groups are the user's gids as ``getgrouplist`` gives them (primary first, then each group
listing the user, in file order) named as ``getgrgid`` names them (the first group with that
gid), so a second group line reusing gid 27 makes its members members of ``sudo``.
"""

from __future__ import annotations

import functools
import posixpath
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, TypeVar

from vmaudit.errors import GuestFileError
from vmaudit.guest.base import (
    DEFAULT_CAP,
    GuestFS,
    guest_lines,
    is_file,
    read_text,
    safe_path,
)
from vmaudit.models import PasswordState, User

from .common import SectionFailed, day_to_date

if TYPE_CHECKING:
    from .sshd import SshdConfig
    from .sudoers import Sudoers

NON_LOGIN_SHELLS = frozenset({"nologin", "false", "true", "sync", "shutdown", "halt"})
ADMIN_GROUPS = ("sudo", "wheel", "admin")
KEYS_CAP = 4 * 1024 * 1024
HASH = re.compile(r"^(\$[0-9a-z]+\$[^:]+|[./0-9A-Za-z]{13})$")
MAX_USERS = 100_000
C_SPACE = " \t\n\v\f\r"  # isspace() in the C locale
ULONG_MAX = 2**64 - 1
UINT32_MAX = 2**32 - 1
UNSET = -1  # glibc's value of an empty shadow number


@dataclass(frozen=True)
class PasswdEntry:
    name: str
    password: str
    uid: int
    gid: int
    home: str
    shell: str


@dataclass(frozen=True)
class ShadowEntry:
    """A shadow line; numbers are glibc's ``long`` values, ``UNSET`` (-1) when empty."""

    name: str
    password: str
    last_change: int
    min_days: int
    max_days: int
    warn_days: int
    inactive: int
    expire: int


@dataclass(frozen=True)
class GroupEntry:
    name: str
    gid: int
    members: tuple[str, ...]


class _Rejected(Exception):
    """glibc's ``parse_line`` returned 0: the line is not an entry."""


def strtoul(text: str, start: int = 0) -> tuple[int | None, int]:
    """``strtoul(text + start, &end, 10)``: (value, end), (None, start) when nothing converts.

    Leading C blanks and one sign are accepted; a negative value wraps modulo 2^64 and an
    overflow gives ``ULONG_MAX``, as in C. Only ASCII digits count.
    """
    pos = start
    while pos < len(text) and text[pos] in C_SPACE:
        pos += 1
    negative = pos < len(text) and text[pos] == "-"
    if pos < len(text) and text[pos] in "+-":
        pos += 1
    end = pos
    while end < len(text) and "0" <= text[end] <= "9":
        end += 1
    if end == pos:
        return None, start
    digits = text[pos:end].lstrip("0")
    if len(digits) > 20 or (value := int(digits or "0")) > ULONG_MAX:
        return ULONG_MAX, end
    return ((-value) % 2**64 if negative else value), end


class _Fields:
    """A cursor over one line, moved as files-parse.c's field macros move theirs."""

    def __init__(self, line: str) -> None:
        self.line = line
        self.pos = 0

    def at_end(self) -> bool:
        return self.pos >= len(self.line)

    def text(self) -> str:
        """``STRING_FIELD``: up to the next colon (consumed), or the rest of the line."""
        end = self.line.find(":", self.pos)
        if end < 0:
            value, self.pos = self.line[self.pos :], len(self.line)
        else:
            value, self.pos = self.line[self.pos : end], end + 1
        return value

    def rest(self) -> str:
        value, self.pos = self.line[self.pos :], len(self.line)
        return value

    def number(self, default: int | None = None, colon_ends: bool = True) -> int:
        """``INT_FIELD`` (``default`` None) or ``INT_FIELD_MAYBE_NULL``, via ``strtou32``.

        glibc 2.36 rejects the line when the value is above 2^32-1 (so ``-1``, which wraps
        to 2^64-1, is rejected: measured with getent on the Debian 12 tree).
        """
        if default is not None and self.at_end():
            raise _Rejected  # "we expect some more input"
        value, end = strtoul(self.line, self.pos)
        if value is None:
            if default is None:
                raise _Rejected
            value = default
        elif value > UINT32_MAX:
            raise _Rejected
        if end < len(self.line) and colon_ends and self.line[end] == ":":
            end += 1
        elif end < len(self.line):
            raise _Rejected
        self.pos = end
        return value

    def skip_blanks(self) -> None:
        while self.pos < len(self.line) and self.line[self.pos] in C_SPACE:
            self.pos += 1


def _int32(value: int) -> int:
    """glibc's ``(long int) (int)`` conversion of shadow numbers."""
    return value - 2**32 if value >= 2**31 else value


def _compat(name: str) -> bool:
    """An nss_compat ``+``/``-`` reference: never returned by name or id lookups."""
    return name[:1] in ("+", "-")


E = TypeVar("E")


def _none_if_rejected(parse: Callable[[str], E]) -> Callable[[str], E | None]:
    """A line parser that returns None where glibc rejects the line (``_Rejected``)."""

    @functools.wraps(parse)
    def parse_line(line: str) -> E | None:
        try:
            return parse(line)
        except _Rejected:
            return None

    return parse_line


@_none_if_rejected
def parse_passwd_line(line: str) -> PasswdEntry:
    """One passwd line as ``_nss_files_parse_pwent``; None when glibc rejects it."""
    fields = _Fields(line)
    name = fields.text()
    if fields.at_end() and _compat(name):
        return PasswdEntry(name, "", 0, 0, "", "")
    password = fields.text()
    default = 0 if _compat(name) else None
    uid = fields.number(default)
    gid = fields.number(default)
    fields.text()  # gecos
    home = fields.text()
    return PasswdEntry(name, password, uid, gid, home, fields.rest())


@_none_if_rejected
def parse_shadow_line(line: str) -> ShadowEntry:
    """One shadow line as ``_nss_files_parse_spent``; None when glibc rejects it."""
    fields = _Fields(line)
    name = fields.text()
    if fields.at_end() and _compat(name):
        return ShadowEntry(name, "", 0, 0, 0, 0, 0, 0)
    password = fields.text()
    numbers = [_int32(fields.number(UNSET)) for _ in range(3)]
    fields.skip_blanks()
    if fields.at_end():  # the old form: no warn, inactive, expire, flag
        numbers += [UNSET] * 3
    else:
        numbers += [_int32(fields.number(UNSET)) for _ in range(3)]
        if not fields.at_end():
            fields.number(UNSET, colon_ends=False)  # the flag: nothing may follow
    last_change, min_days, max_days, warn_days, inactive, expire = numbers
    return ShadowEntry(name, password, last_change, min_days, max_days, warn_days,
                       inactive, expire)  # fmt: skip


@_none_if_rejected
def parse_group_line(line: str) -> GroupEntry:
    """One group line as ``_nss_files_parse_grent``; None when glibc rejects it."""
    fields = _Fields(line)
    name = fields.text()
    if fields.at_end() and _compat(name):
        return GroupEntry(name, 0, ())
    fields.text()  # password
    gid = fields.number(0 if _compat(name) else None)
    # parse_list: members split on commas only, leading blanks skipped, empty ones dropped.
    members = (part.lstrip(C_SPACE) for part in fields.rest().split(","))
    return GroupEntry(name, gid, tuple(member for member in members if member))


CHUNK = 1024 * 1024  # characters split at once: the lines of a huge file never all coexist


def _nss_lines(
    fs: GuestFS, path: str, warnings: list[str], missing_ok: bool, required: bool = False
) -> Iterator[str]:
    """The lines ``__nss_readline`` hands to the parser, quirks included.

    fgets keeps the newline and the C string ends at a NUL; leading blanks are skipped by a
    ``memmove`` of ``strlen`` bytes that leaves the old terminator behind, so when the string
    has no newline (a NUL in the line, or a last line without one) its last ``k`` characters
    are repeated (``\t\tab::0:0::/:/bin/s\0h`` has the shell ``/bin/s/s``: measured).
    Bytes that are not UTF-8 survive as surrogate escapes, so a shell path is the guest's.
    No line-length cap: glibc has none, and the file cap already bounds the work; lines are
    split a chunk at a time, so a file of millions of tiny lines stays small in memory.
    """
    try:
        data = fs.read(path, DEFAULT_CAP)
    except GuestFileError as exc:
        if missing_ok and exc.reason == "not found":
            return
        if required:
            # A file that is there but cannot be read (or a passwd that is not there) would
            # read as "no accounts": the section failed, its rules are not judged.
            raise SectionFailed(f"{safe_path(path)} unreadable: {exc.reason}") from None
        warnings.append(f"{safe_path(path)}: {exc.reason}")
        return
    text = data.decode("utf-8", errors="surrogateescape")
    del data
    start = 0
    while start < len(text):
        cut = text.find("\n", start + CHUNK)
        end = len(text) if cut < 0 else cut + 1
        chunk = guest_lines(text[start:end])
        last = end == len(text) and not text.endswith("\n")
        start = end
        for index, raw in enumerate(chunk):
            if not raw:
                continue
            if "\0" not in raw and not (last and index == len(chunk) - 1):
                rest = raw.lstrip(C_SPACE)  # the newline kept by fgets ends it again
                if rest and rest[0] != "#":
                    yield rest
                continue
            string = raw.split("\0", 1)[0]
            rest = string.lstrip(C_SPACE)
            if rest and rest[0] != "#":
                yield rest + string[len(rest) :] if len(rest) < len(string) else rest


def _shown(text: str) -> str:
    """A guest string for the facts: undecodable bytes as U+FFFD."""
    return text.encode("utf-8", errors="surrogateescape").decode("utf-8", errors="replace")


def _entries(
    fs: GuestFS,
    path: str,
    parse: Callable[[str], E | None],
    colons: int,
    warnings: list[str],
    missing_ok: bool = True,
    required: bool = False,
) -> list[E]:
    """The entries glibc accepts, in file order; the rejected lines are one warning.

    A line with fewer than ``colons`` colons can only be a compat reference: any other is
    rejected without parsing, which keeps a file of millions of garbage lines fast.
    """
    entries: list[E] = []
    rejected = 0
    for line in _nss_lines(fs, path, warnings, missing_ok, required):
        if line.count(":") < colons and line[0] not in ("+", "-"):
            rejected += 1
            continue
        entry = parse(line)
        if entry is None:
            rejected += 1
            continue
        entries.append(entry)
        if len(entries) >= MAX_USERS:
            warnings.append(f"{safe_path(path)}: over {MAX_USERS} entries, the rest ignored")
            break
    if rejected:
        warnings.append(f"{safe_path(path)}: {rejected} malformed line(s) skipped")
    return entries


def read_passwd(fs: GuestFS, warnings: list[str], required: bool = False) -> list[PasswdEntry]:
    """The accounts ``getpwnam`` can return: compat references out, the first of a name.

    ``required``: a passwd that cannot be read is ``SectionFailed``, not an empty list.
    """
    entries: list[PasswdEntry] = []
    seen: set[str] = set()
    for entry in _entries(
        fs, "/etc/passwd", parse_passwd_line, 3, warnings, missing_ok=False, required=required
    ):
        if _compat(entry.name) or entry.name in seen:
            continue
        seen.add(entry.name)
        entries.append(entry)
    return entries


def read_shadow(
    fs: GuestFS,
    warnings: list[str],
    required: bool = False,
) -> dict[str, ShadowEntry]:
    """Shadow entries by name as ``getspnam`` finds them (the first of a name).

    ``required``: a shadow that is there but cannot be read is ``SectionFailed``.
    """
    entries: dict[str, ShadowEntry] = {}
    for entry in _entries(fs, "/etc/shadow", parse_shadow_line, 4, warnings, required=required):
        if not _compat(entry.name):
            entries.setdefault(entry.name, entry)
    return entries


def read_group(fs: GuestFS, warnings: list[str]) -> list[GroupEntry]:
    """Every group line glibc accepts, compat references included (initgroups counts them)."""
    return _entries(fs, "/etc/group", parse_group_line, 2, warnings)


def memberships(groups: list[GroupEntry]) -> dict[str, list[int]]:
    """Member name -> the gids of the groups listing it, in file order (built once)."""
    index: dict[str, list[int]] = {}
    for group in groups:
        for member in group.members:
            index.setdefault(member, []).append(group.gid)
    return index


def user_gids(name: str, gid: int, members: dict[str, list[int]]) -> list[int]:
    """``getgrouplist(name, gid)`` over the files backend: primary first, then file order."""
    return list(dict.fromkeys([gid, *members.get(name, ())]))


def group_names(groups: list[GroupEntry]) -> dict[int, str]:
    """``getgrgid``: the first non-compat group of each gid."""
    names: dict[int, str] = {}
    for group in groups:
        if not _compat(group.name):
            names.setdefault(group.gid, group.name)
    return names


def _shadowed(entry: PasswdEntry) -> bool:
    """pam_unix's ``is_pwd_shadowed``: only then is the shadow entry consulted."""
    return entry.password == "x" or entry.password == "##" + entry.name


def password_state(passwd: PasswdEntry, shadow: ShadowEntry | None) -> PasswordState:
    """The spec's password state from the field pam_unix verifies against."""
    if _shadowed(passwd):
        if shadow is None:
            return "none"
        field = shadow.password
    else:
        field = passwd.password
    if field == "":
        return "empty"
    if field.startswith(("!", "*")) or not HASH.match(field):
        return "locked"
    return "set"


def is_expired(shadow: ShadowEntry | None, today: int) -> bool:
    """pam_unix's ``check_shadow_expiry`` refusing the account (expired, or aged + inactive)."""
    if shadow is None:
        return False
    if shadow.expire != UNSET and today >= shadow.expire:
        return True
    last, max_days, inactive = shadow.last_change, shadow.max_days, shadow.inactive
    if last == 0 or today < last or max_days == UNSET or inactive == UNSET:
        return False  # 0: a change is required at login, which still logs in
    age = today - last
    return age > max_days and age > inactive and age > max_days + inactive


def has_login_shell(fs: GuestFS, shell: str) -> bool:
    """A shell sshd and login would start: present in the guest, not a refusing one."""
    shell = shell or "/bin/sh"
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
    """Lines that are not blank or comments, as sshd's authorized_keys reader skips them.

    No line-length cap: sshd's getline has none, and a key's options can be long.
    """
    count = 0
    for path in paths:
        for line in guest_lines(read_text(fs, path, warnings, cap=KEYS_CAP) or ""):
            stripped = line.lstrip(" \t")
            if stripped.strip(C_SPACE) and not stripped.startswith("#"):
                count += 1
    return count


def _day(value: int) -> str | None:
    return None if value == UNSET else day_to_date(value)


@dataclass(frozen=True)
class _GroupIndex:
    """The guest's groups as glibc answers for them: names by gid, members, getgrnam."""

    name_of_gid: dict[int, str]
    members: dict[str, list[int]]
    gid_of_name: dict[str, int]

    @classmethod
    def of(cls, groups: list[GroupEntry]) -> _GroupIndex:
        gid_of_name: dict[str, int] = {}
        for group in groups:  # getgrnam: the first group of a name
            if not _compat(group.name):
                gid_of_name.setdefault(group.name, group.gid)
        return cls(group_names(groups), memberships(groups), gid_of_name)

    def names(self, gids: list[int]) -> list[str]:
        """Group names of ``gids`` in order, each once."""
        names: list[str] = []
        for gid in gids:
            if gid in self.name_of_gid and self.name_of_gid[gid] not in names:
                names.append(self.name_of_gid[gid])
        return names


def collect_users(
    fs: GuestFS, now: datetime, sshd: SshdConfig, sudoers: Sudoers, warnings: list[str]
) -> list[User]:
    """Every passwd account with its password, login, group and admin facts."""
    passwd = read_passwd(fs, warnings, required=True)
    shadow = read_shadow(fs, warnings)  # unreadable: its entries are "none", with a warning
    index = _GroupIndex.of(read_group(fs, warnings))
    today = (now - datetime(1970, 1, 1, tzinfo=now.tzinfo)).days
    return [_user(fs, entry, shadow, index, sshd, sudoers, today, warnings) for entry in passwd]


def _admin_via(
    entry: PasswdEntry,
    gids: list[int],
    group_names_shown: list[str],
    index: _GroupIndex,
    sudoers: Sudoers,
) -> list[str]:
    """Why the account is an admin: uid 0, an admin group, a sudoers grant."""
    admin_via = ["uid0"] if entry.uid == 0 else []
    admin_via += [
        f"group:{group}" for group in ADMIN_GROUPS
        if group in index.gid_of_name and index.gid_of_name[group] in gids
    ]  # fmt: skip
    admin_via += [
        f"sudoers:{file}"
        for file in sudoers.admin_files(
            _shown(entry.name), entry.uid, set(group_names_shown), set(gids)
        )
    ]
    return admin_via


def _can_login(
    fs: GuestFS,
    entry: PasswdEntry,
    shadow: dict[str, ShadowEntry],
    state: str,
    keys: int,
    sshd: SshdConfig,
    today: int,
) -> bool:
    """A login shell, not expired, and a password or (through sshd) a key that opens it."""
    # sshd without PAM reads the shadow entry whenever there is one (shadow_pw).
    field = shadow[entry.name].password if entry.name in shadow else entry.password
    key_login = (
        keys > 0 and sshd.installed
        and not (entry.uid == 0 and sshd.permit_root_login == "no")
        and (sshd.use_pam or not field.startswith("!"))
    )  # fmt: skip
    sp = shadow.get(entry.name) if _shadowed(entry) else None
    return (
        has_login_shell(fs, entry.shell)
        and not is_expired(sp, today)
        and (state in ("set", "empty") or key_login)
    )


def _user(
    fs: GuestFS,
    entry: PasswdEntry,
    shadow: dict[str, ShadowEntry],
    index: _GroupIndex,
    sshd: SshdConfig,
    sudoers: Sudoers,
    today: int,
    warnings: list[str],
) -> User:
    gids = user_gids(entry.name, entry.gid, index.members)
    shown_names = [_shown(name) for name in index.names(gids)]
    admin_via = _admin_via(entry, gids, shown_names, index, sudoers)
    sp = shadow.get(entry.name) if _shadowed(entry) else None
    state = password_state(entry, shadow.get(entry.name))
    # Every file some connection may consult: a Match Address block can give root's
    # logins from elsewhere other files than the reported connection's.
    files = sshd.any_keys_files or sshd.authorized_keys_files
    keys = count_keys(fs, keys_paths(files, entry), warnings)
    return User(
        name=_shown(entry.name), uid=entry.uid, gid=entry.gid,
        shell=_shown(entry.shell) or None, home=_shown(entry.home) or None, password=state,
        last_change=_day(sp.last_change) if sp else None,
        max_days=sp.max_days if sp and sp.max_days != UNSET else None,
        expires=_day(sp.expire) if sp else None,
        can_login=_can_login(fs, entry, shadow, state, keys, sshd, today),
        groups=tuple(shown_names), admin=bool(admin_via), admin_via=tuple(admin_via),
        authorized_keys=keys,
    )  # fmt: skip
