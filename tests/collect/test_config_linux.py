"""The Linux config section on trees with real modes, and on the real debootstrap tree
against dpkg's own answer for setuid owners and the CIS baseline."""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

from vmaudit.act.fixes import PendingFS
from vmaudit.baseline import load_baseline
from vmaudit.baseline.factsio import facts_from_dict
from vmaudit.baseline.model import Baseline
from vmaudit.collect.config_linux import collect_linux_config
from vmaudit.collect.linux import collect_linux
from vmaudit.collect.osinfo import detect_linux
from vmaudit.judge.rules import RULES, evaluate
from vmaudit.models import CONFIG_NOT_READ, ConfigFacts, Facts, OsInfo, Package

from .conftest import Guest, image_info

REPO = Path(__file__).resolve().parents[2]
NOW = datetime(2026, 11, 27, tzinfo=UTC)


def test_world_writable_files_and_open_directories_are_counted(guest: Guest) -> None:
    guest.write("/etc/passwd", "root:x:0:0:root:/root:/bin/sh\n", 0o644)
    guest.write("/etc/app.conf", "x\n", 0o644)
    os.chmod(guest.host("/etc/app.conf"), 0o666)
    guest.mkdir("/srv/drop")
    os.chmod(guest.host("/srv/drop"), 0o777)
    guest.mkdir("/var/tmp")
    os.chmod(guest.host("/var/tmp"), 0o1777)
    guest.symlink("/etc/link", "/etc/app.conf")
    config = collect_linux_config(guest.fs, [], [])
    assert sorted(e.path for e in config.modes.world_writable_paths) == [
        "/etc/app.conf",
        "/srv/drop",
    ]
    assert config.modes.world_writable == 2


def test_the_walk_leaves_out_what_boot_makes_fresh_and_top_folders_that_are_links(
    guest: Guest,
) -> None:
    """One walk from /: below /proc, /sys, /dev, /run nothing counts, a top folder that is
    a symlink (merged /usr) is walked once through its target, the top entries are not
    entries themselves."""
    guest.write("/etc/passwd", "root:x:0:0:root:/root:/bin/sh\n", 0o644)
    for top in ("run", "proc", "usr/bin", "srv/open"):
        guest.mkdir(f"/{top}")
    for path in ("/run/lock.file", "/proc/fake", "/usr/bin/open.sh", "/srv/open/x"):
        guest.write(path, "x\n", 0o644)
        os.chmod(guest.host(path), 0o666)
    os.chmod(guest.host("/srv"), 0o777)  # a top folder itself: not an entry of the walk
    guest.symlink("/bin", "usr/bin")
    config = collect_linux_config(guest.fs, [], [])
    assert sorted(e.path for e in config.modes.world_writable_paths) == [
        "/srv/open/x",
        "/usr/bin/open.sh",
    ]
    assert "/run" not in config.modes.roots and "/bin" not in config.modes.roots
    assert {"/etc", "/srv", "/usr"} <= set(config.modes.roots)
    walked = guest.fs.walk_modes("/", 100, only={"srv"})
    assert sorted(e.path for e in walked.entries) == ["/srv/open", "/srv/open/x"]
    assert guest.fs.walk_modes("/", 1, only={"srv"}).truncated


def test_setuid_files_and_startup_entries(guest: Guest) -> None:
    guest.write(
        "/etc/passwd", "root:x:0:0:root:/root:/bin/sh\njdoe:x:1000:1000::/home/jdoe:/bin/sh\n"
    )
    guest.write("/usr/local/bin/helper", b"\x7fELF", 0o755)
    os.chmod(guest.host("/usr/local/bin/helper"), 0o4755)
    guest.write("/etc/rc.local", "#!/bin/sh\n/opt/agent &\n", 0o755)
    guest.write("/var/spool/cron/crontabs/jdoe", "@reboot /home/jdoe/run.sh\n0 * * * * true\n")
    guest.write(
        "/etc/inetd.conf",
        "telnet stream tcp nowait root /usr/sbin/tcpd in.telnetd\n"
        "#<off># tftp dgram udp wait nobody /usr/sbin/tcpd in.tftpd\n",
    )
    guest.write("/etc/sysctl.d/90-erp.conf", "net.ipv4.ip_forward = 1\n")
    config = collect_linux_config(guest.fs, [], [])
    assert [(f.path, f.mode) for f in config.setuid_files] == [("/usr/local/bin/helper", 0o4755)]
    assert "/usr/local/bin/helper" in config.executables
    kinds = {(e.kind, e.name, e.user) for e in config.startup}
    assert kinds == {
        ("rc-local", "/etc/rc.local", None),
        ("cron-reboot", "/home/jdoe/run.sh", "jdoe"),
    }
    assert config.inetd_services == ("telnet",)
    assert [(s.key, s.value) for s in config.sysctl] == [("net.ipv4.ip_forward", "1")]


def _tree_facts(tree: Path) -> Facts:
    warnings: list[str] = []
    guest = Guest(tree)
    os_info = detect_linux(guest.fs, warnings)
    assert os_info is not None
    return collect_linux(guest.fs, image_info(), os_info, NOW, warnings)


def test_setuid_owners_of_the_debootstrap_tree_are_dpkg_s_answer(debian_rootfs: Path) -> None:
    TREE = debian_rootfs
    facts = _tree_facts(TREE)
    config = facts.config.linux
    assert config is not None and config.owners == "dpkg"
    found = subprocess.run(
        ["find", str(TREE), "-xdev", "-type", "f", "-perm", "/6000"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert sorted(f.path for f in config.setuid_files) == sorted(
        "/" + os.path.relpath(p, TREE) for p in found
    )
    for entry in config.setuid_files:
        answers = []
        for path in (entry.path, entry.path.removeprefix("/usr")):  # dpkg lists /bin/su
            out = subprocess.run(
                ["dpkg-query", f"--admindir={TREE / 'var/lib/dpkg'}", "-S", path],
                capture_output=True,
                text=True,
                check=False,
            )
            if out.returncode == 0:
                answers.append(out.stdout.split(":", 1)[0])
        assert entry.package in answers, entry


def test_debootstrap_tree_raises_no_false_perm_or_exec_finding_with_cis(
    debian_rootfs: Path,
) -> None:
    TREE = debian_rootfs
    facts = _tree_facts(TREE)
    baseline = load_baseline(str(REPO / "baselines" / "cis-linux-l1.yaml"))
    found = [
        (f.rule, f.subject)
        for f in evaluate(facts, [baseline], NOW).findings
        if f.rule.startswith(("perm.", "exec."))
    ]
    # Stock Debian ships sshd_config 0644; CIS 5.2.1 wants 0600: a true finding.
    assert found == [("perm.critical-file", "/etc/ssh/sshd_config")]
    assert oct((TREE / "etc/ssh/sshd_config").stat().st_mode & 0o777) == "0o644"


def _startup_tree(guest: Guest) -> None:
    guest.write("/etc/passwd", "root:x:0:0:root:/root:/bin/sh\n")
    guest.write("/etc/crontab", "@reboot root /opt/agent/start\n")
    guest.write("/var/spool/cron/crontabs/jdoe", "@reboot /home/jdoe/run.sh\n")
    guest.write("/etc/inetd.conf", "telnet stream tcp nowait root /usr/sbin/tcpd in.telnetd\n")
    guest.write("/etc/xinetd.d/tftp", "service tftp\n{\n  disable = no\n}\n")


def _packages(*names: str) -> list[Package]:
    return [Package(name, "1.0", "amd64") for name in ("base-files", *names)]


def test_reboot_lines_and_inetd_services_without_their_daemon_are_not_active(
    guest: Guest,
) -> None:
    _startup_tree(guest)
    config = collect_linux_config(guest.fs, _packages(), [])
    assert {(e.name, e.not_active) for e in config.startup} == {
        ("/opt/agent/start", "no cron installed (cron, cronie, systemd-cron, bcron)"),
        ("/home/jdoe/run.sh", "no cron installed (cron, cronie, systemd-cron, bcron)"),
    }
    assert (config.inetd_services, config.inetd_not_active) == ((), ("telnet", "tftp"))
    baseline = load_baseline(str(REPO / "baselines" / "cis-linux-l1.yaml"))
    facts = Facts(
        image_info(), OsInfo("linux", "debian", "12"), packages=tuple(_packages()),
        config=ConfigFacts(linux=config),
    )  # fmt: skip
    rules = {f.rule for f in evaluate(facts, [baseline], NOW).findings}
    assert not rules & {"boot.unexpected-startup", "service.forbidden-enabled"}


def test_reboot_lines_and_inetd_services_run_when_their_daemon_is_installed(
    guest: Guest,
) -> None:
    _startup_tree(guest)
    config = collect_linux_config(guest.fs, _packages("cronie", "openbsd-inetd"), [])
    assert {(e.name, e.not_active) for e in config.startup} == {
        ("/opt/agent/start", None),
        ("/home/jdoe/run.sh", None),
    }
    assert (config.inetd_services, config.inetd_not_active) == (("telnet",), ("tftp",))
    config = collect_linux_config(guest.fs, _packages("cron", "xinetd"), [])
    assert (config.inetd_services, config.inetd_not_active) == (("tftp",), ("telnet",))


def test_without_a_package_list_reboot_lines_and_inetd_services_count_as_active(
    guest: Guest,
) -> None:
    _startup_tree(guest)
    config = collect_linux_config(guest.fs, [], [])  # packages not read: never a false pass
    assert {e.not_active for e in config.startup} == {None}
    assert (config.inetd_services, config.inetd_not_active) == (("telnet", "tftp"), ())


def _small_guest(guest: Guest) -> Facts:
    guest.write("/etc/os-release", 'ID=debian\nVERSION_ID="12"\n')
    guest.write("/etc/passwd", "root:x:0:0:root:/root:/bin/sh\n")
    guest.write("/etc/shadow", "root:*:19000:0:99999:7:::\n", 0o644)
    return _tree_facts(guest.root)


def _config_baselines() -> list[Baseline]:
    """cis-linux-l1 and the demo baseline: between them, every config rule is on."""
    return [
        load_baseline(str(REPO / "baselines" / "cis-linux-l1.yaml")),
        load_baseline(str(REPO / "fixtures" / "demo-baseline.yaml")),
    ]


def _config_rules() -> set[str]:
    return {r for r in RULES if r.startswith(("perm.", "exec.", "service.", "lockdown.", "boot."))}


def test_facts_cached_before_the_config_section_leave_its_rules_not_judged(guest: Guest) -> None:
    fresh = _small_guest(guest)
    baseline = _config_baselines()
    assert ("perm.critical-file", "/etc/shadow") in {
        (f.rule, f.subject) for f in evaluate(fresh, baseline, NOW).findings
    }
    older = replace(
        fresh,
        config=ConfigFacts(),
        coverage=tuple(c for c in fresh.coverage if c.section != "config"),
    )
    cached = facts_from_dict(json.loads(json.dumps(older.to_dict())))  # as the cache keeps it
    assert "config" not in older.to_dict() and cached == older
    assert cached.failed_sections() == {"config": CONFIG_NOT_READ}
    result = evaluate(cached, baseline, NOW)
    assert not {f.rule for f in result.findings} & _config_rules()
    assert {n.rule: n.reason for n in result.not_judged} == {
        rule: f"config: {CONFIG_NOT_READ}" for rule in _config_rules()
    }


def test_facts_from_before_coverage_leave_the_config_rules_not_judged(guest: Guest) -> None:
    ancient = replace(_small_guest(guest), config=ConfigFacts(), coverage=())
    baseline = _config_baselines()
    result = evaluate(ancient, baseline, NOW)
    assert {n.rule for n in result.not_judged} == _config_rules()
    assert not {f.rule for f in result.findings} & _config_rules()
    assert ancient.failed_sections() == {}  # their other sections stay as they were


def test_remediation_s_view_of_the_guest_reads_the_config_section_with_modes(
    guest: Guest,
) -> None:
    """PendingFS (the guest as a plan leaves it) gives the base's modes: the section is
    read, not failed, and an unchanged guest's config is the tree's own."""
    tree_facts = _small_guest(guest)
    warnings: list[str] = []
    view = PendingFS(guest.fs)
    os_info = detect_linux(view, warnings)
    assert os_info is not None
    facts = collect_linux(view, image_info(), os_info, NOW, warnings)
    assert "config" not in facts.failed_sections()
    assert facts.config == tree_facts.config and facts.config.linux is not None
    assert ("/etc/shadow", 0o644) in {(m.path, m.mode) for m in facts.config.linux.critical_files}
