"""The Windows collector on guest trees whose hives hivexregedit built from the fixtures."""

from __future__ import annotations

import gc
import os
import shutil
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from fixtures.windows.regf import empty_hive
from vmaudit.collect.windows import collect_windows, detect_windows
from vmaudit.collect.windows_registry import HiveError, opened_hive
from vmaudit.guest.tree import TreeFS
from vmaudit.models import Facts, ImageInfo, OsInfo

from .conftest import BUILD_TIME

NOW = BUILD_TIME + timedelta(hours=1)
IMAGE = ImageInfo("guest.img", "raw", 0, "2020-01-01T00:00:00Z", "", None, ())


def facts_of(root: Path, now: datetime = NOW) -> Facts:
    fs = TreeFS(root)
    warnings: list[str] = []
    return collect_windows(fs, IMAGE, now, warnings)


def copy_tree(root: Path, tmp_path: Path) -> Path:
    target = tmp_path / "root"
    shutil.copytree(root, target)
    return target


def merged_hive(tmp_path: Path, root_key: str, reg_body: str) -> bytes:
    """A hive built by hivexregedit from ``.reg`` text (keys under HKLM\\root_key)."""
    hive = tmp_path / f"{root_key}.hive"
    hive.write_bytes(empty_hive())
    reg = tmp_path / f"{root_key}.reg"
    reg.write_text("Windows Registry Editor Version 5.00\n\n" + reg_body, encoding="utf-8")
    subprocess.run(
        [
            "hivexregedit",
            "--merge",
            "--prefix",
            f"HKEY_LOCAL_MACHINE\\{root_key}",
            str(hive),
            str(reg),
        ],
        check=True,
    )
    return hive.read_bytes()


def test_os_facts_of_a_patched_server(windows_trees: dict[str, Path]) -> None:
    os_info = detect_windows(TreeFS(windows_trees["win2019-patched"]), [])
    assert os_info == OsInfo(
        type="windows", distro="windows", version="10.0",
        product="Windows Server 2019 Standard", hostname="web-prod-01", arch="x86_64",
        package_format=None, build="17763.5576", edition="ServerStandard",
        installation_type="Server",
    )  # fmt: skip


def test_a_tree_without_windows_is_not_windows(tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "os-release").write_text("ID=debian\n")
    warnings: list[str] = []
    assert detect_windows(TreeFS(tmp_path), warnings) is None
    assert warnings == []


def test_paths_are_matched_ignoring_case(windows_trees: dict[str, Path], tmp_path: Path) -> None:
    root = copy_tree(windows_trees["win2016-dormant"], tmp_path)
    (root / "Windows" / "System32" / "config" / "SOFTWARE").rename(
        root / "Windows" / "System32" / "config" / "software"
    )
    (root / "Windows" / "System32").rename(root / "Windows" / "system32")
    (root / "Windows").rename(root / "WINDOWS")
    facts = facts_of(root)
    assert facts.os.product == "Windows Server 2016 Datacenter"
    assert len(facts.packages) == 5
    assert facts.warnings == ()


def test_applications_come_from_both_uninstall_views(windows_trees: dict[str, Path]) -> None:
    packages = facts_of(windows_trees["win2019-patched"]).packages
    names = [p.name for p in packages]
    assert "7-Zip 23.01 (x64)" in names  # 64-bit view
    assert "Microsoft Edge" in names  # WOW6432Node view
    assert "Microsoft Visual C++ 2022 X64 Minimum Runtime - 14.38.33130" in names  # system comp.
    assert len(names) == 6  # AddressBook, WIC and a nameless WOW64 entry are not applications
    edge = next(p for p in packages if p.name == "Microsoft Edge")
    assert (edge.version, edge.publisher) == ("122.0.2365.80", "Microsoft Corporation")


def test_non_ascii_application_names_survive(windows_trees: dict[str, Path]) -> None:
    packages = facts_of(windows_trees["win2016-dormant"]).packages
    erp = next(p for p in packages if p.version == "4.2.17")
    assert erp.name == "ERP-Client für Windows"
    assert erp.publisher == "Müller & Söhne Software GmbH"


def test_only_installed_servicing_packages_are_hotfixes(windows_trees: dict[str, Path]) -> None:
    patched = facts_of(windows_trees["win2019-patched"]).hotfixes
    assert [h.id for h in patched] == [
        "KB4589208",
        "KB5005112",
        "KB5034441",
        "KB5035845",
        "KB5035965",
    ]
    # KB5034127 is superseded (0x50): not installed as such.
    kb = {h.id: h.installed_at for h in patched}
    assert kb["KB5035845"] == "2024-03-14T03:30:00Z"
    dormant = [h.id for h in facts_of(windows_trees["win2016-dormant"]).hotfixes]
    # the rollup's KB comes from its InstallLocation; KB5035855 is only staged (0x60)
    assert dormant == ["KB4565912", "KB4598243"]


def test_older_hotfix_records_are_read(tmp_path: Path) -> None:
    software = merged_hive(
        tmp_path,
        "SOFTWARE",
        """\
[HKEY_LOCAL_MACHINE\\SOFTWARE\\Microsoft]

[HKEY_LOCAL_MACHINE\\SOFTWARE\\Microsoft\\Updates]

[HKEY_LOCAL_MACHINE\\SOFTWARE\\Microsoft\\Updates\\Windows XP]

[HKEY_LOCAL_MACHINE\\SOFTWARE\\Microsoft\\Updates\\Windows XP\\SP4]

[HKEY_LOCAL_MACHINE\\SOFTWARE\\Microsoft\\Updates\\Windows XP\\SP4\\KB958644]
"InstalledDate"="11/3/2008"

[HKEY_LOCAL_MACHINE\\SOFTWARE\\Microsoft\\Windows NT]

[HKEY_LOCAL_MACHINE\\SOFTWARE\\Microsoft\\Windows NT\\CurrentVersion]
"ProductName"="Microsoft Windows XP"
"CurrentVersion"="5.1"

[HKEY_LOCAL_MACHINE\\SOFTWARE\\Microsoft\\Windows NT\\CurrentVersion\\HotFix]

[HKEY_LOCAL_MACHINE\\SOFTWARE\\Microsoft\\Windows NT\\CurrentVersion\\HotFix\\KB923561]
"Installed"=dword:00000001

[HKEY_LOCAL_MACHINE\\SOFTWARE\\Microsoft\\Windows NT\\CurrentVersion\\HotFix\\KB100000]
"Installed"=dword:00000000
""",
    )
    config = tmp_path / "root" / "WINDOWS" / "system32" / "config"
    config.mkdir(parents=True)
    (config / "software").write_bytes(software)
    facts = facts_of(tmp_path / "root")
    assert facts.os.version == "5.1"
    assert [h.id for h in facts.hotfixes] == ["KB923561", "KB958644"]


def test_accounts_and_administrators_membership(windows_trees: dict[str, Path]) -> None:
    users = {u.name: u for u in facts_of(windows_trees["win2016-dormant"]).users}
    assert [u.rid for u in users.values()] == [500, 501, 503, 1001, 1002, 1003]
    assert users["helpdesk"].admin and users["helpdesk"].admin_via == ("group:Administrators",)
    assert users["Administrator"].admin
    contractor = users["contractor"]
    assert not contractor.admin and contractor.can_login and not contractor.disabled
    assert contractor.groups == ("Remote Desktop Users", "Users")
    assert not users["Guest"].disabled and users["Guest"].can_login  # left enabled (win.*)
    assert users["DefaultAccount"].disabled and not users["DefaultAccount"].can_login
    assert users["erp-batch"].password == "empty"
    assert contractor.password == "set"
    assert contractor.last_logon == "2025-03-13T12:00:00Z"  # BUILD_TIME - 445 days


def test_a_domain_group_in_administrators_makes_no_local_admin(
    windows_trees: dict[str, Path],
) -> None:
    users = {u.name: u for u in facts_of(windows_trees["win2019-patched"]).users}
    assert [name for name, u in users.items() if u.admin] == ["Administrator"]
    assert not users["svc-iis"].admin  # same RID-shaped SIDs of the domain do not count


def test_firewall_profiles(windows_trees: dict[str, Path]) -> None:
    patched = facts_of(windows_trees["win2019-patched"]).firewall
    assert patched.enabled
    assert [(b.name, b.enabled, b.default_inbound) for b in patched.backends] == [
        ("Domain", True, "deny"), ("Private", True, "deny"), ("Public", True, "deny"),
    ]  # fmt: skip
    dormant = facts_of(windows_trees["win2016-dormant"]).firewall
    assert not dormant.enabled
    by_name = {b.name: b for b in dormant.backends}
    assert not by_name["Public"].enabled
    assert by_name["Domain"].default_inbound == "deny"  # absent: the Windows default


def test_group_policy_and_a_disabled_service_override_the_profiles(
    windows_trees: dict[str, Path], tmp_path: Path
) -> None:
    root = copy_tree(windows_trees["win2019-patched"], tmp_path)
    config = root / "Windows" / "System32" / "config"
    software = merged_hive(
        tmp_path,
        "SOFTWARE",
        """\
[HKEY_LOCAL_MACHINE\\SOFTWARE\\Policies]

[HKEY_LOCAL_MACHINE\\SOFTWARE\\Policies\\Microsoft]

[HKEY_LOCAL_MACHINE\\SOFTWARE\\Policies\\Microsoft\\WindowsFirewall]

[HKEY_LOCAL_MACHINE\\SOFTWARE\\Policies\\Microsoft\\WindowsFirewall\\PrivateProfile]
"DefaultInboundAction"=dword:00000000
""",
    )
    (config / "SOFTWARE").write_bytes(software)
    backends = {b.name: b for b in facts_of(root).firewall.backends}
    assert backends["Private"].default_inbound == "accept"
    assert backends["Domain"].default_inbound == "deny"


def test_dormancy_from_shutdown_time_and_logons(windows_trees: dict[str, Path]) -> None:
    patched = facts_of(windows_trees["win2019-patched"]).dormancy
    assert patched.days_idle == 2
    assert patched.last_boot is None
    assert patched.last_login == "2026-05-30T00:00:00Z"  # 2.5 days before the build
    assert patched.last_update == "2024-03-14T03:30:00Z"
    assert facts_of(windows_trees["win2016-dormant"]).dormancy.days_idle == 430


@pytest.mark.parametrize("damage", ["truncated", "random"])
def test_a_corrupt_software_hive_is_a_warning(
    windows_trees: dict[str, Path], tmp_path: Path, damage: str
) -> None:
    root = copy_tree(windows_trees["win2016-dormant"], tmp_path)
    hive = root / "Windows" / "System32" / "config" / "SOFTWARE"
    data = hive.read_bytes()
    hive.write_bytes(data[:6000] if damage == "truncated" else b"regf" + os.urandom(len(data)))
    facts = facts_of(root)
    assert any("SOFTWARE" in w and "not a readable registry hive" in w for w in facts.warnings)
    assert facts.os.type == "windows" and facts.os.product is None
    assert facts.os.hostname == "erp-legacy-02"  # SYSTEM still read
    assert facts.packages == () and facts.hotfixes == ()
    assert {u.name for u in facts.users} >= {"helpdesk", "contractor"}
    assert not facts.firewall.enabled and len(facts.firewall.backends) == 3


def test_a_corrupt_sam_and_system_are_warnings(
    windows_trees: dict[str, Path], tmp_path: Path
) -> None:
    root = copy_tree(windows_trees["win2019-patched"], tmp_path)
    config = root / "Windows" / "System32" / "config"
    (config / "SAM").write_bytes(os.urandom(8192))
    system = config / "SYSTEM"
    system.write_bytes(system.read_bytes()[: 4096 + 512])
    image = ImageInfo("guest.img", "raw", 0, "2025-06-01T00:00:00Z", "", None, ())
    fs = TreeFS(root)
    warnings: list[str] = []
    os_info = detect_windows(fs, warnings)
    assert os_info is not None and os_info.product == "Windows Server 2019 Standard"
    assert os_info.arch == "x86_64"  # from cmd.exe's PE header when SYSTEM is unreadable
    facts = collect_windows(fs, image, NOW, warnings)
    assert facts.os == os_info
    assert sum("not a readable registry hive" in w for w in facts.warnings) == 2
    assert facts.users == ()
    assert len(facts.packages) == 6
    # no shutdown time and no logons: the newest hotfix is the last sign of running
    assert facts.dormancy.days_idle == (NOW - datetime(2024, 3, 14, 3, 30, tzinfo=UTC)).days


def test_without_any_sign_of_running_the_image_mtime_counts(tmp_path: Path) -> None:
    config = tmp_path / "Windows" / "System32" / "config"
    config.mkdir(parents=True)
    (config / "SOFTWARE").write_bytes(empty_hive())
    image = ImageInfo("guest.img", "raw", 0, "2026-05-02T12:00:00Z", "", None, ())
    facts = collect_windows(TreeFS(tmp_path), image, NOW, [])
    assert facts.dormancy.days_idle == 30
    assert any("SYSTEM" in w for w in facts.warnings)


def test_a_hive_that_fails_to_open_leaves_nothing_for_the_destructor(
    windows_trees: dict[str, Path], tmp_path: Path
) -> None:
    root = copy_tree(windows_trees["win2016-dormant"], tmp_path)
    config = root / "Windows" / "System32" / "config"
    (config / "SOFTWARE").write_bytes(b"regf" + os.urandom(8192))
    (config / "SAM").write_bytes(b"not a hive at all")
    unraisable: list[str] = []
    previous = sys.unraisablehook
    sys.unraisablehook = lambda hook_args: unraisable.append(repr(hook_args.exc_value))
    try:
        facts = facts_of(root)
        gc.collect()
    finally:
        sys.unraisablehook = previous
    assert sum("not a readable registry hive" in w for w in facts.warnings) == 2
    assert unraisable == []


def test_an_opened_hive_is_closed_when_its_block_ends(windows_trees: dict[str, Path]) -> None:
    fs = TreeFS(windows_trees["win2016-dormant"])
    warnings: list[str] = []
    with opened_hive(fs, "/Windows/System32/config/SYSTEM", "SYSTEM", warnings) as hive:
        assert hive is not None and hive.subkeys(hive.root)
    assert warnings == []
    with pytest.raises(HiveError):
        hive.subkeys(hive.root)  # the handle is gone, not left to the garbage collector
