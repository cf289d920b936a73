"""End of support: distro-info-data for Debian and Ubuntu, the shipped table for the rest."""

from __future__ import annotations

from datetime import date

import pytest

from vmaudit.judge.eol import end_of_life
from vmaudit.models import OsInfo


def _linux(distro: str, version: str, product: str | None = None) -> OsInfo:
    return OsInfo("linux", distro, version, product)


def _windows(build: str, product: str = "Windows Server 2012 R2 Standard") -> OsInfo:
    return OsInfo("windows", "windows", "6.3", product, None, "x86_64", None, build)


def test_debian_from_distro_info_data_with_lts() -> None:
    buster = end_of_life(_linux("debian", "10.13"))
    assert buster is not None
    assert (buster.release, buster.ends) == ("debian 10", date(2024, 6, 30))  # LTS end
    assert buster.source == "distro-info-data (debian.csv)"
    bookworm = end_of_life(_linux("debian", "12.5"))
    assert bookworm is not None and bookworm.ends == date(2028, 6, 30)


def test_ubuntu_standard_support_not_esm() -> None:
    focal = end_of_life(_linux("ubuntu", "20.04"))
    assert focal is not None
    assert focal.ends == date(2025, 5, 29)
    assert focal.extended == date(2030, 4, 23)  # ESM, shown, not the end of support


@pytest.mark.parametrize(
    ("os_info", "release", "ends"),
    [
        (_linux("rhel", "7.9"), "rhel 7", date(2024, 6, 30)),
        (_linux("centos", "8.5"), "centos 8", date(2021, 12, 31)),
        (_linux("centos", "9", "CentOS Stream 9"), "centos-stream 9", date(2027, 5, 31)),
        (_linux("rocky", "9.4"), "rocky 9", date(2032, 5, 31)),
        (_linux("almalinux", "8.10"), "almalinux 8", date(2029, 3, 1)),
        (_linux("sles", "15.5"), "SLES 15 SP5", date(2024, 12, 31)),
        (_linux("opensuse", "15.6"), "openSUSE Leap 15.6", date(2026, 4, 30)),
        (
            _windows("7601.24544", "Windows Server 2008 R2 Standard"),
            "Windows Server 2008 R2",
            date(2020, 1, 14),
        ),
        (_windows("9600.21620"), "Windows Server 2012 R2", date(2023, 10, 10)),
        (
            _windows("17763.5936", "Windows Server 2019 Datacenter"),
            "Windows Server 2019",
            date(2029, 1, 9),
        ),
        (
            _windows("26100.1742", "Windows Server 2025 Datacenter"),
            "Windows Server 2025",
            date(2034, 11, 14),
        ),
    ],
)
def test_shipped_table(os_info: OsInfo, release: str, ends: date) -> None:
    found = end_of_life(os_info)
    assert found is not None
    assert (found.release, found.ends) == (release, ends)
    assert found.source.startswith("https://")


def test_unknown_releases_have_no_date() -> None:
    assert end_of_life(_linux("gentoo", "2.15")) is None
    assert end_of_life(_linux("rhel", "5.11")) is None
    assert end_of_life(_windows("19045.4529", "Windows 10 Pro")) is None  # client: not listed
