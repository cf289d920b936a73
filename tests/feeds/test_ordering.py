"""apk-tools' version ordering, and the severity scale every feed is mapped to."""

from __future__ import annotations

import pytest

from vmaudit.feeds.records import feed_severity, vendor_severity
from vmaudit.feeds.versions import apk_compare, apk_valid


@pytest.mark.parametrize(
    ("older", "newer"),
    [
        ("9.7_p1-r3", "9.7_p1-r4"),  # revisions
        ("9.6_p1-r0", "9.7_p1-r4"),
        ("1.1_alpha1", "1.1"),  # pre-release suffixes sort below the release
        ("1.3_alpha2", "1.3_alpha3"),
        ("0.8_beta1", "0.8_beta2"),
        ("2.0.0_rc3-r1", "2.0.0"),
        ("1.8.5", "1.8.5_p2"),  # post-release suffix sorts above
        ("1.0", "1.0.1"),
        ("2.3.0b-r1", "2.3.0b-r2"),  # letters
        ("1.7", "1.7b"),
        ("0.1.0_alpha_pre2", "0.1.0_alpha"),
        ("1.02.07", "1.02.10-r1"),  # leading zeros compare as text
        ("3.0.20060720", "20060720"),
        ("1.0.0_pre20191002222144-r0", "1.0.0_pre20210530193627-r0"),
    ],
)
def test_apk_ordering(older: str, newer: str) -> None:
    assert apk_compare(older, newer) == -1
    assert apk_compare(newer, older) == 1
    assert apk_compare(older, older) == 0


def test_apk_validity() -> None:
    assert apk_valid("9.7_p1-r4")
    assert apk_valid("1.2.3~abc123-r0")
    assert not apk_valid("9.7-p1")  # '-' must start a revision
    assert not apk_valid("1.0_bogus")
    assert not apk_valid("")


@pytest.mark.parametrize(
    ("cvss", "rating", "expected"),
    [
        (9.8, "Important", "critical"),  # a CVSS v3 base score decides first
        (9.0, None, "critical"),
        (8.9, None, "high"),
        (7.0, None, "high"),
        (6.9, None, "medium"),
        (4.0, None, "medium"),
        (3.9, None, "low"),
        (None, "Critical", "critical"),  # MSRC
        (None, "Important", "high"),
        (None, "Moderate", "medium"),
        (None, "Low", "low"),
        (None, "high", "high"),  # Debian urgency
        (None, "medium**", "medium"),
        (None, "low", "low"),
        (None, "unimportant", "info"),
        (None, "not yet assigned", "medium"),  # none given
        (None, None, "medium"),
    ],
)
def test_severity_mapping(cvss: float | None, rating: str | None, expected: str) -> None:
    assert feed_severity(cvss, rating) == expected


def test_unknown_rating_is_none() -> None:
    assert vendor_severity("whatever") is None
