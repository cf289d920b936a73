"""Firewalls: enabled at boot as spec/baseline.md defines it, and the default inbound policy."""

from __future__ import annotations

import os
import time

from vmaudit.collect.firewall import collect_firewall
from vmaudit.models import FirewallBackend, FirewallFacts, Package

from .conftest import Guest


def pkg(name: str) -> Package:
    return Package(name, "1.0", "amd64", name)


def firewall(guest: Guest, *names: str) -> tuple[FirewallFacts, list[str]]:
    warnings: list[str] = []
    return collect_firewall(guest.fs, [pkg(n) for n in names], warnings), warnings


def test_ufw_enabled_only_with_enabled_yes(guest: Guest) -> None:
    guest.write("/etc/ufw/ufw.conf", "# comment\nENABLED=no\nLOGLEVEL=low\n")
    guest.write("/etc/default/ufw", 'DEFAULT_INPUT_POLICY="DROP"\n')
    guest.symlink(
        "/etc/systemd/system/multi-user.target.wants/ufw.service", "/lib/systemd/system/ufw.service"
    )
    assert firewall(guest, "ufw") == (
        FirewallFacts(False, (FirewallBackend("ufw", True, False, "deny"),)),
        [],
    )
    guest.write("/etc/ufw/ufw.conf", "ENABLED=yes\n")
    guest.write("/etc/default/ufw", 'DEFAULT_INPUT_POLICY="ACCEPT"\n')
    assert firewall(guest, "ufw")[0] == FirewallFacts(
        True, (FirewallBackend("ufw", True, True, "accept"),)
    )


def test_ufw_reject_policy_is_deny(guest: Guest) -> None:
    guest.write("/etc/ufw/ufw.conf", "ENABLED=yes\n")
    guest.write("/etc/default/ufw", "DEFAULT_INPUT_POLICY=REJECT\n")
    assert firewall(guest, "ufw")[0].backends[0].default_inbound == "deny"


NFT_DROP = """#!/usr/sbin/nft -f
flush ruleset
table inet filter {
    chain input {
        type filter hook input priority filter; policy drop;
        ct state established,related accept
        tcp dport 22 accept # ssh
    }
    chain forward { type filter hook forward priority filter; policy drop; }
    chain output { type filter hook output priority filter; }
}
"""
NFT_DEBIAN_DEFAULT = """table inet filter {
\tchain input {
\t\ttype filter hook input priority filter;
\t}
}
"""


def test_nftables_enabled_when_wanted_by_a_target(guest: Guest) -> None:
    guest.write("/lib/systemd/system/nftables.service", "[Unit]\n")
    guest.write("/etc/nftables.conf", NFT_DROP)
    facts, _ = firewall(guest, "nftables")
    assert facts == FirewallFacts(False, (FirewallBackend("nftables", True, False, "deny"),))
    guest.symlink(
        "/etc/systemd/system/sysinit.target.wants/nftables.service",
        "/lib/systemd/system/nftables.service",
    )
    assert firewall(guest, "nftables")[0].enabled is True


def test_masked_unit_is_not_enabled(guest: Guest) -> None:
    guest.write("/etc/nftables.conf", NFT_DROP)
    guest.symlink(
        "/etc/systemd/system/sysinit.target.wants/nftables.service",
        "/lib/systemd/system/nftables.service",
    )
    guest.symlink("/etc/systemd/system/nftables.service", "/dev/null")
    assert firewall(guest, "nftables")[0].enabled is False


def test_nftables_without_policy_accepts(guest: Guest) -> None:
    guest.write("/etc/nftables.conf", NFT_DEBIAN_DEFAULT)
    assert firewall(guest, "nftables")[0].backends[0].default_inbound == "accept"


def test_nftables_policy_in_included_file(guest: Guest) -> None:
    guest.write("/etc/nftables.conf", 'include "/etc/nftables.d/*.nft"\n')
    guest.write("/etc/nftables.d/10-filter.nft", NFT_DROP)
    assert firewall(guest, "nftables")[0].backends[0].default_inbound == "deny"


def test_iptables_persistent_rules_v4_and_v6(guest: Guest) -> None:
    guest.write(
        "/etc/iptables/rules.v4",
        "*nat\n:INPUT ACCEPT [0:0]\nCOMMIT\n*filter\n:INPUT DROP [0:0]\n"
        ":FORWARD DROP [0:0]\n:OUTPUT ACCEPT [0:0]\n-A INPUT -p tcp --dport 22 -j ACCEPT\n"
        "COMMIT\n",
    )
    guest.write("/etc/iptables/rules.v6", "*filter\n:INPUT DROP [0:0]\nCOMMIT\n")
    guest.symlink(
        "/etc/systemd/system/multi-user.target.wants/netfilter-persistent.service",
        "/lib/systemd/system/netfilter-persistent.service",
    )
    facts, _ = firewall(guest, "iptables-persistent", "netfilter-persistent")
    assert facts == FirewallFacts(
        True, (FirewallBackend("iptables-persistent", True, True, "deny"),)
    )


def test_firewalld_default_zone_target(guest: Guest) -> None:
    guest.write(
        "/usr/lib/firewalld/zones/public.xml",
        '<?xml version="1.0"?>\n<zone>\n  <short>Public</short>\n</zone>\n',
    )
    guest.write("/usr/lib/firewalld/zones/trusted.xml", '<zone target="ACCEPT"><short/></zone>')
    guest.write("/etc/firewalld/zones/dmz.xml", "<zone target='DROP'></zone>")
    guest.symlink(
        "/etc/systemd/system/multi-user.target.wants/firewalld.service",
        "/usr/lib/systemd/system/firewalld.service",
    )
    guest.write("/etc/firewalld/firewalld.conf", "# no DefaultZone: public\n")
    assert firewall(guest, "firewalld")[0] == FirewallFacts(
        True, (FirewallBackend("firewalld", True, True, "deny"),)
    )
    guest.write("/etc/firewalld/firewalld.conf", "DefaultZone=trusted\n")
    assert firewall(guest, "firewalld")[0].backends[0].default_inbound == "accept"
    guest.write("/etc/firewalld/firewalld.conf", "DefaultZone=dmz\n")
    assert firewall(guest, "firewalld")[0].backends[0].default_inbound == "deny"


def test_nothing_installed_lists_no_backend(guest: Guest) -> None:
    guest.mkdir("/etc")
    assert firewall(guest) == (FirewallFacts(False, ()), [])


def test_any_enabled_backend_enables_the_firewall(guest: Guest) -> None:
    guest.write("/etc/ufw/ufw.conf", "ENABLED=no\n")
    guest.write("/etc/nftables.conf", NFT_DROP)
    guest.symlink(
        "/etc/systemd/system/sysinit.target.wants/nftables.service",
        "/lib/systemd/system/nftables.service",
    )
    facts, _ = firewall(guest, "ufw", "nftables")
    assert facts.enabled is True
    assert [(b.name, b.enabled) for b in facts.backends] == [("ufw", False), ("nftables", True)]


def test_nftables_file_of_newlines_parses_in_linear_time(guest: Guest) -> None:
    guest.write("/lib/systemd/system/nftables.service", "[Unit]\n")
    guest.symlink(
        "/etc/systemd/system/sysinit.target.wants/nftables.service",
        "/lib/systemd/system/nftables.service",
    )
    guest.write("/etc/nftables.conf", "\n" * 3_000_000 + " \t" * 500_000 + "\n" + NFT_DROP)
    start = time.monotonic()
    facts, warnings = firewall(guest, "nftables")
    assert time.monotonic() - start < 60  # generous: the benchmark measures speed
    assert facts == FirewallFacts(True, (FirewallBackend("nftables", True, True, "deny"),))
    assert warnings == []


def test_nftables_input_policy_only_from_ip_tables(guest: Guest) -> None:
    chain = "chain input {\n type filter hook input priority 0; policy drop;\n}\n"
    cases = {
        f"table arp a {{\n{chain}}}\n": "accept",
        f"table ip a {{\n{chain}}}\n": "accept",  # IPv6 stays open
        f"table ip a {{\n{chain}}}\ntable ip6 b {{\n{chain}}}\n": "deny",
        "table inet a {\n chain input {\n type filter hook input priority 0; # policy drop;\n"
        " }\n}\n": "accept",
        f"table inet a {{\n{chain}}}\nflush ruleset\n": "accept",
        f"table inet a {{\n flags dormant\n{chain}}}\n": "accept",
    }
    for conf, expected in cases.items():
        guest.write("/etc/nftables.conf", conf)
        assert firewall(guest, "nftables")[0].backends[0].default_inbound == expected, conf


def test_nftables_file_nft_rejects_loads_nothing(guest: Guest) -> None:
    guest.write("/etc/nftables.conf", NFT_DROP.replace("\n", "\r\n"))  # nft: "unexpected junk"
    guest.symlink(
        "/etc/systemd/system/sysinit.target.wants/nftables.service",
        "/lib/systemd/system/nftables.service",
    )
    facts, warnings = firewall(guest, "nftables")
    assert facts == FirewallFacts(False, (FirewallBackend("nftables", True, False, "accept"),))
    assert len(warnings) == 1 and "nft would reject it" in warnings[0]


def test_iptables_restore_without_commit_loads_nothing(guest: Guest) -> None:
    guest.write("/etc/iptables/rules.v4", "*filter\n:INPUT DROP [0:0]\n")
    guest.write("/etc/iptables/rules.v6", "*filter\n:INPUT DROP [0:0]\nCOMMIT\n")
    facts, warnings = firewall(guest, "iptables-persistent")
    assert facts.backends[0].default_inbound == "accept"
    assert warnings == [
        "/etc/iptables/rules.v4: iptables-restore stops at COMMIT expected at line 3"
    ]
    guest.write(
        "/etc/iptables/rules.v4",
        "*filter\n:INPUT DROP [0:0]\nCOMMIT\n*filter\n-A INPUT -j ACCEPT\nCOMMIT\n",
    )
    assert firewall(guest, "iptables-persistent")[0].backends[0].default_inbound == "accept"


def test_ufw_conf_read_as_sh_sources_it(guest: Guest) -> None:
    guest.write("/etc/default/ufw", 'DEFAULT_INPUT_POLICY="DROP"\n')
    for conf, enabled in {
        "ENABLED=yes\r\n": False,
        "# x\rENABLED=yes\n": False,
        "ENABLED=no\nENABLED=yes # on\n": True,
        "ENABLED=Yes\n": False,
        "export ENABLED='yes'\n": True,
        'ENABLED="yes\n': False,
    }.items():
        guest.write("/etc/ufw/ufw.conf", conf)
        assert firewall(guest, "ufw")[0].enabled is enabled, conf


SYSTEMD_TARGETS = {
    "default.target": None,
    "graphical.target": "[Unit]\nRequires=multi-user.target\n",
    "multi-user.target": "[Unit]\nRequires=basic.target\n",
    "basic.target": "[Unit]\nRequires=sysinit.target\n",
    "sysinit.target": "[Unit]\n",
}


def systemd_guest(guest: Guest) -> None:
    for name, text in SYSTEMD_TARGETS.items():
        if text is None:
            guest.symlink(f"/lib/systemd/system/{name}", "graphical.target")
        else:
            guest.write(f"/lib/systemd/system/{name}", text)
    guest.write("/lib/systemd/system/nftables.service", "[Unit]\nDefaultDependencies=no\n")
    guest.write("/etc/nftables.conf", NFT_DROP)


def test_unit_enabled_only_when_systemd_would_start_it(guest: Guest) -> None:
    systemd_guest(guest)
    wants = "/etc/systemd/system/sysinit.target.wants/nftables.service"
    guest.symlink(wants, "/lib/systemd/system/nftables.service")
    assert firewall(guest, "nftables")[0].enabled is True
    guest.write("/etc/systemd/system/nftables.service", "")  # masked by an empty file
    assert firewall(guest, "nftables")[0].enabled is False
    guest.host("/etc/systemd/system/nftables.service").unlink()
    guest.host(wants).unlink()
    guest.write("/etc/systemd/system/custom.target", "[Unit]\n")
    guest.symlink(
        "/etc/systemd/system/custom.target.wants/nftables.service",
        "/lib/systemd/system/nftables.service",
    )
    assert firewall(guest, "nftables")[0].enabled is False  # custom.target is never reached
    guest.symlink(
        "/etc/systemd/system/multi-user.target.wants/custom.target",
        "/etc/systemd/system/custom.target",
    )
    assert firewall(guest, "nftables")[0].enabled is True


def test_nftables_includes_over_the_byte_budget_leave_the_policy_unknown(guest: Guest) -> None:
    guest.symlink(
        "/etc/systemd/system/sysinit.target.wants/nftables.service",
        "/lib/systemd/system/nftables.service",
    )
    guest.write("/etc/nftables.conf", 'include "/etc/nft.d/*.nft"\n' + NFT_DROP)
    for index in range(5):
        guest.write(f"/etc/nft.d/{index}.nft", "define X = 1\n" + "\n" * (4 * 1024 * 1024 - 20))
    start = time.monotonic()
    facts, warnings = firewall(guest, "nftables")
    assert time.monotonic() - start < 60
    assert facts.backends[0] == FirewallBackend("nftables", True, True, None)
    assert warnings == [
        "/etc/nftables.conf: over 16777216 bytes of nftables files in all: its policy is not known"
    ]


def test_sh_sourcing_keeps_later_equals_signs_and_is_linear() -> None:
    from vmaudit.collect.shsource import source

    assert source("A=b=c\nB=x==y # z\n", {}).variables == {"A": "b=c", "B": "x==y"}
    start = time.monotonic()
    result = source("A=1 " * 200_000 + "\n" + "\n" * 1_000_000 + "ENABLED=yes\n", {})
    assert time.monotonic() - start < 30
    assert result.variables["ENABLED"] == "yes" and result.variables["A"] == "1"


def test_hostile_unit_trees_neither_crash_nor_start_what_cannot_load(guest: Guest) -> None:
    systemd_guest(guest)
    etc = "/etc/systemd/system"
    guest.symlink(f"{etc}/loop-a.service", "loop-b.service")
    guest.symlink(f"{etc}/loop-b.service", "loop-a.service")
    guest.symlink(f"{etc}/multi-user.target.wants/loop-a.service", "/nonexistent")
    guest.write(f"{etc}/garbage.service", bytes(range(256)) * 64)
    guest.write(f"{etc}/graphical.target.wants", "not a directory")
    guest.mkdir(f"{etc}/dir.service")
    with open(
        os.path.join(os.fsencode(guest.root), b"etc/systemd/system/bad\xff.service"), "wb"
    ) as handle:
        handle.write(b"[Unit]\n")
    # firewalld.service through a chain of 8 aliases: over systemd's 8 look-ups, it never loads
    for index in range(7):
        guest.symlink(f"{etc}/a{index}.service", f"{etc}/a{index + 1}.service")
    guest.symlink(f"{etc}/a7.service", "/lib/systemd/system/firewalld.service")
    guest.write("/lib/systemd/system/firewalld.service", "[Unit]\n")
    guest.symlink(f"{etc}/sysinit.target.wants/a0.service", f"{etc}/a0.service")
    guest.symlink(
        f"{etc}/sysinit.target.wants/nftables.service", "/lib/systemd/system/nftables.service"
    )
    facts, _ = firewall(guest, "nftables", "firewalld")
    assert [(b.name, b.enabled) for b in facts.backends] == [
        ("nftables", True),
        ("firewalld", False),
    ]
