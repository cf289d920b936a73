"""The small interface collectors read guest files through, and bounded text helpers.

Paths are guest paths (``/etc/passwd``), resolved inside the guest: a symlink never leads
out of the guest root. Names that are not UTF-8 survive as ``surrogateescape`` strings.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Literal, Protocol, TypeVar, runtime_checkable

from vmaudit.errors import GuestFileError

DEFAULT_CAP = 16 * 1024 * 1024  # bytes of one guest file we are willing to read
MAX_LINE = 64 * 1024  # characters of one line we are willing to parse

K = TypeVar("K")
T = TypeVar("T")

FileKind = Literal["file", "dir", "link", "other"]


@dataclass(frozen=True)
class GuestStat:
    kind: FileKind
    size: int
    mtime: float
    mode: int


class GuestFS(Protocol):
    """Read-only access to one guest's files."""

    def read(self, path: str, cap: int = DEFAULT_CAP) -> bytes:
        """The file's bytes; ``GuestFileError`` when missing, unreadable or over ``cap``."""
        ...

    def listdir(self, path: str) -> list[str]:
        """Names in a directory (no ``.``/``..``); ``GuestFileError`` when not listable."""
        ...

    def stat(self, path: str) -> GuestStat | None:
        """Metadata following symlinks inside the guest; None when missing or dangling."""
        ...

    def lstat(self, path: str) -> GuestStat | None:
        """Metadata of the path itself; None when missing."""
        ...

    def readlink(self, path: str) -> str:
        """A symlink's target as stored; ``GuestFileError`` when not a symlink."""
        ...

    def pread(self, path: str, offset: int, length: int) -> bytes:
        """At most ``length`` bytes of a regular file from ``offset`` (fewer at its end)."""
        ...


@dataclass(frozen=True)
class OwnedStat:
    """An entry's own metadata (symlinks not followed) with its numeric owner and group."""

    path: str
    kind: FileKind
    mode: int  # st_mode: type and permission bits
    uid: int
    gid: int


@dataclass(frozen=True)
class ModeWalk:
    """A bounded walk under one directory: every entry visited, and whether it stopped short."""

    entries: tuple[OwnedStat, ...]
    truncated: bool  # ``limit`` entries were visited before the walk ended
    skipped: int = 0  # names the backend could not stat (not UTF-8 on an appliance)


@runtime_checkable
class ModeFS(Protocol):
    """A backend that also gives owners and walks trees (TreeFS, ApplianceFS)."""

    def lstat_owner(self, path: str) -> OwnedStat | None:
        """``lstat`` with owner and group; None when missing."""
        ...

    def walk_modes(self, root: str, limit: int, only: Collection[str] | None = None) -> ModeWalk:
        """Every entry below directory ``root`` (not itself), never following a symlink,
        at most ``limit`` of them; empty when ``root`` is not a directory (or a symlink).
        With ``only``: just below those names of ``root``'s own entries, not the entries."""
        ...


def walked_below(relative: str, only: Collection[str] | None) -> bool:
    """Whether a path relative to a walk's root is kept by ``walk_modes``' ``only``."""
    if only is None:
        return True
    top, sep, _ = relative.lstrip("/").partition("/")
    return bool(sep) and top in only


def read_bytes(
    fs: GuestFS, path: str, warnings: list[str], cap: int = DEFAULT_CAP, missing_ok: bool = True
) -> bytes | None:
    """A guest file's bytes, or None (with a warning unless it is simply missing)."""
    try:
        return fs.read(path, cap)
    except GuestFileError as exc:
        if not (missing_ok and exc.reason == "not found"):
            warnings.append(f"{safe_path(path)}: {exc.reason}")
        return None


def read_range(
    fs: GuestFS, path: str, offset: int, length: int, warnings: list[str]
) -> bytes | None:
    """``length`` bytes at ``offset`` (a negative offset counts from the end), or None.

    A ranged read whatever the file's size: a 1 GiB wtmp or journal costs its tail, not a
    whole read under a cap. None (with a warning unless the file is missing) when it is not
    a readable regular file.
    """
    st = fs.stat(path)
    if st is None:
        return None
    if st.kind != "file":
        warnings.append(f"{safe_path(path)}: not a regular file")
        return None
    start = max(0, st.size + offset) if offset < 0 else offset
    try:
        return fs.pread(path, start, max(0, min(length, st.size - start)))
    except GuestFileError as exc:
        warnings.append(f"{safe_path(path)}: {exc.reason}")
        return None


def read_text(
    fs: GuestFS, path: str, warnings: list[str], cap: int = DEFAULT_CAP, missing_ok: bool = True
) -> str | None:
    """A guest file decoded as UTF-8 (bad bytes replaced), or None with a warning."""
    try:
        data = fs.read(path, cap)
    except GuestFileError as exc:
        if not (missing_ok and exc.reason == "not found"):
            warnings.append(f"{safe_path(path)}: {exc.reason}")
        return None
    return data.decode("utf-8", errors="replace")


def read_lines(
    fs: GuestFS, path: str, warnings: list[str], cap: int = DEFAULT_CAP, missing_ok: bool = True
) -> list[str] | None:
    """A guest text file split in lines; lines over ``MAX_LINE`` are dropped with a warning."""
    text = read_text(fs, path, warnings, cap, missing_ok)
    if text is None:
        return None
    return cap_lines(text, path, warnings)


def guest_lines(text: str) -> list[str]:
    """Lines as glibc, sshd, sudo and sh split them: on ``\n`` only.

    Python's ``splitlines()`` also breaks on ``\r``, ``\v``, ``\f``, ``\x1c``-``\x1e``,
    ``\x85`` and the Unicode separators, so ``# note\rPermitRootLogin no`` would read as a
    directive where sshd sees a comment. A final newline does not make an empty last line;
    a ``\r`` stays in the line, for the parser to treat as its program does.
    """
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return lines


def cap_lines(text: str, path: str, warnings: list[str]) -> list[str]:
    """Split text into lines, dropping (with one warning) any over ``MAX_LINE`` characters."""
    lines = guest_lines(text)
    kept = [line for line in lines if len(line) <= MAX_LINE]
    if len(kept) != len(lines):
        skipped = len(lines) - len(kept)
        warnings.append(f"{safe_path(path)}: {skipped} line(s) over {MAX_LINE} characters skipped")
    return kept


def is_file(fs: GuestFS, path: str) -> bool:
    st = fs.stat(path)
    return st is not None and st.kind == "file"


def is_dir(fs: GuestFS, path: str) -> bool:
    st = fs.stat(path)
    return st is not None and st.kind == "dir"


def list_dir(fs: GuestFS, path: str, warnings: list[str]) -> list[str]:
    """Directory names, or an empty list (with a warning unless it simply does not exist)."""
    try:
        return sorted(fs.listdir(path))
    except GuestFileError as exc:
        if exc.reason != "not found":
            warnings.append(f"{safe_path(path)}: {exc.reason}")
        return []


def safe_path(path: str) -> str:
    """A guest path fit for a message: undecodable bytes and control characters escaped."""
    raw = path.encode("utf-8", errors="surrogateescape")
    return "".join(
        ch if ch.isprintable() else f"\\x{ord(ch):02x}"
        for ch in raw.decode("utf-8", errors="backslashreplace")
    )


def join(directory: str, name: str) -> str:
    return directory.rstrip("/") + "/" + name


def remembered(memo: dict[K, T | GuestFileError], key: K, read: Callable[[], T]) -> T:
    """``read()`` once per key: its value, or the same GuestFileError raised again."""
    if key not in memo:
        try:
            memo[key] = read()
        except GuestFileError as exc:
            memo[key] = exc
    found = memo[key]
    if isinstance(found, GuestFileError):
        raise found
    return found
