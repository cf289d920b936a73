"""Every feed file is hostile input: a bad, truncated or hostile file is an error naming the
file and the record, and the feeds database is left exactly as it was."""

from __future__ import annotations

import json
import sqlite3
import zipfile
from collections.abc import Callable
from contextlib import closing
from pathlib import Path

import pytest
import zstandard

from tests.feeds.conftest import CVRF, DSA_5724_1, DSA_5868_1, TRACKER, write_json
from vmaudit.feeds.importer import import_feeds
from vmaudit.feeds.records import FeedError

Notice = Callable[[str], None]


def _dump(db: Path) -> list[str]:
    with closing(sqlite3.connect(db)) as connection:
        return list(connection.iterdump())


@pytest.fixture
def seeded(tmp_path: Path, db: Path, notice: Notice) -> list[str]:
    """A database holding one import, and its full dump."""
    import_feeds([str(write_json(tmp_path / "seed.json", DSA_5868_1))], db, notice)
    return _dump(db)


def _refused(paths: list[Path], db: Path, notice: Notice) -> FeedError:
    with pytest.raises(FeedError) as caught:
        import_feeds([str(p) for p in paths], db, notice)
    return caught.value


def _july_xml() -> bytes:
    with (CVRF / "2024-Jul.xml.zst").open("rb") as packed:
        return zstandard.ZstdDecompressor().stream_reader(packed).read()


def test_truncated_cvrf_names_file_and_record_and_rolls_back_everything(
    tmp_path: Path, db: Path, notice: Notice, seeded: list[str]
) -> None:
    good = write_json(tmp_path / "good.json", DSA_5724_1)
    xml = _july_xml()
    cut = tmp_path / "cut.xml"
    cut.write_bytes(xml[: len(xml) * 2 // 3])
    error = _refused([good, cut], db, notice)  # the good file comes first: rolled back too
    assert error.path == str(cut)
    assert error.record is not None and error.record.startswith("2024-Jul/CVE-")
    assert "truncated" in error.problem
    assert _dump(db) == seeded


def test_truncated_zstd_stream_is_refused(
    tmp_path: Path, db: Path, notice: Notice, seeded: list[str]
) -> None:
    packed = (CVRF / "2021-Dec.xml.zst").read_bytes()
    cut = tmp_path / "cut.zst"
    cut.write_bytes(packed[: len(packed) // 2])
    error = _refused([cut], db, notice)
    assert error.path == str(cut)
    assert _dump(db) == seeded


def test_xml_entities_and_dtds_are_never_expanded(
    tmp_path: Path, db: Path, notice: Notice, seeded: list[str]
) -> None:
    laughs = "".join(f'<!ENTITY l{i} "{f"&l{i - 1};" * 10}">' for i in range(1, 10))
    bomb = tmp_path / "bomb.xml"
    bomb.write_text(
        '<?xml version="1.0"?><!DOCTYPE cvrfdoc [<!ENTITY l0 "ha">'
        + laughs
        + ']><cvrfdoc xmlns="http://www.icasi.org/CVRF/schema/cvrf/1.1">&l9;'
        "</cvrfdoc>",
        "utf-8",
    )
    external = tmp_path / "external.xml"
    external.write_text('<!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]><x>&e;</x>', "utf-8")
    for hostile in (bomb, external):
        error = _refused([hostile], db, notice)
        assert "DTD" in error.problem
    assert _dump(db) == seeded


def test_xml_that_is_not_cvrf_is_refused(tmp_path: Path, db: Path, notice: Notice) -> None:
    other = tmp_path / "feed.xml"
    other.write_text("<rss><channel/></rss>", "utf-8")
    assert "not a CVRF 1.1 cvrfdoc" in _refused([other], db, notice).problem


def test_deeply_nested_json_is_an_error_not_a_crash(
    tmp_path: Path, db: Path, notice: Notice, seeded: list[str]
) -> None:
    deep = tmp_path / "deep.json"
    deep.write_text(
        '{"id": "X-1", "modified": "2024-01-01T00:00:00Z", "affected": '
        + "[" * 200_000
        + "]" * 200_000
        + "}",
        "utf-8",
    )
    error = _refused([deep], db, notice)
    assert error.path == str(deep)
    assert _dump(db) == seeded


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ({"id": "../../etc/passwd"}, "not an advisory identifier"),
        ({"modified": "yesterday"}, "not a date"),
        (
            {
                "affected": [
                    {
                        "package": {"ecosystem": "Debian:12", "name": "openssh"},
                        "ranges": [{"type": "ECOSYSTEM", "events": [{"fixed": "not a version!"}]}],
                    }
                ]
            },
            "is invalid",
        ),
        ({"affected": [{"package": {"ecosystem": "Debian:12"}}]}, "needs an ecosystem and a name"),
        ({"affected": "everything"}, "is not a list"),
        ({"severity": [{"type": "CVSS_V3", "score": "CVSS:3.1/AV:X"}]}, "vector"),
    ],
)
def test_malformed_osv_record_names_its_id(
    tmp_path: Path,
    db: Path,
    notice: Notice,
    seeded: list[str],
    change: dict[str, object],
    problem: str,
) -> None:
    bad = write_json(tmp_path / "bad.json", dict(DSA_5724_1, **change))
    error = _refused([bad], db, notice)
    assert problem in error.problem
    if "id" not in change:
        assert error.record == "DSA-5724-1"
    assert _dump(db) == seeded


def test_bad_member_of_an_osv_zip_is_named(
    tmp_path: Path, db: Path, notice: Notice, seeded: list[str]
) -> None:
    archive = tmp_path / "all.zip"
    with zipfile.ZipFile(archive, "w") as zipped:
        zipped.writestr("DSA-5724-1.json", json.dumps(DSA_5724_1))
        zipped.writestr("broken.json", '{"id": "DSA-1-1", "modified": ')
    error = _refused([archive], db, notice)
    assert error.path == f"{archive}!broken.json"
    assert "truncated" in error.problem
    assert _dump(db) == seeded


def test_corrupt_zip_is_refused(tmp_path: Path, db: Path, notice: Notice) -> None:
    fake = tmp_path / "all.zip"
    fake.write_bytes(b"PK\x03\x04" + b"\0" * 100)
    assert "unreadable zip" in _refused([fake], db, notice).problem


def test_tracker_with_an_invalid_fixed_version_names_source_and_cve(
    tmp_path: Path, db: Path, notice: Notice, seeded: list[str]
) -> None:
    tracker = json.loads(json.dumps(TRACKER))
    tracker["openssh"]["CVE-2024-6387"]["releases"]["bookworm"]["fixed_version"] = "1:@@"
    error = _refused([write_json(tmp_path / "tracker.json", tracker)], db, notice)
    assert error.record == "openssh/CVE-2024-6387"
    assert _dump(db) == seeded


def test_truncated_tracker_json_is_refused(
    tmp_path: Path, db: Path, notice: Notice, seeded: list[str]
) -> None:
    text = json.dumps(TRACKER)
    cut = tmp_path / "tracker.json"
    cut.write_text(text[: len(text) - 40], "utf-8")
    error = _refused([cut], db, notice)
    assert "truncated" in error.problem or "malformed" in error.problem
    assert _dump(db) == seeded


def test_symlinks_and_missing_paths_are_refused(tmp_path: Path, db: Path, notice: Notice) -> None:
    target = write_json(tmp_path / "real.json", DSA_5724_1)
    link = tmp_path / "link.json"
    link.symlink_to(target)
    assert "cannot open" in _refused([link], db, notice).problem
    assert "no such file" in _refused([tmp_path / "missing"], db, notice).problem


def test_a_database_file_that_is_not_sqlite_is_a_config_error(
    tmp_path: Path, notice: Notice
) -> None:
    not_db = tmp_path / "feeds.db"
    not_db.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(Exception, match="not a vmaudit feeds database"):
        import_feeds([str(write_json(tmp_path / "r.json", DSA_5724_1))], not_db, notice)
    assert not_db.read_bytes() == b"this is not sqlite" * 100


def test_deeply_nested_cvrf_element_is_read_without_crashing(
    tmp_path: Path, db: Path, notice: Notice
) -> None:
    depth = 200_000
    doc = tmp_path / "deep.xml"
    doc.write_bytes(
        b'<cvrf:cvrfdoc xmlns:cvrf="http://www.icasi.org/CVRF/schema/cvrf/1.1" '
        b'xmlns:vuln="http://www.icasi.org/CVRF/schema/vuln/1.1"><cvrf:DocumentTracking>'
        b"<cvrf:Identification><cvrf:ID>2024-Jul</cvrf:ID></cvrf:Identification>"
        b"</cvrf:DocumentTracking><vuln:Vulnerability>"
        + b"<a>" * depth
        + b"</a>" * depth
        + b"<vuln:CVE>CVE-2024-1</vuln:CVE></vuln:Vulnerability></cvrf:cvrfdoc>"
    )
    (result,) = import_feeds([str(doc)], db, notice)
    assert result.counts.added == 0  # no Windows fix: nothing to store, and no crash


def test_a_vulnerability_of_too_many_elements_is_refused(
    tmp_path: Path, db: Path, notice: Notice
) -> None:
    doc = tmp_path / "wide.xml"
    doc.write_bytes(
        b'<cvrf:cvrfdoc xmlns:cvrf="http://www.icasi.org/CVRF/schema/cvrf/1.1" '
        b'xmlns:vuln="http://www.icasi.org/CVRF/schema/vuln/1.1"><cvrf:DocumentTracking>'
        b"<cvrf:Identification><cvrf:ID>2024-Jul</cvrf:ID></cvrf:Identification>"
        b"</cvrf:DocumentTracking><vuln:Vulnerability><vuln:CVE>CVE-2024-2</vuln:CVE>"
        + b"<b/>" * 600_000
        + b"</vuln:Vulnerability></cvrf:cvrfdoc>"
    )
    error = _refused([doc], db, notice)
    assert error.record == "2024-Jul/CVE-2024-2"
    assert "descendants" in error.problem
