"""Debian ``Packages`` indexes: the newest version of each binary package, per architecture.

An index may be large (Debian main is ~100 MB uncompressed), so it is streamed line by
line with caps on size and line length, only three fields are kept, and the result is
cached per path for the rest of the process (every image of a scan shares it).
"""

from __future__ import annotations

import gzip
import io
import lzma
import os
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from vmaudit.errors import ConfigError
from vmaudit.versions import dpkg_compare

MAX_INDEX_BYTES = 1024 * 1024 * 1024  # decompressed; Debian's biggest index is a tenth of it
MAX_LINE_BYTES = 1024 * 1024

_GZIP_MAGIC = b"\x1f\x8b"
_XZ_MAGIC = b"\xfd7zXZ\x00"


@dataclass(frozen=True)
class RepositoryIndex:
    """Newest version per package name and architecture in one index."""

    path: str
    newest: Mapping[str, Mapping[str, str]]  # name -> architecture -> version

    def newest_for(self, name: str, arch: str | None) -> str | None:
        """The newest version that could replace an installed ``name`` of ``arch``.

        ``all`` on either side matches any architecture; entries of other architectures
        are ignored; an installed package of unknown architecture matches every entry.
        """
        by_arch = self.newest.get(name)
        if not by_arch:
            return None
        candidates = [
            version
            for index_arch, version in by_arch.items()
            if arch is None or arch == "all" or index_arch in (arch, "all")
        ]
        best: str | None = None
        for version in candidates:
            if best is None or dpkg_compare(version, best) > 0:
                best = version
        return best


_cache: dict[str, tuple[tuple[int, int], RepositoryIndex]] = {}
_cache_lock = threading.Lock()


def load_index(path: str | Path) -> RepositoryIndex:
    """The parsed index at ``path``, cached while the file's size and mtime are unchanged.

    Raises ``ConfigError`` when the file cannot be read, is corrupt or exceeds the caps.
    """
    resolved = str(Path(path).resolve())
    try:
        stat = os.stat(resolved)
    except OSError as exc:
        raise ConfigError(f"{resolved}: repository index: {exc.strerror}") from exc
    signature = (stat.st_size, stat.st_mtime_ns)
    with _cache_lock:
        cached = _cache.get(resolved)
        if cached is not None and cached[0] == signature:
            return cached[1]
    index = RepositoryIndex(resolved, _parse(resolved))
    with _cache_lock:
        _cache[resolved] = (signature, index)
    return index


def _open(path: str) -> io.BufferedIOBase:
    with open(path, "rb") as probe:
        magic = probe.read(6)
    if magic.startswith(_GZIP_MAGIC):
        return gzip.open(path, "rb")
    if magic.startswith(_XZ_MAGIC):
        return lzma.open(path, "rb")
    return open(path, "rb")


def _lines(path: str) -> Iterator[bytes]:
    total = 0
    with _open(path) as stream:
        while True:
            line = stream.readline(MAX_LINE_BYTES + 1)
            if not line:
                return
            total += len(line)
            if total > MAX_INDEX_BYTES:
                raise ConfigError(f"{path}: repository index larger than {MAX_INDEX_BYTES} bytes")
            if len(line) > MAX_LINE_BYTES:
                raise ConfigError(f"{path}: repository index line longer than {MAX_LINE_BYTES}")
            yield line


def _parse(path: str) -> dict[str, dict[str, str]]:
    newest: dict[str, dict[str, str]] = {}
    fields: dict[str, str] = {}

    def flush() -> None:
        name, version = fields.get("package"), fields.get("version")
        if name and version:
            arch = fields.get("architecture", "all")
            by_arch = newest.setdefault(name, {})
            known = by_arch.get(arch)
            if known is None or dpkg_compare(version, known) > 0:
                by_arch[arch] = version
        fields.clear()

    try:
        for raw in _lines(path):
            line = raw.decode("utf-8", "replace").rstrip("\r\n")
            if not line.strip():
                flush()
                continue
            if line[0] in " \t":
                continue  # continuation of a multi-line field we do not keep
            key, sep, value = line.partition(":")
            if sep and key.lower() in ("package", "version", "architecture"):
                fields[key.lower()] = value.strip()
        flush()
    except (OSError, EOFError, lzma.LZMAError) as exc:
        raise ConfigError(f"{path}: repository index unreadable: {exc}") from exc
    return newest
