"""Feeds tests: the real extracts of ../shared/vulndata and records written from their facts.

OSV and Debian-tracker JSON are not represented in vulndata by a file (see its README):
the records here carry the extracts' facts (ids, versions, dates) in those formats.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from vmaudit.models import Facts, Hotfix, ImageInfo, OsInfo, Package

VULNDATA = Path(__file__).resolve().parents[2].parent / "shared" / "vulndata"
CVRF = VULNDATA / "windows" / "msrc-cvrf"
IMAGE = ImageInfo("/images/guest.qcow2", "qcow2", 1, "2026-01-01T00:00:00Z", "0" * 64, None, ())

# DSA-5724-1, 1 Jul 2024: openssh in bookworm fixed in 1:9.2p1-2+deb12u3 (CVE-2024-6387)
DSA_5724_1: dict[str, Any] = {
    "schema_version": "1.6.0",
    "id": "DSA-5724-1",
    "modified": "2024-07-01T00:00:00Z",
    "published": "2024-07-01T00:00:00Z",
    "aliases": ["CVE-2024-6387"],
    "summary": "openssh - security update",
    "affected": [
        {
            "package": {"ecosystem": "Debian:12", "name": "openssh"},
            "ranges": [
                {
                    "type": "ECOSYSTEM",
                    "events": [{"introduced": "0"}, {"fixed": "1:9.2p1-2+deb12u3"}],
                }
            ],
        }
    ],
}
# DSA-5586-1, 22 Dec 2023: openssh fixed in bullseye 1:8.4p1-5+deb11u3, bookworm 1:9.2p1-2+deb12u2
DSA_5586_1: dict[str, Any] = {
    "id": "DSA-5586-1",
    "modified": "2023-12-22T00:00:00Z",
    "published": "2023-12-22T00:00:00Z",
    "aliases": ["CVE-2023-48795", "CVE-2023-51385"],
    "affected": [
        {
            "package": {"ecosystem": "Debian:11", "name": "openssh"},
            "ranges": [
                {
                    "type": "ECOSYSTEM",
                    "events": [{"introduced": "0"}, {"fixed": "1:8.4p1-5+deb11u3"}],
                }
            ],
        },
        {
            "package": {"ecosystem": "Debian:12", "name": "openssh"},
            "ranges": [
                {
                    "type": "ECOSYSTEM",
                    "events": [{"introduced": "0"}, {"fixed": "1:9.2p1-2+deb12u2"}],
                }
            ],
        },
    ],
}
# DSA-5868-1, 18 Feb 2025: openssh in bookworm fixed in 1:9.2p1-2+deb12u5 (CVE-2025-26465)
DSA_5868_1: dict[str, Any] = {
    "id": "DSA-5868-1",
    "modified": "2025-02-18T00:00:00Z",
    "published": "2025-02-18T00:00:00Z",
    "aliases": ["CVE-2025-26465"],
    "affected": [
        {
            "package": {"ecosystem": "Debian:12", "name": "openssh"},
            "ranges": [
                {
                    "type": "ECOSYSTEM",
                    "events": [{"introduced": "0"}, {"fixed": "1:9.2p1-2+deb12u5"}],
                }
            ],
        }
    ],
}
# Debian tracker JSON, its shape with the facts above: bookworm fixed in deb12u3, bullseye
# not affected ("0"); no urgency assigned in either CVE record.
TRACKER: dict[str, Any] = {
    "openssh": {
        "CVE-2024-6387": {
            "description": "regreSSHion: a signal handler race condition in sshd",
            "scope": "remote",
            "releases": {
                "bookworm": {
                    "status": "resolved",
                    "fixed_version": "1:9.2p1-2+deb12u3",
                    "urgency": "not yet assigned",
                    "repositories": {},
                },
                "bullseye": {
                    "status": "resolved",
                    "fixed_version": "0",
                    "urgency": "not yet assigned",
                    "repositories": {},
                },
                "sid": {
                    "status": "resolved",
                    "fixed_version": "1:9.7p1-7",
                    "urgency": "not yet assigned",
                    "repositories": {},
                },
            },
        },
        # CVE-2025-32728: "[bookworm] - openssh <no-dsa> (Minor issue)", fixed in sid
        "CVE-2025-32728": {
            "releases": {
                "bookworm": {
                    "status": "open",
                    "urgency": "not yet assigned",
                    "nodsa": "Minor issue",
                    "repositories": {},
                },
                "sid": {
                    "status": "resolved",
                    "fixed_version": "1:10.0p1-1",
                    "urgency": "not yet assigned",
                    "repositories": {},
                },
            },
        },
    },
}
# aquasecurity/vuln-list alpine/3.20/main/openssh.json: CVE-2024-6387 fixed in 9.7_p1-r4
ALPINE_OSV: dict[str, Any] = {
    "id": "ALPINE-CVE-2024-6387",
    "modified": "2024-07-01T13:15:00Z",
    "published": "2024-07-01T13:15:00Z",
    "upstream": ["CVE-2024-6387"],
    "affected": [
        {
            "package": {"ecosystem": "Alpine:v3.20", "name": "openssh"},
            "ranges": [
                {"type": "ECOSYSTEM", "events": [{"introduced": "0"}, {"fixed": "9.7_p1-r4"}]}
            ],
        }
    ],
}
# Ubuntu CVE tracker: jammy 1:8.9p1-3ubuntu0.10, noble 1:9.6p1-3ubuntu13.3; priority high
UBUNTU_OSV: dict[str, Any] = {
    "id": "UBUNTU-CVE-2024-6387",
    "modified": "2024-07-01T13:15:00Z",
    "published": "2024-07-01T13:15:00Z",
    "upstream": ["CVE-2024-6387"],
    "severity": [{"type": "Ubuntu", "score": "high"}],
    "affected": [
        {
            "package": {"ecosystem": "Ubuntu:22.04:LTS", "name": "openssh"},
            "ranges": [
                {
                    "type": "ECOSYSTEM",
                    "events": [{"introduced": "0"}, {"fixed": "1:8.9p1-3ubuntu0.10"}],
                }
            ],
        },
        {
            "package": {"ecosystem": "Ubuntu:24.04:LTS", "name": "openssh"},
            "ranges": [
                {
                    "type": "ECOSYSTEM",
                    "events": [{"introduced": "0"}, {"fixed": "1:9.6p1-3ubuntu13.3"}],
                }
            ],
        },
    ],
}
# Red Hat security data: RHSA-2024:4312, 3 Jul 2024, openssh-0:8.7p1-38.el9_4.1, CVSS 3.1 8.1
RHEL_OSV: dict[str, Any] = {
    "id": "RHSA-2024:4312",
    "modified": "2024-07-03T00:00:00Z",
    "published": "2024-07-03T00:00:00Z",
    "upstream": ["CVE-2024-6387"],
    "severity": [{"type": "CVSS_V3", "score": "CVSS:3.1/AV:N/AC:H/PR:N/UI:N/S:U/C:H/I:H/A:H"}],
    "affected": [
        {
            "package": {"ecosystem": "Red Hat:enterprise_linux:9::baseos", "name": "openssh"},
            "ranges": [
                {
                    "type": "ECOSYSTEM",
                    "events": [{"introduced": "0"}, {"fixed": "0:8.7p1-38.el9_4.1"}],
                }
            ],
        }
    ],
}


def write_json(path: Path, data: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data), "utf-8")
    return path


def linux_facts(
    distro: str, version: str, packages: list[tuple[str, str, str | None]], fmt: str = "deb"
) -> Facts:
    """A guest with (binary name, version, source) packages."""
    return Facts(
        IMAGE,
        OsInfo("linux", distro, version, None, "guest", "x86_64", fmt),
        packages=tuple(Package(name, ver, "amd64", source) for name, ver, source in packages),
    )


def bookworm(openssh: str) -> Facts:
    return linux_facts(
        "debian",
        "12.5",
        [
            ("openssh-server", openssh, "openssh"),
            ("openssh-client", openssh, "openssh"),
            ("libc6", "2.36-9+deb12u4", "glibc"),
        ],
    )


def windows_facts(
    build: str,
    product: str = "Windows Server 2019 Datacenter",
    installation_type: str | None = None,
    hotfixes: tuple[str, ...] = (),
) -> Facts:
    os_info = OsInfo(
        "windows",
        "windows",
        "10.0",
        product,
        "win",
        "x86_64",
        None,
        build,
        "ServerDatacenter",
        installation_type,
    )
    return Facts(IMAGE, os_info, hotfixes=tuple(Hotfix(kb) for kb in hotfixes))


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "feeds.db"


@pytest.fixture
def notices() -> list[str]:
    return []


@pytest.fixture
def notice(notices: list[str]) -> Callable[[str], None]:
    return notices.append
