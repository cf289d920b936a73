"""The fixes of ``vmaudit remediate``, planned as bytes over a read-only view of the guest.

A plan is the new content of each guest file a fix writes (``Plan.writes``), with the
change list and the targets left alone and why. Planning only reads: ``PendingFS`` shows the
plan over the guest, so the collectors can read the planned guest and ``verify_plan`` check
that each change holds as the guest's programs would read it. Every refusal is ``Refused``
with its reason. See vmaudit/act/remediate.py for where plans are written.

- ``lock-revoked``: revoked accounts (``account.revoked-*``). Linux: passwd and shadow as
  ``usermod -L -e 1`` leaves them (vmaudit/act/linux_edits.py). Windows: the SAM account's
  ``ACB_DISABLED`` set through hivex's write API, on a private copy of the hive.
- ``remove-keys``: the authorized_keys lines of revoked and locked accounts and of those in
  ``accounts.forbid_authorized_keys``, commented out with a dated note.
- ``revoke-sudo``: the entries of sudoers drop-ins (files other than /etc/sudoers) that let
  an unapproved admin run every command as root, commented out with a dated note; which
  users an entry grants is decided by the sudoers collector reading the file with that
  entry as its only user specification. An entry that also grants an approved admin is
  left, and said so.
- ``ssh-root-login``: ``/etc/ssh/sshd_config.d/00-vmaudit-remediate.conf`` setting
  ``PermitRootLogin`` to the baseline's value, or, when sshd would not read that drop-in
  first (as the sshd collector reads the planned config), the same line put first in
  sshd_config.
"""

from __future__ import annotations

import os
import posixpath
import stat
import struct
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

from vmaudit.act.fixnames import REVOKED_RULES, Fix
from vmaudit.act.linux_edits import (
    EditRefused,
    already_locked_and_expired,
    comment_keys,
    comment_spans,
    lock_and_expire,
    note,
    sshd_drop_in,
    sshd_first_line,
)
from vmaudit.collect.accounts import (
    KEYS_CAP,
    group_names,
    keys_paths,
    read_group,
    read_passwd,
)
from vmaudit.collect.sshd import collect_sshd
from vmaudit.collect.sudoers import SUDOERS_PATH, _Lexer, parse_sudoers
from vmaudit.collect.windows import find_windows
from vmaudit.collect.windows_registry import HIVE_CAP, Hive, HiveError, open_hivex
from vmaudit.collect.windows_sam import ACB_DISABLED
from vmaudit.errors import ErrorKind, GuestFileError, VmauditError
from vmaudit.guest.base import (
    DEFAULT_CAP,
    MAX_LINE,
    GuestFS,
    GuestStat,
    ModeFS,
    ModeWalk,
    OwnedStat,
    remembered,
    safe_path,
    walked_below,
)
from vmaudit.judge.rules import ROOT_LOGIN_ORDER
from vmaudit.models import Facts, Finding

LINUX_RECORD = "/var/lib/vmaudit/vmaudit-remediation.json"
WINDOWS_RECORD = "/ProgramData/vmaudit/vmaudit-remediation.json"
RECORD_SCHEMA = "vmaudit.remediation/v1"
SSHD_DROP_IN = "/etc/ssh/sshd_config.d/00-vmaudit-remediate.conf"
MAX_SUDOERS_FILES = 256  # a sudoers.d larger than this is refused, not planned over
MAX_SUDOERS_BYTES = 1024 * 1024
MAX_SUDOERS_ENTRIES = 200  # user specifications of one drop-in judged one by one


# ---------------------------------------------------------------- the plan


@dataclass(frozen=True)
class Change:
    """One change made (or, with ``--dry-run``, to be made) in the guest."""

    fix: str
    subject: str  # the account, or "sshd"
    path: str  # the guest file written
    action: str  # "edited" | "created"
    detail: str


@dataclass(frozen=True)
class Left:
    """A target a fix did not change, and why."""

    fix: str
    subject: str
    reason: str


@dataclass
class Plan:
    changes: list[Change] = field(default_factory=list)
    left: list[Left] = field(default_factory=list)
    writes: dict[str, bytes] = field(default_factory=dict)  # guest path -> new content
    folders: list[str] = field(default_factory=list)  # folders to create, parents first


class PendingFS:
    """A ``GuestFS`` showing ``writes`` over ``base``: the guest as the plan would leave it.

    Reads of the base under /etc are cached: the sudoers oracle re-reads the same few files
    once per entry, while the rest (package databases, logs) is read once and may be large.
    """

    def __init__(
        self, base: GuestFS, writes: dict[str, bytes] | None = None, folders: Sequence[str] = ()
    ) -> None:
        self.base = base
        self.writes = dict(writes or {})
        self.folders = set(folders)
        self._cache: dict[tuple[str, int], bytes | GuestFileError] = {}

    def with_writes(self, writes: dict[str, bytes], folders: Sequence[str] = ()) -> PendingFS:
        view = PendingFS(self.base, {**self.writes, **writes}, [*self.folders, *folders])
        view._cache = self._cache
        return view

    def read(self, path: str, cap: int = DEFAULT_CAP) -> bytes:
        if path in self.writes:
            data = self.writes[path]
            if len(data) > cap:
                raise GuestFileError(path, f"{len(data)} bytes, over the {cap}-byte cap")
            return data
        if not path.startswith("/etc/"):
            return self.base.read(path, cap)
        return remembered(self._cache, (path, cap), lambda: self.base.read(path, cap))

    def pread(self, path: str, offset: int, length: int) -> bytes:
        if path in self.writes:
            return self.writes[path][offset : offset + length]
        return self.base.pread(path, offset, length)

    def listdir(self, path: str) -> list[str]:
        folder = path.rstrip("/") or "/"
        extra = {
            posixpath.basename(p)
            for p in [*self.writes, *self.folders]
            if posixpath.dirname(p) == folder
        }
        if path in self.folders:
            return sorted(extra)
        return sorted(set(self.base.listdir(path)) | extra)

    def _own(self, path: str) -> GuestStat | None:
        if path in self.writes:
            return GuestStat("file", len(self.writes[path]), 0.0, stat.S_IFREG | 0o644)
        if path in self.folders:
            return GuestStat("dir", 0, 0.0, stat.S_IFDIR | 0o755)
        return None

    def _merged(self, path: str, base: GuestStat | None) -> GuestStat | None:
        """The guest's own stat of a path we wrote, with our size; ours where it had none."""
        own = self._own(path)
        if own is None:
            return base
        return own if base is None else replace(base, size=own.size)

    def stat(self, path: str) -> GuestStat | None:
        return self._merged(path, self.base.stat(path))

    def lstat(self, path: str) -> GuestStat | None:
        return self._merged(path, self.base.lstat(path))

    def readlink(self, path: str) -> str:
        return self.base.readlink(path)

    def _modes(self) -> ModeFS:
        if not isinstance(self.base, ModeFS):
            raise GuestFileError("/", "this view of the guest gives no modes or owners")
        return self.base

    def lstat_owner(self, path: str) -> OwnedStat | None:
        """An edited file keeps its inode (mode, owner); a created one is root's, as written."""
        base = self._modes().lstat_owner(path)
        own = self._own(path)
        if base is not None or own is None:
            return base
        return OwnedStat(path, own.kind, own.mode, 0, 0)

    def walk_modes(self, root: str, limit: int, only: Collection[str] | None = None) -> ModeWalk:
        """The base's walk with the files and folders the plan creates below ``root``."""
        walk = self._modes().walk_modes(root, limit, only)
        seen = {entry.path for entry in walk.entries}
        prefix = root.rstrip("/") + "/"
        created = [
            owned
            for path in sorted({*self.writes, *self.folders} - seen)
            if path.startswith(prefix)
            and walked_below(path[len(prefix) :], only)
            and (owned := self.lstat_owner(path)) is not None
        ]
        entries = (*walk.entries, *created)
        return replace(
            walk, entries=entries[:limit], truncated=walk.truncated or len(entries) > limit
        )


class Refused(VmauditError):
    """The remediation will not be made: the guest, the image or the plan is unsafe for it."""

    def __init__(self, message: str) -> None:
        super().__init__(ErrorKind.CONFIG, message)


def _refuse(message: str) -> Refused:
    return Refused(message)


def _regular(fs: GuestFS, path: str) -> bool:
    """Whether ``path`` is a regular file; a symlink there (or above it) is refused."""
    parts = [p for p in path.split("/") if p]
    current = ""
    for index, part in enumerate(parts):
        current += "/" + part
        st = fs.lstat(current)
        if st is None:
            return False
        last = index == len(parts) - 1
        if st.kind == "link":
            raise _refuse(
                f"{safe_path(current)} is a symbolic link; remediate does not write through links"
            )
        if not last and st.kind != "dir":
            raise _refuse(f"{safe_path(current)} is not a folder")
        if last and st.kind != "file":
            raise _refuse(f"{safe_path(current)} is not a regular file")
    return True


def _read(
    fs: GuestFS, plan: Plan, path: str, cap: int = DEFAULT_CAP, for_write: bool = True
) -> bytes | None:
    """The planned content of ``path``, or the guest's; None when it does not exist.

    A file to be written must be a regular file reached through no symlink; one only read
    (login.defs) is read as the guest's programs read it, links followed inside the guest.
    """
    if path in plan.writes:
        return plan.writes[path]
    if for_write and not _regular(fs, path):
        return None
    if not for_write and fs.stat(path) is None:
        return None
    try:
        return fs.read(path, cap)
    except GuestFileError as exc:
        raise _refuse(f"{safe_path(path)}: {exc.reason}") from None


def _nameable(path: str) -> bool:
    """Whether libguestfs can name the path: it passes guest names as UTF-8 only."""
    return path.isprintable() and path == path.encode("utf-8", "replace").decode()


def _days(now: datetime) -> int:
    return (now.astimezone(UTC).date() - datetime(1970, 1, 1, tzinfo=UTC).date()).days


def _subjects(findings: Sequence[Finding], rules: Sequence[str]) -> list[str]:
    seen: list[str] = []
    for finding in findings:
        if finding.rule in rules and finding.subject not in seen:
            seen.append(finding.subject)
    return seen


def called_for(facts: Facts, findings: Sequence[Finding]) -> list[Fix]:
    """The fixes some finding calls for, in ``FIXES`` order."""
    wanted: list[Fix] = []
    revoked = _subjects(findings, REVOKED_RULES)
    if revoked:
        wanted.append("lock-revoked")
    keyed = {u.name for u in facts.users if u.authorized_keys > 0}
    if facts.os.type == "linux" and (
        set(revoked) & keyed or _subjects(findings, ("ssh.authorized-key",))
    ):
        wanted.append("remove-keys")
    if facts.os.type == "linux" and any(
        any(v.startswith("sudoers:") and v != f"sudoers:{SUDOERS_PATH}" for v in u.admin_via)
        for u in facts.users
        if u.name in _subjects(findings, ("account.unapproved-admin",))
    ):
        wanted.append("revoke-sudo")
    if _subjects(findings, ("ssh.root-login",)):
        wanted.append("ssh-root-login")
    return wanted


def _plan_lock_linux(
    fs: GuestFS, facts: Facts, findings: Sequence[Finding], plan: Plan, now: datetime
) -> None:
    day = now.date().isoformat()
    targets = _subjects(findings, REVOKED_RULES)
    if not targets:
        return
    for path in ("/etc/passwd", "/etc/shadow"):
        _regular(fs, path)
    login_defs = _read(fs, plan, "/etc/login.defs", 1024 * 1024, for_write=False)
    for name in targets:
        passwd = _read(fs, plan, "/etc/passwd")
        shadow = _read(fs, plan, "/etc/shadow")
        if passwd is None:
            raise _refuse("the guest has no /etc/passwd")
        if already_locked_and_expired(shadow, name):
            plan.left.append(Left("lock-revoked", name, "already locked and expired"))
            continue
        try:
            edit = lock_and_expire(passwd, shadow, name, _days(now), login_defs)
        except EditRefused as exc:
            raise _refuse(f"cannot lock {name}: {exc}") from None
        if edit.passwd != passwd:
            plan.writes["/etc/passwd"] = edit.passwd
        plan.writes["/etc/shadow"] = edit.shadow
        detail = "password locked, account expired 1970-01-02 (usermod -L -e 1)"
        if edit.shadow_created:
            detail += "; shadow entry created, password moved from passwd"
        plan.changes.append(
            Change("lock-revoked", name, "/etc/shadow", "edited", f"{detail}, {day}")
        )


def _plan_remove_keys(
    fs: GuestFS, facts: Facts, findings: Sequence[Finding], plan: Plan, now: datetime
) -> None:
    day = now.date().isoformat()
    why: dict[str, str] = {}
    for name in _subjects(findings, REVOKED_RULES):
        why[name] = "revoked account"
    for name in _subjects(findings, ("ssh.authorized-key",)):
        why.setdefault(name, "account in forbid_authorized_keys")
    for user in facts.users:
        if user.password == "locked" and user.authorized_keys > 0:
            why.setdefault(user.name, "locked account")
    sshd = collect_sshd(fs, list(facts.packages), [])
    entries = {entry.name: entry for entry in read_passwd(fs, [])}
    for user in facts.users:
        if user.name not in why or user.authorized_keys == 0 or user.name not in entries:
            continue
        for path in keys_paths(sshd.authorized_keys_files, entries[user.name]):
            if not _nameable(path):
                plan.left.append(
                    Left(
                        "remove-keys",
                        user.name,
                        f"{safe_path(path)}: a path libguestfs cannot name",
                    )
                )
                continue
            try:
                data = _read(fs, plan, path, KEYS_CAP)
            except VmauditError as exc:
                plan.left.append(Left("remove-keys", user.name, exc.message))
                continue
            if data is None:
                continue
            new, count = comment_keys(data, day, why[user.name])
            if count:
                plan.writes[path] = new
                plan.changes.append(
                    Change(
                        "remove-keys",
                        user.name,
                        path,
                        "edited",
                        f"{count} key(s) commented out ({why[user.name]})",
                    )
                )


@dataclass(frozen=True)
class _Entry:
    first: int  # line indices, inclusive
    last: int
    grants: bool  # a user specification (may grant), not Defaults, an alias or an include


def sudoers_entries(data: bytes) -> list[_Entry]:
    """The entries of a sudoers file with their physical lines, as sudo's lexer splits them."""
    text = data.decode("utf-8", errors="surrogateescape")
    lexer = _Lexer(text)
    entries: list[_Entry] = []
    start = 0
    kinds: list[str] = []
    broken = False
    for token in lexer.tokens():
        if token.kind == "ERROR":
            broken = True
        if token.kind != "NL":
            kinds.append(token.kind)
            continue
        end = lexer.pos
        if kinds:
            first = text.count("\n", 0, start)
            last = max(first, text.count("\n", 0, max(start, end - 1)))
            user_spec = kinds[0] not in ("DEFAULTS", "ALIASKW", "INCLUDE", "INCLUDEDIR")
            entries.append(_Entry(first, last, user_spec and not broken))
        kinds, broken, start = [], False, end
    return entries


def _sudo_users(fs: GuestFS) -> list[tuple[str, int, set[str], set[int]]]:
    """(name, uid, group names, gids) of every account, as getgrouplist gives them."""
    groups = read_group(fs, [])
    names = group_names(groups)
    users = []
    for entry in read_passwd(fs, []):
        gids = {entry.gid} | {group.gid for group in groups if entry.name in group.members}
        users.append((entry.name, entry.uid, {names[g] for g in gids if g in names}, set(gids)))
    return users


def _check_sudoers_size(fs: GuestFS) -> None:
    try:
        names = fs.listdir("/etc/sudoers.d")
    except GuestFileError:
        return
    if len(names) > MAX_SUDOERS_FILES:
        raise _refuse(
            f"/etc/sudoers.d holds {len(names)} entries, over {MAX_SUDOERS_FILES}: "
            "too many to remediate safely; clean it by hand"
        )
    total = 0
    for name in names:
        st = fs.lstat(f"/etc/sudoers.d/{name}")
        total += st.size if st is not None else 0
    if total > MAX_SUDOERS_BYTES:
        raise _refuse(
            f"/etc/sudoers.d holds {total} bytes, over {MAX_SUDOERS_BYTES}: too "
            "large to remediate safely; clean it by hand"
        )


def _plan_revoke_sudo(
    fs: PendingFS, facts: Facts, findings: Sequence[Finding], plan: Plan, now: datetime
) -> None:
    day = now.date().isoformat()
    unapproved = set(_subjects(findings, ("account.unapproved-admin",)))
    admins = {u.name for u in facts.users if u.admin}
    files: list[str] = []
    for user in facts.users:
        if user.name not in unapproved:
            continue
        for via in user.admin_via:
            if via.startswith("sudoers:") and via != f"sudoers:{SUDOERS_PATH}":
                if via[8:] not in files:
                    files.append(via[8:])
            elif via.startswith("sudoers:"):
                plan.left.append(
                    Left(
                        "revoke-sudo", user.name, f"granted in {SUDOERS_PATH} itself, not a drop-in"
                    )
                )
            else:
                plan.left.append(
                    Left("revoke-sudo", user.name, f"admin through {via}, not a sudoers drop-in")
                )
    if not files:
        return
    users = _sudo_users(fs)
    for path in files:
        if not _nameable(path):
            plan.left.extend(
                Left("revoke-sudo", name, f"{safe_path(path)}: a path libguestfs cannot name")
                for name in sorted(unapproved)
            )
            continue
        data = _read(fs, plan, path, MAX_SUDOERS_BYTES)
        if data is None:
            continue
        if any(len(line) > MAX_LINE for line in data.split(b"\n")):
            raise _refuse(f"{safe_path(path)} has a line over {MAX_LINE} characters")
        entries = sudoers_entries(data)
        specs = sum(1 for entry in entries if entry.grants)
        if specs > MAX_SUDOERS_ENTRIES:  # each is judged alone by a parse of the whole tree
            raise _refuse(
                f"{safe_path(path)} holds {specs} user specifications, over "
                f"{MAX_SUDOERS_ENTRIES}: too many to revoke one by one; clean it by hand"
            )
        lines = data.split(b"\n")
        spans: list[tuple[int, int]] = []
        notes: list[str] = []
        for entry in entries:
            if not entry.grants:
                continue
            alone = list(lines)  # this entry as the file's only user specification
            for other in entries:
                if other.grants and other is not entry:
                    for index in range(other.first, other.last + 1):
                        alone[index] = b"# " + alone[index]
            view = fs.with_writes({path: b"\n".join(alone)})
            sudoers = parse_sudoers(view, [])
            granted = {
                name
                for name, uid, groups, gids in users
                if path in sudoers.admin_files(name, uid, groups, gids)
            }
            if not granted & unapproved:
                continue
            approved = sorted(granted & admins - unapproved)
            if approved:
                for name in sorted(granted & unapproved):
                    plan.left.append(
                        Left(
                            "revoke-sudo",
                            name,
                            f"the entry at {path}:"
                            f"{entry.first + 1} also grants approved admin(s) "
                            f"{', '.join(approved)}",
                        )
                    )
                continue
            who = ", ".join(sorted(granted & unapproved))
            spans.append((entry.first, entry.last))
            notes.append(note(day, f"sudo grant to {who} revoked (not an approved admin)"))
            for name in sorted(granted & unapproved):
                plan.changes.append(
                    Change(
                        "revoke-sudo",
                        name,
                        path,
                        "edited",
                        f"entry at line {entry.first + 1} commented out",
                    )
                )
        if spans:
            plan.writes[path] = comment_spans(data, spans, notes)


def _root_login_ok(fs: GuestFS, facts: Facts, allowed: str) -> bool:
    value = collect_sshd(fs, list(facts.packages), []).permit_root_login.lower()
    value = {"without-password": "prohibit-password"}.get(value, value)
    return value in ROOT_LOGIN_ORDER and ROOT_LOGIN_ORDER.index(value) <= ROOT_LOGIN_ORDER.index(
        allowed
    )


def _plan_root_login(
    fs: PendingFS, facts: Facts, findings: Sequence[Finding], plan: Plan, now: datetime
) -> None:
    day = now.date().isoformat()
    allowed = [str(f.evidence.get("allowed")) for f in findings if f.rule == "ssh.root-login"]
    allowed = [value for value in allowed if value in ROOT_LOGIN_ORDER]
    if not allowed:
        return
    value = min(allowed, key=ROOT_LOGIN_ORDER.index)
    folder = posixpath.dirname(SSHD_DROP_IN)
    st = fs.lstat(folder)
    if st is not None and st.kind == "dir" and fs.lstat(SSHD_DROP_IN) is None:
        drop_in = sshd_drop_in(day, value)
        if _root_login_ok(fs.with_writes({**plan.writes, SSHD_DROP_IN: drop_in}), facts, value):
            plan.writes[SSHD_DROP_IN] = drop_in
            plan.changes.append(
                Change(
                    "ssh-root-login", "sshd", SSHD_DROP_IN, "created", f"PermitRootLogin {value}"
                )
            )
            return
    config = _read(fs, plan, "/etc/ssh/sshd_config")
    if config is None:
        plan.left.append(Left("ssh-root-login", "sshd", "no /etc/ssh/sshd_config"))
        return
    first = sshd_first_line(config, day, value)
    if not _root_login_ok(
        fs.with_writes({**plan.writes, "/etc/ssh/sshd_config": first}), facts, value
    ):
        plan.left.append(
            Left(
                "ssh-root-login",
                "sshd",
                f"PermitRootLogin {value} first in sshd_config would not hold",
            )
        )
        return
    plan.writes["/etc/ssh/sshd_config"] = first
    plan.changes.append(
        Change(
            "ssh-root-login",
            "sshd",
            "/etc/ssh/sshd_config",
            "edited",
            f"PermitRootLogin {value} put first (sshd reads no drop-in before its own lines)",
        )
    )


def _plan_lock_windows(
    fs: GuestFS, facts: Facts, findings: Sequence[Finding], plan: Plan, now: datetime, scratch: str
) -> None:
    targets = [u for u in facts.users if u.name in _subjects(findings, REVOKED_RULES)]
    if not targets:
        return
    paths = find_windows(fs)
    if paths is None:
        raise _refuse("no Windows system root found")
    sam_path = paths.hive(fs, "SAM")
    data = _read(fs, plan, sam_path, HIVE_CAP)
    if data is None:
        raise _refuse(f"{safe_path(sam_path)} not found")
    local = os.path.join(scratch, "SAM")
    with open(local, "wb") as handle:
        handle.write(data)
    try:
        hivex = open_hivex(local, write=True)
    except (RuntimeError, ValueError) as exc:
        raise _refuse(f"{safe_path(sam_path)}: not a writable registry hive ({exc})") from None
    hive = Hive(hivex, "SAM")
    changed = False
    try:
        users = hive.key(["SAM", "Domains", "Account", "Users"])
        for user in targets:
            if user.disabled:
                plan.left.append(Left("lock-revoked", user.name, "already disabled"))
                continue
            node = hive.key([f"{user.rid or 0:08X}"], start=users) if users else None
            found = hive.raw(node, "F") if node is not None else None
            if (
                node is None
                or found is None
                or len(found[1]) < 0x3A
                or struct.unpack_from("<I", found[1], 0x30)[0] != user.rid
            ):
                raise _refuse(f"SAM: no F value of RID {user.rid} for {user.name}")
            kind, value = found
            flags = struct.unpack_from("<H", value, 0x38)[0] | ACB_DISABLED
            new = value[:0x38] + struct.pack("<H", flags) + value[0x3A:]
            hivex.node_set_value(node, {"key": "F", "t": kind, "value": new})
            changed = True
            plan.changes.append(
                Change(
                    "lock-revoked",
                    user.name,
                    sam_path,
                    "edited",
                    f"SAM account RID {user.rid} disabled (ACB_DISABLED)",
                )
            )
        if changed:
            hivex.commit(None)
    except (HiveError, RuntimeError) as exc:
        raise _refuse(f"SAM: {exc}") from None
    finally:
        hive.close()
    if changed:
        with open(local, "rb") as handle:
            plan.writes[sam_path] = handle.read()


def plan_fixes(
    fs: GuestFS,
    facts: Facts,
    findings: Sequence[Finding],
    fixes: Sequence[Fix],
    now: datetime,
    scratch: str,
) -> Plan:
    """What the fixes would write, checked against the collectors' reading of the result."""
    plan = Plan()
    view = PendingFS(fs)
    failed = facts.failed_sections()
    needs = {
        "lock-revoked": ("accounts",),
        "remove-keys": ("accounts", "ssh"),
        "revoke-sudo": ("accounts", "sudo"),
        "ssh-root-login": ("ssh",),
    }
    for fix in fixes:
        blind = [f"{s}: {failed[s]}" for s in needs[fix] if s in failed]
        if blind:
            raise _refuse(f"{fix}: the guest's {'; '.join(blind)}; nothing is planned blind")
    if facts.os.type == "windows":
        for fix in fixes:
            if fix != "lock-revoked":
                plan.left.append(Left(fix, "-", "a Linux fix; the guest runs Windows"))
        if "lock-revoked" in fixes:
            _plan_lock_windows(view, facts, findings, plan, now, scratch)
        return plan
    if "revoke-sudo" in fixes:
        _check_sudoers_size(view)
        if any("sudoers includes too deep or too many" in w for w in facts.warnings):
            raise _refuse("the guest's sudoers includes go too deep or are too many")
    if "lock-revoked" in fixes:
        _plan_lock_linux(view, facts, findings, plan, now)
    if "remove-keys" in fixes:
        _plan_remove_keys(view, facts, findings, plan, now)
    if "revoke-sudo" in fixes:
        _plan_revoke_sudo(view, facts, findings, plan, now)
    if "ssh-root-login" in fixes:
        _plan_root_login(view, facts, findings, plan, now)
    return plan


def record_path(fs: GuestFS, os_type: str) -> str:
    return WINDOWS_RECORD if os_type == "windows" else LINUX_RECORD


def missing_folders(fs: GuestFS, path: str) -> list[str]:
    """The folders above ``path`` that do not exist yet, parents first; links refused."""
    missing: list[str] = []
    current = ""
    for part in [p for p in posixpath.dirname(path).split("/") if p]:
        current += "/" + part
        if missing:
            missing.append(current)
            continue
        st = fs.lstat(current)
        if st is None:
            missing.append(current)
        elif st.kind != "dir":
            raise _refuse(
                f"{safe_path(current)} is not a folder (a link or a file); "
                "the change list cannot be written under it"
            )
    return missing


def resolve_top_nocase(fs: GuestFS, path: str) -> str:
    from vmaudit.collect.windows_registry import resolve_nocase

    parts = path.strip("/").split("/")
    top = resolve_nocase(fs, "/" + parts[0])
    return (top or "/" + parts[0]) + "/" + "/".join(parts[1:])


def verify_plan(plan: Plan, planned: Facts) -> None:
    """Each change must show in the collectors' reading of the planned guest."""
    users = {u.name: u for u in planned.users}
    for change in plan.changes:
        user = users.get(change.subject)
        if change.fix == "lock-revoked" and user is not None and user.can_login:
            raise _refuse(
                f"locking {change.subject} would not stop its logins as the guest "
                "reads its accounts (an unusual passwd or shadow line); lock it by "
                "hand"
            )
        if change.fix == "remove-keys" and user is not None and user.authorized_keys:
            raise _refuse(f"{change.subject} would keep {user.authorized_keys} key(s)")
        if (
            change.fix == "revoke-sudo"
            and user is not None
            and f"sudoers:{change.path}" in user.admin_via
        ):
            raise _refuse(f"{change.subject} would keep its grant in {change.path}")
