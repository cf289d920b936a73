"""Run the guest's own programs inside a copy of the debootstrap tree, for differential tests.

The programs are the tree's own binaries, run with ``chroot`` (as root, which the tests and CI
are): glibc's nss_files through ``getent`` and perl (``perl-base`` is Essential, so in every
Debian tree), pam_unix through ``su``, and OpenSSH's ``sshd -T``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass

import pytest

from vmaudit.collect.sshd import CONNECTION

from .conftest import Guest

# getpwent as glibc returns it, one NUL-separated record a line: getent's putpwent refuses to
# print a shell with a colon in it (EINVAL), which glibc itself accepts.
PERL_PASSWD = r"""
my (%seen, @names);
while (my @e = getpwent()) { push @names, $e[0] unless $seen{$e[0]}++ }
endpwent();
for my $name (@names) {
    my @e = getpwnam($name) or next;
    print join("\0", $name, $e[2], $e[3], $e[7], $e[8]), "\n";
}
"""

PERL_GETGRGID = r'for (@ARGV) { my @g = getgrgid($_); print defined $g[0] ? $g[0] : "", "\0" }'


def chroot(tree: Guest, *args: str, check: bool = True) -> subprocess.CompletedProcess[bytes]:
    """``chroot TREE args...`` with a clean C-locale environment; output as bytes."""
    if os.geteuid() != 0:
        pytest.skip("chroot needs root (the tests and CI run as root)")
    null = tree.host("/dev/null")  # perl and sshd open it; the cached tree has no devices
    if not null.exists():
        os.mknod(null, 0o20666, os.makedev(1, 3))
        null.chmod(0o666)
    program = shutil.which("chroot") or "/usr/sbin/chroot"
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C"}
    return subprocess.run([program, str(tree.root), *args], capture_output=True, env=env,
                          check=check, timeout=60)  # fmt: skip


def text(data: bytes) -> str:
    """Guest program output as vmaudit shows guest strings (bad UTF-8 as U+FFFD)."""
    return data.decode("utf-8", errors="replace")


def getent(tree: Guest, database: str, *keys: str) -> list[list[str]]:
    """``getent DATABASE [KEY...]`` rows split on colons (the rows it could print)."""
    result = chroot(tree, "getent", database, *keys, check=False)
    assert result.returncode in (0, 2), result.stderr
    return [line.split(":") for line in text(result.stdout).split("\n") if line]


@dataclass(frozen=True)
class Account:
    """What ``getpwnam`` returns for a name ``getpwent`` lists."""

    name: str
    uid: int
    gid: int
    home: str
    shell: str


def glibc_accounts(tree: Guest) -> dict[str, Account]:
    """Every account name glibc enumerates, resolved with ``getpwnam`` (the guest's perl)."""
    out = chroot(tree, "perl", "-e", PERL_PASSWD).stdout
    accounts: dict[str, Account] = {}
    for line in out.split(b"\n"):
        if line:
            name, uid, gid, home, shell = (text(part) for part in line.split(b"\0"))
            accounts[name] = Account(name, int(uid), int(gid), home, shell)
    return accounts


def glibc_groups(tree: Guest, primary: dict[str, int]) -> dict[str, list[str]]:
    """Each user's group names: its primary gid, then ``getent initgroups`` (getgrouplist),
    named by ``getgrgid`` through perl (getent cannot print a member with a colon); unnamed
    gids are left out."""
    if not primary:
        return {}
    out = text(chroot(tree, "getent", "initgroups", "--", *primary).stdout)
    gids = {name: [str(primary[name])] for name in primary}
    for line in out.split("\n"):
        if line:
            name, *numbers = line.split()
            gids[name] += numbers
    every = sorted({gid for numbers in gids.values() for gid in numbers})
    names = chroot(tree, "perl", "-e", PERL_GETGRGID, *every).stdout.split(b"\0")
    name_of = {gid: text(name) for gid, name in zip(every, names, strict=False) if name}
    return {user: list(dict.fromkeys(name_of[gid] for gid in numbers if gid in name_of))
            for user, numbers in gids.items()}  # fmt: skip


# pam_unix's account check for each user, through su run by root (pam_rootok skips the
# password; the account stack still runs): ok, expired, or other (a password change is due,
# no shadow entry, ...).
PAM_ACCOUNT = r"""
for user; do
    if out=$(su -s /bin/true -- "$user" </dev/null 2>&1); then echo "$user ok"
    else case $out in *"has expired"*) echo "$user expired" ;; *) echo "$user other" ;; esac
    fi
done
"""


def pam_account(tree: Guest, users: list[str]) -> dict[str, str]:
    """``su -s /bin/true USER`` as root in the tree: pam_unix's verdict on each account."""
    if not users:
        return {}
    out = text(chroot(tree, "sh", "-c", PAM_ACCOUNT, "sh", *users).stdout)
    return dict(line.split(" ", 1) for line in out.split("\n") if line)


def prepare_sshd(tree: Guest) -> None:
    """What ``sshd -T`` needs in the copy besides /dev/null: /run/sshd and host keys."""
    tree.mkdir("/run/sshd")
    if not any(tree.host("/etc/ssh").glob("ssh_host_*_key")):
        chroot(tree, "ssh-keygen", "-A")


@dataclass(frozen=True)
class SshdTest:
    """``sshd -T -C`` for vmaudit's connection: exit status, settings, complaints."""

    returncode: int
    settings: dict[str, str]
    stderr: str


def sshd_test(tree: Guest) -> SshdTest:
    result = chroot(tree, "/usr/sbin/sshd", "-T", "-C", CONNECTION.spec(), check=False)
    settings: dict[str, str] = {}
    for line in text(result.stdout).split("\n"):
        keyword, _, value = line.partition(" ")
        if keyword:
            settings.setdefault(keyword, value)
    return SshdTest(result.returncode, settings, text(result.stderr))


SYSTEMD = "/usr/lib/systemd/systemd"


def systemd_boot_jobs(binds: list[tuple[str, str]], empty_run: str) -> set[str]:
    """The units systemd's own initial boot transaction starts (``systemd --test``), with each
    ``(tree path, host path)`` of ``binds`` mounted over the host's in a private namespace and
    an empty ``/run/systemd``, as nobody."""
    mounts = "".join(f"mount --bind {source} {target}; " for source, target in binds)
    script = (
        f"set -e; mount --make-rprivate /; {mounts}mount --bind {empty_run} /run/systemd; "
        "exec setpriv --reuid=65534 --regid=65534 --clear-groups "
        f"{SYSTEMD} --test --system --no-pager --log-target=console --log-level=err"
    )
    result = subprocess.run(
        ["unshare", "--mount", "sh", "-c", script],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    jobs = set()
    for line in result.stdout.splitlines():
        line = line.strip()
        if line.startswith("Action: ") and line.endswith(" -> start"):
            jobs.add(line[len("Action: ") : -len(" -> start")])
    assert jobs, "systemd --test enqueued nothing"
    return jobs
