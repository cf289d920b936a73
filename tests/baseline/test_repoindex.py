"""Debian Packages indexes: plain, gzip and xz, per architecture, cached, capped."""

from __future__ import annotations

import gzip
import lzma
import os
from pathlib import Path

import pytest

from vmaudit.errors import ConfigError
from vmaudit.judge import repoindex
from vmaudit.judge.repoindex import load_index

INDEX = b"""Package: openssl
Version: 3.0.11-1~deb12u2
Architecture: amd64
Description: Secure Sockets Layer toolkit
 a continuation line: Package: not-a-package

Package: openssl
Version: 3.0.15-1~deb12u1
Architecture: amd64

Package: openssl
Version: 3.0.99-1
Architecture: arm64

Package: tzdata
Version: 2024a-0+deb12u1
Architecture: all
"""


@pytest.mark.parametrize("compress", [bytes, gzip.compress, lzma.compress])
def test_newest_version_per_architecture(tmp_path: Path, compress: object) -> None:
    path = tmp_path / "Packages"
    path.write_bytes(compress(INDEX))  # type: ignore[operator]
    index = load_index(path)
    assert index.newest_for("openssl", "amd64") == "3.0.15-1~deb12u1"
    assert index.newest_for("openssl", "i386") is None  # other architectures are ignored
    assert index.newest_for("tzdata", "amd64") == "2024a-0+deb12u1"  # all matches any
    assert index.newest_for("not-a-package", "amd64") is None


def test_index_is_parsed_once_per_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "Packages.gz"
    path.write_bytes(gzip.compress(INDEX))
    first = load_index(path)
    calls: list[str] = []
    monkeypatch.setattr(repoindex, "_parse", lambda p: calls.append(p) or {})
    assert load_index(path) is first
    assert calls == []


def test_a_changed_index_is_read_again(tmp_path: Path) -> None:
    path = tmp_path / "Packages"
    path.write_bytes(INDEX)
    load_index(path)
    path.write_bytes(INDEX.replace(b"3.0.15-1~deb12u1", b"3.0.16-1~deb12u1"))
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    assert load_index(path).newest_for("openssl", "amd64") == "3.0.16-1~deb12u1"


def test_over_long_line_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(repoindex, "MAX_LINE_BYTES", 64)
    path = tmp_path / "Packages.long"
    path.write_bytes(b"Package: x\nDescription: " + b"y" * 200 + b"\n")
    with pytest.raises(ConfigError, match="line longer"):
        load_index(path)


def test_over_large_index_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(repoindex, "MAX_INDEX_BYTES", 100)
    path = tmp_path / "Packages.big.xz"
    path.write_bytes(lzma.compress(INDEX * 10))
    with pytest.raises(ConfigError, match="larger than"):
        load_index(path)


def test_corrupt_compressed_index_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "Packages.gz"
    path.write_bytes(gzip.compress(INDEX)[:40])
    with pytest.raises(ConfigError, match="unreadable"):
        load_index(path)
