"""The Linux fixes as byte edits of guest files: pure functions, no appliance.

``lock_and_expire`` leaves passwd and shadow as ``usermod -L -e 1 NAME`` (shadow-utils 4.13)
leaves them, byte for byte: the files are read as its ``commonio`` reads them (a line per
``\\n``, ``+``/``-`` lines kept as text, an entry parsed by glibc's ``sgetspent`` and
shadow-utils' own ``sgetpwent`` from the start of the line, the first of a name), the user's
passwd and shadow entries are written back with glibc's ``putpwent``/``putspent`` (numbers
in their canonical form), every other line as it was, and each line ends with ``\\n``
(commonio adds a missing final newline). A user with no shadow entry gets one appended, its
password moved from passwd, aged from today with ``PASS_MIN_DAYS``, ``PASS_MAX_DAYS`` and
``PASS_WARN_AGE`` of the guest's ``login.defs``, as usermod creates it. Where usermod would
fail, or would silently drop bytes (a NUL in a line), the edit is refused.

The other edits comment lines out with a dated note, so that each one can be read and undone
by hand: sudoers entries (``# `` before every physical line of the entry: a comment ends at
its newline even after a ``\\``, and ``# `` never makes ``#include`` or a ``#uid``), and
authorized_keys lines. The sshd fix is a drop-in file, or a first line of sshd_config when
no drop-in would be read.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from vmaudit.collect.accounts import UNSET, ShadowEntry, parse_shadow_line, strtoul

EXPIRE_DAY = 1  # usermod -e 1: expired since 1970-01-02
INT_MAX = 2**31 - 1
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class EditRefused(Exception):
    """The edit cannot be made as its tool would make it; the reason says why."""


def _text(data: bytes) -> str:
    return data.decode("utf-8", errors="surrogateescape")


def _bytes(text: str) -> bytes:
    return text.encode("utf-8", errors="surrogateescape")


def _commonio_lines(data: bytes, path: str) -> list[str]:
    """The lines commonio reads: split on ``\\n``; a NUL would cut its line short."""
    if b"\0" in data:
        raise EditRefused(
            f"{path} holds a NUL byte, which usermod would drop with the rest of its line"
        )
    lines = _text(data).split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return lines


def _joined(lines: list[str]) -> bytes:
    return _bytes("".join(line + "\n" for line in lines))


@dataclass(frozen=True)
class _Pw:
    name: str
    password: str
    uid: int
    gid: int
    gecos: str
    home: str
    shell: str


def _shadow_utils_id(text: str) -> int | None:
    """shadow-utils' ``get_uid``: ``strtoll`` base 10 consuming all, within ``uid_t``."""
    match = re.fullmatch(r"[ \t\n\v\f\r]*([+-]?)([0-9]+)", text)
    if match is None:
        return None
    value = int(match.group(2)) * (-1 if match.group(1) == "-" else 1)
    return value if 0 <= value < 2**32 - 1 else None


def _sgetpwent(line: str) -> _Pw | None:
    """shadow-utils 4.13 ``sgetpwent``: exactly seven colon-separated fields."""
    fields = line.split(":")
    if len(fields) != 7 or fields[0] == "":
        return None
    uid, gid = _shadow_utils_id(fields[2]), _shadow_utils_id(fields[3])
    if uid is None or gid is None:
        return None
    return _Pw(fields[0], fields[1], uid, gid, fields[4], fields[5], fields[6])


def _nis(line: str) -> bool:
    return line[:1] in ("+", "-")


def _putpwent(entry: _Pw) -> str:
    return (
        f"{entry.name}:{entry.password}:{entry.uid}:{entry.gid}:{entry.gecos}:"
        f"{entry.home}:{entry.shell}"
    )


def _shadow_flag(line: str) -> int:
    """``sp_flag`` as glibc parses it: the ninth field's number, -1 when empty."""
    parts = line.split(":", 8)
    if len(parts) < 9:
        return UNSET
    value, _end = strtoul(parts[8])
    return UNSET if value is None else value


def _putspent(entry: ShadowEntry, flag: int) -> str:
    numbers = (
        entry.last_change,
        entry.min_days,
        entry.max_days,
        entry.warn_days,
        entry.inactive,
        entry.expire,
    )
    fields = "".join(f"{n}:" if n != UNSET else ":" for n in numbers)
    return f"{entry.name}:{entry.password}:{fields}" + (str(flag) if flag != UNSET else "")


def _locked(password: str) -> str:
    return password if password.startswith("!") else "!" + password


def login_defs_number(login_defs: bytes | None, name: str) -> int:
    """``getdef_num(name, -1)``: the last value of ``name`` read as ``strtol`` base 0."""
    if login_defs is None:
        return UNSET
    value: str | None = None
    for raw in _text(login_defs).split("\n"):
        line = raw.strip(" \t\n\r")
        if not line or line.startswith("#"):
            continue
        parts = line.split(None, 1)
        if parts[0] == name:
            value = parts[1].strip().strip('"') if len(parts) > 1 else ""
    if value is None:
        return UNSET
    match = re.fullmatch(r"([+-]?)(0[xX][0-9a-fA-F]+|0[0-7]*|[1-9][0-9]*)", value)
    if match is None:
        return UNSET
    digits = match.group(2)
    if digits[:2].lower() == "0x":
        number = int(digits, 16)
    elif digits.startswith("0"):
        number = int(digits, 8)
    else:
        number = int(digits)
    number = -number if match.group(1) == "-" else number
    return number if -1 <= number <= INT_MAX else UNSET


@dataclass(frozen=True)
class AccountEdit:
    passwd: bytes
    shadow: bytes
    shadow_created: bool  # the user had no shadow entry: one was appended


def lock_and_expire(
    passwd: bytes, shadow: bytes | None, name: str, today: int, login_defs: bytes | None
) -> AccountEdit:
    """passwd and shadow as ``usermod -L -e 1 name`` leaves them (see the module docstring).

    ``today`` is the day number (days since 1970-01-01) usermod would stamp a new entry with.
    """
    if shadow is None:
        raise EditRefused("no /etc/shadow: usermod -e needs shadow passwords")
    pw_lines = _commonio_lines(passwd, "/etc/passwd")
    sp_lines = _commonio_lines(shadow, "/etc/shadow")
    pw_found = [
        i for i, line in enumerate(pw_lines)
        if not _nis(line) and (e := _sgetpwent(line)) is not None and e.name == name
    ]  # fmt: skip
    sp_found = [
        i for i, line in enumerate(sp_lines)
        if not _nis(line) and (s := parse_shadow_line(line)) is not None and s.name == name
    ]  # fmt: skip
    if not pw_found:
        raise EditRefused(f"usermod finds no passwd entry of {name} it can parse")
    for found, path in ((pw_found, "/etc/passwd"), (sp_found, "/etc/shadow")):
        if len(found) > 1:  # commonio: "Multiple entries named ... Please fix this with pwck"
            raise EditRefused(f"{len(found)} entries named {name} in {path}; usermod refuses")
    pw_index = pw_found[0]
    sp_index = sp_found[0] if sp_found else None
    lines = [pw_lines[pw_index]] + ([sp_lines[sp_index]] if sp_index is not None else [])
    if any(_CONTROL.search(line) for line in lines):
        raise EditRefused(
            f"the entry of {name} holds a control character; usermod fails to write it back"
        )
    pw = _sgetpwent(pw_lines[pw_index])
    assert pw is not None
    if pw.password != "x":  # new_pwent: shadow present, so only a non-"x" field is locked
        pw = _Pw(pw.name, _locked(pw.password), pw.uid, pw.gid, pw.gecos, pw.home, pw.shell)
    created = sp_index is None
    if sp_index is not None:
        sp = parse_shadow_line(sp_lines[sp_index])
        assert sp is not None
        flag = _shadow_flag(sp_lines[sp_index])
        sp = ShadowEntry(
            sp.name,
            _locked(sp.password),
            sp.last_change,
            sp.min_days,
            sp.max_days,
            sp.warn_days,
            sp.inactive,
            EXPIRE_DAY,
        )
        sp_lines[sp_index] = _putspent(sp, flag)
    else:  # usermod moves the password to a new shadow entry and leaves "x" in passwd
        last_change = today if today != 0 else UNSET
        sp = ShadowEntry(
            name,
            _locked(pw.password),
            last_change,
            login_defs_number(login_defs, "PASS_MIN_DAYS"),
            login_defs_number(login_defs, "PASS_MAX_DAYS"),
            login_defs_number(login_defs, "PASS_WARN_AGE"),
            UNSET,
            EXPIRE_DAY,
        )
        pw = _Pw(pw.name, "x", pw.uid, pw.gid, pw.gecos, pw.home, pw.shell)
        # commonio puts a new entry before the first NIS line, else at the end.
        nis = next((i for i, line in enumerate(sp_lines) if _nis(line)), len(sp_lines))
        sp_lines.insert(nis, _putspent(sp, UNSET))
    pw_lines[pw_index] = _putpwent(pw)
    return AccountEdit(_joined(pw_lines), _joined(sp_lines), created)


def already_locked_and_expired(shadow: bytes | None, name: str) -> bool:
    """Whether the user's shadow entry is ``!``-locked and expired on day 1 or earlier."""
    if shadow is None or b"\0" in shadow:
        return False
    for line in _text(shadow).split("\n"):
        entry = parse_shadow_line(line) if not _nis(line) else None
        if entry is not None and entry.name == name:
            return (
                entry.password.startswith("!")
                and entry.expire != UNSET
                and 0 <= entry.expire <= EXPIRE_DAY
            )
    return False


# ---------------------------------------------------------------- commenting out


def note(day: str, what: str) -> str:
    """The dated comment line put before what a fix commented out."""
    return f"# vmaudit remediate {day}: {what}"


def comment_spans(data: bytes, spans: list[tuple[int, int]], notes: list[str]) -> bytes:
    """``data`` with each (first, last) physical line span commented out, a note above each.

    Spans are 0-based line indices, inclusive, in increasing order, not overlapping.
    """
    lines = _text(data).split("\n")
    out: list[str] = []
    position = 0
    for (first, last), text in zip(spans, notes, strict=True):
        out.extend(lines[position:first])
        out.append(text)
        out.extend("# " + line for line in lines[first : last + 1])
        position = last + 1
    out.extend(lines[position:])
    return _bytes("\n".join(out))


def key_lines(data: bytes) -> list[int]:
    """Indices of the lines sshd reads as keys: not blank, not ``#`` after blanks."""
    found = []
    for index, line in enumerate(_text(data).split("\n")):
        stripped = line.lstrip(" \t")
        if stripped.strip(" \t\n\v\f\r") and not stripped.startswith("#"):
            found.append(index)
    return found


def comment_keys(data: bytes, day: str, why: str) -> tuple[bytes, int]:
    """authorized_keys with every key line commented out under one note; (bytes, keys)."""
    indices = key_lines(data)
    if not indices:
        return data, 0
    lines = _text(data).split("\n")
    out = [note(day, f"{len(indices)} key(s) commented out: {why}")]
    keep = set(indices)
    out.extend("# " + line if index in keep else line for index, line in enumerate(lines))
    return _bytes("\n".join(out)), len(indices)


def sshd_drop_in(day: str, value: str) -> bytes:
    return _bytes(
        f"{note(day, 'root login restricted by the baseline')}\nPermitRootLogin {value}\n"
    )


def sshd_first_line(config: bytes, day: str, value: str) -> bytes:
    """sshd_config with ``PermitRootLogin value`` first: sshd keeps the first value it reads."""
    return sshd_drop_in(day, value) + config
