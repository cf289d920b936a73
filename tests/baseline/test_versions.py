"""Version ordering: dpkg's and rpm's algorithms, dotted Windows builds, by package format."""

from __future__ import annotations

import pytest

from vmaudit.models import Facts, ImageInfo, OsInfo
from vmaudit.versions import (
    comparator_for,
    dotted_compare,
    dpkg_compare,
    is_version_expression,
    rpm_compare,
)


@pytest.mark.parametrize(
    ("left", "right", "order"),
    [
        ("3.0.11-1~deb12u2", "3.0.11-1", -1),  # ~ sorts before the end
        ("1:1.0", "2.0", 1),  # epoch wins
        ("2.36-9+deb12u4", "2.36-9+deb12u10", -1),
        ("1.0a", "1.0", 1),
        ("9.2p1-2+deb12u3", "9.2p1-2+deb12u3", 0),
    ],
)
def test_dpkg_ordering(left: str, right: str, order: int) -> None:
    assert dpkg_compare(left, right) == order
    assert dpkg_compare(right, left) == -order


@pytest.mark.parametrize(
    ("left", "right", "order"),
    [
        ("1.0a", "1.0", 1),  # rpm: a trailing letter is newer, as dpkg
        ("1.0~rc1", "1.0", -1),
        ("2:1.0-1.el8", "1:9.9-1.el8", 1),
        ("3.0.7-16.el9", "3.0.7-2.el9", 1),
        ("3.0.7", "3.0.7-16.el9", 0),  # no release: equal whatever the release
        ("1.0.el8", "1.0_el8", 0),  # separators do not matter to rpm
    ],
)
def test_rpm_ordering(left: str, right: str, order: int) -> None:
    assert rpm_compare(left, right) == order


@pytest.mark.parametrize(
    ("left", "right", "order"),
    [
        ("17763.3388", "17763.5458", -1),
        ("17763.10000", "17763.5458", 1),
        ("10.0", "10.0.0", 0),
        ("19.00", "9.20", 1),
    ],
)
def test_dotted_ordering(left: str, right: str, order: int) -> None:
    assert dotted_compare(left, right) == order


@pytest.mark.parametrize(
    ("os_type", "package_format", "expected"),
    [
        ("linux", "deb", dpkg_compare),
        ("linux", "rpm", rpm_compare),
        ("windows", None, dotted_compare),
    ],
)
def test_ordering_is_chosen_by_the_guest(
    os_type: str, package_format: str | None, expected: object
) -> None:
    facts = Facts(
        ImageInfo("/i", "raw", 0, "", "", None, ()), OsInfo(os_type, package_format=package_format)
    )
    assert comparator_for(facts) is expected


@pytest.mark.parametrize(
    ("text", "valid"),
    [
        (">=12", True),
        ("12", True),
        ("==12.4", True),
        ("<11, >=9", True),
        ("=>12", False),
        ("twelve", False),
        (">=", False),
    ],
)
def test_version_expressions(text: str, valid: bool) -> None:
    assert is_version_expression(text) is valid
