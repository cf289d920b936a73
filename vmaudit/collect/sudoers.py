"""Who sudoers lets run any command as root, and from which file.

Follows ``/etc/sudoers`` through ``@include``/``#include`` and ``@includedir``/``#includedir``
(a relative path resolves against the including file's directory; in a directory, names
ending in ``~`` or containing ``.`` are skipped, as sudo does). A user spec grants admin when
a command of its list is ``ALL`` (directly or through a ``Cmnd_Alias``) and it runs as root:
no runas list, or one that contains ``ALL``, ``root`` or ``#0``. Host lists are ignored: a
dormant image may boot under any name. ``User_Alias``/``Runas_Alias``/``Cmnd_Alias`` are
expanded; in a user list the last matching item wins, as in sudo, so ``ALL, !bob`` excludes
bob.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from vmaudit.guest.base import GuestFS, is_dir, list_dir, read_lines, safe_path

SUDOERS_PATH = "/etc/sudoers"
MAX_DEPTH = 128  # sudo's include depth limit
MAX_FILES = 1000
ALIAS_KINDS = ("User_Alias", "Runas_Alias", "Host_Alias", "Cmnd_Alias", "Cmd_Alias")
INCLUDE = re.compile(r'^[#@](include|includedir)\s+(?:"((?:[^"\\]|\\.)*)"|(\S+))\s*$')
TAG = re.compile(r"^!*\s*[A-Z_]+:\s*")
OPTION = re.compile(
    r"^(?:ROLE|TYPE|CWD|CHROOT|NOTBEFORE|NOTAFTER|TIMEOUT|APPARMOR_PROFILE|PRIVS|LIMITPRIVS)"
    r"=\S+\s*"
)
# The ':' that starts a new "hosts = commands" segment, not the one of a tag or "(a:b)".
SEGMENT_SPLIT = re.compile(r":(?=\s*[^\s=:(),][^=:()]*=)")


@dataclass(frozen=True)
class SudoGrant:
    """A user spec that grants every command as root."""

    users: tuple[str, ...]  # the user list as written: names, %group, #uid, %#gid, aliases, !x
    file: str  # guest path of the sudoers file holding it


@dataclass
class _State:
    # (user list, "hosts = commands" part, file) of every user spec, resolved at the end
    specs: list[tuple[tuple[str, ...], str, str]] = field(default_factory=list)
    aliases: dict[str, dict[str, list[str]]] = field(default_factory=dict)
    stack: list[str] = field(default_factory=list)
    files: int = 0


@dataclass(frozen=True)
class Sudoers:
    grants: tuple[SudoGrant, ...]
    user_aliases: dict[str, tuple[str, ...]]

    def admin_files(
        self, user: str, uid: int | None, groups: set[str], gids: set[int]
    ) -> list[str]:
        """The sudoers files that grant ``user`` every command, in reading order."""
        files: list[str] = []
        for grant in self.grants:
            matched = self._matches(list(grant.users), user, uid, groups, gids, depth=0)
            if matched and grant.file not in files:
                files.append(grant.file)
        return files

    def _matches(
        self, items: list[str], user: str, uid: int | None, groups: set[str], gids: set[int],
        depth: int,
    ) -> bool:
        if depth > 32:  # alias loops: sudo rejects them, we just stop
            return False
        for raw in reversed(items):  # the last matching item decides
            negated = len(raw) - len(raw.lstrip("!"))
            item = raw.lstrip("!").strip()
            if item == "ALL":
                hit = True
            elif item in self.user_aliases:
                hit = self._matches(
                    list(self.user_aliases[item]), user, uid, groups, gids, depth + 1
                )
            elif item.startswith("%#"):
                hit = item[2:].isdigit() and int(item[2:]) in gids
            elif item.startswith("%:") or item.startswith("+"):
                hit = False  # non-Unix groups and netgroups: not resolvable offline
            elif item.startswith("%"):
                hit = item[1:] in groups
            elif item.startswith("#"):
                hit = item[1:].isdigit() and uid is not None and int(item[1:]) == uid
            else:
                hit = item == user
            if hit:
                return negated % 2 == 0
        return False


def _split_list(text: str) -> list[str]:
    """Comma-separated items; commas escaped or inside a ``(runas, list)`` do not split."""
    items: list[str] = []
    current: list[str] = []
    depth = 0
    escaped = False
    for ch in text:
        if escaped:
            escaped = False
        elif ch == "\\":
            escaped = True
        elif ch == "(":
            depth += 1
        elif ch == ")":
            depth = max(0, depth - 1)
        elif ch == "," and depth == 0:
            items.append("".join(current).strip())
            current = []
            continue
        current.append(ch)
    items.append("".join(current).strip())
    return [item for item in items if item]


def _strip_comment(line: str) -> str:
    # '#' starts a comment except in "#123" (a uid) and "%#123" (a gid).
    match = re.search(r"#(?!\d)", line)
    return line[: match.start()] if match else line


def _logical_lines(lines: list[str]) -> list[str]:
    """Lines with backslash continuations joined."""
    joined: list[str] = []
    pending = ""
    for line in lines:
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        joined.append(pending + line)
        pending = ""
    if pending:
        joined.append(pending)
    return joined


def _runs_as_root(runas: str | None, aliases: dict[str, list[str]], depth: int = 0) -> bool:
    if runas is None:
        return True  # no runas list: root
    users = runas.split(":", 1)[0].strip()
    if not users:
        return False  # "(:group)": the invoking user with another group
    for item in reversed(_split_list(users)):
        negated = item.startswith("!")
        name = item.lstrip("!").strip()
        if name in aliases and depth < 32:
            hit = _runs_as_root(",".join(aliases[name]), aliases, depth + 1)
        else:
            hit = name in ("ALL", "root", "#0")
        if hit:
            return not negated
    return False


def _is_all(command: str, aliases: dict[str, list[str]], depth: int = 0) -> bool:
    if command == "ALL":
        return True
    if command in aliases and depth < 32:
        return any(
            not item.startswith("!") and _is_all(item, aliases, depth + 1)
            for item in aliases[command]
        )
    return False


def grants_all(commands: str, aliases: dict[str, dict[str, list[str]]]) -> bool:
    """True when a user spec's command part ("hosts = cmnds : hosts = cmnds") allows ALL as root."""
    runas_aliases = aliases.get("Runas_Alias", {})
    cmnd_aliases = {**aliases.get("Cmnd_Alias", {}), **aliases.get("Cmd_Alias", {})}
    for segment in SEGMENT_SPLIT.split(commands):
        if "=" not in segment:
            continue
        runas: str | None = None
        for item in _split_list(segment.split("=", 1)[1]):
            if item.startswith("("):
                close = item.find(")")
                if close < 0:
                    break
                runas = item[1:close]
                item = item[close + 1 :].strip()
            changed = True
            while changed:
                stripped = OPTION.sub("", TAG.sub("", item, count=1), count=1)
                changed = stripped != item
                item = stripped.strip()
            if item.startswith("!"):
                continue
            if _is_all(item, cmnd_aliases) and _runs_as_root(runas, runas_aliases):
                return True
    return False


def _include_target(argument: str, current: str) -> str:
    argument = argument.replace("\\ ", " ").replace("%%", "%")
    if argument.startswith("/"):
        return argument
    directory = current.rsplit("/", 1)[0] or "/"
    return directory.rstrip("/") + "/" + argument


def _parse_file(fs: GuestFS, path: str, state: _State, warnings: list[str], explicit: bool) -> None:
    if path in state.stack:
        warnings.append(f"{safe_path(path)}: sudoers include cycle, not read again")
        return
    if len(state.stack) >= MAX_DEPTH or state.files >= MAX_FILES:
        warnings.append(f"{safe_path(path)}: sudoers includes too deep or too many, skipped")
        return
    lines = read_lines(fs, path, warnings)
    if lines is None:
        if explicit and path != SUDOERS_PATH:
            warnings.append(f"{safe_path(path)}: included sudoers file missing")
        return
    state.files += 1
    state.stack.append(path)
    try:
        for line in _logical_lines(lines):
            stripped = line.strip()
            include = INCLUDE.match(stripped)
            if include is not None:
                target = _include_target(include.group(2) or include.group(3), path)
                if include.group(1) == "include":
                    _parse_file(fs, target, state, warnings, explicit=True)
                elif is_dir(fs, target):
                    for name in list_dir(fs, target, warnings):
                        if name.endswith("~") or "." in name:
                            continue
                        _parse_file(fs, target.rstrip("/") + "/" + name, state, warnings,
                                    explicit=False)
                continue
            _parse_entry(_strip_comment(stripped).strip(), path, state)
    finally:
        state.stack.pop()


def _parse_entry(entry: str, path: str, state: _State) -> None:
    if not entry or entry.startswith("Defaults"):
        return
    keyword = entry.split(None, 1)[0]
    if keyword in ALIAS_KINDS:
        kind = "Cmnd_Alias" if keyword == "Cmd_Alias" else keyword
        for definition in re.split(r"\s*:\s*(?=[A-Z][A-Z0-9_]*\s*=)", entry[len(keyword) :]):
            name, sep, members = definition.partition("=")
            if sep:
                state.aliases.setdefault(kind, {})[name.strip()] = _split_list(members)
        return
    match = re.match(r"^((?:[^\s,]+\s*,\s*)*[^\s,]+)\s+(.*)$", entry)
    if match is None:
        return
    state.specs.append((tuple(_split_list(match.group(1))), match.group(2), path))


def parse_sudoers(fs: GuestFS, warnings: list[str], path: str = SUDOERS_PATH) -> Sudoers:
    """The grants of every command as root found from ``path`` and its includes."""
    state = _State()
    _parse_file(fs, path, state, warnings, explicit=True)
    # Aliases are resolved once everything is read: sudo does not require definition
    # before use.
    grants = tuple(
        SudoGrant(users=users, file=file)
        for users, commands, file in state.specs
        if grants_all(commands, state.aliases)
    )
    user_aliases = {
        name: tuple(members) for name, members in state.aliases.get("User_Alias", {}).items()
    }
    return Sudoers(grants=grants, user_aliases=user_aliases)
