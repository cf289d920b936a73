"""rpm databases of every generation, built by real tools and checked against rpm's own query.

The packages are real: ``rpmbuild`` makes them and ``rpm -i --justdb`` registers them in an
sqlite rpmdb, whose header blobs are then stored as rpm stored them in the other formats:
Berkeley DB hash files written by ``db_load`` (Debian's db-util), read back by Debian's rpm
4.18 through its ``bdb_ro`` backend as the oracle; and ndb ``Packages.db`` files, which no
tool here can write (Debian's rpm is built without ndb), laid out from rpm's format
(``lib/backend/ndb/rpmpkg.c``) and compared with rpm's query of the sqlite database that
holds the same blobs.
"""

from __future__ import annotations

import random
import shutil
import sqlite3
import struct
import subprocess
import time
import zlib
from dataclasses import dataclass
from pathlib import Path

import pytest

from vmaudit.collect import rpm
from vmaudit.collect.linux import collect_linux
from vmaudit.collect.osinfo import detect_linux

from .conftest import NOW, Guest, image_info

pytestmark = pytest.mark.skipif(
    any(shutil.which(tool) is None for tool in ("rpm", "rpmbuild", "db_load")),
    reason="rpm, rpmbuild or db_load missing (the Makefile's DEB_PACKAGES installs them)",
)

SUBPACKAGES = 24
BIG_FILES = 1500  # one package whose header spans hundreds of 512-byte overflow pages
QUERY = (
    "%{NAME}\\t%|EPOCH?{%{EPOCH}:}|%{VERSION}-%{RELEASE}\\t%{ARCH}\\t%{SOURCERPM}"
    "\\t%{INSTALLTIME}\\n"
)
TIME_BOUND = 60.0  # seconds; generous, the benchmark measures speed


def spec_with_subpackages() -> str:
    """One source package with an epoch, many binary packages, one of them with many files."""
    lines = [
        "Name: vmbase", "Version: 2.4.1", "Release: 7.el7", "Epoch: 3",
        "Summary: test", "License: MIT", "BuildArch: noarch",
        "%description", "test",
    ]  # fmt: skip
    for number in range(SUBPACKAGES):
        lines += [
            f"%package -n libvm{number}", f"Summary: sub {number}",
            f"Version: 1.{number}", f"%description -n libvm{number}", "sub",
            f"%files -n libvm{number}", f"/usr/share/libvm{number}",
        ]  # fmt: skip
    lines += [
        "%install",
        "mkdir -p %{buildroot}/usr/share/vmbase/many",
        f"for i in $(seq {BIG_FILES}); do echo $i > %{{buildroot}}/usr/share/vmbase/many/f$i; done",
        *(f"echo {n} > %{{buildroot}}/usr/share/libvm{n}" for n in range(SUBPACKAGES)),
        "%files",
        "/usr/share/vmbase",
    ]  # fmt: skip
    return "\n".join(lines) + "\n"


PLAIN_SPEC = """Name: plain-tool
Version: 0.9
Release: 1.sles15
Summary: test
License: MIT
BuildArch: noarch
%description
test
%install
mkdir -p %{buildroot}/usr/share/plain
echo hi > %{buildroot}/usr/share/plain/f
%files
/usr/share/plain/f
"""


@dataclass(frozen=True)
class Built:
    sqlite_dir: Path  # an rpmdb.sqlite written by rpm
    blobs: tuple[bytes, ...]  # its header blobs, by header number
    expected: tuple[tuple[str, str, str, str], ...]  # rpm's own query of it
    newest_install: int


def rpm_query(dbpath: Path, backend: str) -> tuple[list[tuple[str, str, str, str]], int]:
    """``rpm -qa`` on ``dbpath`` through ``backend``: (name, evr, arch, source) sorted, newest."""
    out = subprocess.run(
        ["rpm", "-qa", "--dbpath", str(dbpath), "--define", f"_db_backend {backend}",
         "--qf", QUERY],
        check=True, capture_output=True, text=True,
    ).stdout  # fmt: skip
    rows = []
    newest = 0
    for line in out.splitlines():
        name, evr, arch, sourcerpm, installed = line.split("\t")
        rows.append((name, evr, arch, sourcerpm.removesuffix(".src.rpm").rsplit("-", 2)[0]))
        newest = max(newest, int(installed))
    return sorted(rows), newest


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Built:
    work = tmp_path_factory.mktemp("rpmbuild")
    for name, text in (("vmbase", spec_with_subpackages()), ("plain", PLAIN_SPEC)):
        spec = work / f"{name}.spec"
        spec.write_text(text)
        subprocess.run(["rpmbuild", "-bb", "--define", f"_topdir {work / 'top'}", str(spec)],
                       check=True, capture_output=True)  # fmt: skip
    packages = sorted(str(p) for p in (work / "top" / "RPMS").rglob("*.rpm"))
    dbpath = work / "sqlite"
    dbpath.mkdir()
    subprocess.run(["rpm", "--dbpath", str(dbpath), "--initdb"], check=True)
    subprocess.run(["rpm", "--dbpath", str(dbpath), "-i", "--justdb", "--nodeps", "--ignoreos",
                    "--ignorearch", *packages], check=True, capture_output=True)  # fmt: skip
    with sqlite3.connect(dbpath / "rpmdb.sqlite") as conn:
        blobs = tuple(blob for (blob,) in conn.execute("SELECT blob FROM Packages ORDER BY hnum"))
    expected, newest = rpm_query(dbpath, "sqlite")
    assert len(expected) == SUBPACKAGES + 2
    return Built(dbpath, blobs, tuple(expected), newest)


def ours(db: rpm.RpmDb) -> list[tuple[str, str, str, str]]:
    return sorted((p.name, p.version, p.arch or "", p.source or "") for p in db.packages)


def colliding_numbers(count: int, order: str) -> list[int]:
    """Header numbers whose keys all fall in bucket 0 of a table of up to 256 buckets.

    Berkeley DB's default hash (``__ham_func5``, which rpm's bdb_ro repeats) is FNV-1 over
    the key's bytes; a bucket is its low bits. Such keys make one bucket's chain of pages.
    """
    numbers: list[int] = []
    number = 1
    while len(numbers) < count:
        value = 0
        for byte in struct.pack(order + "I", number):
            value = ((value * 16777619) & 0xFFFFFFFF) ^ byte
        if value & 0xFF == 0:
            numbers.append(number)
        number += 1
    return numbers


def write_bdb(
    path: Path, blobs: tuple[bytes, ...], pagesize: int, lorder: int = 1234, collide: bool = False
) -> Path:
    """A Berkeley DB hash ``Packages`` as rpm keeps it, written by db_load.

    Keys are header numbers in the writer's byte order; number 0 holds the next free one.
    ``collide``: numbers chosen to share one bucket, instead of 1, 2, 3...
    """
    order = "<" if lorder == 1234 else ">"
    numbers = colliding_numbers(len(blobs), order) if collide else range(1, len(blobs) + 1)
    records = [(struct.pack(order + "I", 0), struct.pack(order + "I", max(numbers) + 1))]
    records += [(struct.pack(order + "I", n), blob) for n, blob in zip(numbers, blobs, strict=True)]
    dump = ["VERSION=3", "format=bytevalue", "type=hash", f"db_pagesize={pagesize}",
            f"db_lorder={lorder}", "HEADER=END"]  # fmt: skip
    for key, value in records:
        dump += [" " + key.hex(), " " + value.hex()]
    dump.append("DATA=END")
    source = path.parent / "Packages.dump"
    path.parent.mkdir(parents=True, exist_ok=True)
    source.write_text("\n".join(dump) + "\n")
    subprocess.run(["db_load", "-f", str(source), str(path)], check=True)
    source.unlink()
    return path


NDB_PAGE, NDB_BLOCK = 4096, 16


def write_ndb(path: Path, blobs: tuple[bytes, ...], slot_pages: int = 1) -> Path:
    """An ndb ``Packages.db`` laid out as rpm's rpmpkg.c writes one.

    Packages take the first slots after the header; with more than one slot page, the last
    slots of the table, so that the first ones are read empty.
    """
    le = "<I"
    magic = {name: int.from_bytes(name.encode(), "little") for name in
             ("RpmP", "Slot", "BlbS", "BlbE")}  # fmt: skip
    table = bytearray(slot_pages * NDB_PAGE)
    for offset in range(0, len(table), 16):
        struct.pack_into(le, table, offset, magic["Slot"])
    struct.pack_into("<5I", table, 0, magic["RpmP"], 0, 1, slot_pages, len(blobs) + 1)
    first_slot = 2 if slot_pages == 1 else max(2, slot_pages * (NDB_PAGE // 16) - len(blobs))
    area = bytearray()
    base = slot_pages * NDB_PAGE // NDB_BLOCK
    for number, blob in enumerate(blobs):
        pkgidx = number + 1
        head = struct.pack("<4I", magic["BlbS"], pkgidx, 1700000000, len(blob))
        blocks = (16 + len(blob) + 12 + NDB_BLOCK - 1) // NDB_BLOCK
        pad = bytes(blocks * NDB_BLOCK - 16 - len(blob) - 12)
        tail = struct.pack("<3I", zlib.adler32(head + blob + pad), len(blob), magic["BlbE"])
        slot = first_slot + number
        struct.pack_into("<4I", table, slot * 16, magic["Slot"], pkgidx,
                         base + len(area) // NDB_BLOCK, blocks)  # fmt: skip
        area += head + blob + pad + tail
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(bytes(table) + bytes(area))
    return path


def read_timed(guest: Guest) -> tuple[rpm.RpmDb, list[str]]:
    warnings: list[str] = []
    started = time.monotonic()
    db = rpm.collect_rpm(guest.fs, warnings)
    assert time.monotonic() - started < TIME_BOUND
    return db, warnings


# ------------------------------------------------------------------ equal to rpm's own reading


def test_sqlite_rpmdb_equals_rpm_query(built: Built, guest: Guest) -> None:
    shutil.copytree(built.sqlite_dir, guest.host("/var/lib/rpm"))
    db, warnings = read_timed(guest)
    assert warnings == []
    assert ours(db) == list(built.expected)
    assert db.last_install is not None
    assert int(db.last_install.timestamp()) == built.newest_install
    assert ("libvm3", "3:1.3-7.el7", "noarch", "vmbase") in built.expected
    assert ("plain-tool", "0.9-1.sles15", "noarch", "plain-tool") in built.expected


@dataclass(frozen=True)
class Layout:
    buckets: int
    chained_pages: int  # hash pages that continue on another: buckets longer than a page
    headers_on_page: int  # values stored on the hash page itself, not on overflow pages


def layout(data: bytes, pagesize: int, order: str) -> Layout:
    """What db_load made of the pairs, so a test knows which paths of the format it covers."""
    chained = on_page = 0
    for pgno in pages(data, pagesize, 13):
        start = pgno * pagesize
        entries, _ = struct.unpack_from(order + "HH", data, start + 20)
        offsets = struct.unpack_from(f"{order}{entries}H", data, start + 26)
        chained += bool(struct.unpack_from(order + "I", data, start + 16)[0])
        limit = [pagesize, *offsets]
        on_page += sum(
            1 for i in range(1, entries, 2)
            if data[start + offsets[i]] == 1 and limit[i] - offsets[i] > 100
        )  # fmt: skip
    return Layout(struct.unpack_from(order + "I", data, 72)[0] + 1, chained, on_page)


@pytest.mark.parametrize(
    ("pagesize", "collide", "copies", "meant"),
    [
        # Many buckets, every header on an overflow chain of 512-byte pages.
        (512, False, 4, Layout(buckets=7, chained_pages=0, headers_on_page=0)),
        # One bucket holding every key: its hash pages continue on other pages.
        (512, True, 4, Layout(buckets=1, chained_pages=3, headers_on_page=0)),
        # Berkeley DB's defaults, as on most RHEL 7 guests.
        (4096, False, 1, Layout(buckets=2, chained_pages=0, headers_on_page=0)),
        # Headers on the hash page itself, the one big header overflowing.
        (65536, False, 1, Layout(buckets=2, chained_pages=0, headers_on_page=SUBPACKAGES + 1)),
    ],
)
@pytest.mark.parametrize("lorder", [1234, 4321])
def test_berkeley_db_packages_equal_rpm_bdb_ro(
    built: Built, guest: Guest, pagesize: int, collide: bool, copies: int, meant: Layout,
    lorder: int,
) -> None:  # fmt: skip
    path = guest.host("/var/lib/rpm/Packages")
    write_bdb(path, built.blobs * copies, pagesize, lorder, collide)
    made = layout(path.read_bytes(), pagesize, "<" if lorder == 1234 else ">")
    assert made.buckets >= meant.buckets
    assert made.chained_pages >= meant.chained_pages
    assert made.headers_on_page >= meant.headers_on_page
    theirs, newest = rpm_query(path.parent, "bdb_ro")
    assert theirs == sorted(list(built.expected) * copies)
    db, warnings = read_timed(guest)
    assert warnings == []
    assert ours(db) == theirs
    assert db.last_install is not None and int(db.last_install.timestamp()) == newest


def test_hash_version_8_as_berkeley_db_before_4_6_wrote_it(built: Built, guest: Guest) -> None:
    """RHEL 5 and SLES 11: db_load writes version 9 only; version 8 differs in the type of its
    hash pages (P_HASH_UNSORTED, 2), so the file is rewritten so, and bdb_ro is the oracle."""
    path = write_bdb(guest.host("/var/lib/rpm/Packages"), built.blobs, 4096)
    data = bytearray(path.read_bytes())
    struct.pack_into("<I", data, 16, 8)
    for pgno in pages(data, 4096, 13):
        data[pgno * 4096 + 25] = 2
    path.write_bytes(bytes(data))
    theirs, _ = rpm_query(path.parent, "bdb_ro")
    assert theirs == list(built.expected)
    db, warnings = read_timed(guest)
    assert warnings == []
    assert ours(db) == theirs


def test_berkeley_db_in_usr_lib_sysimage(built: Built, guest: Guest) -> None:
    write_bdb(guest.host("/usr/lib/sysimage/rpm/Packages"), built.blobs, 4096)
    db, warnings = read_timed(guest)
    assert warnings == []
    assert ours(db) == list(built.expected)


@pytest.mark.parametrize("slot_pages", [1, 2])
def test_ndb_packages_db_read_from_rpms_layout(built: Built, guest: Guest, slot_pages: int) -> None:
    write_ndb(guest.host("/usr/lib/sysimage/rpm/Packages.db"), built.blobs, slot_pages)
    db, warnings = read_timed(guest)
    assert warnings == []
    assert ours(db) == list(built.expected)
    assert db.last_install is not None
    assert int(db.last_install.timestamp()) == built.newest_install


def test_sqlite_is_preferred_to_older_formats_left_beside_it(built: Built, guest: Guest) -> None:
    shutil.copytree(built.sqlite_dir, guest.host("/var/lib/rpm"))
    write_bdb(guest.host("/var/lib/rpm/Packages"), built.blobs[:1], 4096)
    db, warnings = read_timed(guest)
    assert warnings == []
    assert len(db.packages) == len(built.expected)


def test_sqlite_wal_not_yet_checkpointed_is_replayed(built: Built, guest: Guest) -> None:
    """A guest stopped mid-transaction: the removal is only in the WAL, as rpm would see it."""
    copy = guest.host("/var/lib/rpm")
    shutil.copytree(built.sqlite_dir, copy)
    live = sqlite3.connect(copy / "rpmdb.sqlite")
    try:
        live.execute("PRAGMA wal_autocheckpoint = 0")
        live.execute("DELETE FROM Packages WHERE hnum = 1")
        live.commit()
        frozen = guest.host("/frozen/var/lib/rpm")
        frozen.mkdir(parents=True)
        for name in ("rpmdb.sqlite", "rpmdb.sqlite-wal"):
            shutil.copy(copy / name, frozen / name)
    finally:
        live.close()
    assert (frozen / "rpmdb.sqlite-wal").stat().st_size > 0
    theirs, _ = rpm_query(frozen, "sqlite")
    assert len(theirs) == len(built.expected) - 1
    warnings: list[str] = []
    db = rpm.collect_rpm(Guest(guest.host("/frozen")).fs, warnings)
    assert warnings == []
    assert ours(db) == theirs


# ------------------------------------------------------------------ hostile Berkeley DB files


def pages(data: bytes | bytearray, pagesize: int, kind: int) -> list[int]:
    """Numbers of the pages of one type (byte 25 of the page header)."""
    return [n for n in range(1, len(data) // pagesize) if data[n * pagesize + 25] == kind]


def set_next(data: bytearray, pagesize: int, pgno: int, target: int) -> None:
    struct.pack_into("<I", data, pgno * pagesize + 16, target)


def next_of(data: bytearray, pagesize: int, pgno: int) -> int:
    return int(struct.unpack_from("<I", data, pgno * pagesize + 16)[0])


def test_bdb_overflow_chain_loop_drops_that_package_only(built: Built, guest: Guest) -> None:
    path = write_bdb(guest.host("/var/lib/rpm/Packages"), built.blobs, 512)
    data = bytearray(path.read_bytes())
    middle = next(n for n in pages(data, 512, 7) if next_of(data, 512, n))
    set_next(data, 512, middle, middle)
    path.write_bytes(bytes(data))
    db, warnings = read_timed(guest)
    assert len(db.packages) == len(built.expected) - 1
    assert set(ours(db)) < set(built.expected)
    assert len(warnings) == 1
    assert warnings[0].startswith("/var/lib/rpm/Packages: 1 damaged item(s) or page chain(s)")
    assert f"page {middle} reached twice" in warnings[0]


def test_bdb_hash_page_chain_looping_back_ends_that_chain(built: Built, guest: Guest) -> None:
    path = write_bdb(guest.host("/var/lib/rpm/Packages"), built.blobs, 4096)
    data = bytearray(path.read_bytes())
    hash_pages = pages(data, 4096, 13)
    for pgno in hash_pages:
        if not next_of(data, 4096, pgno):
            set_next(data, 4096, pgno, hash_pages[0])  # every chain loops to the first
    path.write_bytes(bytes(data))
    db, warnings = read_timed(guest)
    assert ours(db) == list(built.expected)  # each page read once, nothing lost
    assert len(warnings) == 1 and "reached twice" in warnings[0]


def test_bdb_huge_bucket_count_is_refused(built: Built, guest: Guest) -> None:
    path = write_bdb(guest.host("/var/lib/rpm/Packages"), built.blobs, 4096)
    data = bytearray(path.read_bytes())
    struct.pack_into("<I", data, 72, 0xFFFFFFFF)  # max_bucket
    path.write_bytes(bytes(data))
    db, warnings = read_timed(guest)
    assert db.packages == ()
    assert warnings == [
        "/var/lib/rpm/Packages: not a readable Berkeley DB hash database "
        f"(4294967296 buckets in {len(data) // 4096} pages)"
    ]


def test_bdb_huge_entry_count_and_overflow_length(built: Built, guest: Guest) -> None:
    path = write_bdb(guest.host("/var/lib/rpm/Packages"), built.blobs, 512)
    data = bytearray(path.read_bytes())
    hash_pages = pages(data, 512, 13)
    struct.pack_into("<H", data, hash_pages[0] * 512 + 20, 0xFFFF)  # entries
    # An off-page item (type 3) on another page claims 4 GiB.
    for pgno in hash_pages[1:]:
        start = pgno * 512
        (entries,) = struct.unpack_from("<H", data, start + 20)
        offsets = struct.unpack_from(f"<{entries}H", data, start + 26)
        offpage = [o for o in offsets if data[start + o] == 3]
        if offpage:
            struct.pack_into("<I", data, start + offpage[0] + 8, 0xFFFFFFFF)
            break
    path.write_bytes(bytes(data))
    db, warnings = read_timed(guest)
    assert 0 < len(db.packages) < len(built.expected)
    assert set(ours(db)) < set(built.expected)
    assert len(warnings) == 1
    assert "damaged item(s) or page chain(s) skipped" in warnings[0]


def test_bdb_truncated_file_keeps_what_is_there(built: Built, guest: Guest) -> None:
    path = write_bdb(guest.host("/var/lib/rpm/Packages"), built.blobs, 4096)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2 + 100])
    db, warnings = read_timed(guest)
    assert set(ours(db)) < set(built.expected)
    assert len(warnings) == 1 and "truncated:" in warnings[0]


def test_bdb_randomly_damaged_files_end_in_warnings(built: Built, guest: Guest) -> None:
    path = write_bdb(guest.host("/var/lib/rpm/Packages"), built.blobs, 512)
    original = path.read_bytes()
    chooser = random.Random(14)
    started = time.monotonic()
    for _ in range(150):
        data = bytearray(original)
        for _ in range(chooser.randint(1, 40)):
            data[chooser.randrange(len(data))] = chooser.randrange(256)
        path.write_bytes(bytes(data))
        db = rpm.collect_rpm(guest.fs, [])
        assert len(db.packages) <= len(built.expected) + 1
    assert time.monotonic() - started < TIME_BOUND


def test_not_berkeley_db_packages_is_a_warning(guest: Guest) -> None:
    guest.write("/var/lib/rpm/Packages", b"\x00" * 4096)
    db, warnings = read_timed(guest)
    assert db.packages == ()
    assert warnings == [
        "/var/lib/rpm/Packages: not a readable Berkeley DB hash database "
        "(no Berkeley DB hash magic)"
    ]


# ------------------------------------------------------------------ hostile ndb files


def test_ndb_slots_sharing_one_blob_read_it_once(built: Built, guest: Guest) -> None:
    path = write_ndb(guest.host("/var/lib/rpm/Packages.db"), built.blobs)
    data = bytearray(path.read_bytes())
    first = struct.unpack_from("<4I", data, 32)
    for slot in range(3, 256):  # every other slot points at the first blob
        struct.pack_into("<4I", data, slot * 16, first[0], slot, first[2], first[3])
    path.write_bytes(bytes(data))
    db, warnings = read_timed(guest)
    assert len(db.packages) == 1
    assert len(warnings) == 1
    assert warnings[0].startswith("/var/lib/rpm/Packages.db: 253 damaged slot(s) or blob(s)")


def test_ndb_huge_counts_and_lengths(built: Built, guest: Guest) -> None:
    path = write_ndb(guest.host("/var/lib/rpm/Packages.db"), built.blobs)
    data = bytearray(path.read_bytes())
    _, _, blkoff, _ = struct.unpack_from("<4I", data, 32)
    struct.pack_into("<I", data, blkoff * 16 + 12, 0xFFFFFFF0)  # blob length
    struct.pack_into("<I", data, 48 + 12, 0xFFFFFFFF)  # block count of the second slot
    path.write_bytes(bytes(data))
    db, warnings = read_timed(guest)
    assert len(db.packages) == len(built.expected) - 2
    assert "2 damaged slot(s) or blob(s) skipped" in warnings[0]
    struct.pack_into("<I", data, 12, 0xFFFFFFFF)  # slot pages
    path.write_bytes(bytes(data))
    db, warnings = read_timed(guest)
    assert db.packages == ()
    assert warnings == [
        "/var/lib/rpm/Packages.db: not a readable ndb package database "
        f"(4294967295 slot pages in a file of {len(data)} bytes)"
    ]


def test_ndb_truncated_and_randomly_damaged_files_end_in_warnings(
    built: Built, guest: Guest
) -> None:
    path = write_ndb(guest.host("/var/lib/rpm/Packages.db"), built.blobs)
    original = path.read_bytes()
    path.write_bytes(original[: len(original) // 2])
    db, warnings = read_timed(guest)
    assert set(ours(db)) < set(built.expected)
    assert len(warnings) == 1 and "blob beyond the end of the file" in warnings[0]
    chooser = random.Random(15)
    started = time.monotonic()
    for _ in range(150):
        data = bytearray(original)
        for _ in range(chooser.randint(1, 40)):
            data[chooser.randrange(8192)] = chooser.randrange(256)  # slots and first blobs
        path.write_bytes(bytes(data))
        assert len(rpm.collect_rpm(guest.fs, []).packages) <= len(built.expected)
    assert time.monotonic() - started < TIME_BOUND


# ------------------------------------------------------------------ hostile sqlite files

INFINITE_VIEW = (
    "CREATE VIEW Packages AS WITH RECURSIVE forever(hnum, blob) AS "
    "(SELECT 1, x'00' UNION ALL SELECT hnum + 1, blob FROM forever) SELECT hnum, blob FROM forever"
)


def test_packages_view_over_infinite_recursive_cte_ends_with_warning(
    built: Built, guest: Guest
) -> None:
    guest.write("/etc/os-release", 'ID=rhel\nVERSION_ID="9.4"\nNAME="Red Hat Enterprise Linux"\n')
    guest.write("/etc/passwd", "root:x:0:0:root:/root:/bin/bash\n")
    shutil.copytree(built.sqlite_dir, guest.host("/var/lib/rpm"))
    with sqlite3.connect(guest.host("/var/lib/rpm/rpmdb.sqlite")) as conn:
        conn.execute("DROP TABLE Packages")
        conn.execute(INFINITE_VIEW)
    warnings: list[str] = []
    os_info = detect_linux(guest.fs, warnings)
    assert os_info is not None and os_info.package_format == "rpm"
    started = time.monotonic()
    facts = collect_linux(guest.fs, image_info(), os_info, NOW, warnings)
    assert time.monotonic() - started < TIME_BOUND
    assert facts.packages == ()
    assert [user.name for user in facts.users] == ["root"]
    assert "/var/lib/rpm/rpmdb.sqlite: Packages is a view (root page 0), not rpm's table" in (
        facts.warnings
    )


def test_sqlite_step_budget_stops_a_long_query(built: Built, tmp_path: Path) -> None:
    copy = tmp_path / "rpmdb.sqlite"
    shutil.copy(built.sqlite_dir / "rpmdb.sqlite", copy)
    with sqlite3.connect(copy) as conn:
        for _ in range(8):  # 256 copies of each real header
            conn.execute("INSERT INTO Packages (blob) SELECT blob FROM Packages")
    rows = len(built.expected) * 256
    warnings: list[str] = []
    db = rpm.read_sqlite_rpmdb(str(copy), warnings, "rpmdb.sqlite", max_steps=10_000)
    assert 0 < len(db.packages) < rows
    assert warnings == ["rpmdb.sqlite: stopped at its budget of 10000 sqlite steps"]
    warnings = []
    assert len(rpm.read_sqlite_rpmdb(str(copy), warnings, "x").packages) == rows
    assert warnings == []


def test_sqlite_packages_blob_computed_by_expression_is_refused(guest: Guest) -> None:
    path = guest.host("/var/lib/rpm/rpmdb.sqlite")
    path.parent.mkdir(parents=True)
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE Packages (hnum INTEGER PRIMARY KEY, "
                     "blob BLOB AS (zeroblob(900000000)))")  # fmt: skip
        conn.executemany("INSERT INTO Packages (hnum) VALUES (?)", [(n,) for n in range(1000)])
    db, warnings = read_timed(guest)
    assert db.packages == ()
    assert warnings == ["/var/lib/rpm/rpmdb.sqlite: Packages has no plain hnum and blob columns"]
