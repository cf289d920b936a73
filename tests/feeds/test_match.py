"""Linux matching: by source package, in the guest's own release, with its own ordering."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tests.feeds.conftest import (
    ALPINE_OSV,
    DSA_5586_1,
    DSA_5724_1,
    DSA_5868_1,
    RHEL_OSV,
    TRACKER,
    UBUNTU_OSV,
    bookworm,
    linux_facts,
    write_json,
)
from vmaudit.feeds.importer import import_feeds
from vmaudit.feeds.match import FeedsMatcher, VulnMatch, affected_fix
from vmaudit.feeds.versions import DPKG

Notice = Callable[[str], None]


def _matcher(tmp_path: Path, db: Path, notice: Notice, *records: dict[str, object]) -> FeedsMatcher:
    paths = [str(write_json(tmp_path / f"r{i}.json", r)) for i, r in enumerate(records)]
    import_feeds(paths, db, notice)
    matcher = FeedsMatcher.open(db)
    assert matcher is not None
    return matcher


def _subjects(matches: tuple[VulnMatch, ...]) -> set[str]:
    return {m.subject for m in matches}


def test_bookworm_openssh_deb12u2_is_exposed_to_cve_2024_6387(
    tmp_path: Path, db: Path, notice: Notice
) -> None:
    matcher = _matcher(tmp_path, db, notice, DSA_5724_1)
    (match,) = matcher.matches(bookworm("1:9.2p1-2+deb12u2"))
    assert (match.subject, match.advisory, match.package) == (
        "CVE-2024-6387",
        "DSA-5724-1",
        "openssh",
    )
    assert (match.installed, match.fixed) == ("1:9.2p1-2+deb12u2", "1:9.2p1-2+deb12u3")
    assert match.published == "2024-07-01T00:00:00Z"
    assert match.severity == "medium"  # the DSA gives no severity
    assert match.exposed_days(datetime(2024, 7, 31, tzinfo=UTC)) == 30


def test_bookworm_openssh_deb12u3_is_not_exposed(tmp_path: Path, db: Path, notice: Notice) -> None:
    matcher = _matcher(tmp_path, db, notice, DSA_5724_1)
    assert matcher.matches(bookworm("1:9.2p1-2+deb12u3")) == ()


def test_each_dsa_applies_until_its_own_fix(tmp_path: Path, db: Path, notice: Notice) -> None:
    matcher = _matcher(tmp_path, db, notice, DSA_5586_1, DSA_5724_1, DSA_5868_1)
    assert _subjects(matcher.matches(bookworm("1:9.2p1-2+deb12u1"))) == {
        "CVE-2023-48795",
        "CVE-2023-51385",
        "CVE-2024-6387",
        "CVE-2025-26465",
    }
    assert _subjects(matcher.matches(bookworm("1:9.2p1-2+deb12u3"))) == {"CVE-2025-26465"}
    assert matcher.matches(bookworm("1:9.2p1-2+deb12u5")) == ()


def test_matched_by_source_package_not_binary_name(
    tmp_path: Path, db: Path, notice: Notice
) -> None:
    matcher = _matcher(tmp_path, db, notice, DSA_5724_1)
    by_binary_only = linux_facts("debian", "12", [("openssh-server", "1:9.2p1-2+deb12u2", None)])
    assert matcher.matches(by_binary_only) == ()  # no Source: field, binary name is not openssh
    (match,) = matcher.matches(bookworm("1:9.2p1-2+deb12u2"))  # two binaries, one finding
    assert match.package == "openssh"


def test_epoch_decides_before_the_upstream_version(
    tmp_path: Path, db: Path, notice: Notice
) -> None:
    matcher = _matcher(tmp_path, db, notice, DSA_5724_1)
    # without the epoch, 9.9 is still older than 1:9.2p1: dpkg compares epochs first
    assert _subjects(matcher.matches(bookworm("9.9p1-1"))) == {"CVE-2024-6387"}
    assert matcher.matches(bookworm("2:1.0-1")) == ()


def test_tilde_sorts_before_the_release_it_precedes(
    tmp_path: Path, db: Path, notice: Notice
) -> None:
    record = dict(
        DSA_5724_1,
        id="DSA-TILDE",
        affected=[
            {
                "package": {"ecosystem": "Debian:12", "name": "openssl"},
                "ranges": [
                    {
                        "type": "ECOSYSTEM",
                        "events": [{"introduced": "0"}, {"fixed": "3.0.15-1~deb12u1"}],
                    }
                ],
            }
        ],
    )
    matcher = _matcher(tmp_path, db, notice, record)

    def openssl(version: str) -> set[str]:
        facts = linux_facts("debian", "12", [("libssl3", version, "openssl")])
        return _subjects(matcher.matches(facts))

    assert openssl("3.0.15-1~deb12u0") == {"CVE-2024-6387"}
    assert openssl("3.0.14-1") == {"CVE-2024-6387"}
    assert openssl("3.0.15-1~deb12u1") == set()
    assert openssl("3.0.15-1") == set()  # 3.0.15-1 sorts after 3.0.15-1~deb12u1


def test_another_releases_record_does_not_apply(tmp_path: Path, db: Path, notice: Notice) -> None:
    matcher = _matcher(tmp_path, db, notice, DSA_5586_1)
    # bullseye's fix is 1:8.4p1-5+deb11u3: a bookworm guest at 1:8.4p1-5 is judged by the
    # bookworm line (deb12u2), a bullseye guest by its own
    bullseye = linux_facts("debian", "11.9", [("openssh-server", "1:8.4p1-5+deb11u3", "openssh")])
    assert matcher.matches(bullseye) == ()
    trixie = linux_facts("debian", "13", [("openssh-server", "1:8.4p1-5", "openssh")])
    assert matcher.matches(trixie) == ()


def test_tracker_json_fix_and_open_issue(tmp_path: Path, db: Path, notice: Notice) -> None:
    matcher = _matcher(tmp_path, db, notice, TRACKER)
    by_subject = {m.subject: m for m in matcher.matches(bookworm("1:9.2p1-2+deb12u2"))}
    assert set(by_subject) == {"CVE-2024-6387", "CVE-2025-32728"}
    assert by_subject["CVE-2024-6387"].fixed == "1:9.2p1-2+deb12u3"
    assert by_subject["CVE-2024-6387"].published is None  # the tracker has no dates
    assert by_subject["CVE-2025-32728"].fixed is None  # no-dsa: open in bookworm
    assert _subjects(matcher.matches(bookworm("1:9.2p1-2+deb12u3"))) == {"CVE-2025-32728"}


def test_tracker_and_osv_on_the_same_cve_make_one_match_dated_by_osv(
    tmp_path: Path, db: Path, notice: Notice
) -> None:
    matcher = _matcher(tmp_path, db, notice, TRACKER, DSA_5724_1)
    matches = [
        m for m in matcher.matches(bookworm("1:9.2p1-2+deb12u2")) if m.subject == "CVE-2024-6387"
    ]
    assert len(matches) == 1
    assert matches[0].published == "2024-07-01T00:00:00Z"


def test_alpine_by_apk_ordering_in_its_release(tmp_path: Path, db: Path, notice: Notice) -> None:
    matcher = _matcher(tmp_path, db, notice, ALPINE_OSV)

    def alpine(version: str, release: str = "3.20.3") -> set[str]:
        facts = linux_facts("alpinelinux", release, [("openssh", version, "openssh")], "apk")
        return _subjects(matcher.matches(facts))

    assert alpine("9.7_p1-r3") == {"CVE-2024-6387"}
    assert alpine("9.7_p1-r4") == set()
    assert alpine("9.7_rc1-r9") == {"CVE-2024-6387"}  # _rc is a pre-release of 9.7
    assert alpine("9.7_p1-r3", release="3.19.1") == set()


def test_ubuntu_by_lts_release_and_priority(tmp_path: Path, db: Path, notice: Notice) -> None:
    matcher = _matcher(tmp_path, db, notice, UBUNTU_OSV)
    jammy = linux_facts("ubuntu", "22.04", [("openssh-server", "1:8.9p1-3ubuntu0.7", "openssh")])
    (match,) = matcher.matches(jammy)
    assert (match.fixed, match.severity) == ("1:8.9p1-3ubuntu0.10", "high")
    noble = linux_facts("ubuntu", "24.04", [("openssh-server", "1:9.6p1-3ubuntu13.3", "openssh")])
    assert matcher.matches(noble) == ()


def test_rhel_by_sourcerpm_with_rpm_ordering_and_cvss(
    tmp_path: Path, db: Path, notice: Notice
) -> None:
    matcher = _matcher(tmp_path, db, notice, RHEL_OSV)

    def rhel(version: str) -> tuple[VulnMatch, ...]:
        facts = linux_facts("rhel", "9.4", [("openssh-server", version, "openssh")], "rpm")
        return matcher.matches(facts)

    (match,) = rhel("8.7p1-38.el9")
    assert (match.severity, match.cvss) == ("high", 8.1)
    assert rhel("8.7p1-38.el9_4.1") == ()
    assert rhel("8.7p1-38.el9_4.2") == ()


@pytest.mark.parametrize(
    ("installed", "expected"),
    [
        ("1.0-1", (False, None)),  # below introduced
        ("1.2-1", (True, "1.5-1")),
        ("1.5-1", (False, None)),  # fixed
        ("2.0-1", (True, None)),  # a second range, last_affected 2.3-1, no fix yet
        ("2.3-1", (True, None)),
        ("2.4-1", (False, None)),  # past last_affected
        ("3.1-1", (False, None)),  # limit
        ("0.9-7", (True, None)),  # listed in versions
    ],
)
def test_osv_range_events(installed: str, expected: tuple[bool, str | None]) -> None:
    ranges = (
        (("introduced", "1.1-1"), ("fixed", "1.5-1")),
        (("introduced", "2.0-1"), ("last_affected", "2.3-1")),
        (("introduced", "3.0-1"), ("limit", "3.1-1")),
    )
    assert affected_fix(installed, ranges, ("0.9-7",), DPKG.compare) == expected


def test_records_of_other_ecosystems_are_counted_and_not_stored(
    tmp_path: Path, db: Path, notice: Notice
) -> None:
    pypi = dict(
        DSA_5724_1,
        id="GHSA-xxxx-yyyy-zzzz",
        affected=[
            {
                "package": {"ecosystem": "PyPI", "name": "requests"},
                "ranges": [
                    {"type": "ECOSYSTEM", "events": [{"introduced": "0"}, {"fixed": "2.32.0"}]}
                ],
            }
        ],
    )
    (result,) = import_feeds([str(write_json(tmp_path / "ghsa.json", pypi))], db, notice)
    assert (result.counts.added, result.counts.skipped) == (0, 1)
