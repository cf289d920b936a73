"""The Windows ``config`` section on guest trees whose hives hivex wrote: the sample guests'
settings, the precedence of Group Policy, the Windows defaults, and hostile values."""

from __future__ import annotations

import json
import struct
import subprocess
from datetime import timedelta
from pathlib import Path

import hivex
import pytest

from fixtures.windows.regf import empty_hive
from vmaudit.baseline import facts_from_dict
from vmaudit.baseline.loader import load_baseline
from vmaudit.collect.windows import collect_windows
from vmaudit.collect.windows_config import MAX_AUTORUNS_PER_KEY
from vmaudit.collect.windows_registry import MAX_STRING, REG_BINARY, REG_DWORD, REG_SZ
from vmaudit.guest.tree import TreeFS
from vmaudit.judge.rules import RULES, evaluate
from vmaudit.models import Autorun, AutoService, WindowsConfig

from .conftest import BUILD_TIME
from .test_collect_windows import IMAGE, NOW, copy_tree, facts_of

REPO = Path(__file__).resolve().parents[2]
DEMO = REPO / "fixtures" / "demo-windows-baseline.yaml"
PASSWORD = "Batch#2019erp"  # win2016-dormant's Winlogon DefaultPassword (SOFTWARE.reg)
WIN_RULES = {rule_id for rule_id in RULES if rule_id.startswith("win.")}
Value = tuple[str, int, bytes]


def utf16(text: str) -> bytes:
    return (text + "\0").encode("utf-16-le")


def dword(value: int) -> bytes:
    return struct.pack("<I", value)


def set_values(hive: Path, key: str, values: list[Value], delete: tuple[str, ...] = ()) -> None:
    """Write ``values`` into the key at backslash-separated ``key`` (created as needed)
    with hivex, after deleting the subkeys named in ``delete``; the key's other values go."""
    h = hivex.Hivex(str(hive), write=True)
    node = h.root()
    for part in key.split("\\"):
        child = h.node_get_child(node, part)
        node = child if child else h.node_add_child(node, part)
    for name in delete:
        child = h.node_get_child(node, name)
        if child:
            h.node_delete_child(child)
    h.node_set_values(
        node, [{"key": name, "t": kind, "value": data} for name, kind, data in values]
    )
    h.commit(None)


def hive_of(root: Path, name: str) -> Path:
    return root / "Windows" / "System32" / "config" / name


def config_of(root: Path) -> WindowsConfig:
    config = facts_of(root).config.windows
    assert config is not None
    return config


def test_the_dormant_guest_has_every_legacy_setting(windows_trees: dict[str, Path]) -> None:
    config = config_of(windows_trees["win2016-dormant"])
    assert config == WindowsConfig(
        uac_enabled=False,
        smb1_server=True,  # no SMB1 value, srv installed: the Server 2016 default
        rdp_enabled=True,
        rdp_nla=False,
        autologon=True,
        autologon_user="ERP-LEGACY-02\\erp-batch",
        autologon_password_stored=True,
        guest_enabled=True,
        lsa_protected=False,
        update_server="http://wsus01.erp.local:8530",
        defender_installed=True,
        defender_disabled_by=("policy DisableAntiSpyware",),
        defender_signatures_updated=(BUILD_TIME - timedelta(days=431)).strftime(
            "%Y-%m-%dT%H:%M:%SZ"
        ),
        defender_signature_version="1.391.1862.0",
        autoruns=(
            Autorun("Run", "WindowsDefender", '"%ProgramFiles%\\Windows Defender\\MSASCuiL.exe"'),
            Autorun("Run", "ErpTray", '"C:\\Program Files\\ERP\\erptray.exe" /minimized'),
            Autorun("RunOnce", "CleanupTemp", "cmd.exe /c del /q C:\\Windows\\Temp\\erp*.log"),
            Autorun(
                "WOW6432Node\\Run",
                "Adobe ARM",
                '"C:\\Program Files (x86)\\Common Files\\Adobe\\ARM\\1.0\\AdobeARM.exe"',
            ),
        ),
        auto_services=(
            AutoService("LanmanServer", "@%systemroot%\\system32\\srvsvc.dll,-100", None),
            AutoService("MpsSvc", "@%SystemRoot%\\system32\\FirewallAPI.dll,-23090", None),
            AutoService("Schedule", None, None),
            AutoService(
                "TeamViewer",
                "TeamViewer",
                '"C:\\Program Files (x86)\\TeamViewer\\TeamViewer_Service.exe"',
            ),
            AutoService("WinDefend", None, '"C:\\Program Files\\Windows Defender\\MsMpEng.exe"'),
        ),
    )


def test_the_patched_guest_is_configured_safely(windows_trees: dict[str, Path]) -> None:
    config = config_of(windows_trees["win2019-patched"])
    assert (config.uac_enabled, config.smb1_server, config.rdp_enabled, config.rdp_nla) == (
        True,
        False,
        True,
        True,
    )
    assert (config.autologon, config.autologon_password_stored, config.guest_enabled) == (
        False,
        False,
        False,
    )
    assert config.lsa_protected and config.update_server == "https://wsus.corp.example:8531"
    assert config.defender_installed and config.defender_disabled_by == ()
    assert [s.name for s in config.auto_services] == [
        "EventLog",
        "LanmanServer",
        "MpsSvc",
        "sppsvc",
        "W3SVC",
        "WAS",
        "WinDefend",
    ]  # TermService and wuauserv start on demand; the disk driver is no service
    assert next(s for s in config.auto_services if s.name == "sppsvc").delayed
    assert config.autoruns == (
        Autorun("Run", "SecurityHealth", "%windir%\\system32\\SecurityHealthSystray.exe"),
    )


def test_run_keys_match_what_hivexget_reads(windows_trees: dict[str, Path]) -> None:
    software = hive_of(windows_trees["win2016-dormant"], "SOFTWARE")
    out = subprocess.run(
        ["hivexget", str(software), "\\Microsoft\\Windows\\CurrentVersion\\Run"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    # hivexget prints "name"=value lines, REG_SZ as "text", REG_EXPAND_SZ as str(2):"text"
    theirs = {}
    for line in out.splitlines():
        name, _, value = line.partition("=")
        value = value.removeprefix("str(2):")
        theirs[json.loads(name)] = value[1:-1].replace("\\\\", "\\").replace('\\"', '"')
    ours = {a.name: a.command for a in config_of(windows_trees["win2016-dormant"]).autoruns}
    assert {name: ours[name] for name in theirs} == theirs
    assert set(theirs) == {"WindowsDefender", "ErpTray"}


def test_the_sample_guests_against_the_demo_baseline(windows_trees: dict[str, Path]) -> None:
    baseline = load_baseline(str(DEMO))
    dormant = evaluate(facts_of(windows_trees["win2016-dormant"]), [baseline], NOW)
    found = {(f.rule, f.subject) for f in dormant.findings if f.rule.startswith("win.")}
    assert found == {
        ("win.uac-disabled", "UAC"),
        ("win.smb1-enabled", "SMB1"),
        ("win.rdp-without-nla", "RDP"),
        ("win.autologon-password", "ERP-LEGACY-02\\erp-batch"),
        ("win.guest-enabled", "Guest"),
        ("win.lsa-unprotected", "LSA"),
        ("win.update-source", "http://wsus01.erp.local:8530"),
        ("win.defender-disabled", "Windows Defender"),
        ("win.defender-signatures-stale", "Defender signatures"),
        ("win.unexpected-autorun", "Run\\ErpTray"),
        ("win.unexpected-autorun", "RunOnce\\CleanupTemp"),
        ("win.unexpected-autorun", "WOW6432Node\\Run\\Adobe ARM"),
        ("win.unexpected-service", "TeamViewer"),
    }
    assert {f.rule for f in dormant.findings} >= WIN_RULES
    patched = evaluate(facts_of(windows_trees["win2019-patched"]), [baseline], NOW)
    assert set(patched.rules_evaluated) >= WIN_RULES
    assert [f.rule for f in patched.findings] == []


def test_the_stored_password_never_reaches_facts_or_findings(
    windows_trees: dict[str, Path],
) -> None:
    facts = facts_of(windows_trees["win2016-dormant"])
    judged = evaluate(facts, [load_baseline(str(DEMO))], NOW)
    text = json.dumps(facts.to_dict()) + repr(judged)
    assert facts.config.windows is not None and facts.config.windows.autologon_password_stored
    assert PASSWORD not in text and PASSWORD.encode("utf-16-le").hex() not in text


def test_group_policy_wins_over_the_local_rdp_settings(
    windows_trees: dict[str, Path], tmp_path: Path
) -> None:
    root = copy_tree(windows_trees["win2016-dormant"], tmp_path)
    policy = "Policies\\Microsoft\\Windows NT\\Terminal Services"
    set_values(hive_of(root, "SOFTWARE"), policy, [("UserAuthentication", REG_DWORD, dword(1))])
    assert (config_of(root).rdp_enabled, config_of(root).rdp_nla) == (True, True)
    set_values(hive_of(root, "SOFTWARE"), policy, [("fDenyTSConnections", REG_DWORD, dword(1))])
    assert config_of(root).rdp_enabled is False


def test_smb1_is_off_when_its_driver_is_removed_or_the_value_says_so(
    windows_trees: dict[str, Path], tmp_path: Path
) -> None:
    root = copy_tree(windows_trees["win2016-dormant"], tmp_path)
    system = hive_of(root, "SYSTEM")
    services = "ControlSet001\\Services"
    set_values(system, f"{services}\\LanmanServer\\Parameters", [("SMB1", REG_DWORD, dword(0))])
    assert config_of(root).smb1_server is False
    set_values(system, f"{services}\\LanmanServer\\Parameters", [])
    assert config_of(root).smb1_server is True  # missing SMB1: on
    set_values(system, services, [], delete=("srv",))
    assert config_of(root).smb1_server is False  # the SMB1Protocol feature is removed


def test_a_tree_without_any_of_the_settings_is_read_with_unknowns(tmp_path: Path) -> None:
    config_dir = tmp_path / "root" / "Windows" / "System32" / "config"
    config_dir.mkdir(parents=True)
    for name in ("SOFTWARE", "SYSTEM"):
        (config_dir / name).write_bytes(empty_hive())
    facts = facts_of(tmp_path / "root")
    assert {c.section: c.status for c in facts.coverage}["config"] == "read"
    assert facts.config.windows == WindowsConfig(
        uac_enabled=True, defender_installed=False
    )  # the Windows default; no WinDefend service key
    judged = evaluate(facts, [load_baseline(str(DEMO))], NOW)
    assert {f.rule for f in judged.findings} & WIN_RULES == {
        "win.defender-disabled",
        "win.update-source",  # no WSUS policy: Microsoft Update, not the demo's server
    }


def test_values_of_the_wrong_type_count_as_missing(
    windows_trees: dict[str, Path], tmp_path: Path
) -> None:
    root = copy_tree(windows_trees["win2016-dormant"], tmp_path)
    software, system = hive_of(root, "SOFTWARE"), hive_of(root, "SYSTEM")
    set_values(
        software,
        "Microsoft\\Windows\\CurrentVersion\\Policies\\System",
        [("EnableLUA", REG_SZ, utf16("0"))],  # Windows reads a DWORD only
    )
    set_values(
        system,
        "ControlSet001\\Control\\Terminal Server",
        [("fDenyTSConnections", REG_BINARY, b"\0\0\0\0")],
    )
    set_values(
        software,
        "Microsoft\\Windows Defender\\Signature Updates",
        [("AVSignatureApplied", REG_DWORD, dword(5)), ("AVSignatureVersion", REG_DWORD, dword(1))],
    )
    set_values(
        software,
        "Microsoft\\Windows\\CurrentVersion\\Run",
        [("Binary", REG_BINARY, b"\x01\x02"), ("Number", REG_DWORD, dword(7))],
    )
    facts = facts_of(root)
    config = facts.config.windows
    assert config is not None
    assert config.uac_enabled is True  # as if EnableLUA were missing: on
    assert config.rdp_enabled is False  # no DWORD fDenyTSConnections: the default, deny
    assert (config.defender_signatures_updated, config.defender_signature_version) == (None, None)
    assert [a.key for a in config.autoruns] == ["RunOnce", "WOW6432Node\\Run"]
    assert facts.failed_sections() == {}


def test_a_non_text_default_password_still_counts_as_stored(
    windows_trees: dict[str, Path], tmp_path: Path
) -> None:
    root = copy_tree(windows_trees["win2019-patched"], tmp_path)
    winlogon = "Microsoft\\Windows NT\\CurrentVersion\\Winlogon"
    set_values(hive_of(root, "SOFTWARE"), winlogon, [("DefaultPassword", REG_BINARY, b"s3cr3t\0")])
    assert config_of(root).autologon_password_stored is True
    set_values(hive_of(root, "SOFTWARE"), winlogon, [("DefaultPassword", REG_SZ, utf16(""))])
    assert config_of(root).autologon_password_stored is False


def test_huge_and_garbage_values_are_bounded(
    windows_trees: dict[str, Path], tmp_path: Path
) -> None:
    root = copy_tree(windows_trees["win2019-patched"], tmp_path)
    software = hive_of(root, "SOFTWARE")
    set_values(
        software,
        "Microsoft\\Windows Defender\\Signature Updates",
        [
            ("AVSignatureApplied", REG_BINARY, b"\xff" * 500_000),  # not a FILETIME
            ("SignaturesLastUpdated", REG_BINARY, struct.pack("<Q", 0x7FFFFFFFFFFFFFFF)),
        ],
    )
    runs = [
        (f"entry{i}", REG_SZ, utf16(f"C:\\t\\{i}.exe")) for i in range(MAX_AUTORUNS_PER_KEY + 5)
    ]
    runs[0] = ("long\x01name", REG_SZ, utf16("x" * 100_000))
    set_values(software, "Microsoft\\Windows\\CurrentVersion\\Run", runs)
    warnings: list[str] = []
    facts = collect_windows(TreeFS(root), IMAGE, NOW, warnings)
    config = facts.config.windows
    assert config is not None
    assert config.defender_signatures_updated is None
    run = [a for a in config.autoruns if a.key == "Run"]
    assert len(run) == MAX_AUTORUNS_PER_KEY
    assert run[0].name == "long\\x01name" and len(run[0].command) == MAX_STRING
    assert any("over 1000 values in Run" in w for w in warnings)


def test_an_unreadable_system_hive_fails_the_section_and_its_rules(
    windows_trees: dict[str, Path], tmp_path: Path
) -> None:
    root = copy_tree(windows_trees["win2016-dormant"], tmp_path)
    hive_of(root, "SYSTEM").write_bytes(b"regf" + bytes(4096))
    facts = facts_of(root)
    assert facts.failed_sections()["config"] == "the SYSTEM hive is not readable"
    assert facts.config.windows is None
    judged = evaluate(facts, [load_baseline(str(DEMO))], NOW)
    assert {e.rule for e in judged.not_judged} >= WIN_RULES
    assert not {f.rule for f in judged.findings} & WIN_RULES


def test_the_guest_account_is_unknown_when_the_sam_is_unreadable(
    windows_trees: dict[str, Path], tmp_path: Path
) -> None:
    root = copy_tree(windows_trees["win2016-dormant"], tmp_path)
    hive_of(root, "SAM").write_bytes(b"not a hive")
    config = config_of(root)
    assert config.guest_enabled is None and config.uac_enabled is False


@pytest.mark.parametrize("guest_name", ["win2016-dormant", "win2019-patched"])
def test_config_facts_round_trip_through_the_facts_schema(
    windows_trees: dict[str, Path], guest_name: str
) -> None:
    facts = facts_of(windows_trees[guest_name])
    assert facts_from_dict(json.loads(json.dumps(facts.to_dict()))) == facts
