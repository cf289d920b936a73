"""The collectors on a real debootstrap tree, changed with the real shadow tools (-R/--root)."""

from __future__ import annotations

import platform
import struct
import subprocess
from datetime import UTC, datetime, timedelta

from vmaudit.collect.linux import collect_linux
from vmaudit.collect.osinfo import detect_linux
from vmaudit.models import Facts, User

from .conftest import Guest, image_info

# The tree is built on the day the suite first runs, so its clock comes from the tree: a
# month after debootstrap's last dpkg.log line, whatever the calendar says.
DAYS_AFTER_BUILD = 30


def run(*args: str) -> None:
    subprocess.run(args, check=True, capture_output=True)


def built_at(guest: Guest) -> datetime:
    """The time of the tree's last dpkg.log line (debootstrap wrote it, in UTC here)."""
    last = guest.host("/var/log/dpkg.log").read_text().rstrip("\n").rsplit("\n", 1)[-1]
    return datetime.strptime(last[:19], "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC)


def clock(guest: Guest) -> datetime:
    return built_at(guest) + timedelta(days=DAYS_AFTER_BUILD)


def facts(guest: Guest, now: datetime | None = None) -> Facts:
    warnings: list[str] = []
    os_info = detect_linux(guest.fs, warnings)
    assert os_info is not None
    return collect_linux(guest.fs, image_info(), os_info, now or clock(guest), warnings)


def users(result: Facts) -> dict[str, User]:
    return {user.name: user for user in result.users}


def dpkg_query(guest: Guest) -> list[tuple[str, str]]:
    """(db:Status-Status, "name version arch") of every package dpkg-query -W lists."""
    out = subprocess.run(
        [
            "dpkg-query",
            f"--admindir={guest.host('/var/lib/dpkg')}",
            "-W",
            "-f",
            "${db:Status-Status} ${Package} ${Version} ${Architecture}\\n",
        ],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return [(line.split(" ", 1)[0], line.split(" ", 1)[1]) for line in out.splitlines()]


def test_os_facts_of_the_debootstrap_tree(debian_tree: Guest) -> None:
    result = facts(debian_tree)
    debian_version = debian_tree.host("/etc/debian_version").read_text().strip()
    assert result.os.distro == "debian"
    assert result.os.version == debian_version
    assert result.os.product == "Debian GNU/Linux 12 (bookworm)"
    assert result.os.arch == {"x86_64": "x86_64", "aarch64": "aarch64"}[platform.machine()]
    assert result.os.package_format == "deb"
    assert result.warnings == ()


def test_package_list_agrees_with_dpkg_query(debian_tree: Guest) -> None:
    listed = dpkg_query(debian_tree)
    assert len(listed) > 100
    ours = sorted(f"{p.name} {p.version} {p.arch}" for p in facts(debian_tree).packages)
    assert ours == sorted(entry for status, entry in listed if status != "config-files")


def test_package_states_agree_with_dpkg_query_after_removals(debian_tree: Guest) -> None:
    status = debian_tree.host("/var/lib/dpkg/status")
    text = status.read_text()
    # As `dpkg --remove ufw` and `apt-mark`/an interrupted configure would leave them.
    text = text.replace(
        "Package: ufw\nStatus: install ok installed",
        "Package: ufw\nStatus: deinstall ok config-files",
    )
    text = text.replace(
        "Package: sudo\nStatus: install ok installed",
        "Package: sudo\nStatus: deinstall ok installed",
    )
    text = text.replace(
        "Package: less\nStatus: install ok installed",
        "Package: less\nStatus: install ok half-configured",
    )
    status.write_text(text)
    listed = dpkg_query(debian_tree)
    assert {s for s, entry in listed if entry.startswith(("ufw ", "sudo ", "less "))} >= {
        "config-files",
        "installed",
    }
    result = facts(debian_tree)
    names = {p.name for p in result.packages}
    assert "ufw" not in names and {"sudo", "openssh-server"} <= names
    assert sorted(f"{p.name} {p.version} {p.arch}" for p in result.packages) == sorted(
        entry for state, entry in listed if state != "config-files"
    )


def test_accounts_changed_with_shadow_tools(debian_tree: Guest) -> None:
    root = str(debian_tree.root)
    run("useradd", "-R", root, "-m", "-s", "/bin/bash", "alice")
    subprocess.run(["chpasswd", "-R", root], input=b"alice:correct horse\n", check=True)
    run("usermod", "-R", root, "-aG", "sudo", "alice")
    run("chage", "-R", root, "-d", "2024-01-15", "-M", "90", "alice")
    run("useradd", "-R", root, "-m", "-s", "/bin/bash", "bob")
    run("passwd", "-R", root, "-d", "bob")
    run("useradd", "-R", root, "-m", "-s", "/bin/bash", "carol")
    subprocess.run(["chpasswd", "-R", root], input=b"carol:x1\n", check=True)
    run("chage", "-R", root, "-E", "2020-01-01", "carol")
    run(
        "useradd",
        "-R",
        root,
        "-o",
        "-u",
        "0",
        "-g",
        "0",
        "-M",
        "-d",
        "/root",
        "-s",
        "/bin/bash",
        "toor",
    )
    run("useradd", "-R", root, "-r", "-s", "/usr/sbin/nologin", "svc")
    run("passwd", "-R", root, "-l", "root")
    keys = debian_tree.host("/home/alice/.ssh/authorized_keys")
    keys.parent.mkdir()
    keys.write_text("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIG alice@laptop\n# old key\n")

    found = users(facts(debian_tree))
    alice, bob, carol, toor = found["alice"], found["bob"], found["carol"], found["toor"]
    assert (alice.password, alice.last_change, alice.max_days, alice.can_login) == (
        "set",
        "2024-01-15",
        90,
        True,
    )
    assert alice.groups == ("alice", "sudo")
    assert alice.admin_via == ("group:sudo", "sudoers:/etc/sudoers")
    assert alice.authorized_keys == 1
    assert (bob.password, bob.can_login, bob.admin) == ("empty", True, False)
    assert (carol.password, carol.expires, carol.can_login) == ("set", "2020-01-01", False)
    assert (toor.uid, toor.admin_via) == (0, ("uid0",))
    assert found["svc"].can_login is False
    assert found["root"].password == "locked"
    assert found["root"].admin_via == ("uid0", "sudoers:/etc/sudoers")


def test_ssh_firewall_and_dormancy_on_the_tree(debian_tree: Guest) -> None:
    before = facts(debian_tree)
    assert (
        before.ssh.installed,
        before.ssh.permit_root_login,
        before.ssh.password_authentication,
    ) == (True, "prohibit-password", True)
    assert [(b.name, b.enabled, b.default_inbound) for b in before.firewall.backends] == [
        ("ufw", False, "deny")
    ]
    assert before.dormancy.last_update is not None  # debootstrap's own dpkg.log

    debian_tree.write(
        "/etc/ssh/sshd_config.d/50-cloud-init.conf",
        "PermitRootLogin yes\nPasswordAuthentication no\n",
    )
    conf = debian_tree.host("/etc/ufw/ufw.conf")
    conf.write_text(conf.read_text().replace("ENABLED=no", "ENABLED=yes"))
    boot = int(datetime(2025, 3, 1, 6, 0, tzinfo=UTC).timestamp())
    debian_tree.write(
        "/var/log/wtmp",
        struct.pack(
            "<ii32s4s32s256shhiii16s20s",
            2,
            0,
            b"~",
            b"~~",
            b"reboot",
            b"6.1.0",
            0,
            0,
            0,
            boot,
            0,
            b"",
            b"",
        ),
    )
    after = facts(debian_tree)
    assert (after.ssh.permit_root_login, after.ssh.password_authentication) == ("yes", False)
    assert after.firewall.enabled is True
    assert after.dormancy.last_boot == "2025-03-01T06:00:00Z"
    rebooted = datetime(2025, 3, 1, 6, tzinfo=UTC)
    assert after.dormancy.days_idle == (clock(debian_tree) - rebooted).days
    assert after.warnings == ()


def test_the_tree_judged_a_year_after_it_was_built(debian_tree: Guest) -> None:
    """The same facts on a later day: nothing in the suite may depend on the calendar."""
    later = clock(debian_tree) + timedelta(days=365)
    result = facts(debian_tree, now=later)
    assert result.warnings == ()
    assert result.dormancy.last_update == built_at(debian_tree).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert result.dormancy.days_idle is not None
    assert result.dormancy.days_idle >= 365
