"""diff_facts: what changed in a guest between two audits."""

from __future__ import annotations

from dataclasses import replace

from state_helpers import make_facts, make_user

from vmaudit.models import FirewallBackend, FirewallFacts, OsInfo, Package, SshFacts
from vmaudit.state import diff_facts


def test_identical_facts_have_no_changes() -> None:
    assert diff_facts(make_facts(), make_facts()) == {}


def test_days_idle_alone_is_not_a_change() -> None:
    old = make_facts()
    new = replace(old, dormancy=replace(old.dormancy, days_idle=(old.dormancy.days_idle or 0) + 30))
    assert diff_facts(old, new) == {}


def test_packages_added_removed_upgraded_downgraded_with_versions() -> None:
    old = make_facts(
        packages=(
            Package("openssl", "3.0.11-1~deb12u2", "amd64"),
            Package("bash", "5.2.15-2+b2", "amd64"),
            Package("telnet", "0.17-44", "amd64"),
            Package("curl", "7.88.1-10+deb12u5", "amd64"),
        )
    )
    new = make_facts(
        packages=(
            # ~ sorts before anything in dpkg: deb12u2 -> 3.0.13-1~deb12u1 is an upgrade
            Package("openssl", "3.0.13-1~deb12u1", "amd64"),
            Package("bash", "5.2.15-2+b2", "amd64"),
            Package("nmap", "7.93+dfsg1-1", "amd64"),
            Package("curl", "7.88.1-10+deb12u4", "amd64"),
        )
    )
    assert diff_facts(old, new)["packages"] == {
        "added": [{"name": "nmap", "arch": "amd64", "version": "7.93+dfsg1-1"}],
        "removed": [{"name": "telnet", "arch": "amd64", "version": "0.17-44"}],
        "upgraded": [
            {
                "name": "openssl",
                "arch": "amd64",
                "old": "3.0.11-1~deb12u2",
                "new": "3.0.13-1~deb12u1",
            }
        ],
        "downgraded": [
            {
                "name": "curl",
                "arch": "amd64",
                "old": "7.88.1-10+deb12u5",
                "new": "7.88.1-10+deb12u4",
            }
        ],
    }


def test_package_upgrade_uses_the_guest_ordering_not_text_order() -> None:
    rpm_os = OsInfo("linux", "rhel", "9.3", None, "h", "x86_64", "rpm")
    old = make_facts(os=rpm_os, packages=(Package("kernel-core", "5.14.0-9.el9", "x86_64"),))
    new = make_facts(os=rpm_os, packages=(Package("kernel-core", "5.14.0-10.el9", "x86_64"),))
    assert diff_facts(old, new)["packages"]["upgraded"] == [
        {"name": "kernel-core", "arch": "x86_64", "old": "5.14.0-9.el9", "new": "5.14.0-10.el9"}
    ]


def test_side_by_side_versions_are_listed_one_by_one() -> None:
    old = make_facts(packages=(Package("kernel", "5.14.0-1", "x86_64"),))
    new = make_facts(
        packages=(Package("kernel", "5.14.0-1", "x86_64"), Package("kernel", "5.14.0-2", "x86_64"))
    )
    assert diff_facts(old, new)["packages"] == {
        "added": [{"name": "kernel", "arch": "x86_64", "version": "5.14.0-2"}]
    }


def test_users_added_removed_and_admin_granted() -> None:
    old = make_facts(users=(make_user("root", 0, admin=True), make_user("alice"), make_user("bob")))
    new = make_facts(
        users=(
            make_user("root", 0, admin=True),
            make_user("alice", admin=True),
            make_user("toor", 0, admin=True, admin_via=("uid0",)),
        )
    )
    users = diff_facts(old, new)["users"]
    assert [u["name"] for u in users["added"]] == ["toor"]
    assert users["added"][0]["admin_via"] == ["uid0"]
    assert [u["name"] for u in users["removed"]] == ["bob"]
    assert users["admin"] == {"granted": [{"name": "alice", "admin_via": ["group:sudo"]}]}
    assert diff_facts(old, new)["admins"] == {"old": ["root"], "new": ["alice", "root", "toor"]}


def test_admin_revoked_and_account_fields_changed() -> None:
    old = make_facts(users=(make_user("root", 0, admin=True), make_user("ops", admin=True)))
    new = make_facts(
        users=(
            make_user("root", 0, admin=True),
            make_user("ops", password="locked", can_login=False),
        )
    )
    users = diff_facts(old, new)["users"]
    assert users["admin"] == {"revoked": [{"name": "ops", "admin_via": ["group:sudo"]}]}
    assert users["changed"] == [
        {
            "name": "ops",
            "fields": {
                "password": {"old": "set", "new": "locked"},
                "can_login": {"old": True, "new": False},
                "groups": {"old": ["sudo"], "new": []},
            },
        }
    ]


def test_firewall_and_ssh_changes() -> None:
    old = make_facts()
    new = make_facts(
        ssh=SshFacts(True, "yes", True),
        firewall=FirewallFacts(
            False,
            (
                FirewallBackend("nftables", True, False, "accept"),
                FirewallBackend("ufw", True, False, None),
            ),
        ),
    )
    changes = diff_facts(old, new)
    assert changes["ssh"] == {
        "permit_root_login": {"old": "prohibit-password", "new": "yes"},
        "password_authentication": {"old": False, "new": True},
    }
    assert changes["firewall"] == {
        "enabled": {"old": True, "new": False},
        "backends": {
            "added": ["ufw"],
            "changed": [
                {
                    "name": "nftables",
                    "fields": {
                        "enabled": {"old": True, "new": False},
                        "default_inbound": {"old": "deny", "new": "accept"},
                    },
                }
            ],
        },
    }


def test_a_new_boot_means_powered_on_and_hostname_change_is_told() -> None:
    old = make_facts()
    new = make_facts(hostname="db-01-clone")
    new = replace(new, dormancy=replace(new.dormancy, last_boot="2026-11-01T09:00:00Z"))
    changes = diff_facts(old, new)
    assert changes["dormancy"] == {
        "last_boot": {"old": "2024-01-10T08:00:00Z", "new": "2026-11-01T09:00:00Z"},
        "powered_on": True,
    }
    assert changes["os"] == {"hostname": {"old": "db-01", "new": "db-01-clone"}}
