"""``vmaudit feeds import``: each path's format decided from its bytes, never its name.

A folder is walked (symlinks are not followed); a ``.zip`` is read member by member; a
zstd stream is decompressed on the fly (optional ``zstandard``) with its window and total
size bounded. JSON is OSV or the Debian tracker by shape, XML is CVRF by its root element.
A file that is neither JSON, XML, zip nor zstd is skipped with a notice; a feed file that
is malformed, truncated or hostile stops the import with the file and record named, and
the whole import (every path) rolls back.
"""

from __future__ import annotations

import io
import json
import os
import stat
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from vmaudit.feeds.cvrf import parse_cvrf
from vmaudit.feeds.db import Counts, Writer, transaction
from vmaudit.feeds.debian_tracker import looks_like_tracker, parse_tracker
from vmaudit.feeds.osv import RECORD_CAP, Withdrawn, looks_like_osv, parse_osv
from vmaudit.feeds.records import Advisory, FeedError

ZIP_MAGIC = b"PK\x03\x04"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
STREAM_CAP = 4 * 1024 * 1024 * 1024  # decompressed bytes of one file (four years of CVRF ~300 MB)
ZSTD_WINDOW = 1 << 27  # 128 MiB: zstd's default limit; a larger window is refused
MAX_MEMBERS = 2_000_000
Notice = Callable[[str], None]
Parsed = Advisory | Withdrawn | None  # None: a record for no guest vmaudit can judge


class _Capped(io.RawIOBase):
    """A byte stream that fails once more than ``cap`` bytes were read from it."""

    def __init__(self, inner: IO[bytes], cap: int, path: str) -> None:
        self.inner, self.cap, self.path, self.read_so_far = inner, cap, path, 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = self.inner.read(len(buffer))
        self.read_so_far += len(data)
        if self.read_so_far > self.cap:
            raise FeedError(self.path, None, f"more than {self.cap} bytes once decompressed")
        buffer[: len(data)] = data
        return len(data)


@dataclass
class ImportResult:
    """Per path: its format(s) and what the import did."""

    path: str
    formats: set[str] = field(default_factory=set)
    counts: Counts = field(default_factory=Counts)


def _decompressed(path: str, raw: IO[bytes]) -> io.BufferedReader[Any]:
    try:
        import zstandard
    except ImportError:
        raise FeedError(
            path, None, "zstd-compressed: install the optional 'zstandard' package to import it"
        ) from None
    reader = zstandard.ZstdDecompressor(max_window_size=ZSTD_WINDOW).stream_reader(raw)
    return io.BufferedReader(_Capped(reader, STREAM_CAP, path), 1 << 20)


def _records(
    path: str, stream: io.BufferedReader[Any], formats: set[str], notice: Notice
) -> Iterator[Parsed]:
    """The records of one stream whose format is read from its first bytes."""
    head = stream.peek(4)[:4]
    if head.startswith(ZSTD_MAGIC):
        yield from _records(path, _decompressed(path, stream), formats, notice)
        return
    first = stream.peek(64)[:64].lstrip(b"\xef\xbb\xbf \t\r\n")[:1]
    if first == b"<":
        formats.add("msrc-cvrf")
        yield from parse_cvrf(path, stream)
    elif first == b"{":
        yield from _json_records(path, stream, formats)
    else:
        notice(f"{path}: not a feed file (neither JSON, XML, zip nor zstd): skipped")


def _json_records(path: str, stream: io.BufferedReader[Any], formats: set[str]) -> Iterator[Parsed]:
    data = stream.read(RECORD_CAP + 1)
    if len(data) <= RECORD_CAP:
        try:
            record = json.loads(data)
        except json.JSONDecodeError as exc:
            raise FeedError(
                path, None, f"malformed or truncated JSON ({exc.msg} at line {exc.lineno})"
            ) from None
        except (RecursionError, ValueError) as exc:
            raise FeedError(path, None, f"unreadable JSON ({type(exc).__name__})") from None
        if looks_like_osv(record):
            formats.add("osv")
            yield parse_osv(path, record)
            return
        if isinstance(record, dict) and record:
            first_key, first_value = next(iter(record.items()))
            if looks_like_tracker(first_key, first_value):
                formats.add("debian-tracker")
                yield from parse_tracker(path, io.BufferedReader(io.BytesIO(data)))
                return
        raise FeedError(
            path, None, "JSON that is neither an OSV record nor the Debian security tracker's"
        )
    # Too large for one OSV record: only the tracker's stream is that big.
    formats.add("debian-tracker")
    yield from parse_tracker(path, io.BufferedReader(_Prefixed(data, stream)))


class _Prefixed(io.RawIOBase):
    """Bytes already read, then the rest of the stream."""

    def __init__(self, prefix: bytes, rest: IO[bytes]) -> None:
        self.prefix, self.rest = memoryview(prefix), rest

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if self.prefix:
            size = min(len(buffer), len(self.prefix))
            buffer[:size] = self.prefix[:size]
            self.prefix = self.prefix[size:]
            return size
        data = self.rest.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)


def _zip_records(path: str, formats: set[str], notice: Notice) -> Iterator[Parsed]:
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise FeedError(path, None, f"unreadable zip ({exc})") from None
    with archive:
        members = archive.infolist()
        if len(members) > MAX_MEMBERS:
            raise FeedError(path, None, f"more than {MAX_MEMBERS} members")
        total = 0  # decompressed bytes over all members: a zip bomb stops here
        for member in members:
            if member.is_dir():
                continue
            where = f"{path}!{member.filename[:200]}"
            try:
                with archive.open(member) as handle:
                    data = handle.read(RECORD_CAP + 1)
            except (zipfile.BadZipFile, OSError, EOFError, NotImplementedError) as exc:
                raise FeedError(where, None, f"unreadable zip member ({exc})") from None
            except RuntimeError as exc:  # encrypted member
                raise FeedError(where, None, str(exc)) from None
            if len(data) > RECORD_CAP:
                raise FeedError(where, None, f"a member larger than {RECORD_CAP} bytes")
            total += len(data)
            if total > STREAM_CAP:
                raise FeedError(path, None, f"more than {STREAM_CAP} bytes once decompressed")
            yield from _records(where, io.BufferedReader(io.BytesIO(data)), formats, notice)


def _file_records(path: str, formats: set[str], notice: Notice) -> Iterator[Parsed]:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError as exc:
        raise FeedError(path, None, f"cannot open ({exc.strerror})") from None
    with io.BufferedReader(io.FileIO(fd, "rb"), 1 << 20) as handle:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise FeedError(path, None, "not a regular file")
        if handle.peek(4)[:4] == ZIP_MAGIC:
            formats.add("osv")
            handle.close()
            yield from _zip_records(path, formats, notice)
            return
        yield from _records(path, handle, formats, notice)


def _walk(root: str) -> Iterator[str]:
    """Regular files under a folder, sorted, without following symlinks."""
    for folder, dirs, files in os.walk(root, followlinks=False):
        dirs.sort()
        for name in sorted(files):
            full = os.path.join(folder, name)
            if os.path.isfile(full) and not os.path.islink(full):
                yield full


def _import_one(writer: Writer, path: str, notice: Notice) -> ImportResult:
    result = ImportResult(path)
    source_id = writer.source(path, "unknown")
    files = _walk(path) if os.path.isdir(path) else iter([path])
    for file in files:
        for item in _file_records(file, result.formats, notice):
            if item is None:
                result.counts.skipped += 1
            elif isinstance(item, Withdrawn):
                writer.withdraw(item.key, result.counts)
            else:
                writer.put(item, source_id, result.counts)
    writer.finish_source(source_id, "+".join(sorted(result.formats)) or "none", result.counts)
    return result


def import_feeds(
    paths: list[str], db_path: Path, notice: Notice, now: datetime | None = None
) -> list[ImportResult]:
    """Import every path in one transaction; a FeedError leaves the database unchanged."""
    for path in paths:
        if not os.path.lexists(path):
            raise FeedError(path, None, "no such file or folder")
    moment = (now or datetime.now(UTC)).astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    with transaction(db_path, moment) as writer:
        return [_import_one(writer, os.path.abspath(path), notice) for path in paths]
