"""The collector contract: a section says whether it applies, then gives facts or fails."""

from __future__ import annotations

from vmaudit.collect.common import Collector, CoverageLog, SectionFailed
from vmaudit.collect.linux import (
    ACCOUNTS,
    CONFIG,
    DORMANCY,
    FIREWALL,
    PACKAGES,
    SSH,
    SUDO,
    LinuxGuest,
)
from vmaudit.collect.osinfo import detect_linux
from vmaudit.collect.windows import (
    HOTFIXES,
    SHUTDOWN,
    USERS,
    WINDOWS_CONFIG,
    WINDOWS_FIREWALL,
    WINDOWS_PACKAGES,
    WindowsGuest,
)
from vmaudit.models import SECTIONS

from .conftest import NOW, Guest, image_info


def _coverage(log: CoverageLog) -> dict[str, tuple[str, str | None]]:
    return {c.section: (c.status, c.reason) for c in log.entries()}


def _crash(_source: object) -> list[str]:
    raise KeyError("boom")


def test_a_section_that_does_not_apply_is_absent_with_why_and_is_never_read() -> None:
    read: list[str] = []
    collector: Collector[str, list[str]] = Collector(
        "ssh", lambda source: read or [source], [], applies=lambda _: "no sshd here"
    )
    log, warnings = CoverageLog(), []
    assert collector.collect("guest", warnings, log) == []
    assert _coverage(log) == {"ssh": ("absent", "no sshd here")}
    assert warnings == [] and read == []


def test_a_crash_is_the_section_failing_with_its_reason_not_an_empty_clean_list() -> None:
    collector: Collector[str, list[str]] = Collector("accounts", _crash, [])
    log, warnings = CoverageLog(), []
    assert collector.collect("guest", warnings, log) == []
    status, reason = _coverage(log)["accounts"]
    assert status == "failed" and reason == "collection failed (KeyError: 'boom')"
    assert warnings == ["accounts: collection failed (KeyError: 'boom')"]


def test_an_explained_failure_keeps_its_words_before_or_while_reading() -> None:
    def unreadable(_source: str) -> str | None:
        raise SectionFailed("the SAM hive is not readable")

    def explained(_source: str) -> list[str]:
        raise SectionFailed("/etc/passwd: too large")

    before: Collector[str, list[str]] = Collector("accounts", explained, [], applies=unreadable)
    during: Collector[str, list[str]] = Collector("accounts", explained, [])
    for collector, why in (
        (before, "the SAM hive is not readable"),
        (during, "/etc/passwd: too large"),
    ):
        log: CoverageLog = CoverageLog()
        collector.collect("guest", [], log)
        assert _coverage(log) == {"accounts": ("failed", why)}


def test_what_was_read_may_show_the_section_absent_and_keeps_its_facts() -> None:
    collector: Collector[str, dict[str, bool]] = Collector(
        "firewall",
        lambda _: {"installed": False},
        {},
        absent=lambda facts: None if facts["installed"] else "no firewall installed",
    )
    log = CoverageLog()
    assert collector.collect("guest", [], log) == {"installed": False}
    assert _coverage(log) == {"firewall": ("absent", "no firewall installed")}


def test_every_section_has_one_declared_collector_on_each_os() -> None:
    linux = (PACKAGES, SSH, SUDO, ACCOUNTS, FIREWALL, DORMANCY, CONFIG)
    windows = (WINDOWS_PACKAGES, HOTFIXES, WINDOWS_FIREWALL, SHUTDOWN, WINDOWS_CONFIG, USERS)
    assert {c.section for c in linux} == set(SECTIONS) - {"os", "hotfixes"}
    assert {c.section for c in windows} == set(SECTIONS) - {"os", "ssh", "sudo"}


def test_a_linux_guest_without_a_package_database_has_its_packages_absent(guest: Guest) -> None:
    guest.write("/etc/os-release", "ID=exotic\nVERSION_ID=1\n")
    guest.write("/bin/sh", b"\x7fELF")
    warnings: list[str] = []
    os_info = detect_linux(guest.fs, warnings)
    assert os_info is not None
    source = LinuxGuest(guest.fs, image_info(), os_info, NOW, warnings)
    log = CoverageLog()
    assert PACKAGES.collect(source, warnings, log) == ([], None)
    assert os_info.package_format is None
    assert _coverage(log) == {"packages": ("absent", "no known package database")}
    assert warnings[-1] == "packages: no known package database found"


def test_a_windows_collector_fails_before_reading_when_its_hive_is_unreadable() -> None:
    source = WindowsGuest(None, None, None, NOW, [])
    log = CoverageLog()
    for collector in (WINDOWS_PACKAGES, WINDOWS_CONFIG, USERS):
        collector.collect(source, source.warnings, log)
    assert _coverage(log) == {
        "packages": ("failed", "the SOFTWARE hive is not readable"),
        "accounts": ("failed", "the SAM hive is not readable"),
        "config": ("failed", "the SOFTWARE hive is not readable"),
    }
