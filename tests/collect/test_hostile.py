"""Hostile guest files: huge, looping, undecodable, one giant line. Warnings, never a crash."""

from __future__ import annotations

import os

from vmaudit.collect.linux import collect_linux
from vmaudit.collect.osinfo import detect_linux
from vmaudit.models import Facts

from .conftest import NOW, Guest, image_info


def facts(guest: Guest) -> Facts:
    warnings: list[str] = ["from the opener: kept"]
    os_info = detect_linux(guest.fs, warnings)
    assert os_info is not None
    return collect_linux(guest.fs, image_info(), os_info, NOW, warnings)


def test_huge_looping_undecodable_and_one_line_files(debian_tree: Guest) -> None:
    baseline = facts(debian_tree)

    # 100 MB (sparse) where sshd's Include glob will pick it up.
    huge = debian_tree.host("/etc/ssh/sshd_config.d/00-huge.conf")
    with open(huge, "wb") as out:
        out.truncate(100 * 1024 * 1024)
    debian_tree.write("/etc/ssh/sshd_config.d/10-root.conf", "PermitRootLogin no\n")
    # A symlink loop read by @includedir, and a file in /etc that nothing should follow.
    debian_tree.symlink("/etc/sudoers.d/loopa", "/etc/sudoers.d/loopb")
    debian_tree.symlink("/etc/sudoers.d/loopb", "/etc/sudoers.d/loopa")
    debian_tree.symlink("/etc/loop", "/etc/loop")
    # Non-UTF-8 names: in /home, and in a directory a collector lists.
    os.makedirs(os.path.join(os.fsencode(debian_tree.root), b"home", b"caf\xe9\xff"))
    with open(os.path.join(os.fsencode(debian_tree.root), b"etc/sudoers.d/ops\xff"), "wb") as f:
        f.write(b"opsuser ALL=(ALL) ALL\n")
    # One 8 MiB line in a sudoers include.
    debian_tree.write("/etc/sudoers.d/zzbig", "x" * (8 * 1024 * 1024))

    result = facts(debian_tree)
    warnings = "\n".join(result.warnings)
    assert result.warnings[0] == "from the opener: kept"
    assert "/etc/ssh/sshd_config.d/00-huge.conf: 104857600 bytes, over" in warnings
    assert "/etc/sudoers.d/loopa: too many levels of symbolic links" in warnings
    assert "/etc/sudoers.d/zzbig: 1 line(s) over 65536 characters skipped" in warnings
    # Everything else is complete and unchanged.
    assert result.ssh.permit_root_login == "no"
    assert result.packages == baseline.packages
    assert result.users == baseline.users
    assert result.firewall == baseline.firewall
    assert result.os == baseline.os
    assert result.dormancy == baseline.dormancy


def test_eight_mebibyte_single_line_passwd(debian_tree: Guest) -> None:
    baseline = facts(debian_tree)
    debian_tree.write("/etc/passwd", "a" * (8 * 1024 * 1024))
    result = facts(debian_tree)
    assert result.users == ()
    # glibc reads a line of any length; one without a colon is no entry.
    assert "/etc/passwd: 1 malformed line(s) skipped" in result.warnings
    assert result.packages == baseline.packages and len(result.packages) > 100
    assert result.ssh == baseline.ssh and result.firewall == baseline.firewall


def test_binary_garbage_in_every_collected_file(guest: Guest) -> None:
    garbage = bytes(range(256)) * 64
    guest.write("/etc/os-release", b"ID=debian\n" + garbage)
    for path in (
        "/etc/passwd",
        "/etc/shadow",
        "/etc/group",
        "/etc/sudoers",
        "/etc/ssh/sshd_config",
        "/var/lib/dpkg/status",
        "/etc/ufw/ufw.conf",
        "/etc/default/ufw",
        "/var/log/wtmp",
        "/var/log/lastlog",
        "/var/log/dpkg.log",
        "/etc/localtime",
        "/etc/hostname",
        "/etc/nftables.conf",
        "/bin/sh",
    ):
        guest.write(path, garbage)
    guest.write("/usr/sbin/ufw", garbage)
    result = facts(guest)
    assert result.os.distro == "debian"
    assert result.packages == ()
    assert all("collection failed" not in warning for warning in result.warnings)
    assert any(w.startswith("/var/log/wtmp:") for w in result.warnings)
    assert any(w.startswith("/var/lib/dpkg/status: no installed package") for w in result.warnings)
    assert all(
        user_warning in result.warnings
        for user_warning in (
            # Lines end at \n only, as glibc splits them (not at \r, \v, \f or \x1c-\x1e).
            "/etc/passwd: 64 malformed line(s) skipped",
            "/etc/shadow: 64 malformed line(s) skipped",
        )
    )
