"""Alpine packages from apk's database (``/lib/apk/db/installed``).

Stanzas separated by blank lines, one ``X:value`` field a line: ``P`` name, ``V`` version,
``A`` arch, ``o`` origin (the source package).
"""

from __future__ import annotations

from vmaudit.guest.base import GuestFS, read_lines
from vmaudit.models import Package

INSTALLED_PATH = "/lib/apk/db/installed"
DB_CAP = 256 * 1024 * 1024


def parse_installed(lines: list[str]) -> list[Package]:
    packages: list[Package] = []
    fields: dict[str, str] = {}
    for line in [*lines, ""]:
        if not line.strip():
            if fields.get("P"):
                packages.append(Package(
                    name=fields["P"], version=fields.get("V", ""), arch=fields.get("A") or None,
                    source=fields.get("o") or fields["P"],
                ))  # fmt: skip
            fields = {}
            continue
        if len(line) >= 2 and line[1] == ":" and line[0] in "PVAo":
            fields.setdefault(line[0], line[2:].strip()[:4096])
    return packages


def collect_apk(fs: GuestFS, warnings: list[str]) -> list[Package]:
    lines = read_lines(fs, INSTALLED_PATH, warnings, cap=DB_CAP, missing_ok=False)
    return parse_installed(lines) if lines is not None else []
