"""Which systemd units start at boot, as systemd 252's manager computes it from the files.

The manager maps unit names to files over its search path (the first directory that has a
name wins; ``/run`` is empty at boot). A symlink whose target lies in the search path is an
alias (``sshd.service`` -> ``ssh.service``); one pointing elsewhere is a linked unit file,
opened through the link. Link targets resolve as the kernel resolves them at boot: ``..``
walks real directories, ``/dev`` is the devtmpfs with ``null`` in it, and a ``..`` after a
missing component makes the entry unusable, so systemd skips it and a lower directory's file
is used. A unit whose file opens to ``/dev/null`` or to an empty file is masked: it never
starts, and nothing it would pull in does. A missing or unreadable file does not start.

Boot starts ``default.target`` (``rescue.target`` if that cannot load, then
``emergency.target``) and pulls in, recursively, every unit named by ``Wants=``,
``Requires=``, ``BindsTo=`` and ``Upholds=`` in a loaded unit's file and its drop-ins, and by
the symlinks of its ``.wants/``, ``.requires/`` and ``.upholds/`` directories, for each of its
names. A ``.wants`` symlink counts by its own name even when its target is missing (systemd
ignores the target), and not when it is a regular file or points to ``/dev/null``. Services
with default dependencies also require ``sysinit.target``. A unit wanted only by a target
that nothing reachable pulls in (``systemctl enable`` into a custom target) does not start.

Not modelled: the kernel command line (``systemd.unit=``), generators (sysv init scripts
without a native unit, fstab, getty), implicit dependencies (the slices of template
instances), conditions (a unit pulled in whose ``Condition*=`` fails still counts as
started), a ``Requires=`` on a missing unit failing the whole boot transaction, specifiers in
dependency lists, and socket, timer, path and D-Bus activation after boot. On a Debian 12
host, the only units systemd's own boot transaction adds to these are generated ones and
slices.
"""

from __future__ import annotations

import re
from collections import deque
from dataclasses import dataclass

from vmaudit.errors import GuestFileError
from vmaudit.guest.base import GuestFS, GuestStat, list_dir, read_lines, remembered

# Debian's systemd 252 search path (``systemd-analyze unit-paths``); /run is empty at boot.
SEARCH_PATH = (
    "/etc/systemd/system.control",
    "/run/systemd/system.control",
    "/run/systemd/transient",
    "/run/systemd/generator.early",
    "/etc/systemd/system",
    "/etc/systemd/system.attached",
    "/run/systemd/system",
    "/run/systemd/system.attached",
    "/run/systemd/generator",
    "/usr/local/lib/systemd/system",
    "/lib/systemd/system",
    "/usr/lib/systemd/system",
    "/run/systemd/generator.late",
)
BOOT_TARGETS = ("default.target", "rescue.target", "emergency.target")
DEPENDENCY_KEYS = ("Wants", "Requires", "BindsTo", "Upholds")
DEPENDENCY_DIRS = (".wants", ".requires", ".upholds")
UNIT_TYPES = ("service", "socket", "target", "device", "mount", "automount", "swap", "timer",
              "path", "slice", "scope")  # fmt: skip
UNIT_NAME = re.compile(
    r"[A-Za-z0-9:_.\\-]+(?:@[A-Za-z0-9:_.\\-]*)?\.(?:" + "|".join(UNIT_TYPES) + ")"
)
MAX_LINKS = 40  # the kernel's symlink limit
MAX_ALIAS_HOPS = 8  # systemd's FOLLOW_MAX: name look-ups along an alias chain
MAX_UNITS = 10_000
MAX_DIR_ENTRIES = 10_000
UNIT_CAP = 1024 * 1024
FALSE_WORDS = ("no", "false", "0", "off", "n", "f")

DEV_NULL = GuestStat(kind="other", size=0, mtime=0.0, mode=0o20666)
BOOT_DIR = GuestStat(kind="dir", size=0, mtime=0.0, mode=0o40755)


def valid_unit_name(name: str) -> bool:
    return len(name) <= 255 and UNIT_NAME.fullmatch(name) is not None


def _boot_lstat(fs: GuestFS, path: str) -> GuestStat | None:
    """The guest's file at ``path`` as it is at boot: /dev and /run are fresh file systems."""
    if path in ("/dev", "/run"):
        return BOOT_DIR
    if path == "/dev/null":
        return DEV_NULL
    if path.startswith(("/dev/", "/run/", "/proc/", "/sys/")):
        return None
    return fs.lstat(path)


def chase(fs: GuestFS, path: str, follow_last: bool = True) -> tuple[str, GuestStat | None] | None:
    """``path`` with its symlinks resolved inside the guest as the kernel would at boot.

    Returns the resolved path and its stat (None when it does not exist), or None when the
    path cannot resolve at all: a symlink loop, or ``..`` after a missing component.
    """
    todo = deque(part for part in path.split("/") if part)
    resolved = ""
    links = 0
    missing = False
    st: GuestStat | None = BOOT_DIR
    while todo:
        part = todo.popleft()
        if part == ".":
            continue
        if part == "..":
            if missing:
                return None
            resolved = resolved.rsplit("/", 1)[0]
            st = BOOT_DIR
            continue
        candidate = f"{resolved}/{part}"
        if missing:
            resolved = candidate
            continue
        st = _boot_lstat(fs, candidate)
        if st is None:
            missing = True
            resolved = candidate
            continue
        if st.kind == "link" and (todo or follow_last):
            links += 1
            if links > MAX_LINKS:
                return None
            try:
                target = fs.readlink(candidate)
            except GuestFileError:
                return None
            if target.startswith("/"):
                resolved = ""
            todo.extendleft(reversed([p for p in target.split("/") if p]))
            continue
        if st.kind != "dir" and todo:
            return None  # a file used as a directory: ENOTDIR
        resolved = candidate
    return (resolved or "/"), (None if missing else st)


def _in_search_path(path: str) -> bool:
    """Whether ``path`` (already resolved) names a file directly in a search-path directory."""
    directory, _, name = path.rpartition("/")
    return directory in SEARCH_PATH and bool(name)


def _unit_type(name: str) -> str:
    return name.rsplit(".", 1)[-1]


def _template_of(name: str) -> str | None:
    stem, _, suffix = name.rpartition(".")
    if "@" not in stem:
        return None
    prefix, _, instance = stem.partition("@")
    return f"{prefix}@.{suffix}" if instance else None


def _alias_valid(name: str, target: str) -> bool:
    """systemd's unit_validate_alias_symlink: same type, and template-ness preserved."""
    if _unit_type(name) != _unit_type(target):
        return False
    name_stem, target_stem = name.rsplit(".", 1)[0], target.rsplit(".", 1)[0]
    if ("@" in name_stem) != ("@" in target_stem):
        return False
    if "@" in name_stem:
        name_instance = name_stem.partition("@")[2]
        target_instance = target_stem.partition("@")[2]
        if bool(name_instance) != bool(target_instance):
            return False
        if name_instance and name_instance != target_instance:
            return False
    return True


@dataclass(frozen=True)
class _Loaded:
    unit_id: str
    fragment: str  # guest path opened at boot
    masked: bool


class UnitMap:
    """Unit names to files, over the search path, as the manager builds it at boot."""

    def __init__(self, fs: GuestFS, warnings: list[str]) -> None:
        self.fs = fs
        self.warnings = warnings
        # name -> a fragment path (starts with "/") or an alias target name
        self.entries: dict[str, str] = {}
        self.listing: dict[str, set[str]] = {}  # search directory -> its names
        self._loaded: dict[str, _Loaded | None] = {}
        self._aliases: dict[str, list[str]] | None = None
        for directory in SEARCH_PATH:
            if directory.startswith("/run/"):
                continue
            names = list_dir(fs, directory, warnings)[:MAX_DIR_ENTRIES]
            if names:
                self.listing[directory] = set(names)
            for name in names:
                if name in self.entries or not valid_unit_name(name):
                    continue
                value = self._entry(directory, name)
                if value is not None:
                    self.entries[name] = value

    def _entry(self, directory: str, name: str) -> str | None:
        path = f"{directory}/{name}"
        st = self.fs.lstat(path)
        if st is None:
            return None
        if st.kind == "file":
            return path
        if st.kind != "link":
            return None
        try:
            target = self.fs.readlink(path)
        except GuestFileError:
            return None
        absolute = target if target.startswith("/") else f"{directory}/{target}"
        simplified = chase(self.fs, absolute, follow_last=False)
        if simplified is None:
            return None  # systemd: "Failed to resolve symlink", the entry is ignored
        target_path = simplified[0]
        if not _in_search_path(target_path):
            return path  # a linked unit file (or a mask): opened through the link
        target_name = target_path.rsplit("/", 1)[1]
        if target_name == name:
            return path
        if not valid_unit_name(target_name) or not _alias_valid(name, target_name):
            return None
        return target_name

    def load(self, name: str) -> _Loaded | None:
        """The unit a name loads as, or None when it has no usable file."""
        if name not in self._loaded:
            self._loaded[name] = self._load(name)
        return self._loaded[name]

    def _load(self, name: str) -> _Loaded | None:
        current = name
        seen: set[str] = set()
        for _ in range(MAX_ALIAS_HOPS):
            value = self.entries.get(current)
            if value is None:
                template = _template_of(current)
                value = self.entries.get(template) if template else None
                if value is not None and not value.startswith("/"):
                    # an aliased template: the instance follows the alias
                    instance = current.rsplit(".", 1)[0].partition("@")[2]
                    stem, _, suffix = value.rpartition(".")
                    value = f"{stem.rstrip('@')}@{instance}.{suffix}"
                    if value in seen:
                        return None
            if value is None:
                return None
            if value.startswith("/"):
                return self._open(current, value)
            if value in seen:
                return None  # alias loop
            seen.add(current)
            current = value
        return None

    def _open(self, unit_id: str, fragment: str) -> _Loaded | None:
        opened = chase(self.fs, fragment, follow_last=True)
        if opened is None or opened[1] is None:
            return None  # "Failed to open": the unit does not load
        if _null_or_empty(self.fs, fragment):
            return _Loaded(unit_id, fragment, masked=True)
        if opened[1].kind != "file":
            return None
        return _Loaded(unit_id, fragment, masked=False)

    def names_of(self, unit_id: str) -> list[str]:
        """Every name that loads as ``unit_id`` (its aliases), the id first."""
        if self._aliases is None:
            self._aliases = {}
            for name, value in self.entries.items():
                if not value.startswith("/"):
                    loaded = self.load(name)
                    if loaded is not None:
                        self._aliases.setdefault(loaded.unit_id, []).append(name)
        return [unit_id, *self._aliases.get(unit_id, [])]

    def subdir_entries(self, name: str) -> list[tuple[str, str]]:
        """(directory path, entry) of ``name`` (a ``.wants``/``.d`` directory) in every
        search directory that lists it, highest priority first."""
        found: list[tuple[str, str]] = []
        for directory, names in self.listing.items():
            if name in names:
                path = f"{directory}/{name}"
                found += [
                    (path, entry)
                    for entry in list_dir(self.fs, path, self.warnings)[:MAX_DIR_ENTRIES]
                ]
        return found


def _unit_file_dependencies(
    fs: GuestFS, paths: list[str], warnings: list[str]
) -> tuple[list[str], bool]:
    """Names in ``Wants=``/``Requires=``/... of the [Unit] sections of these files, and
    whether ``DefaultDependencies=`` stays on (the last setting wins)."""
    found: list[str] = []
    default_dependencies = True
    for path in paths:
        lines = read_lines(fs, path, warnings, cap=UNIT_CAP) or []
        section = ""
        pending = ""
        for raw in lines:
            line = (pending + raw).strip(" \t\r")
            pending = ""
            if line.endswith("\\"):
                pending = line[:-1] + " "
                continue
            if not line or line[0] in "#;":
                continue
            if line.startswith("["):
                section = line.strip("[]")
                continue
            if section != "Unit" or "=" not in line:
                continue
            key, _, value = line.partition("=")
            key = key.strip()
            if key in DEPENDENCY_KEYS:
                found += [word for word in value.split() if "%" not in word]
            elif key == "DefaultDependencies":
                default_dependencies = value.strip().lower() not in FALSE_WORDS
    return found, default_dependencies


def _dropin_files(unit_map: UnitMap, names: list[str]) -> list[str]:
    """``NAME.d/*.conf`` of every name: one file per file name, the highest directory's."""
    chosen: dict[str, str] = {}
    for name in names:
        for path, entry in unit_map.subdir_entries(f"{name}.d"):
            if entry.endswith(".conf") and entry not in chosen:
                chosen[entry] = f"{path}/{entry}"
    return [chosen[key] for key in sorted(chosen)]


@dataclass(frozen=True)
class BootUnits:
    """What systemd would start at the next boot."""

    systemd: bool  # a boot target loads: the guest's systemd decides what starts
    default_target: str | None  # the unit default.target loads as
    started: frozenset[str]  # unit ids of the boot transaction
    unit_map: UnitMap

    def state(self, name: str) -> str:
        """``masked``, ``not-found``, ``started`` or ``not-started`` for a unit name."""
        loaded = self.unit_map.load(name)
        if loaded is None:
            return "not-found"
        if loaded.masked:
            return "masked"
        return "started" if loaded.unit_id in self.started else "not-started"


class _CachedFS:
    """The guest's files with lstat and readlink remembered: resolving every link walks the
    same directories again, and on an appliance each look-up is a round trip."""

    def __init__(self, fs: GuestFS) -> None:
        self.fs = fs
        self._lstat: dict[str, GuestStat | None] = {}
        self._links: dict[str, str | GuestFileError] = {}

    def read(self, path: str, cap: int = UNIT_CAP) -> bytes:
        return self.fs.read(path, cap)

    def listdir(self, path: str) -> list[str]:
        return self.fs.listdir(path)

    def pread(self, path: str, offset: int, length: int) -> bytes:
        return self.fs.pread(path, offset, length)

    def stat(self, path: str) -> GuestStat | None:
        return self.fs.stat(path)

    def lstat(self, path: str) -> GuestStat | None:
        if path not in self._lstat:
            self._lstat[path] = self.fs.lstat(path)
        return self._lstat[path]

    def readlink(self, path: str) -> str:
        return remembered(self._links, path, lambda: self.fs.readlink(path))


def boot_units(fs: GuestFS, warnings: list[str]) -> BootUnits:
    """The boot transaction: units pulled in from the boot target."""
    fs = _CachedFS(fs)
    unit_map = UnitMap(fs, warnings)
    default: str | None = None
    start: _Loaded | None = None
    for target in BOOT_TARGETS:
        loaded = unit_map.load(target)
        if loaded is not None and not loaded.masked:
            start = loaded
            default = loaded.unit_id
            break
    started: set[str] = set()
    if start is not None:
        queue = deque([start.unit_id])
        while queue and len(started) < MAX_UNITS:
            loaded = unit_map.load(queue.popleft())
            if loaded is None or loaded.masked or loaded.unit_id in started:
                continue
            started.add(loaded.unit_id)
            queue.extend(_dependencies(fs, unit_map, loaded, warnings))
        if len(started) >= MAX_UNITS:
            warnings.append(f"systemd: over {MAX_UNITS} units pulled in at boot, the rest ignored")
    return BootUnits(start is not None, default, frozenset(started), unit_map)


def _dependencies(
    fs: GuestFS, unit_map: UnitMap, loaded: _Loaded, warnings: list[str]
) -> list[str]:
    names = unit_map.names_of(loaded.unit_id)
    template = _template_of(loaded.unit_id)
    if template:
        names.append(template)
    deps, default_dependencies = _unit_file_dependencies(
        fs, [loaded.fragment, *_dropin_files(unit_map, names)], warnings
    )
    for name in names:
        for suffix in DEPENDENCY_DIRS:
            for directory, entry in unit_map.subdir_entries(name + suffix):
                path = f"{directory}/{entry}"
                st = fs.lstat(path)
                if st is None or st.kind != "link" or not valid_unit_name(entry):
                    continue  # systemd ignores what is not a symlink with a unit's name
                if _null_or_empty(fs, path):
                    continue  # a masked dependency
                deps.append(entry)
    if _unit_type(loaded.unit_id) == "service" and default_dependencies:
        deps.append("sysinit.target")
    return deps


def _null_or_empty(fs: GuestFS, path: str) -> bool:
    opened = chase(fs, path, follow_last=True)
    if opened is None or opened[1] is None:
        return False
    return opened[0] == "/dev/null" or (opened[1].kind == "file" and opened[1].size == 0)
