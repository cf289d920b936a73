"""``vmaudit remediate``: repair a dormant image offline, into a qcow2 overlay of its own.

The image is never opened writable. Each of its disks gets a qcow2 overlay made with
``qemu-img create -f qcow2 -F FORMAT -b IMAGE`` (format pinned, ``-u``: the chain is not
opened), after every link of the chain has passed ``validate_disk`` (spec/safety.md); the
appliance is given only those overlays, so the base is their read-only backing. The guest
is read as an audit reads it (facts, then the baselines' findings), and the fixes are
planned as bytes over that view (``PendingFS``): the collectors re-read the planned guest
and each fix must make its finding go. Only then, for a real run, the filesystems that
hold a planned file are mounted read-write (the others read-only), the bytes are written,
the guest is read again and must give exactly the planned facts, and the overlays of the
disks that were written are renamed into place; the others are deleted. Anything that
fails on the way deletes every overlay: a remediation that cannot complete leaves none.

Fixes (the default: those the findings call for; a selected fix acts on all its targets):

- ``lock-revoked``: revoked accounts (``account.revoked-*``). Linux: passwd and shadow as
  ``usermod -L -e 1`` leaves them (vmaudit/act/linux_edits.py). Windows: the SAM account's
  ``ACB_DISABLED`` set through hivex's write API.
- ``remove-keys``: the authorized_keys lines of revoked and locked accounts and of those in
  ``accounts.forbid_authorized_keys``, commented out with a dated note.
- ``revoke-sudo``: the entries of sudoers drop-ins (files other than /etc/sudoers) that let
  an unapproved admin run every command as root, commented out with a dated note; an entry
  that also grants an approved admin is left, and said so.
- ``ssh-root-login``: ``/etc/ssh/sshd_config.d/00-vmaudit-remediate.conf`` setting
  ``PermitRootLogin`` to the baseline's value, or, when sshd would not read that drop-in
  first, the same line put first in sshd_config.

The change list goes to stdout and into the guest as
``/var/lib/vmaudit/vmaudit-remediation.json`` (Windows: ``/ProgramData/vmaudit/``). An
edited file keeps its inode, so its mode, owner and SELinux label; a created file or folder
takes its parent folder's label, as the kernel gives one by default.
"""

from __future__ import annotations

import json
import os
import posixpath
import shutil
import stat
import struct
import subprocess
import tempfile
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, Literal

import click

from vmaudit import __version__
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
from vmaudit.baseline.loader import load_baseline
from vmaudit.baseline.model import Baseline
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
from vmaudit.discover.formats import qemu_driver
from vmaudit.discover.identity import signature
from vmaudit.discover.locks import in_use
from vmaudit.errors import ConfigError, ErrorKind, GuestFileError, VmauditError
from vmaudit.guest import accel
from vmaudit.guest.appliance import (
    QEMU_IMG_TIMEOUT,
    ApplianceFS,
    LaunchOptions,
    is_vhd_chain,
    launch,
    mount_root,
    qemu_img_info,
    validate_disk,
)
from vmaudit.guest.base import DEFAULT_CAP, MAX_LINE, GuestFS, GuestStat, safe_path
from vmaudit.guest.detect import ENCRYPTED_FS, Layout, Root, find_roots, survey
from vmaudit.judge.rules import ROOT_LOGIN_ORDER, evaluate
from vmaudit.models import DiskRef, Facts, Finding, ImageInfo, ImageRef
from vmaudit.run.audit import collect_facts, image_info
from vmaudit.text import terminal_safe

Fix = Literal["lock-revoked", "remove-keys", "revoke-sudo", "ssh-root-login"]
FIXES: tuple[Fix, ...] = ("lock-revoked", "remove-keys", "revoke-sudo", "ssh-root-login")
LINUX_RECORD = "/var/lib/vmaudit/vmaudit-remediation.json"
WINDOWS_RECORD = "/ProgramData/vmaudit/vmaudit-remediation.json"
RECORD_SCHEMA = "vmaudit.remediation/v1"
SSHD_DROP_IN = "/etc/ssh/sshd_config.d/00-vmaudit-remediate.conf"
MAX_SUDOERS_FILES = 256  # a sudoers.d larger than this is refused, not planned over
MAX_SUDOERS_BYTES = 1024 * 1024
MAX_SUDOERS_ENTRIES = 200  # user specifications of one drop-in judged one by one
REVOKED_RULES = ("account.revoked-active", "account.revoked-present")
EXIT_REFUSED = 3
SELINUX = "security.selinux"


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
        key = (path, cap)
        if key not in self._cache:
            try:
                self._cache[key] = self.base.read(path, cap)
            except GuestFileError as exc:
                self._cache[key] = exc
        found = self._cache[key]
        if isinstance(found, GuestFileError):
            raise found
        return found

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

    def stat(self, path: str) -> GuestStat | None:
        own = self._own(path)
        if own is not None:
            base = self.base.stat(path)
            return own if base is None else replace(base, size=own.size)
        return self.base.stat(path)

    def lstat(self, path: str) -> GuestStat | None:
        own = self._own(path)
        if own is not None:
            base = self.base.lstat(path)
            return own if base is None else replace(base, size=own.size)
        return self.base.lstat(path)

    def readlink(self, path: str) -> str:
        return self.base.readlink(path)


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


def _missing_folders(fs: GuestFS, path: str) -> list[str]:
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


# ---------------------------------------------------------------- the result


@dataclass(frozen=True)
class Outcome:
    image: str
    overlays: tuple[str, ...]
    dry_run: bool
    fixes: tuple[str, ...]
    changes: tuple[Change, ...]
    left: tuple[Left, ...]
    fixed: tuple[tuple[str, str], ...]  # (rule id, subject) of the findings gone
    remaining: tuple[tuple[str, str], ...]  # findings still there after the fixes
    record: str | None
    created_at: str
    warnings: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": RECORD_SCHEMA,
            "tool": f"vmaudit {__version__}",
            "created_at": self.created_at,
            "image": self.image,
            "overlays": list(self.overlays),
            "dry_run": self.dry_run,
            "fixes": list(self.fixes),
            "changes": [vars(c) for c in self.changes],
            "left": [vars(item) for item in self.left],
            "findings_fixed": [{"rule": r, "subject": s} for r, s in self.fixed],
            "findings_remaining": [{"rule": r, "subject": s} for r, s in self.remaining],
            "record": self.record,
            "warnings": list(self.warnings),
        }


def render(outcome: Outcome, fmt: str) -> str:
    if fmt == "json":
        return json.dumps(outcome.to_dict(), indent=2, ensure_ascii=False) + "\n"
    from tabulate import tabulate

    rows = [
        [c.fix, terminal_safe(c.subject), terminal_safe(c.path), c.action, terminal_safe(c.detail)]
        for c in outcome.changes
    ]
    rows += [
        [item.fix, terminal_safe(item.subject), "", "left", terminal_safe(item.reason)]
        for item in outcome.left
    ]
    lines = [
        tabulate(rows, headers=["fix", "subject", "guest file", "change", "detail"])
        if rows
        else "no change needed"
    ]
    for rule_id, subject in outcome.fixed:
        lines.append(f"fixed: {rule_id} {terminal_safe(subject)}")
    for rule_id, subject in outcome.remaining:
        lines.append(f"remaining: {rule_id} {terminal_safe(subject)}")
    if outcome.dry_run:
        lines.append("dry run: nothing was written")
    elif outcome.overlays:
        lines += [f"overlay: {terminal_safe(path)}" for path in outcome.overlays]
        lines.append(f"recorded in the guest as {outcome.record}")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- overlays


def overlay_names(output: str, disks: int) -> list[str]:
    """``output`` for the first disk, ``<stem>-disk<N><suffix>`` for disk N after it."""
    stem, suffix = os.path.splitext(os.path.abspath(output))
    return [os.path.abspath(output)] + [f"{stem}-disk{n}{suffix}" for n in range(1, disks)]


def _backing_json(disk: DiskRef, locking: bool) -> str:
    node = {
        "driver": qemu_driver(disk.format),
        "file": {
            "driver": "file",
            "filename": os.path.abspath(disk.path),
            "locking": "on" if locking else "off",
        },
    }
    return "json:" + json.dumps(node, separators=(",", ":"))


def _qemu_img(args: list[str]) -> None:
    proc = subprocess.run(
        ["qemu-img", *args],
        capture_output=True,
        timeout=QEMU_IMG_TIMEOUT,
        check=False,
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C"},
    )
    if proc.returncode != 0:
        raise VmauditError(
            ErrorKind.APPLIANCE_FAILED, proc.stderr.decode("utf-8", errors="replace").strip()[:500]
        )


def create_overlay(disk: DiskRef, size: int, path: str, locking: bool) -> None:
    """``qemu-img create -f qcow2 -F FORMAT -b IMAGE``, the chain not opened (``-u``).

    While the appliance works, the backing is written as a ``json:`` node (ours, from
    ``json.dumps``) so that ``--force`` can open an image a VM holds without qemu's locks;
    ``finish_overlay`` then names the plain absolute path.
    """
    _qemu_img(
        [
            "create",
            "-q",
            "-u",
            "-f",
            "qcow2",
            "-F",
            qemu_driver(disk.format),
            "-b",
            _backing_json(disk, locking),
            path,
            str(size),
        ]
    )


def finish_overlay(disk: DiskRef, path: str) -> None:
    """Point the overlay at the image by its plain path, format pinned; check the header."""
    base = os.path.abspath(disk.path)
    _qemu_img(
        [
            "rebase",
            "-q",
            "-U",
            "-u",
            "-f",
            "qcow2",
            "-F",
            qemu_driver(disk.format),
            "-b",
            base,
            path,
        ]
    )
    check_overlay(disk, path)


def check_overlay(disk: DiskRef, path: str) -> None:
    """The overlay names exactly the image, in its format, and no data file."""
    info = qemu_img_info(path, "qcow2")
    specific = info.get("format-specific", {}).get("data", {})
    if (
        info.get("backing-filename") != os.path.abspath(disk.path)
        or info.get("backing-filename-format") != qemu_driver(disk.format)
        or (isinstance(specific, dict) and specific.get("data-file"))
    ):
        raise VmauditError(
            ErrorKind.UNSAFE_BACKING_FILE,
            f"{path}: the overlay's header does not name {disk.path} as {disk.format}",
        )


# ---------------------------------------------------------------- the appliance


@contextmanager
def _watchdog(handle: Any, seconds: float) -> Iterator[list[bool]]:
    """Kill the appliance's qemu after ``seconds``: every later call then fails."""
    fired = [False]

    def kill() -> None:
        fired[0] = True
        with suppress(RuntimeError, ProcessLookupError, OSError):
            os.kill(int(handle.get_pid()), 9)

    timer = threading.Timer(seconds, kill)
    timer.daemon = True
    timer.start()
    try:
        yield fired
    finally:
        timer.cancel()


def _drives_of(layout: Layout, device: str) -> set[int]:
    if device.startswith("btrfsvol:"):
        rest = device[len("btrfsvol:") :]
        known = sorted((d for d in layout.drive_of if rest.startswith(d + "/")), key=len)
        device = known[-1] if known else rest
    if device in layout.lvs:
        return set(layout.vg_drives.get(layout.lvs[device], set()))
    md: dict[str, set[int]] = getattr(layout, "md_drives", {})
    if device in md:
        return set(md[device])
    return {layout.drive_of[device]} if device in layout.drive_of else set()


def _mountpoint_of(root: Root, path: str) -> tuple[str, str]:
    best = ("/", root.device)
    for mountpoint, device in root.mountpoints:
        prefix = mountpoint.rstrip("/") + "/"
        if (path == mountpoint or path.startswith(prefix)) and len(mountpoint) >= len(best[0]):
            best = (mountpoint, device)
    return best


def _remount(handle: Any, root: Root, writable: set[str]) -> None:
    with suppress(RuntimeError):
        handle.umount_all()
    for mountpoint, device in root.mountpoints:
        try:
            if device in writable:
                handle.mount_options("", device, mountpoint)
            else:
                handle.mount_ro(device, mountpoint)
        except RuntimeError as exc:
            if device in writable or mountpoint == "/":
                raise VmauditError(
                    ErrorKind.APPLIANCE_FAILED,
                    f"cannot mount {device} on {mountpoint} "
                    f"{'read-write' if device in writable else ''}: "
                    f"{str(exc).splitlines()[0] if str(exc) else ''}",
                ) from None


def _label(handle: Any, path: str) -> bytes | None:
    try:
        value = handle.lgetxattr(path, SELINUX)
    except RuntimeError:
        return None
    return bytes(value) if value else None


def _check_target(handle: Any, path: str) -> bool:
    """True when ``path`` exists as a regular file with one link; raise when it is unsafe."""
    try:
        st = handle.lstatns(path)
    except RuntimeError:
        return False
    if stat.S_ISLNK(st["st_mode"]):
        raise _refuse(f"{safe_path(path)} became a symbolic link")
    if not stat.S_ISREG(st["st_mode"]):
        raise _refuse(f"{safe_path(path)} is not a regular file")
    if st["st_nlink"] != 1:
        raise _refuse(
            f"{safe_path(path)} has {st['st_nlink']} hard links; writing it would "
            "change the others too"
        )
    return True


def apply_plan(handle: Any, plan: Plan, scratch: str, labels: bool) -> None:
    """Write the plan's files into the mounted guest: in place (same inode) when they exist."""
    for folder in plan.folders:
        handle.mkdir_mode(folder, 0o755)
        parent = _label(handle, posixpath.dirname(folder)) if labels else None
        if parent is not None:
            handle.lsetxattr(SELINUX, parent, len(parent), folder)
    for index, (path, data) in enumerate(plan.writes.items()):
        existed = _check_target(handle, path)
        local = os.path.join(scratch, f"upload{index}")
        with open(local, "wb") as out:
            out.write(data)
        handle.upload(local, path)  # O_TRUNC on the existing inode: mode, owner, label kept
        os.unlink(local)
        if not existed and labels:
            handle.chmod(0o644, path)
            handle.chown(0, 0, path)
            parent = _label(handle, posixpath.dirname(path))
            if parent is not None:
                handle.lsetxattr(SELINUX, parent, len(parent), path)


def _finding_keys(findings: Sequence[Finding]) -> set[tuple[str, str]]:
    return {(f.rule, f.subject) for f in findings}


def _comparable(facts: Facts) -> dict[str, Any]:
    data = facts.to_dict()
    data.pop("image", None)
    return data


@dataclass(frozen=True)
class Request:
    image: str
    output: str
    baselines: tuple[str, ...] = ("default",)
    fixes: tuple[Fix, ...] = ()  # empty: what the findings call for
    dry_run: bool = False
    force: bool = False
    timeout: float = 600.0


def _resolve(image: str) -> ImageRef:
    from vmaudit.discover import discover

    found = discover([image])
    if found.skipped:
        skipped = found.skipped[0]
        raise Refused(f"{skipped.path}: {skipped.kind}: {skipped.message}")
    if len(found.images) != 1:
        raise ConfigError(f"{image}: remediate needs exactly one guest, found {len(found.images)}")
    return found.images[0]


def remediate(
    request: Request, notice: Callable[[str], None] | None = None, now: datetime | None = None
) -> Outcome:
    """Plan the fixes on ``request.image`` and, unless a dry run, write them into overlays."""
    now = now or datetime.now(UTC).replace(microsecond=0)
    baselines = tuple(load_baseline(ref) for ref in request.baselines)
    ref = _resolve(request.image)
    for disk in ref.disks:
        if is_vhd_chain(disk):
            raise VmauditError(
                ErrorKind.UNSUPPORTED_FORMAT,
                f"{disk.path}: a VHD differencing disk, which qemu cannot open "
                "with its parent; merge the chain first",
            )
    warnings: list[str] = []
    live = in_use(ref)
    if live:
        if not request.force:
            raise Refused(
                f"{ref.path} is in use by a running VM: a repair of a live disk is "
                "no point-in-time repair (--force to write an overlay anyway)"
            )
        warnings.append(
            f"warning: {ref.path} is in use by a running VM: the overlay stands on a disk "
            "that is still changing (--force)"
        )
        if notice is not None:
            notice(warnings[-1])
    names = overlay_names(request.output, len(ref.disks))
    images = {os.path.realpath(p) for disk in ref.disks for p in disk.chain}
    if not request.dry_run:
        for name in names:
            if os.path.lexists(name) or os.path.realpath(name) in images:
                raise ConfigError(f"{name} exists; remediate never overwrites a file")
        if not os.path.isdir(os.path.dirname(names[0])):
            raise ConfigError(f"{os.path.dirname(names[0])}: no such folder")
    try:
        sizes = [validate_disk(disk) for disk in ref.disks]
        before = signature(ref)
        info = image_info(ref)
    except OSError as exc:
        raise Refused(f"{ref.path}: {exc.strerror or exc}") from None
    work_parent = None if request.dry_run else os.path.dirname(names[0])
    work = tempfile.mkdtemp(prefix=".vmaudit-remediate-", dir=work_parent)
    scratch = tempfile.mkdtemp(prefix="vmaudit-remediate-")
    try:
        overlays = [os.path.join(work, f"disk{i}.qcow2") for i in range(len(ref.disks))]
        for disk, size, path in zip(ref.disks, sizes, overlays, strict=True):
            create_overlay(disk, size, path, locking=not request.force)
        options = LaunchOptions()
        verdict = accel.decide()
        options = replace(options, force_tcg=not verdict.kvm)
        if notice is not None and verdict.notice() is not None:
            notice(str(verdict.notice()))
        appliance = launch(overlays, options)
        try:
            with _watchdog(appliance.handle, request.timeout) as fired:
                try:
                    result = _work(
                        appliance.handle,
                        request,
                        ref,
                        info,
                        baselines,
                        now,
                        scratch,
                        warnings,
                        names,
                    )
                except RuntimeError as exc:
                    if fired[0]:
                        raise VmauditError(
                            ErrorKind.TIMEOUT, f"remediation took over {request.timeout:.0f} s"
                        ) from None
                    raise VmauditError(
                        ErrorKind.APPLIANCE_FAILED,
                        str(exc).splitlines()[0][:300] if str(exc) else "the appliance failed",
                    ) from None
        finally:
            appliance.close()
        changed_drives, outcome = result
        # A live image (--force) changes under the overlay, as its warning says; any other
        # image that changed was not the one planned over.
        if signature(ref) != before and not live:
            raise VmauditError(ErrorKind.IMAGE_CHANGED, "the image changed while it was remediated")
        if request.dry_run or not outcome.changes:
            return replace(outcome, overlays=())
        for index, (disk, path) in enumerate(zip(ref.disks, overlays, strict=True)):
            if index in changed_drives:
                finish_overlay(disk, path)
        return replace(outcome, overlays=tuple(_publish(overlays, names, changed_drives)))
    finally:
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(scratch, ignore_errors=True)


def _work(
    handle: Any,
    request: Request,
    ref: ImageRef,
    info: ImageInfo,
    baselines: Sequence[Baseline],
    now: datetime,
    scratch: str,
    warnings: list[str],
    names: Sequence[str],
) -> tuple[set[int], Outcome]:
    """In the launched appliance: read, plan, verify the plan and, unless a dry run, write.

    Returns the drives written and the outcome."""
    layout = survey(handle)
    if any(t in ENCRYPTED_FS for d, t in layout.fs_types.items() if d in layout.drive_of):
        raise VmauditError(
            ErrorKind.ENCRYPTED,
            "the disk holds an encrypted volume: it cannot "
            "be read, so it cannot be repaired; no key is guessed",
        )
    roots = find_roots(handle, layout, {0: list(range(len(ref.disks)))}).get(0, [])
    if len(roots) > 1:
        raise Refused(
            f"{len(roots)} operating systems found; remediate repairs an image holding exactly one"
        )
    guest = mount_root(handle, roots, False)
    root = roots[0]
    fs = ApplianceFS(handle, scratch)
    facts = collect_facts(fs, info, now, list(guest.warnings))
    findings = evaluate(facts, baselines, now).findings
    fixes = list(request.fixes) or called_for(facts, findings)
    plan = plan_fixes(fs, facts, findings, fixes, now, scratch)
    record = record_path(fs, facts.os.type)
    created_at = now.strftime("%Y-%m-%dT%H:%M:%SZ")
    outcome = Outcome(
        ref.path,
        (),
        request.dry_run,
        tuple(fixes),
        tuple(plan.changes),
        tuple(plan.left),
        (),
        (),
        record if plan.changes else None,
        created_at,
        tuple(warnings),
    )
    if plan.changes:
        if facts.os.type == "windows":
            resolved = _resolve_nocase_parent(fs, record)
            record = resolved
        plan.folders = _missing_folders(fs, record)
        outcome = replace(outcome, record=record)
        plan.writes[record] = b""  # the record's size does not matter to the facts
    planned_view = PendingFS(fs, plan.writes, plan.folders)
    planned = collect_facts(planned_view, info, now, list(guest.warnings))
    after = evaluate(planned, baselines, now).findings
    outcome = replace(
        outcome,
        fixed=tuple(sorted(_finding_keys(findings) - _finding_keys(after))),
        remaining=tuple(sorted(_finding_keys(after))),
    )
    verify_plan(plan, planned)
    if not plan.changes:
        return set(), outcome
    devices = {_mountpoint_of(root, path)[1] for path in [*plan.writes, *plan.folders]}
    drives: set[int] = set()
    for device in devices:
        drives |= _drives_of(layout, device)
    if not request.dry_run:
        outcome = replace(outcome, overlays=tuple(names[d] for d in sorted(drives)))
    plan.writes[record] = (
        json.dumps(outcome.to_dict(), indent=2, ensure_ascii=False) + "\n"
    ).encode()
    if request.dry_run:
        return set(), replace(outcome, overlays=())
    _remount(handle, root, devices)
    apply_plan(handle, plan, scratch, labels=facts.os.type == "linux")
    handle.sync()
    written = collect_facts(ApplianceFS(handle, scratch), info, now, list(guest.warnings))
    if _comparable(written) != _comparable(planned):
        differ = sorted(k for k, v in _comparable(written).items() if _comparable(planned)[k] != v)
        raise VmauditError(
            ErrorKind.INTERNAL,
            f"the guest read back after the writes differs from the plan ({', '.join(differ)}); "
            "nothing is kept",
        )
    with suppress(RuntimeError):
        handle.umount_all()
    return drives, outcome


def _publish(overlays: Sequence[str], names: Sequence[str], drives: set[int]) -> list[str]:
    """Give the written overlays their names, never over an existing file; all or none."""
    done: list[str] = []
    try:
        for index in sorted(drives):
            try:
                os.link(overlays[index], names[index])  # fails if the name exists
            except FileExistsError:
                raise ConfigError(f"{names[index]} appeared meanwhile; not overwritten") from None
            except OSError:  # no hard links on this filesystem
                if os.path.lexists(names[index]):
                    raise ConfigError(f"{names[index]} exists; not overwritten") from None
                os.rename(overlays[index], names[index])
            done.append(names[index])
    except BaseException:
        for name in done:
            with suppress(OSError):
                os.unlink(name)
        raise
    return done


def _resolve_nocase_parent(fs: GuestFS, path: str) -> str:
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


# ---------------------------------------------------------------- the command


@click.command("remediate")
@click.argument("image", type=click.Path())
@click.option(
    "-o",
    "--output",
    required=True,
    type=click.Path(dir_okay=False),
    metavar="OVERLAY.qcow2",
    help="The overlay to write (disk N of a VM: OVERLAY-diskN.qcow2)",
)
@click.option(
    "-b",
    "--baseline",
    "baselines",
    multiple=True,
    metavar="NAME|FILE",
    help="Baseline whose findings the fixes answer; repeatable  [default: default]",
)
@click.option(
    "--fix",
    "fixes",
    multiple=True,
    type=click.Choice(FIXES),
    help="Fix to apply; repeatable  [default: those the findings call for]",
)
@click.option("--dry-run", is_flag=True, help="Print the changes; create nothing")
@click.option(
    "-f",
    "--format",
    "fmt",
    type=click.Choice(["table", "json"]),
    default="table",
    show_default=True,
)
@click.option("--force", is_flag=True, help="Remediate an image a running VM holds (warned)")
@click.option(
    "--timeout",
    type=click.FloatRange(min=1),
    default=600,
    show_default=True,
    help="Wall-clock seconds for the appliance",
)
def remediate_command(
    image: str,
    output: str,
    baselines: tuple[str, ...],
    fixes: tuple[Fix, ...],
    dry_run: bool,
    fmt: str,
    force: bool,
    timeout: float,
) -> None:
    """Write the fixes into a new qcow2 overlay backed by the untouched IMAGE."""
    request = Request(
        image, output, baselines or ("default",), tuple(fixes), dry_run, force, timeout
    )

    def notice(message: str) -> None:
        click.echo(f"vmaudit: {terminal_safe(message)}", err=True)

    try:
        outcome = remediate(request, notice)
    except ConfigError as exc:
        click.echo(f"vmaudit: {terminal_safe(exc.message)}", err=True)
        raise SystemExit(2) from None
    except Refused as exc:
        click.echo(
            f"vmaudit: remediate refused: {terminal_safe(exc.message)}; no overlay written",
            err=True,
        )
        raise SystemExit(EXIT_REFUSED) from None
    except VmauditError as exc:
        click.echo(
            f"vmaudit: remediate refused: {exc.kind}: {terminal_safe(exc.message)}; "
            "no overlay written",
            err=True,
        )
        raise SystemExit(EXIT_REFUSED) from None
    click.echo(render(outcome, fmt), nl=False)
