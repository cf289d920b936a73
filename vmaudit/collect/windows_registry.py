"""Registry hives of a Windows guest: found case-insensitively, read with a cap, parsed by hivex.

A hive is copied out of the guest through ``GuestFS.read`` (at most ``HIVE_CAP`` bytes) into
a private temp file and opened read-only with python3-hivex. Every hivex failure (a corrupt
or hostile hive) becomes ``HiveError``; callers turn it into a warning. Registry key and
value names are case-insensitive, as hivex looks them up.
"""

from __future__ import annotations

import os
import struct
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

from vmaudit.errors import GuestFileError
from vmaudit.guest.base import GuestFS, join, safe_path

HIVE_CAP = 256 * 1024 * 1024
MAX_STRING = 4096  # characters kept of one registry string
HIVEX_OPEN_WRITE = 4  # hivex_open flag HIVEX_OPEN_WRITE
FILETIME_EPOCH = datetime(1601, 1, 1, tzinfo=UTC)
FILETIME_NEVER = 0x7FFFFFFFFFFFFFFF

REG_SZ, REG_EXPAND_SZ, REG_BINARY, REG_DWORD, REG_DWORD_BE, REG_QWORD = 1, 2, 3, 4, 5, 11


class HiveError(Exception):
    """A hive that hivex cannot open or walk."""


def filetime_to_datetime(value: int) -> datetime | None:
    """A FILETIME (100 ns since 1601, UTC) as a datetime; None for 0, "never" or garbage."""
    if value <= 0 or value >= FILETIME_NEVER:
        return None
    try:
        moment = FILETIME_EPOCH + timedelta(microseconds=value // 10)
    except OverflowError:
        return None
    return moment if moment.year >= 1980 else None


def resolve_nocase(fs: GuestFS, path: str) -> str | None:
    """The guest path whose components match ``path`` ignoring case (as libguestfs's
    ``case_sensitive_path``), or None when some component does not exist."""
    current = "/"
    for part in (p for p in path.split("/") if p):
        exact = join(current, part)
        if fs.lstat(exact) is not None:
            current = exact
            continue
        try:
            names = sorted(fs.listdir(current))
        except GuestFileError:
            return None
        folded = part.casefold()
        match = next((name for name in names if name.casefold() == folded), None)
        if match is None:
            return None
        current = join(current, match)
    return current


class Hive:
    """Read-only access to one opened hive; nodes are hivex handles (ints)."""

    def __init__(self, handle: Any, label: str) -> None:
        self._h = handle
        self.label = label

    def close(self) -> None:
        """Close the hivex handle now; later calls raise ``HiveError``."""
        handle, self._h = self._h, None
        if handle is not None:
            handle.close()

    def _call(self, method: str, *args: Any) -> Any:
        if self._h is None:
            raise HiveError(f"{self.label}: the hive is closed")
        try:
            return getattr(self._h, method)(*args)
        except (RuntimeError, ValueError, UnicodeError, OverflowError) as exc:
            raise HiveError(f"{self.label}: {method} failed ({exc})") from None

    @property
    def root(self) -> int:
        return int(self._call("root"))

    def key(self, path: str | Sequence[str], start: int | None = None) -> int | None:
        """The node at ``path`` (backslash-separated or a list of names), None when absent."""
        parts = [p for p in path.split("\\") if p] if isinstance(path, str) else list(path)
        node = self.root if start is None else start
        for part in parts:
            child = self._call("node_get_child", node, part)
            if not child:
                return None
            node = int(child)
        return node

    def subkeys(self, node: int) -> list[tuple[str, int]]:
        """(name, node) of every subkey."""
        children = self._call("node_children", node)
        return [(str(self._call("node_name", child)), int(child)) for child in children]

    def raw(self, node: int, name: str) -> tuple[int, bytes] | None:
        """(type, data) of a value, None when the key has no value of that name."""
        # node_get_value cannot tell "no such value" from a failure (both raise), so values
        # are matched here, ignoring case as Windows does.
        wanted = name.casefold()
        for value in self._call("node_values", node):
            if str(self._call("value_key", value)).casefold() == wanted:
                kind, data = self._call("value_value", value)
                return int(kind), bytes(data)
        return None

    def values(self, node: int, limit: int) -> list[tuple[str, int, bytes]]:
        """(name, type, data) of the first ``limit`` values of a key, in hive order."""
        found = []
        for value in self._call("node_values", node)[:limit]:
            kind, data = self._call("value_value", value)
            found.append((str(self._call("value_key", value)), int(kind), bytes(data)))
        return found

    def default_type(self, node: int) -> int | None:
        """The type of the unnamed (default) value: the SAM stores RIDs there."""
        for value in self._call("node_values", node):
            if self._call("value_key", value) == "":
                return int(self._call("value_type", value)[0])
        return None

    def string(self, node: int, name: str) -> str | None:
        """A REG_SZ / REG_EXPAND_SZ value as text (UTF-16LE, cut at the first NUL)."""
        found = self.raw(node, name)
        if found is None or found[0] not in (REG_SZ, REG_EXPAND_SZ):
            return None
        return decode_utf16(found[1])

    def dword(self, node: int, name: str) -> int | None:
        """A REG_DWORD (or big-endian DWORD, or QWORD) value as an int."""
        found = self.raw(node, name)
        if found is None:
            return None
        kind, data = found
        if kind == REG_DWORD and len(data) >= 4:
            return int(struct.unpack_from("<I", data)[0])
        if kind == REG_DWORD_BE and len(data) >= 4:
            return int(struct.unpack_from(">I", data)[0])
        if kind == REG_QWORD and len(data) >= 8:
            return int(struct.unpack_from("<Q", data)[0])
        return None

    def binary(self, node: int, name: str) -> bytes | None:
        found = self.raw(node, name)
        return None if found is None else found[1]


def decode_utf16(data: bytes) -> str:
    text = data[: len(data) - len(data) % 2].decode("utf-16-le", errors="replace")
    return text.split("\0", 1)[0][:MAX_STRING]


@contextmanager
def opened_hive(fs: GuestFS, path: str, label: str, warnings: list[str]) -> Iterator[Hive | None]:
    """The hive at guest ``path``, or None with a warning; its temp copy is removed after."""
    try:
        data = fs.read(path, HIVE_CAP)
    except GuestFileError as exc:
        warnings.append(f"{safe_path(path)}: {exc.reason}")
        yield None
        return
    with tempfile.TemporaryDirectory(prefix="vmaudit-hive-") as scratch:
        local = os.path.join(scratch, "hive")
        with open(local, "wb") as handle:
            handle.write(data)
        del data
        try:
            handle = open_hivex(local)
        except (RuntimeError, ValueError) as exc:
            warnings.append(f"{safe_path(path)}: not a readable registry hive ({exc})")
            yield None
            return
        hive = Hive(handle, label)
        try:
            try:
                hive.root  # noqa: B018 - a hive whose root cannot be read is as good as corrupt
            except HiveError as exc:
                warnings.append(f"{safe_path(path)}: not a readable registry hive ({exc})")
                yield None
                return
            yield hive
        finally:
            hive.close()


def open_hivex(path: str, write: bool = False) -> Any:
    """A hivex handle that can be closed explicitly, and that a failed open leaves inert.

    python3-hivex's ``Hivex`` has no ``close()``: its destructor closes ``self._o``, which a
    failed open never set (``AttributeError`` in ``__del__``) and which an explicit close
    would leave dangling (a second close). This subclass owns the handle's lifetime.
    """
    import hivex  # Debian's python3-hivex
    import libhivexmod  # type: ignore[import-not-found]

    class _ClosableHivex(hivex.Hivex):  # type: ignore[misc]
        def __init__(self, filename: str) -> None:
            self._o = None
            self._o = libhivexmod.open(filename, HIVEX_OPEN_WRITE if write else 0)

        def close(self) -> None:
            handle, self._o = self._o, None
            if handle is not None:
                libhivexmod.close(handle)

        def __del__(self) -> None:
            self.close()

    return _ClosableHivex(path)
