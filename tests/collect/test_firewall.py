"""Firewalls: enabled at boot as spec/baseline.md defines it, and the default inbound policy."""

from __future__ import annotations

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
    guest.symlink("/etc/systemd/system/multi-user.target.wants/ufw.service",
                  "/lib/systemd/system/ufw.service")
    assert firewall(guest, "ufw") == (
        FirewallFacts(False, (FirewallBackend("ufw", True, False, "deny"),)), [])
    guest.write("/etc/ufw/ufw.conf", "ENABLED=yes\n")
    guest.write("/etc/default/ufw", 'DEFAULT_INPUT_POLICY="ACCEPT"\n')
    assert firewall(guest, "ufw")[0] == FirewallFacts(
        True, (FirewallBackend("ufw", True, True, "accept"),))


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
    guest.symlink("/etc/systemd/system/sysinit.target.wants/nftables.service",
                  "/lib/systemd/system/nftables.service")
    assert firewall(guest, "nftables")[0].enabled is True


def test_masked_unit_is_not_enabled(guest: Guest) -> None:
    guest.write("/etc/nftables.conf", NFT_DROP)
    guest.symlink("/etc/systemd/system/sysinit.target.wants/nftables.service",
                  "/lib/systemd/system/nftables.service")
    guest.symlink("/etc/systemd/system/nftables.service", "/dev/null")
    assert firewall(guest, "nftables")[0].enabled is False


def test_nftables_without_policy_accepts(guest: Guest) -> None:
    guest.write("/etc/nftables.conf", NFT_DEBIAN_DEFAULT)
    assert firewall(guest, "nftables")[0].backends[0].default_inbound == "accept"


def test_nftables_policy_in_included_file(guest: Guest) -> None:
    guest.write("/etc/nftables.conf", 'include "/etc/nftables.d/*.nft"\n')
    guest.write("/etc/nftables.d/10-filter.nft", NFT_DROP)
    assert firewall(guest, "nftables")[0].backends[0].default_inbound == "deny"


def test_iptables_persistent_rules_v4(guest: Guest) -> None:
    guest.write("/etc/iptables/rules.v4",
                "*nat\n:INPUT ACCEPT [0:0]\nCOMMIT\n*filter\n:INPUT DROP [0:0]\n"
                ":FORWARD DROP [0:0]\n:OUTPUT ACCEPT [0:0]\n-A INPUT -p tcp --dport 22 -j ACCEPT\n"
                "COMMIT\n")
    guest.symlink("/etc/systemd/system/multi-user.target.wants/netfilter-persistent.service",
                  "/lib/systemd/system/netfilter-persistent.service")
    facts, _ = firewall(guest, "iptables-persistent", "netfilter-persistent")
    assert facts == FirewallFacts(
        True, (FirewallBackend("iptables-persistent", True, True, "deny"),))


def test_firewalld_default_zone_target(guest: Guest) -> None:
    guest.write("/usr/lib/firewalld/zones/public.xml",
                '<?xml version="1.0"?>\n<zone>\n  <short>Public</short>\n</zone>\n')
    guest.write("/usr/lib/firewalld/zones/trusted.xml", '<zone target="ACCEPT"><short/></zone>')
    guest.write("/etc/firewalld/zones/dmz.xml", "<zone target='DROP'></zone>")
    guest.symlink("/etc/systemd/system/multi-user.target.wants/firewalld.service",
                  "/usr/lib/systemd/system/firewalld.service")
    guest.write("/etc/firewalld/firewalld.conf", "# no DefaultZone: public\n")
    assert firewall(guest, "firewalld")[0] == FirewallFacts(
        True, (FirewallBackend("firewalld", True, True, "deny"),))
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
    guest.symlink("/etc/systemd/system/sysinit.target.wants/nftables.service",
                  "/lib/systemd/system/nftables.service")
    facts, _ = firewall(guest, "ufw", "nftables")
    assert facts.enabled is True
    assert [(b.name, b.enabled) for b in facts.backends] == [("ufw", False), ("nftables", True)]
