"""dpkg's status file is parsed in place: memory for the packages, not a multiple of the file.

Sizes are real (tens of MB, under ``STATUS_CAP``), peaks measured with tracemalloc around
the whole collector (the read included), bounds generous: a parser that builds the list of
the file's lines costs over ten times the size on short lines and fails them.
"""

from __future__ import annotations

import time
import tracemalloc
from collections.abc import Callable
from typing import TypeVar

from vmaudit.collect import dpkg
from vmaudit.models import Package

from .conftest import Guest

T = TypeVar("T")


def peak_of(run: Callable[[], T]) -> tuple[T, int, float]:
    """``run()``'s result, the peak of the memory it allocated, and its wall time."""
    tracemalloc.start()
    started = time.monotonic()
    try:
        result = run()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return result, peak, time.monotonic() - started


def stanza(index: int, description_lines: int) -> str:
    return (
        f"Package: pkg{index}\nStatus: install ok installed\nPriority: optional\n"
        f"Architecture: amd64\nVersion: 1.{index}-1\nDepends: libc6 (>= 2.36)\n"
        "Description: many short continuation lines\n" + " ab\n" * description_lines + "\n"
    )


def test_big_status_file_of_short_lines_costs_under_four_times_its_size(guest: Guest) -> None:
    count = 16_000
    path = guest.write("/var/lib/dpkg/status", "".join(stanza(i, 500) for i in range(count)))
    size = path.stat().st_size
    assert 30_000_000 < size < dpkg.STATUS_CAP
    warnings: list[str] = []
    fs = guest.fs
    packages, peak, elapsed = peak_of(lambda: dpkg.collect_dpkg(fs, warnings))
    assert peak < 4 * size, f"peak {peak} bytes for a {size}-byte status file"
    assert elapsed < 120
    assert len(packages) == count
    assert packages[-1] == Package(
        f"pkg{count - 1}", f"1.{count - 1}-1", "amd64", f"pkg{count - 1}"
    )
    assert warnings == []


def test_status_file_of_newlines_costs_under_four_times_its_size(guest: Guest) -> None:
    path = guest.write(
        "/var/lib/dpkg/status",
        b"\n" * 24_000_000
        + b"\n".join([b"Package: last", b"Status: install ok installed", b"Version: 2", b""]),
    )
    size = path.stat().st_size
    warnings: list[str] = []
    fs = guest.fs
    packages, peak, elapsed = peak_of(lambda: dpkg.collect_dpkg(fs, warnings))
    assert peak < 4 * size, f"peak {peak} bytes for a {size}-byte status file"
    assert elapsed < 120
    assert [(p.name, p.version) for p in packages] == [("last", "2")]
    assert warnings == []
