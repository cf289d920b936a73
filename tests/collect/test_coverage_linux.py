"""Coverage of a Linux guest: a section whose source cannot be read failed, with its reason."""

from __future__ import annotations

from vmaudit.baseline.loader import load_baseline
from vmaudit.collect.linux import collect_linux
from vmaudit.collect.osinfo import detect_linux
from vmaudit.judge.rules import evaluate
from vmaudit.models import Facts

from .conftest import NOW, Guest, image_info

PASSWD = "root:x:0:0:root:/root:/bin/sh\ntoor:x:0:0::/root:/bin/sh\n"


def facts(guest: Guest) -> Facts:
    warnings: list[str] = []
    os_info = detect_linux(guest.fs, warnings)
    assert os_info is not None
    return collect_linux(guest.fs, image_info(), os_info, NOW, warnings)


def mini(guest: Guest) -> None:
    guest.write("/etc/os-release", "ID=debian\nVERSION_ID=12\n")
    guest.write("/etc/passwd", PASSWD)
    guest.write("/bin/sh", b"\x7fELF")


def test_a_plain_guest_reads_accounts_and_has_no_sshd_or_firewall(guest: Guest) -> None:
    mini(guest)
    guest.write("/etc/shadow", "root:!:19000::::::\ntoor::19000::::::\n")
    coverage = {c.section: (c.status, c.reason) for c in facts(guest).coverage}
    assert coverage["accounts"] == ("read", None)
    assert coverage["ssh"] == ("absent", "no OpenSSH server installed")
    assert coverage["sudo"] == ("absent", "no /etc/sudoers")
    assert coverage["hotfixes"][0] == "absent"


def test_a_passwd_that_cannot_be_read_fails_accounts_and_its_rules(guest: Guest) -> None:
    mini(guest)
    guest.host("/etc/passwd").unlink()
    guest.mkdir("/etc/passwd")  # there, but no file: "no accounts" would be a lie
    result = facts(guest)
    assert result.failed_sections() == {"accounts": "/etc/passwd unreadable: not a regular file"}
    assert result.users == ()
    judged = evaluate(result, [load_baseline("default")], NOW)
    assert {e.rule for e in judged.not_judged} >= {"account.extra-uid0", "account.empty-password"}
    assert not {f.rule for f in judged.findings} & {e.rule for e in judged.not_judged}


def test_a_missing_passwd_fails_accounts(guest: Guest) -> None:
    mini(guest)
    guest.host("/etc/passwd").unlink()
    assert facts(guest).failed_sections()["accounts"] == "/etc/passwd unreadable: not found"
