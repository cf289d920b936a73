"""Local accounts of a Windows guest from its SAM hive.

- ``SAM\\Domains\\Account`` ``V``: its last 24 bytes are the machine SID (S-1-5-21-a-b-c).
- ``SAM\\Domains\\Account\\Users\\<RID, 8 hex digits>`` ``F``: last logon FILETIME at 0x08,
  password last set at 0x18, account expiry at 0x20, RID at 0x30, ACB flags at 0x38
  (0x0001 disabled). ``V``: 17 (offset, length, unused) triples whose offsets count from
  0xCC; the user name at triple 1 (0x0C), the NT hash record at triple 14 (0xA8).
- ``Users\\Names\\<name>``: the default value's *type* is the RID (a fallback for the name).
- ``SAM\\Domains\\{Builtin,Account}\\Aliases\\<RID>`` ``C``: a 0x34-byte header (name at
  0x10/0x14, member list at 0x28/0x2C, member count at 0x30, offsets from 0x34) and the
  member SIDs back to back. Builtin alias 0x220 is Administrators.

Password state: ``empty`` when no NT hash is stored (a revision-2 AES record of 24 bytes or
less, a revision-1 record under 20 bytes, or nothing), ``set`` otherwise; the hash itself is
never decrypted. ``can_login``: not disabled and not expired.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from datetime import datetime

from vmaudit.models import PasswordState, User
from vmaudit.timeutil import iso_utc

from .windows_registry import Hive, HiveError, decode_utf16, filetime_to_datetime

ADMINISTRATORS_RID = 0x220
ACB_DISABLED = 0x0001
V_DATA = 0xCC
MAX_USERS = 100_000
MAX_MEMBERS = 100_000


@dataclass(frozen=True)
class Alias:
    rid: int
    name: str
    members: tuple[str, ...]  # SID strings


def parse_sid(data: bytes, offset: int = 0) -> tuple[str, int] | None:
    """A binary SID at ``offset`` as ``S-1-...`` and its length; None when it does not fit."""
    if offset + 8 > len(data):
        return None
    revision, count = data[offset], data[offset + 1]
    end = offset + 8 + 4 * count
    if revision != 1 or count > 15 or end > len(data):
        return None
    authority = int.from_bytes(data[offset + 2 : offset + 8], "big")
    subs = struct.unpack_from(f"<{count}I", data, offset + 8)
    return "-".join(["S", str(revision), str(authority), *map(str, subs)]), end - offset


def machine_sid(account_v: bytes | None) -> str | None:
    """The machine SID from the tail of ``Domains\\Account`` ``V``."""
    if account_v is None or len(account_v) < 24:
        return None
    parsed = parse_sid(account_v, len(account_v) - 24)
    if parsed is None or not parsed[0].startswith("S-1-5-21-"):
        return None
    return parsed[0]


def parse_alias_c(rid: int, data: bytes) -> Alias:
    """An alias's name and member SIDs from its ``C`` value; ``ValueError`` when malformed."""
    if len(data) < 0x34:
        raise ValueError(f"C value of {len(data)} bytes, under the 52-byte header")
    name_offset, name_length = struct.unpack_from("<II", data, 0x10)
    members_offset, members_length, count = struct.unpack_from("<III", data, 0x28)
    name = decode_utf16(data[0x34 + name_offset : 0x34 + name_offset + name_length])
    start = 0x34 + members_offset
    end = min(len(data), start + members_length) if members_length else len(data)
    if count > MAX_MEMBERS or start > len(data):
        raise ValueError(f"member list of {count} SIDs at {start:#x} does not fit")
    members: list[str] = []
    position = start
    for _ in range(count):
        parsed = parse_sid(data[:end], position)
        if parsed is None:
            raise ValueError(f"member SID {len(members) + 1} of {count} is malformed")
        members.append(parsed[0])
        position += parsed[1]
    return Alias(rid, name, tuple(members))


def password_state(v_value: bytes) -> PasswordState:
    """``set`` when ``V`` holds an NT hash, else ``empty``."""
    if len(v_value) < V_DATA:
        return "empty"
    offset, length = struct.unpack_from("<II", v_value, 0xA8)
    record = v_value[V_DATA + offset : V_DATA + offset + length]
    if len(record) < 4:
        return "empty"
    revision = struct.unpack_from("<H", record, 2)[0]
    if revision == 2:  # AES: PEK id, revision, data offset, 16-byte salt, then the hash
        return "set" if len(record) > 24 else "empty"
    return "set" if len(record) >= 20 else "empty"


def _aliases(hive: Hive, domain: str, warnings: list[str]) -> list[Alias]:
    node = hive.key(["SAM", "Domains", domain, "Aliases"])
    if node is None:
        return []
    found = []
    for name, child in hive.subkeys(node):
        try:
            rid = int(name, 16)
        except ValueError:
            continue  # "Members", "Names"
        c_value = hive.binary(child, "C")
        if c_value is None:
            continue
        try:
            found.append(parse_alias_c(rid, c_value))
        except ValueError as exc:
            warnings.append(f"SAM: alias {name} of {domain}: {exc}")
    return found


def _names_by_rid(hive: Hive, users_node: int) -> dict[int, str]:
    names_node = hive.key(["Names"], start=users_node)
    if names_node is None:
        return {}
    by_rid: dict[int, str] = {}
    for name, child in hive.subkeys(names_node):
        rid = hive.default_type(child)
        if rid is not None:
            by_rid[rid] = name
    return by_rid


def _is_member(alias: Alias, rid: int, machine: str | None) -> bool:
    """Whether the local account ``rid`` is a direct member of ``alias``."""
    if machine is not None:
        return f"{machine}-{rid}" in alias.members
    return any(
        member.startswith("S-1-5-21-")
        and member.count("-") == 7
        and member.rsplit("-", 1)[1] == str(rid)
        for member in alias.members
    )


def _date(moment: datetime | None) -> str | None:
    return None if moment is None else moment.date().isoformat()


def collect_sam_users(hive: Hive, now: datetime, warnings: list[str]) -> list[User]:
    """Every local account of the SAM, by RID."""
    users_node = hive.key(["SAM", "Domains", "Account", "Users"])
    if users_node is None:
        warnings.append("SAM: no SAM\\Domains\\Account\\Users key")
        return []
    account = hive.key(["SAM", "Domains", "Account"])
    machine = machine_sid(hive.binary(account, "V")) if account is not None else None
    if machine is None:
        warnings.append("SAM: machine SID not found; Administrators members matched by RID")
    aliases = _aliases(hive, "Builtin", warnings) + _aliases(hive, "Account", warnings)
    names = _names_by_rid(hive, users_node)
    users: list[User] = []
    for key_name, node in hive.subkeys(users_node)[:MAX_USERS]:
        try:
            rid = int(key_name, 16)
        except ValueError:
            continue  # "Names"
        try:
            users.append(_user(hive, node, rid, names, machine, aliases, now, warnings))
        except (HiveError, struct.error, ValueError) as exc:
            warnings.append(f"SAM: user {key_name}: {exc}")
    return sorted(users, key=lambda user: user.rid or 0)


def _user(
    hive: Hive,
    node: int,
    rid: int,
    names: dict[int, str],
    machine: str | None,
    aliases: list[Alias],
    now: datetime,
    warnings: list[str],
) -> User:
    f_value = hive.binary(node, "F") or b""
    v_value = hive.binary(node, "V") or b""
    name = None
    if len(v_value) >= V_DATA:
        offset, length = struct.unpack_from("<II", v_value, 0x0C)
        name = decode_utf16(v_value[V_DATA + offset : V_DATA + offset + length]) or None
    name = name or names.get(rid)
    if name is None:
        raise ValueError("no user name in V nor in Names")
    last_logon = password_set = expires = None
    disabled = False
    if len(f_value) >= 0x3A:
        last_logon, password_set, expires = (
            filetime_to_datetime(struct.unpack_from("<Q", f_value, at)[0])
            for at in (0x08, 0x18, 0x20)
        )
        disabled = bool(struct.unpack_from("<H", f_value, 0x38)[0] & ACB_DISABLED)
    else:
        warnings.append(f"SAM: user {name}: F value of {len(f_value)} bytes; flags unknown")
    member_of = [alias for alias in aliases if _is_member(alias, rid, machine)]
    groups = sorted({alias.name for alias in member_of})
    admin = any(alias.rid == ADMINISTRATORS_RID for alias in member_of)
    expired = expires is not None and expires <= now
    return User(
        name=name,
        uid=None,
        gid=None,
        shell=None,
        home=None,
        password=password_state(v_value),
        last_change=_date(password_set),
        max_days=None,
        expires=_date(expires),
        can_login=not disabled and not expired,
        groups=tuple(groups),
        admin=admin,
        admin_via=("group:Administrators",) if admin else (),
        authorized_keys=0,
        rid=rid,
        disabled=disabled,
        last_logon=None if last_logon is None else iso_utc(last_logon),
    )
