"""Two scans in two processes write one state file at once: nothing lost, nothing corrupt."""

from __future__ import annotations

import itertools
import os
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from tests.pgserver import Server, query
from vmaudit.state import StateDB, StateError, schema

WORKER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from state_helpers import audited, make_facts, make_image
    from vmaudit.models import ScanReport
    from vmaudit.state import StateDB

    ref, name, count, go = sys.argv[1], sys.argv[2], int(sys.argv[3]), Path(sys.argv[4])
    state = StateDB(ref if "://" in ref else Path(ref), busy_timeout=5.0)
    (go.parent / f"ready-{name}").touch()
    while not go.exists():
        time.sleep(0.001)
    scan = state.begin_scan([name], "2026-11-27T10:00:00Z")
    results = []
    for number in range(count):
        # half the images are seen by both scans, half by this one only
        path = f"/ds/shared{number}.qcow2" if number % 2 else f"/ds/{name}-{number}.qcow2"
        facts = make_facts(path, hostname=f"{name}-{number}")
        result = audited(make_image(path), facts)
        state.record_result(scan, result, None)
        results.append(result)
        time.sleep(0.002)  # a real scan reads an image between two writes
    report = ScanReport("2026-11-27T10:00:00Z", "2026-11-27T10:09:00Z", (name,), "high",
                        tuple(results), 0)
    state.finish_scan(scan, report, ["/ds"])
    state.close()
    print(scan)
    """
)


def test_two_processes_scanning_at_once_lose_no_rows(tmp_path: Path, state_ref: Path | str) -> None:
    db_path = state_ref
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    go = tmp_path / "go"
    count = 200
    env = dict(
        os.environ,
        PYTHONPATH=os.pathsep.join([str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")]),
    )
    if isinstance(db_path, Path):
        db_path.parent.mkdir(parents=True, exist_ok=True)
    workers = [
        subprocess.Popen(
            [sys.executable, str(script), str(db_path), name, str(count), str(go)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for name in ("alpha", "beta")
    ]
    deadline = time.monotonic() + 120
    while not all((tmp_path / f"ready-{name}").exists() for name in ("alpha", "beta")):
        # both open (and race to create) the database before either writes
        assert time.monotonic() < deadline and all(w.poll() is None for w in workers)
        time.sleep(0.01)
    go.touch()
    outputs = [worker.communicate(timeout=120) for worker in workers]
    for worker, (_, stderr) in zip(workers, outputs, strict=True):
        assert worker.returncode == 0, stderr
    scan_ids = sorted(int(stdout) for stdout, _ in outputs)
    assert len(set(scan_ids)) == 2

    if isinstance(db_path, Path):
        assert query(db_path, "PRAGMA integrity_check") == [("ok",)]
    per_scan = dict(query(db_path, "SELECT scan_id, count(*) FROM results GROUP BY scan_id"))
    assert per_scan == {scan_ids[0]: count, scan_ids[1]: count}
    assert query(db_path, "SELECT count(*) FROM images") == [(count // 2 + count,)]
    appeared = query(
        db_path, "SELECT image_key, count(*) FROM events WHERE kind = 'appeared' GROUP BY image_key"
    )
    assert len(appeared) == count // 2 + count
    assert all(number == 1 for _, number in appeared)
    assert query(db_path, "SELECT count(*) FROM scans WHERE finished_rank IS NULL") == [(0,)]
    # the writes really interleaved: the scans took turns on the lock
    order = [row[0] for row in query(db_path, "SELECT scan_id FROM results ORDER BY id")]
    assert sum(1 for a, b in itertools.pairwise(order) if a != b) > 2

    with StateDB(db_path) as state:
        report = state.last_report()
        assert report is not None
        assert len(report.results) == count
        name = report.baselines[0]
        assert all(
            r.facts is not None
            and r.facts.os.hostname is not None
            and r.facts.os.hostname.startswith(name)
            for r in report.results
        )
        shared = state.history("/ds/shared1.qcow2")
        assert [h.scan_id for h in shared] == scan_ids


def test_a_write_waits_for_a_lock_held_longer_than_the_busy_timeout(tmp_path: Path) -> None:
    db_path = tmp_path / "state.db"
    with StateDB(db_path, busy_timeout=0.2) as state:
        holder = sqlite3.connect(db_path, isolation_level=None, check_same_thread=False)
        holder.execute("BEGIN IMMEDIATE")
        release = threading.Timer(0.5, lambda: holder.execute("COMMIT"))
        started = time.monotonic()
        release.start()
        scan = state.begin_scan(["default"], "2026-11-27T10:00:00Z")
        waited = time.monotonic() - started
        release.join()
        holder.close()
    assert scan == 1
    assert waited >= 0.45


def test_a_lock_that_never_goes_away_is_a_clear_error(tmp_path: Path) -> None:
    db_path = tmp_path / "state.db"
    with StateDB(db_path, busy_timeout=0.2) as state:
        holder = sqlite3.connect(db_path, isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")
        try:
            with pytest.raises(StateError, match="locked by another process"):
                state.begin_scan(["default"], "t")
        finally:
            holder.execute("ROLLBACK")
            holder.close()


def test_a_postgresql_write_waits_for_the_lock_and_a_lock_never_released_is_a_clear_error(
    pg_server: Server,
) -> None:
    import psycopg

    url = pg_server.new_database()
    with StateDB(url, busy_timeout=0.2) as state:
        holder = psycopg.connect(url, autocommit=True)
        holder.execute("SELECT pg_advisory_lock(%s)", (schema.APPLICATION_ID,))
        release = threading.Timer(
            0.5, lambda: holder.execute("SELECT pg_advisory_unlock(%s)", (schema.APPLICATION_ID,))
        )
        started = time.monotonic()
        release.start()
        scan = state.begin_scan(["default"], "2026-11-27T10:00:00Z")
        waited = time.monotonic() - started
        release.join()
        assert scan == 1 and waited >= 0.45
        holder.execute("SELECT pg_advisory_lock(%s)", (schema.APPLICATION_ID,))
        try:
            with pytest.raises(StateError, match="locked by another process"):
                state.begin_scan(["default"], "t")
        finally:
            holder.close()
