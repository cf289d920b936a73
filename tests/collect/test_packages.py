"""dpkg status states and field handling; rpm headers from a database built by rpm itself."""

from __future__ import annotations

import shutil
import sqlite3
import struct
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import pytest

from vmaudit.collect import dpkg, rpm
from vmaudit.collect.apk import collect_apk
from vmaudit.models import Package

from .conftest import Guest


def stanza(name: str, status: str, version: str = "1.0-1", extra: str = "") -> str:
    return (
        f"Package: {name}\nStatus: {status}\nPriority: optional\nArchitecture: amd64\n"
        f"{extra}Version: {version}\nDescription: test\n more text\n .\n"
    )


def test_dpkg_states_counted_as_installed(guest: Guest) -> None:
    states = {
        "ok": "install ok installed",
        "rm": "deinstall ok installed",
        "hc": "install ok half-configured",
        "tw": "install ok triggers-awaited",
        "tp": "install ok triggers-pending",
        "up": "install ok unpacked",
        "hi": "install reinstreq half-installed",
        "cf": "deinstall ok config-files",
        "ni": "purge ok not-installed",
    }
    guest.write("/var/lib/dpkg/status", "\n".join(stanza(n, s) for n, s in states.items()))
    warnings: list[str] = []
    names = [p.name for p in dpkg.collect_dpkg(guest.fs, warnings)]
    assert names == ["ok", "rm", "hc", "tw", "tp", "up", "hi"]
    assert warnings == []


def test_dpkg_source_field_without_version_and_default(guest: Guest) -> None:
    guest.write(
        "/var/lib/dpkg/status",
        stanza(
            "libssl3",
            "install ok installed",
            "3.0.15-1~deb12u1",
            "Source: openssl (3.0.15-1~deb12u1)\n",
        )
        + "\n"
        + stanza("bash", "install ok installed", "5.2.15-2+b7"),
    )
    assert dpkg.collect_dpkg(guest.fs, []) == [
        Package("libssl3", "3.0.15-1~deb12u1", "amd64", "openssl"),
        Package("bash", "5.2.15-2+b7", "amd64", "bash"),
    ]


def test_dpkg_tolerates_a_one_megabyte_field(guest: Guest) -> None:
    huge = "Description: " + "x" * (1024 * 1024) + "\n"
    conffiles = "Conffiles:\n" + "".join(f" /etc/f{i} {'0' * 32}\n" for i in range(20000))
    guest.write(
        "/var/lib/dpkg/status",
        stanza("big", "install ok installed", extra=huge + conffiles)
        + "\n"
        + stanza("next", "install ok installed"),
    )
    warnings: list[str] = []
    assert [p.name for p in dpkg.collect_dpkg(guest.fs, warnings)] == ["big", "next"]
    assert warnings == []


def test_dpkg_overlong_version_drops_that_package_with_warning(guest: Guest) -> None:
    guest.write(
        "/var/lib/dpkg/status",
        stanza("bad", "install ok installed", "1" * 100_000)
        + "\n"
        + stanza("good", "install ok installed"),
    )
    warnings: list[str] = []
    assert [p.name for p in dpkg.collect_dpkg(guest.fs, warnings)] == ["good"]
    assert warnings == ["/var/lib/dpkg/status: 1 field(s) over 4096 bytes ignored"]


def test_dpkg_missing_status_is_a_warning(guest: Guest) -> None:
    warnings: list[str] = []
    assert dpkg.collect_dpkg(guest.fs, warnings) == []
    assert warnings == ["/var/lib/dpkg/status: not found"]


def test_dpkg_log_last_update_in_guest_time_zone(guest: Guest) -> None:
    from zoneinfo import ZoneInfo

    guest.write(
        "/var/log/dpkg.log",
        "2024-03-01 09:00:00 status installed a:amd64 1\n"
        "2024-03-02 10:30:00 upgrade b:amd64 1 2\n"
        "2024-03-02 10:31:00 status half-configured b:amd64 2\n"
        "2024-03-02 10:31:00 status unpacked b:amd64 2\n",
    )
    moment = dpkg.last_update(guest.fs, ZoneInfo("Europe/Paris"), [])
    assert moment == datetime(2024, 3, 2, 9, 30, tzinfo=UTC)


def test_dpkg_log_falls_back_to_rotated_gzip(guest: Guest) -> None:
    import gzip

    guest.write("/var/log/dpkg.log", "2024-05-01 00:00:00 startup archives unpack\n")
    guest.write(
        "/var/log/dpkg.log.2.gz", gzip.compress(b"2023-12-24 18:00:00 status installed x:amd64 1\n")
    )
    assert dpkg.last_update(guest.fs, UTC, []) == datetime(2023, 12, 24, 18, tzinfo=UTC)


def test_apk_installed_database(guest: Guest) -> None:
    guest.write(
        "/lib/apk/db/installed",
        "C:Q1abc=\nP:musl\nV:1.2.4-r2\nA:x86_64\no:musl\n\n"
        "P:libcrypto3\nV:3.1.4-r5\nA:x86_64\no:openssl\n",
    )
    assert collect_apk(guest.fs, []) == [
        Package("musl", "1.2.4-r2", "x86_64", "musl"),
        Package("libcrypto3", "3.1.4-r5", "x86_64", "openssl"),
    ]


# ----------------------------------------------------------------- rpm

SPEC = """Name: {name}
Version: {version}
Release: {release}
{epoch}Summary: test package
License: MIT
BuildArch: noarch
%description
test
%install
mkdir -p %{{buildroot}}/usr/share/{name}
echo hi > %{{buildroot}}/usr/share/{name}/f
%files
/usr/share/{name}/f
"""

needs_rpm = pytest.mark.skipif(
    shutil.which("rpmbuild") is None or shutil.which("rpm") is None,
    reason="rpm/rpmbuild not installed (the Makefile's DEB_PACKAGES installs rpm)",
)


def build_rpmdb(tmp_path: Path, dbpath: Path) -> None:
    """Build two real rpms with rpmbuild and register them in an rpmdb with rpm --justdb."""
    packages = [
        ("hello-vm", "1.2.3", "4.el9", "Epoch: 2\n"),
        ("openssl-libs", "3.0.7", "25.el9", ""),
    ]
    dbpath.mkdir(parents=True)
    subprocess.run(["rpm", "--dbpath", str(dbpath), "--initdb"], check=True)
    for name, version, release, epoch in packages:
        spec = tmp_path / f"{name}.spec"
        spec.write_text(SPEC.format(name=name, version=version, release=release, epoch=epoch))
        subprocess.run(
            ["rpmbuild", "-bb", "--define", f"_topdir {tmp_path / 'top'}", str(spec)],
            check=True,
            capture_output=True,
        )
    built = sorted(str(p) for p in (tmp_path / "top" / "RPMS").rglob("*.rpm"))
    subprocess.run(
        [
            "rpm",
            "--dbpath",
            str(dbpath),
            "-i",
            "--justdb",
            "--nodeps",
            "--ignoreos",
            "--ignorearch",
            *built,
        ],
        check=True,
        capture_output=True,
    )


def rpm_query(dbpath: Path) -> list[str]:
    out = subprocess.run(
        [
            "rpm",
            "--dbpath",
            str(dbpath),
            "-qa",
            "--qf",
            "%{NAME} %|EPOCH?{%{EPOCH}:}|%{VERSION}-%{RELEASE} %{ARCH} %{INSTALLTIME}\\n",
        ],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return sorted(out.splitlines())


@needs_rpm
def test_rpmdb_built_by_rpm_decodes_like_rpm_queries_it(guest: Guest, tmp_path: Path) -> None:
    dbpath = guest.host("/var/lib/rpm")
    build_rpmdb(tmp_path, dbpath)
    warnings: list[str] = []
    db = rpm.collect_rpm(guest.fs, warnings)
    assert warnings == []
    assert db.last_install is not None
    theirs = [row.rsplit(" ", 1) for row in rpm_query(dbpath)]
    assert sorted(f"{p.name} {p.version} {p.arch}" for p in db.packages) == [
        package for package, _ in theirs
    ]
    assert int(db.last_install.timestamp()) == max(int(time) for _, time in theirs)
    by_name = {p.name: p for p in db.packages}
    assert by_name["hello-vm"] == Package("hello-vm", "2:1.2.3-4.el9", "noarch", "hello-vm")
    assert by_name["openssl-libs"].source == "openssl-libs"


@needs_rpm
def test_rpmdb_in_usr_lib_sysimage(guest: Guest, tmp_path: Path) -> None:
    build_rpmdb(tmp_path, guest.host("/usr/lib/sysimage/rpm"))
    assert len(rpm.collect_rpm(guest.fs, []).packages) == 2


@needs_rpm
def test_corrupt_rpm_headers_are_skipped_with_warning(guest: Guest, tmp_path: Path) -> None:
    dbpath = guest.host("/var/lib/rpm")
    build_rpmdb(tmp_path, dbpath)
    with sqlite3.connect(dbpath / "rpmdb.sqlite") as conn:
        conn.execute("INSERT INTO Packages (blob) VALUES (?)", (b"\x00\x00\x00\x05junk",))
        good = conn.execute("SELECT blob FROM Packages ORDER BY hnum LIMIT 1").fetchone()[0]
        # An index entry whose data offset points past the data.
        il = struct.unpack(">I", good[:4])[0]
        broken = bytearray(good)
        for i in range(il):
            tag = struct.unpack_from(">i", broken, 8 + 16 * i)[0]
            if tag == rpm.TAG_NAME:
                struct.pack_into(">i", broken, 8 + 16 * i + 8, 0x7FFFFFF0)
        conn.execute("INSERT INTO Packages (blob) VALUES (?)", (bytes(broken),))
        conn.execute("INSERT INTO Packages (blob) VALUES (?)", (good[:40],))
    warnings: list[str] = []
    assert len(rpm.collect_rpm(guest.fs, warnings).packages) == 2
    assert warnings == ["/var/lib/rpm/rpmdb.sqlite: 3 corrupt package header(s) skipped"]


def test_rpmdb_that_is_not_sqlite_is_a_warning(guest: Guest) -> None:
    guest.write("/var/lib/rpm/rpmdb.sqlite", b"\x00" * 4096)
    warnings: list[str] = []
    assert rpm.collect_rpm(guest.fs, warnings).packages == ()
    assert len(warnings) == 1 and warnings[0].startswith("/var/lib/rpm/rpmdb.sqlite:")


def test_source_rpm_name() -> None:
    assert rpm.source_name("openssl-3.0.7-25.el9.src.rpm") == "openssl"
    assert rpm.source_name("python3.11-3.11.5-1.el9.nosrc.rpm") == "python3.11"
    assert rpm.source_name("garbage") is None
