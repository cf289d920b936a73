"""`vmaudit feeds import|list|show` on real files and a real database."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from tests.feeds.conftest import CVRF, DSA_5724_1, TRACKER, write_json
from vmaudit.feeds.cli import feeds


def _run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(feeds, list(args))
    return result.exit_code, result.stdout, result.stderr


def test_import_prints_counts_per_source_and_list_shows_them(tmp_path: Path) -> None:
    db = str(tmp_path / "feeds.db")
    record = write_json(tmp_path / "dsa.json", DSA_5724_1)
    tracker = write_json(tmp_path / "tracker.json", TRACKER)
    code, out, _ = _run(
        "import", str(record), str(tracker), str(CVRF / "2024-Jul.xml.zst"), "--db", db
    )
    assert code == 0
    lines = out.splitlines()
    assert lines[0] == (
        f"{record}: osv: 1 added, 0 updated, 0 withdrawn, 0 unchanged, 0 for no judged ecosystem"
    )
    assert lines[1].startswith(f"{tracker}: debian-tracker: 2 added")
    assert ": msrc-cvrf: " in lines[2]
    code, out, _ = _run("list", "--db", db, "--format", "json")
    assert code == 0
    listed = json.loads(out)
    assert [s["format"] for s in listed] == ["osv", "debian-tracker", "msrc-cvrf"]
    assert listed[0]["scope"] == ["Debian:12"] and listed[0]["records"] == 1
    code, out, _ = _run("list", "--db", db)
    assert code == 0 and "Debian:12" in out and "msrc-cvrf" in out


def test_show_by_cve_osv_id_and_kb(tmp_path: Path) -> None:
    db = str(tmp_path / "feeds.db")
    _run(
        "import",
        str(write_json(tmp_path / "dsa.json", DSA_5724_1)),
        str(CVRF / "2024-Jul.xml.zst"),
        "--db",
        db,
    )
    code, out, _ = _run("show", "CVE-2024-6387", "--db", db)
    assert code == 0
    assert "DSA-5724-1" in out and "Debian:12 openssh: introduced 0, fixed 1:9.2p1-2+deb12u3" in out
    code, out, _ = _run("show", "dsa-5724-1", "--db", db, "--format", "json")
    assert json.loads(out)[0]["cves"] == ["CVE-2024-6387"]
    code, out, _ = _run("show", "KB5040430", "--db", db)
    assert code == 0
    assert "Windows Server 2019: KB5040430 fixed build 10.0.17763.6054, supersedes KB5039217" in out


def test_show_unknown_id_exits_3(tmp_path: Path) -> None:
    code, _, err = _run("show", "CVE-1999-0001", "--db", str(tmp_path / "none.db"))
    assert code == 3
    assert "no stored advisory" in err


def test_a_bad_feed_file_exits_2_and_names_it(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text('{"id": "DSA-1-1", "modified": ', "utf-8")
    code, out, err = _run("import", str(bad), "--db", str(tmp_path / "feeds.db"))
    assert code == 2
    assert out == ""
    assert str(bad) in err and "truncated" in err
