"""StateDB: schema and migrations, refusing corrupt files, cache, events, report and history."""

from __future__ import annotations

import os
import random
import sqlite3
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from state_helpers import audited, failed, make_facts, make_finding, make_image, make_user

from tests.pgserver import Server, query
from vmaudit.baseline.factsio import facts_from_dict
from vmaudit.discover.identity import image_identity
from vmaudit.errors import ErrorKind
from vmaudit.models import SECTIONS, Coverage, ImageResult, Package, ScanReport
from vmaudit.state import StateDB, StateError, default_state_path, schema


def report_of(
    *results: ImageResult, started: str = "2026-11-27T10:00:00Z", exit_code: int = 1
) -> ScanReport:
    return ScanReport(
        started, "2026-11-27T10:05:00Z", ("default",), "high", tuple(results), exit_code
    )


@pytest.fixture
def db(state_ref: Path | str) -> Iterator[StateDB]:
    """A fresh state database on each backend (tests/state/conftest.py)."""
    with StateDB(state_ref) as state:
        yield state


# ------------------------------------------------------------------ location and schema


def test_default_path_follows_xdg_state_home(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path))
    assert default_state_path() == tmp_path / "vmaudit" / "state.db"


def test_default_path_ignores_unset_or_relative_xdg_state_home(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("XDG_STATE_HOME", raising=False)
    assert default_state_path() == tmp_path / ".local" / "state" / "vmaudit" / "state.db"
    monkeypatch.setenv("XDG_STATE_HOME", "relative/dir")
    assert default_state_path() == tmp_path / ".local" / "state" / "vmaudit" / "state.db"


def test_a_new_database_is_wal_at_the_latest_version(tmp_path: Path) -> None:
    path = tmp_path / "new" / "state.db"
    StateDB(path).close()
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA user_version").fetchone()[0] == schema.LATEST == 4
    assert conn.execute("PRAGMA application_id").fetchone()[0] == schema.APPLICATION_ID
    conn.close()


def test_a_v1_database_is_migrated_and_keeps_its_rows(tmp_path: Path) -> None:
    path = tmp_path / "v1.db"
    conn = sqlite3.connect(path)
    for statement in schema.statements(schema.V1):
        conn.execute(statement)
    conn.execute(
        "INSERT INTO scans (id, started_at, finished_at, baselines_json, fail_on,"
        " exit_code) VALUES (7, 's', 'f', '[\"default\"]', 'high', 1)"
    )
    conn.execute(
        "INSERT INTO results (scan_id, image_key, recorded_at, status, image_json,"
        " findings_json, risk_score, risk_level, business_json, from_cache, rules_json)"
        " VALUES (7, ?, '2026-01-01T00:00:00Z', 'audited', ?, ?, 40, 'medium', ?, 0, '[]')",
        (
            b"/ds/old.qcow2",
            '{"disks":[],"format":"qcow2","in_use":false,"path":"/ds/old.qcow2","vm":null}',
            '[{"rule":"a"},{"rule":"b"}]',
            '{"application":null,"criticality":"medium","owner":null}',
        ),
    )
    conn.execute(f"PRAGMA application_id = {schema.APPLICATION_ID}")
    conn.execute("PRAGMA user_version = 1")
    conn.commit()
    conn.close()

    with StateDB(path) as state:
        assert state.schema_version() == schema.LATEST
    conn = sqlite3.connect(path)
    # Findings without a severity and no facts: the capped score is kept, marked as such.
    assert conn.execute(
        "SELECT findings_count, risk_score, risk_exposure, risk_formula FROM results"
    ).fetchall() == [(2, 40, None, 1)]
    assert conn.execute("SELECT id, finished_rank, roots_json FROM scans").fetchall() == [
        (7, 7, "[]")
    ]
    indexes = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type='index'")}
    assert {"results_by_image", "events_by_image", "scans_by_finish"} <= indexes
    conn.close()


def test_a_database_from_a_newer_vmaudit_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "future.db"
    StateDB(path).close()
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA user_version = 99")
    conn.close()
    with pytest.raises(StateError, match="newer"):
        StateDB(path)


def test_another_programs_sqlite_file_is_refused_and_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "other.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE mine (x)")
    conn.commit()
    conn.close()
    before = path.read_bytes()
    with pytest.raises(StateError) as caught:
        StateDB(path)
    assert caught.value.kind is ErrorKind.CONFIG
    assert path.read_bytes() == before


# ------------------------------------------------------------------ corrupt files


def test_random_bytes_are_reported_naming_the_file_and_not_overwritten(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    garbage = os.urandom(8192)
    path.write_bytes(garbage)
    with pytest.raises(StateError) as caught:
        StateDB(path)
    assert caught.value.kind is ErrorKind.CONFIG
    assert str(path) in str(caught.value)
    assert path.read_bytes() == garbage


def test_a_truncated_database_is_reported_and_not_overwritten(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    with StateDB(path) as state:
        image = make_image("/ds/vm.qcow2")
        scan = state.begin_scan(["default"], "2026-11-27T10:00:00Z")
        for number in range(200):
            image = make_image(f"/ds/vm{number}.qcow2")
            state.record_result(scan, audited(image, make_facts(image.path)), None)
        state.finish_scan(scan, report_of(), [])
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    whole = path.read_bytes()
    assert len(whole) > 3 * 4096
    path.write_bytes(whole[: len(whole) // 2 + 100])
    truncated = path.read_bytes()
    with pytest.raises(StateError, match="truncated") as caught:
        StateDB(path)
    assert str(path) in str(caught.value)
    assert path.read_bytes() == truncated


def test_damaged_pages_are_found_by_check_and_by_any_read(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    with StateDB(path) as state:
        scan = state.begin_scan(["default"], "2026-11-27T10:00:00Z")
        for number in range(100):
            image = make_image(f"/ds/vm{number}.qcow2")
            state.record_result(scan, audited(image, make_facts(image.path)), None)
        state.finish_scan(scan, report_of(), [])
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    damaged = bytearray(path.read_bytes())
    damaged[4096 : 4 * 4096] = random.Random(7).randbytes(3 * 4096)
    path.write_bytes(bytes(damaged))
    with StateDB(path) as state:
        with pytest.raises(StateError, match=r"corrupt|malformed") as caught:
            state.check()
        assert str(path) in str(caught.value)
        with pytest.raises(StateError, match="malformed"):
            state.history("/ds/vm1.qcow2")
    assert path.read_bytes() == bytes(damaged)


def test_a_healthy_database_passes_check(db: StateDB) -> None:
    db.begin_scan(["default"], "t")
    db.check()


def test_a_header_only_fragment_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    path.write_bytes(b"SQLite format 3\x00" + b"\x00" * 20)
    with pytest.raises(StateError, match="truncated"):
        StateDB(path)
    assert len(path.read_bytes()) == 36


def test_a_folder_in_place_of_the_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(StateError, match="not a regular file"):
        StateDB(tmp_path)


# ------------------------------------------------------------------ cache


def test_facts_round_trip_through_facts_from_dict() -> None:
    facts = make_facts()
    assert facts_from_dict(facts.to_dict()) == facts


def test_unchanged_image_gets_its_facts_back(db: StateDB, tmp_path: Path) -> None:
    disk = tmp_path / "vm.qcow2"
    disk.write_bytes(b"qcow" * 100)
    image = make_image(disk)
    facts = make_facts(str(disk))
    scan = db.begin_scan(["default"], "2026-11-27T10:00:00Z")
    db.record_result(scan, audited(image, facts), image_identity(image))
    assert db.lookup_facts(image_identity(image)) == facts


def test_facts_read_before_a_section_existed_are_read_again(db: StateDB, tmp_path: Path) -> None:
    disk = tmp_path / "vm.qcow2"
    disk.write_bytes(b"qcow" * 100)
    image = make_image(disk)
    every = tuple(Coverage(section, "read") for section in SECTIONS)
    scan = db.begin_scan(["default"], "2026-11-27T10:00:00Z")
    db.record_result(
        scan, audited(image, make_facts(str(disk), coverage=every)), image_identity(image)
    )
    assert db.lookup_facts(image_identity(image)) is not None
    before_config = tuple(c for c in every if c.section != "config")  # a vmaudit of last month
    db.record_result(
        scan, audited(image, make_facts(str(disk), coverage=before_config)), image_identity(image)
    )
    assert db.lookup_facts(image_identity(image)) is None


def test_a_changed_image_is_not_served_from_the_cache(db: StateDB, tmp_path: Path) -> None:
    disk = tmp_path / "vm.qcow2"
    disk.write_bytes(b"qcow" * 100)
    image = make_image(disk)
    scan = db.begin_scan(["default"], "2026-11-27T10:00:00Z")
    db.record_result(scan, audited(image, make_facts(str(disk))), image_identity(image))
    disk.write_bytes(b"QCOW" * 100)
    assert db.lookup_facts(image_identity(image)) is None


def test_an_image_in_error_after_a_change_does_not_revive_old_facts(
    db: StateDB, tmp_path: Path
) -> None:
    disk = tmp_path / "vm.qcow2"
    disk.write_bytes(b"one")
    image = make_image(disk)
    old_identity = image_identity(image)
    scan = db.begin_scan(["default"], "2026-11-27T10:00:00Z")
    db.record_result(scan, audited(image, make_facts(str(disk))), old_identity)
    disk.write_bytes(b"two")
    second = db.begin_scan(["default"], "2026-11-28T10:00:00Z")
    db.record_result(second, failed(image), image_identity(image))
    assert db.lookup_facts(image_identity(image)) is None


def test_unknown_image_has_no_cached_facts(db: StateDB, tmp_path: Path) -> None:
    disk = tmp_path / "never.qcow2"
    disk.write_bytes(b"x")
    assert db.lookup_facts(image_identity(make_image(disk))) is None


# ------------------------------------------------------------------ events and history


def test_first_sight_is_appeared_and_an_unchanged_rescan_raises_nothing(
    db: StateDB, tmp_path: Path
) -> None:
    disk = tmp_path / "vm.qcow2"
    disk.write_bytes(b"x")
    image = make_image(disk)
    facts = make_facts(str(disk))
    first = db.begin_scan(["default"], "2026-11-27T10:00:00Z")
    events = db.record_result(first, audited(image, facts), image_identity(image))
    assert [e.kind for e in events] == ["appeared"]
    second = db.begin_scan(["default"], "2026-11-28T10:00:00Z")
    cached = db.lookup_facts(image_identity(image))
    assert cached is not None
    assert (
        db.record_result(second, audited(image, cached, from_cache=True), image_identity(image))
        == ()
    )


def test_a_modified_image_records_what_changed_in_the_guest(db: StateDB, tmp_path: Path) -> None:
    disk = tmp_path / "vm.qcow2"
    disk.write_bytes(b"before")
    image = make_image(disk)
    old = make_facts(str(disk))
    first = db.begin_scan(["default"], "2026-11-27T10:00:00Z")
    db.record_result(first, audited(image, old), image_identity(image))
    db.finish_scan(first, report_of(audited(image, old)), [str(tmp_path)])

    disk.write_bytes(b"after, the VM was powered on")
    new = replace(
        old,
        packages=(Package("openssl", "3.0.13-1~deb12u1", "amd64", "openssl"), *old.packages[1:]),
        users=(*old.users, make_user("toor", 0, admin=True, admin_via=("uid0",))),
    )
    second = db.begin_scan(["default"], "2026-11-28T10:00:00Z")
    events = db.record_result(
        second, audited(image, new, make_finding("toor")), image_identity(image)
    )
    db.finish_scan(second, report_of(audited(image, new)), [str(tmp_path)])

    assert [e.kind for e in events] == ["modified"]
    changes = events[0].changes
    assert changes["files"][0]["path"] == str(disk)
    assert set(changes["files"][0]["fields"]) >= {"size", "sha256_head"}
    assert changes["facts"]["packages"]["upgraded"][0]["new"] == "3.0.13-1~deb12u1"
    assert changes["facts"]["users"]["added"][0]["name"] == "toor"

    history = db.history(str(disk))
    assert [(h.scan_id, h.status, h.findings_count) for h in history] == [
        (first, "audited", 0),
        (second, "audited", 1),
    ]
    assert [e.kind for e in history[0].events] == ["appeared"]
    assert history[1].events[0].changes == changes
    assert history[1].risk is not None and history[1].risk.level == "high"


def test_a_change_seen_in_error_is_diffed_when_the_image_is_read_again(
    db: StateDB, tmp_path: Path
) -> None:
    disk = tmp_path / "vm.qcow2"
    disk.write_bytes(b"v1")
    image = make_image(disk)
    old = make_facts(str(disk))
    db.record_result(db.begin_scan([], "t1"), audited(image, old), image_identity(image))
    disk.write_bytes(b"v2 being written")
    events = db.record_result(db.begin_scan([], "t2"), failed(image), image_identity(image))
    assert events[0].kind == "modified"
    assert events[0].changes["facts"] is None
    new = make_facts(str(disk), hostname="renamed")
    events = db.record_result(db.begin_scan([], "t3"), audited(image, new), image_identity(image))
    assert [e.kind for e in events] == ["modified"]
    assert events[0].changes["files_changed_earlier"] is True
    assert events[0].changes["files"] == []
    assert events[0].changes["facts"]["os"]["hostname"] == {"old": "db-01", "new": "renamed"}


def test_a_deleted_image_under_a_scanned_root_disappears(db: StateDB, tmp_path: Path) -> None:
    kept, deleted = tmp_path / "kept.qcow2", tmp_path / "deleted.qcow2"
    elsewhere = tmp_path.parent / f"{tmp_path.name}-other.qcow2"
    for disk in (kept, deleted):
        disk.write_bytes(b"x")
    first = db.begin_scan(["default"], "t1")
    for disk in (kept, deleted):
        db.record_result(first, audited(make_image(disk), make_facts(str(disk))), None)
    # recorded earlier, then deleted, but outside the roots of the next scan
    db.record_result(first, audited(make_image(elsewhere), make_facts(str(elsewhere))), None)
    db.finish_scan(first, report_of(), [str(tmp_path), str(elsewhere)])

    deleted.unlink()
    second = db.begin_scan(["default"], "t2")
    result = audited(make_image(kept), make_facts(str(kept)))
    db.record_result(second, result, None)
    db.finish_scan(second, report_of(result), [str(tmp_path)])

    assert [e.kind for h in db.history(str(deleted)) for e in h.events] == [
        "appeared",
        "disappeared",
    ]
    assert db.history(str(deleted))[-1].status == "absent"
    assert [e.kind for h in db.history(str(kept)) for e in h.events] == ["appeared"]
    assert [e.kind for h in db.history(str(elsewhere)) for e in h.events] == ["appeared"]


def test_an_image_still_on_disk_but_skipped_does_not_disappear(db: StateDB, tmp_path: Path) -> None:
    disk = tmp_path / "excluded.qcow2"
    disk.write_bytes(b"x")
    first = db.begin_scan([], "t1")
    db.record_result(first, audited(make_image(disk), make_facts(str(disk))), None)
    db.finish_scan(first, report_of(), [str(tmp_path)])
    second = db.begin_scan([], "t2")
    db.finish_scan(second, report_of(), [str(tmp_path)])
    assert [e.kind for h in db.history(str(disk)) for e in h.events] == ["appeared"]


def test_an_image_that_comes_back_appears_again(db: StateDB, tmp_path: Path) -> None:
    disk = tmp_path / "vm.qcow2"
    disk.write_bytes(b"x")
    result = audited(make_image(disk), make_facts(str(disk)))
    first = db.begin_scan([], "t1")
    db.record_result(first, result, None)
    db.finish_scan(first, report_of(result), [str(tmp_path)])
    disk.unlink()
    second = db.begin_scan([], "t2")
    db.finish_scan(second, report_of(), [str(tmp_path)])
    disk.write_bytes(b"x")
    third = db.begin_scan([], "t3")
    assert [e.kind for e in db.record_result(third, result, None)] == ["appeared"]


# ------------------------------------------------------------------ last report


def test_last_report_rebuilds_every_result_exactly(db: StateDB, tmp_path: Path) -> None:
    good, bad = make_image(tmp_path / "good.qcow2", vm="web"), make_image(tmp_path / "bad.vmdk")
    results = (
        audited(good, make_facts(good.path), make_finding("root"), make_finding("toor")),
        failed(bad, "unsafe-backing-file", "backing file /etc/shadow is outside the folder"),
    )
    report = ScanReport(
        "2026-11-27T10:00:00Z", "2026-11-27T10:05:00Z", ("default", "cis.yaml"), "high", results, 1
    )
    scan = db.begin_scan(report.baselines, report.started_at)
    for result in results:
        db.record_result(scan, result, None)
    db.finish_scan(scan, report, [str(tmp_path)])
    assert db.last_report() == report


def test_finish_scan_records_results_that_were_not_streamed(db: StateDB, tmp_path: Path) -> None:
    image = make_image(tmp_path / "late.qcow2")
    report = report_of(audited(image, make_facts(image.path)))
    scan = db.begin_scan(["default"], report.started_at)
    db.finish_scan(scan, report, [str(tmp_path)])
    assert db.last_report() == report


def test_no_finished_scan_means_no_report(db: StateDB) -> None:
    assert db.last_report() is None
    db.begin_scan(["default"], "2026-11-27T10:00:00Z")
    assert db.last_report() is None


def test_last_report_is_the_scan_that_finished_last(db: StateDB, tmp_path: Path) -> None:
    image = make_image(tmp_path / "a.qcow2")
    early = db.begin_scan(["early"], "t1")
    late = db.begin_scan(["late"], "t2")
    db.finish_scan(late, replace(report_of(), baselines=("late",)), [])
    db.finish_scan(
        early, replace(report_of(audited(image, make_facts(image.path))), baselines=("early",)), []
    )
    last = db.last_report()
    assert last is not None and last.baselines == ("early",)


def test_last_report_since_keeps_images_read_or_changed_since(db: StateDB, tmp_path: Path) -> None:
    fresh, cached = make_image(tmp_path / "fresh.qcow2"), make_image(tmp_path / "cached.qcow2")
    first = db.begin_scan([], "t1")
    db.record_result(first, audited(cached, make_facts(cached.path)), None)
    db.finish_scan(first, report_of(), [])
    cutoff = datetime.now(UTC)
    second = db.begin_scan([], "t2")
    fresh_result = audited(fresh, make_facts(fresh.path))
    cached_result = audited(cached, make_facts(cached.path), from_cache=True)
    db.record_result(second, fresh_result, None)
    db.record_result(second, cached_result, None)
    db.finish_scan(second, report_of(fresh_result, cached_result), [])

    everything = db.last_report()
    assert everything is not None
    assert [r.image.path for r in everything.results] == [fresh.path, cached.path]
    since = db.last_report(since=cutoff)
    assert since is not None
    assert [r.image.path for r in since.results] == [fresh.path]
    later = db.last_report(since=datetime.now(UTC) + timedelta(hours=1))
    assert later is not None and later.results == ()


# ------------------------------------------------------------------ hostile strings


HOSTILE = [
    "'; DROP TABLE scans; --",
    "quote \" and ' and `back`",
    "bell\x07 escape\x1b[31mred\x1b[0m nul\x00 newline\n tab\t",
    "non-utf8 name \udcff\udcfe kept as surrogateescape",
    "=cmd|' /C calc'!A0",
    "emoji 🐧 and ünïcödé",
]


@pytest.mark.parametrize("text", HOSTILE)
def test_guest_strings_are_stored_and_read_back_exactly(
    db: StateDB, tmp_path: Path, text: str
) -> None:
    disk_path = str(tmp_path / f"dir {text}".replace("\x00", "").replace("/", "_")) + ".qcow2"
    image = make_image(disk_path, vm=text)
    facts = make_facts(
        disk_path,
        hostname=text,
        users=(make_user(text, 0, admin=True, home=f"/home/{text}"),),
        packages=(Package(text, text, text, text),),
        warnings=(text,),
    )
    finding = replace(make_finding(text), message=text, evidence={"value": text})
    result = audited(image, facts, finding)
    report = replace(report_of(result), baselines=(text,))
    scan = db.begin_scan(report.baselines, report.started_at)
    db.record_result(scan, result, None)
    db.finish_scan(scan, report, [str(tmp_path)])

    assert db.last_report() == report
    history = db.history(disk_path)
    assert [h.scan_id for h in history] == [scan]
    assert {"scans", "results", "images", "events", "facts"} <= table_names(db)


def table_names(db: StateDB) -> set[str]:
    """The database's tables, read with the backend's own client, not through StateDB."""
    if db.url is not None:
        sql = (
            "SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema()"
        )
        return {str(row[0]) for row in query(db.url, sql)}
    return {
        str(row[0]) for row in query(db.path, "SELECT name FROM sqlite_master WHERE type = 'table'")
    }


# ------------------------------------------------------------------ PostgreSQL


def test_a_v1_postgresql_database_is_migrated_and_keeps_its_rows(pg_server: Server) -> None:
    url = pg_server.new_database()
    v1 = ";\n".join(schema.statements(schema.PG_V1))
    query(url, v1)
    query(
        url,
        "CREATE TABLE vmaudit_meta (application_id BIGINT NOT NULL,"
        " schema_version INTEGER NOT NULL)",
    )
    query(url, f"INSERT INTO vmaudit_meta VALUES ({schema.APPLICATION_ID}, 1)")
    query(
        url,
        "INSERT INTO scans (id, started_at, finished_at, baselines_json, fail_on,"
        " exit_code) VALUES (7, 's', 'f', '[\"default\"]', 'high', 1)",
    )
    query(
        url,
        "INSERT INTO results (scan_id, image_key, recorded_at, status, image_json,"
        " findings_json, risk_score, risk_level, business_json, from_cache, rules_json)"
        " VALUES (7, '\\x2f64732f6f6c642e71636f7732', '2026-01-01T00:00:00Z', 'audited',"
        ' \'{"disks":[],"format":"qcow2","in_use":false,"path":"/ds/old.qcow2",'
        '"vm":null}\', \'[{"rule":"a"},{"rule":"b"}]\', 40, \'medium\','
        ' \'{"application":null,"criticality":"medium","owner":null}\', 0, \'[]\')',
    )

    with StateDB(url) as state:
        assert state.schema_version() == schema.LATEST
        (entry,) = state.history("/ds/old.qcow2")
    assert entry.findings_count == 2 and entry.scan_id == 7
    assert query(
        url, "SELECT findings_count, risk_score, risk_exposure, risk_formula FROM results"
    ) == [(2, 40.0, None, 1)]
    assert query(url, "SELECT id, finished_rank, roots_json FROM scans") == [(7, 7, "[]")]
    indexes = {row[0] for row in query(url, "SELECT indexname FROM pg_indexes")}
    assert {"results_by_image", "events_by_image", "scans_by_finish", "decisions_by_time"} <= (
        indexes
    )
    assert query(url, "SELECT schema_version FROM vmaudit_meta") == [(schema.LATEST,)]


def test_another_programs_postgresql_database_is_refused_and_left_alone(
    pg_server: Server,
) -> None:
    url = pg_server.new_database()
    query(url, "CREATE TABLE mine (x integer)")
    with pytest.raises(StateError, match="PostgreSQL database but not vmaudit's") as caught:
        StateDB(url)
    assert caught.value.kind is ErrorKind.CONFIG
    tables = query(
        url,
        "SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema()",
    )
    assert tables == [("mine",)]


def test_a_postgresql_database_of_a_newer_vmaudit_is_refused(pg_server: Server) -> None:
    url = pg_server.new_database()
    StateDB(url).close()
    query(url, "UPDATE vmaudit_meta SET schema_version = 99")
    with pytest.raises(StateError, match="newer"):
        StateDB(url)


def test_an_unreachable_postgresql_server_is_a_config_error_without_the_password(
    tmp_path: Path,
) -> None:
    url = f"postgresql://vmaudit:s3cret@{str(tmp_path).replace('/', '%2F')}/nowhere"
    with pytest.raises(StateError, match="cannot be opened") as caught:
        StateDB(url)
    assert "s3cret" not in str(caught.value)


def test_a_stored_row_that_does_not_decode_is_never_served_and_refused(
    db: StateDB, state_ref: Path | str, tmp_path: Path
) -> None:
    image = make_image(tmp_path / "vm.qcow2")
    (tmp_path / "vm.qcow2").write_bytes(b"QFI\xfb" + bytes(508))
    identity = image_identity(image)
    scan = db.begin_scan(["default"], "2026-11-27T10:00:00Z")
    db.record_result(scan, audited(image, make_facts(image.path)), identity)
    db.finish_scan(scan, report_of(), [])
    assert db.lookup_facts(identity) is not None
    query(state_ref, 'UPDATE facts SET facts_json = \'{"schema": "vmaudit.facts/v1", tru\'')
    assert db.lookup_facts(identity) is None  # never served: the image is read again
    with pytest.raises(StateError, match="holds a row that cannot be read"):
        db.last_report()
    with pytest.raises(StateError, match="holds a row that cannot be read"):
        db.record_result(scan, audited(image, make_facts(image.path, hostname="other")), None)
