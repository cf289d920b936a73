"""Each feed format imported from its content: OSV record, folder and zip, the Debian
tracker JSON, MSRC CVRF as .xml and .xml.zst; re-imports, withdrawals, list and show."""

from __future__ import annotations

import json
import sqlite3
import zipfile
from collections.abc import Callable
from contextlib import closing
from pathlib import Path

import pytest
import zstandard

from tests.feeds.conftest import (
    CVRF,
    DSA_5586_1,
    DSA_5724_1,
    DSA_5868_1,
    TRACKER,
    write_json,
)
from vmaudit.feeds.db import list_sources, open_read, show
from vmaudit.feeds.importer import import_feeds
from vmaudit.feeds.records import FeedError

Notice = Callable[[str], None]


def _count(db: Path, table: str) -> int:
    with closing(sqlite3.connect(db)) as connection:
        return int(connection.execute(f"SELECT count(*) FROM {table}").fetchone()[0])


def _show(db: Path, name: str) -> list[dict[str, object]]:
    connection = open_read(db)
    assert connection is not None
    with closing(connection):
        return show(connection, name)


def test_one_osv_record_named_anything_is_read_as_osv(
    tmp_path: Path, db: Path, notice: Notice
) -> None:
    record = write_json(tmp_path / "no-extension", DSA_5724_1)
    (result,) = import_feeds([str(record)], db, notice)
    assert result.formats == {"osv"}
    assert result.counts.added == 1
    (stored,) = _show(db, "CVE-2024-6387")
    assert stored["id"] == "DSA-5724-1"
    assert stored["published"] == "2024-07-01T00:00:00Z"
    assert stored["affected"] == [
        {
            "ecosystem": "Debian:12",
            "package": "openssh",
            "ranges": [[["introduced", "0"], ["fixed", "1:9.2p1-2+deb12u3"]]],
            "versions": [],
            "rating": None,
        }
    ]


def test_osv_folder_and_zip_import_every_record(
    tmp_path: Path, db: Path, notice: Notice, notices: list[str]
) -> None:
    folder = tmp_path / "osv"
    write_json(folder / "DSA-5586-1.json", DSA_5586_1)
    write_json(folder / "nested" / "DSA-5868-1.json", DSA_5868_1)
    (folder / "README.md").write_text("# not a feed\n", "utf-8")
    archive = tmp_path / "all.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zipped:
        zipped.writestr("DSA-5724-1.json", json.dumps(DSA_5724_1))
    results = import_feeds([str(folder), str(archive)], db, notice)
    assert [r.counts.added for r in results] == [2, 1]
    assert all(r.formats == {"osv"} for r in results)
    assert any("README.md: not a feed file" in n for n in notices)
    assert {s["id"] for s in _show(db, "CVE-2025-26465")} == {"DSA-5868-1"}
    assert _count(db, "advisories") == 3


def test_reimport_counts_unchanged_and_a_newer_copy_replaces(
    tmp_path: Path, db: Path, notice: Notice
) -> None:
    record = write_json(tmp_path / "dsa.json", DSA_5724_1)
    import_feeds([str(record)], db, notice)
    (again,) = import_feeds([str(record)], db, notice)
    assert (again.counts.added, again.counts.updated, again.counts.unchanged) == (0, 0, 1)
    newer = dict(DSA_5724_1, modified="2024-07-02T00:00:00Z", summary="openssh - update")
    write_json(record, newer)
    (updated,) = import_feeds([str(record)], db, notice)
    assert updated.counts.updated == 1
    older = dict(DSA_5724_1, modified="2024-06-30T00:00:00Z", summary="stale copy")
    write_json(record, older)
    (kept,) = import_feeds([str(record)], db, notice)
    assert kept.counts.unchanged == 1
    (stored,) = _show(db, "DSA-5724-1")
    assert stored["summary"] == "openssh - update"
    assert _count(db, "affected") == 1


def test_a_withdrawn_record_removes_the_stored_copy(
    tmp_path: Path, db: Path, notice: Notice
) -> None:
    record = write_json(tmp_path / "dsa.json", DSA_5724_1)
    import_feeds([str(record)], db, notice)
    write_json(
        record, dict(DSA_5724_1, withdrawn="2024-07-05T00:00:00Z", modified="2024-07-05T00:00:00Z")
    )
    (result,) = import_feeds([str(record)], db, notice)
    assert result.counts.withdrawn == 1
    assert _show(db, "CVE-2024-6387") == []
    assert _count(db, "affected") == 0


def test_debian_tracker_json_by_source_and_release(
    tmp_path: Path, db: Path, notice: Notice
) -> None:
    tracker = write_json(tmp_path / "tracker.data", TRACKER)
    (result,) = import_feeds([str(tracker)], db, notice)
    assert result.formats == {"debian-tracker"}
    assert result.counts.added == 2
    (stored,) = _show(db, "CVE-2024-6387")
    # bullseye's "0" (not affected) and sid (no release number) are not stored
    assert [(a["ecosystem"], a["package"]) for a in stored["affected"]] == [  # type: ignore[index, union-attr]
        ("Debian:12", "openssh")
    ]
    (open_one,) = _show(db, "CVE-2025-32728")
    assert open_one["affected"][0]["ranges"] == [[["introduced", "0"]]]  # type: ignore[index]


def test_cvrf_month_as_zstd_and_as_plain_xml(tmp_path: Path, db: Path, notice: Notice) -> None:
    plain = tmp_path / "july.data"
    with (CVRF / "2024-Jul.xml.zst").open("rb") as packed:
        plain.write_bytes(zstandard.ZstdDecompressor().stream_reader(packed).read())
    (zst,) = import_feeds([str(CVRF / "2024-Jul.xml.zst")], db, notice)
    (xml,) = import_feeds([str(plain)], db, notice)
    assert zst.formats == xml.formats == {"msrc-cvrf"}
    assert zst.counts.added > 50
    assert xml.counts.unchanged == zst.counts.added  # the same records, whatever the wrapping
    (stored,) = _show(db, "CVE-2024-38077")
    assert stored["published"] == "2024-07-09T07:00:00Z"
    fixes = {w["product"]: w for w in stored["windows"]}  # type: ignore[attr-defined]
    server_2019 = fixes["Windows Server 2019"]
    assert (server_2019["kb"], server_2019["fixed_build"], server_2019["supersedes"]) == (
        "KB5040430",
        "10.0.17763.6054",
        "KB5039217",
    )
    assert (server_2019["rating"], server_2019["cvss"]) == ("Critical", 9.8)
    assert fixes["Windows Server 2022"]["fixed_build"] == "10.0.20348.2582"
    assert {s["id"] for s in _show(db, "KB5040430")} >= {"CVE-2024-38077"}


def test_feeds_list_names_each_source_format_scope_and_counts(
    tmp_path: Path, db: Path, notice: Notice
) -> None:
    record = write_json(tmp_path / "dsa.json", DSA_5724_1)
    import_feeds([str(record), str(CVRF / "2021-Jun.xml.zst")], db, notice)
    connection = open_read(db)
    assert connection is not None
    with closing(connection):
        osv, cvrf = list_sources(connection)
    assert (osv.format, osv.records, osv.scope, osv.newest) == (
        "osv",
        1,
        ("Debian:12",),
        "2024-07-01T00:00:00Z",
    )
    assert cvrf.format == "msrc-cvrf"
    assert "Windows Server 2019" in cvrf.scope
    assert cvrf.records == cvrf.counts.added > 0


def _big_tracker(sources: int) -> str:
    """Tracker JSON past the one-record cap (16 MiB), so it is read member by member."""
    parts = []
    for number in range(sources):
        releases = {
            "bookworm": {
                "status": "resolved",
                "fixed_version": f"1.{number}-1+deb12u1",
                "urgency": "low",
                "repositories": {"bookworm": "1.0-1"},
            },
            "bullseye": {
                "status": "open",
                "urgency": "unimportant",
                "repositories": {"bullseye": "0.9-1"},
            },
        }
        entry = {f"CVE-2024-{10000 + number}": {"description": "x" * 300, "releases": releases}}
        parts.append(f'"src{number}": {json.dumps(entry)}')
    return "{" + ",\n".join(parts) + "}"


def test_a_tracker_larger_than_one_record_is_streamed(
    tmp_path: Path, db: Path, notice: Notice
) -> None:
    text = _big_tracker(40_000)
    assert len(text) > 16 * 1024 * 1024
    tracker = tmp_path / "tracker.json"
    tracker.write_text(text, "utf-8")
    (result,) = import_feeds([str(tracker)], db, notice)
    assert result.formats == {"debian-tracker"}
    assert result.counts.added == 40_000
    (stored,) = _show(db, "CVE-2024-49999")
    assert [(a["ecosystem"], a["package"]) for a in stored["affected"]] == [  # type: ignore[union-attr]
        ("Debian:11", "src39999"),
        ("Debian:12", "src39999"),
    ]
    cut = tmp_path / "cut.json"
    cut.write_text(text[: len(text) - 5000], "utf-8")
    with pytest.raises(FeedError) as caught:
        import_feeds([str(cut)], tmp_path / "other.db", notice)
    assert caught.value.record is not None and caught.value.record.startswith("src399")
    assert "truncated" in caught.value.problem
