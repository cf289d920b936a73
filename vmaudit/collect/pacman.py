"""Arch Linux packages from pacman's local database (``/var/lib/pacman/local/*/desc``).

Each ``desc`` holds ``%NAME%``, ``%VERSION%``, ``%ARCH%``, ``%BASE%`` (the source package)
sections, the value on the following line.
"""

from __future__ import annotations

from vmaudit.guest.base import GuestFS, list_dir, read_lines
from vmaudit.models import Package

LOCAL_DB = "/var/lib/pacman/local"
DESC_CAP = 4 * 1024 * 1024


def parse_desc(lines: list[str]) -> Package | None:
    values: dict[str, str] = {}
    for index, line in enumerate(lines[:-1]):
        if line.startswith("%") and line.endswith("%"):
            values.setdefault(line.strip("%"), lines[index + 1].strip()[:4096])
    name = values.get("NAME")
    if not name:
        return None
    return Package(
        name=name,
        version=values.get("VERSION", ""),
        arch=values.get("ARCH") or None,
        source=values.get("BASE") or name,
    )


def collect_pacman(fs: GuestFS, warnings: list[str]) -> list[Package]:
    packages: list[Package] = []
    for entry in list_dir(fs, LOCAL_DB, warnings):
        lines = read_lines(fs, f"{LOCAL_DB}/{entry}/desc", warnings, cap=DESC_CAP)
        package = parse_desc(lines) if lines else None
        if package is not None:
            packages.append(package)
    return packages
