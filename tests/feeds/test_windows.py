"""Windows matching on the real CVRF months: product by build and installation type,
CurrentBuild.UBR against the Vendor Fix's FixedBuild, and the KB/UBR consistency warning."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.feeds.conftest import CVRF, windows_facts
from vmaudit.feeds.importer import import_feeds
from vmaudit.feeds.match import FeedsMatcher, VulnMatch
from vmaudit.feeds.windows import windows_guest

MONTHS = ("2021-Jun.xml.zst", "2021-Dec.xml.zst", "2024-Jul.xml.zst")


@pytest.fixture(scope="module")
def matcher(tmp_path_factory: pytest.TempPathFactory) -> FeedsMatcher:
    db = tmp_path_factory.mktemp("cvrf") / "feeds.db"
    notices: list[str] = []
    import_feeds([str(CVRF / month) for month in MONTHS], db, notices.append)
    found = FeedsMatcher.open(db)
    assert found is not None
    return found


def _by_subject(matches: tuple[VulnMatch, ...]) -> dict[str, VulnMatch]:
    return {m.subject: m for m in matches}


def test_server_2019_at_june_2024_build_is_exposed_to_cve_2024_38077(matcher: FeedsMatcher) -> None:
    match = _by_subject(matcher.matches(windows_facts("17763.5936")))["CVE-2024-38077"]
    assert match.package == "Windows Server 2019"
    assert (match.installed, match.fixed, match.kb) == (
        "17763.5936",
        "10.0.17763.6054",
        "KB5040430",
    )
    assert (match.severity, match.cvss) == ("critical", 9.8)
    assert match.published == "2024-07-09T07:00:00Z"
    assert match.warning is None


def test_server_2019_at_the_july_2024_build_is_not(matcher: FeedsMatcher) -> None:
    assert "CVE-2024-38077" not in _by_subject(matcher.matches(windows_facts("17763.6054")))


def test_every_july_2024_fix_for_2019_applies_below_its_build(matcher: FeedsMatcher) -> None:
    exposed = _by_subject(matcher.matches(windows_facts("17763.5936")))
    july = {s: m for s, m in exposed.items() if m.fixed == "10.0.17763.6054"}
    assert len(july) > 50  # the month's cumulative update fixes dozens of CVEs
    assert all(m.kb == "KB5040430" for m in july.values())
    # 2021 months' fixes are below June 2024's build: none of them applies
    assert not [m for m in exposed.values() if m.published and m.published < "2022"]


def test_a_2021_build_is_exposed_to_2021_fixes(matcher: FeedsMatcher) -> None:
    exposed = matcher.matches(windows_facts("17763.1935"))  # May 2021
    years = {m.published[:4] for m in exposed if m.published}
    assert years == {"2021", "2024"}


def test_other_builds_are_other_products(matcher: FeedsMatcher) -> None:
    server_2022 = _by_subject(
        matcher.matches(windows_facts("20348.2527", "Windows Server 2022 Standard"))
    )
    assert server_2022["CVE-2024-38077"].fixed == "10.0.20348.2582"
    assert server_2022["CVE-2024-38077"].kb == "KB5040437"
    server_2016 = _by_subject(
        matcher.matches(windows_facts("14393.7158", "Windows Server 2016 Standard"))
    )
    assert server_2016["CVE-2024-38077"].fixed == "10.0.14393.7159"
    client = matcher.matches(windows_facts("17763.5936", "Windows 10 Enterprise LTSC 2019"))
    assert {m.package for m in client} == {"Windows 10 Version 1809 for x64-based Systems"}


def test_installation_type_picks_server_core_or_desktop() -> None:
    both = windows_guest(windows_facts("17763.5936").os)
    assert both is not None and both.products == (
        "windows server 2019",
        "windows server 2019 (server core installation)",
    )
    core = windows_guest(windows_facts("17763.5936", installation_type="Server Core").os)
    desktop = windows_guest(windows_facts("17763.5936", installation_type="Server").os)
    assert core is not None and desktop is not None
    assert core.products == ("windows server 2019 (server core installation)",)
    assert desktop.products == ("windows server 2019",)


def test_installed_kb_above_the_registry_build_is_a_warning(matcher: FeedsMatcher) -> None:
    facts = windows_facts("17763.5936", hotfixes=("KB5040430",))
    match = _by_subject(matcher.matches(facts))["CVE-2024-38077"]
    assert match.warning == "hotfix KB5040430 installed but build is older"


def test_an_unknown_build_is_not_judged(matcher: FeedsMatcher) -> None:
    assert matcher.matches(windows_facts("99999.1")) == ()
    assert matcher.matches(windows_facts("garbage")) == ()


def test_matching_reads_the_database_once_per_product(
    matcher: FeedsMatcher, tmp_path: Path
) -> None:
    matcher.matches(windows_facts("17763.5936"))
    path = matcher.path
    matcher.path = tmp_path / "gone.db"  # any further read of the database would raise
    try:
        assert "CVE-2024-38077" in _by_subject(matcher.matches(windows_facts("17763.6000")))
    finally:
        matcher.path = path
