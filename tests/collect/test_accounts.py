"""Accounts: password states from odd shadow fields, expiry, login shells, groups, admins, keys."""

from __future__ import annotations

import time
from datetime import date

from vmaudit.collect.accounts import collect_users
from vmaudit.collect.sshd import collect_sshd
from vmaudit.collect.sudoers import parse_sudoers
from vmaudit.models import Package, User

from .conftest import NOW, Guest

HASH = "$6$salt$" + "a" * 86
TODAY = (NOW.date() - date(1970, 1, 1)).days
OPENSSH = [Package("openssh-server", "1:9.2p1-2", "amd64", "openssh")]


def base(
    guest: Guest, passwd: str, shadow: str, group: str = "root:x:0:\n", sshd: str = "UsePAM yes\n"
) -> None:
    guest.write("/etc/passwd", passwd)
    guest.write("/etc/shadow", shadow)
    guest.write("/etc/group", group)
    guest.write("/etc/ssh/sshd_config", sshd)
    guest.write("/bin/bash", "")
    guest.write("/bin/sh", "")
    guest.write("/usr/sbin/nologin", "")


def users(guest: Guest) -> tuple[dict[str, User], list[str]]:
    warnings: list[str] = []
    sshd = collect_sshd(guest.fs, OPENSSH, warnings)
    found = collect_users(guest.fs, NOW, sshd, parse_sudoers(guest.fs, warnings), warnings)
    return {user.name: user for user in found}, warnings


def line(name: str, uid: int, shell: str = "/bin/bash") -> str:
    return f"{name}:x:{uid}:{uid}::/home/{name}:{shell}\n"


def test_password_states_from_odd_shadow_fields(guest: Guest) -> None:
    names = ["set", "empty", "bang", "star", "bangbang", "banghash", "garbage", "noshadow"]
    base(
        guest,
        "".join(line(n, 1000 + i) for i, n in enumerate(names)),
        f"set:{HASH}:19000:0:99999:7:::\nempty::19000:0:99999:7:::\nbang:!:19000::::::\n"
        f"star:*:19000::::::\nbangbang:!!:::::::\nbanghash:!{HASH}:19000::::::\n"
        "garbage:x:19000::::::\n",
    )
    found, warnings = users(guest)
    assert {n: found[n].password for n in names} == {
        "set": "set",
        "empty": "empty",
        "bang": "locked",
        "star": "locked",
        "bangbang": "locked",
        "banghash": "locked",
        "garbage": "locked",
        "noshadow": "none",
    }
    assert {n for n in names if found[n].can_login} == {"set", "empty"}
    assert warnings == []


def test_last_change_max_days_and_expiry_dates(guest: Guest) -> None:
    base(
        guest,
        line("a", 1001) + line("b", 1002) + line("c", 1003) + line("d", 1004),
        f"a:{HASH}:19737:0:90:7::20089:\nb:{HASH}::0:::::\nc:{HASH}:0:0:99999:7:::\n"
        f"d:{HASH}:19737:0:99999:7::{TODAY + 1}:\n",
    )
    found, _ = users(guest)
    assert (found["a"].last_change, found["a"].max_days, found["a"].expires) == (
        "2024-01-15",
        90,
        "2025-01-01",
    )
    assert found["a"].can_login is False  # expired before NOW
    assert (found["b"].last_change, found["b"].max_days, found["b"].expires) == (None, None, None)
    assert found["c"].last_change == "1970-01-01"  # 0: change forced at next login, still usable
    assert found["c"].can_login is True
    assert found["d"].can_login is True  # expires tomorrow


def test_password_expired_beyond_inactivity_cannot_log_in(guest: Guest) -> None:
    base(
        guest,
        line("stale", 1001) + line("grace", 1002),
        f"stale:{HASH}:{TODAY - 100}:0:30:7:10::\ngrace:{HASH}:{TODAY - 35}:0:30:7:10::\n",
    )
    found, _ = users(guest)
    assert found["stale"].can_login is False
    assert found["grace"].can_login is True


def test_non_login_shells_and_missing_shells(guest: Guest) -> None:
    base(
        guest,
        line("svc", 1001, "/usr/sbin/nologin")
        + line("f", 1002, "/bin/false")
        + line("gone", 1003, "/bin/zsh")
        + line("dflt", 1004, ""),
        "".join(f"{n}:{HASH}:19000:0:99999:7:::\n" for n in ("svc", "f", "gone", "dflt")),
    )
    found, _ = users(guest)
    assert [found[n].can_login for n in ("svc", "f", "gone", "dflt")] == [False, False, False, True]


def test_groups_and_admin_reasons(guest: Guest) -> None:
    base(
        guest,
        "root:x:0:0:root:/root:/bin/bash\n"
        + line("toor", 0)
        + line("ops", 1001)
        + line("dev", 1002)
        + line("wheely", 1003),
        f"root:{HASH}:19000::::::\n",
        group="root:x:0:\nsudo:x:27:ops\nwheel:x:10:wheely\nops:x:1001:\ndev:x:1002:\n"
        "deploy:x:3000:dev,ops\n",
    )
    guest.write("/etc/sudoers", "root ALL=(ALL:ALL) ALL\n%deploy ALL=(root) NOPASSWD: ALL\n")
    found, _ = users(guest)
    assert found["root"].admin_via == ("uid0", "sudoers:/etc/sudoers")
    assert found["toor"].admin_via == ("uid0",)
    assert found["ops"].groups == ("ops", "sudo", "deploy")
    assert found["ops"].admin_via == ("group:sudo", "sudoers:/etc/sudoers")
    assert found["dev"].admin_via == ("sudoers:/etc/sudoers",)
    assert found["wheely"].admin_via == ("group:wheel",)
    assert all(found[n].admin for n in ("root", "toor", "ops", "dev", "wheely"))


def test_authorized_keys_counted_in_both_default_files(guest: Guest) -> None:
    base(guest, line("k", 1001), "k:!:19000::::::\n")
    guest.write(
        "/home/k/.ssh/authorized_keys", "# comment\n\nssh-ed25519 AAAA k@a\nssh-rsa AAAA k@b\n"
    )
    guest.write("/home/k/.ssh/authorized_keys2", "ssh-ed25519 AAAA k@c\n")
    found, _ = users(guest)
    assert found["k"].authorized_keys == 3
    # A locked password does not stop a key login under UsePAM yes.
    assert found["k"].password == "locked" and found["k"].can_login is True


def test_locked_password_with_keys_cannot_log_in_without_pam(guest: Guest) -> None:
    base(guest, line("k", 1001), "k:!:19000::::::\n", sshd="UsePAM no\n")
    guest.write("/home/k/.ssh/authorized_keys", "ssh-ed25519 AAAA k@a\n")
    found, _ = users(guest)
    assert found["k"].can_login is False


def test_authorized_keys_file_tokens(guest: Guest) -> None:
    base(
        guest,
        line("t", 1001),
        "t:*:19000::::::\n",
        sshd="AuthorizedKeysFile /etc/ssh/keys/%u %h/.ssh/k_%U\n",
    )
    guest.write("/etc/ssh/keys/t", "ssh-ed25519 AAAA a\n")
    guest.write("/home/t/.ssh/k_1001", "ssh-ed25519 AAAA b\nssh-ed25519 AAAA c\n")
    guest.write("/home/t/.ssh/authorized_keys", "ssh-ed25519 AAAA ignored\n")
    found, _ = users(guest)
    assert found["t"].authorized_keys == 3


def test_malformed_lines_are_warnings(guest: Guest) -> None:
    base(guest, line("ok", 1001) + "broken-line\n+nis::::::\n", f"ok:{HASH}:19000::::::\n")
    found, warnings = users(guest)
    assert list(found) == ["ok"]
    assert warnings == ["/etc/passwd: 1 malformed line(s) skipped"]


def test_numbers_are_read_as_strtoul_reads_them(guest: Guest) -> None:
    base(
        guest,
        "root:x:0:0::/root:/bin/bash\nplus:x:+0:+0::/root:/bin/bash\n"
        "zeros:x:000:0::/root:/bin/bash\nneg:x:-1:0::/root:/bin/bash\n"
        "big:x:4294967296:0::/root:/bin/bash\n",
        "",
    )
    found, warnings = users(guest)
    assert {name: user.uid for name, user in found.items()} == {"root": 0, "plus": 0, "zeros": 0}
    assert found["plus"].admin_via == ("uid0",)
    assert warnings == ["/etc/passwd: 2 malformed line(s) skipped"]


def test_a_carriage_return_neither_ends_a_line_nor_a_field(guest: Guest) -> None:
    base(
        guest,
        "# hardened\rtoor::0:0::/root:/bin/bash\ncrlf:x:1001:1001::/h:/bin/bash\r\n",
        f"# locked\rcrlf::19000::::::\ncrlf:{HASH}:19000::::::\n",
    )
    found, _ = users(guest)
    assert list(found) == ["crlf"]
    assert found["crlf"].shell == "/bin/bash\r" and found["crlf"].password == "set"
    assert found["crlf"].can_login is False  # no such shell


def test_four_passwd_fields_are_an_account_and_the_shell_is_the_rest(guest: Guest) -> None:
    base(guest, "short::0:0\ncolon:x:1001:1001::/h:/bin/bash:x\n", "")
    found, _ = users(guest)
    assert (found["short"].uid, found["short"].shell, found["short"].password) == (0, None, "empty")
    assert found["short"].can_login is True  # an empty shell is /bin/sh
    assert found["colon"].shell == "/bin/bash:x"


def test_compat_entries_are_not_accounts(guest: Guest) -> None:
    base(guest, line("a", 1001) + "+nis:x:0:0::/root:/bin/bash\n+\n-b\n", "")
    found, warnings = users(guest)
    assert list(found) == ["a"] and warnings == []


def test_a_passwd_field_other_than_x_is_the_password(guest: Guest) -> None:
    # pam_unix reads shadow only for "x": an empty passwd field is an empty password.
    base(guest, "eve::1001:1001::/home/eve:/bin/bash\n", f"eve:{HASH}:19000::::::\n")
    found, _ = users(guest)
    assert found["eve"].password == "empty" and found["eve"].can_login is True


def test_a_second_group_line_with_sudos_gid_is_sudo(guest: Guest) -> None:
    base(
        guest,
        line("eve", 1001),
        f"eve:{HASH}:19000::::::\n",
        group="sudo:x:27:\neve:x:1001:\nlookalike:x:27:eve\n+nis:x:10:eve\nwheel:x:10:\n",
    )
    found, _ = users(guest)
    assert found["eve"].groups == ("eve", "sudo", "wheel")
    assert found["eve"].admin_via == ("group:sudo", "group:wheel")


def test_expiry_is_pam_unixs_arithmetic(guest: Guest) -> None:
    base(
        guest,
        line("wrapped", 1001) + line("unset", 1002),
        f"wrapped:{HASH}:19000:0:99999:7::4294967294:\n"  # -2: a day before 1970
        f"unset:{HASH}::0:30:7:10::\n",
    )  # no last change: aged since 1970, then inactive
    found, _ = users(guest)
    assert found["wrapped"].expires == "1969-12-30" and found["wrapped"].can_login is False
    assert found["unset"].can_login is False


def test_a_long_passwd_line_is_still_an_account(guest: Guest) -> None:
    base(guest, "wide:x:0:0:" + "g" * 100_000 + ":/root:/bin/bash\n", "wide::19000::::::\n")
    found, warnings = users(guest)
    assert found["wide"].uid == 0 and found["wide"].password == "empty" and warnings == []


def test_keys_in_another_users_match_block_file_are_counted(guest: Guest) -> None:
    base(guest, line("ops", 1001), "ops:!:19000::::::\n",
         sshd="UsePAM yes\nMatch User ops\n  AuthorizedKeysFile /srv/keys/%u\n")  # fmt: skip
    guest.write("/srv/keys/ops", "ssh-ed25519 AAAA ops@a\n")
    guest.write("/home/ops/.ssh/authorized_keys", 'command="' + "x" * 70_000 + '" ssh-rsa AAAA\n')
    found, _ = users(guest)
    assert found["ops"].authorized_keys == 2 and found["ops"].can_login is True


def test_millions_of_lines_and_members_stay_fast(guest: Guest) -> None:
    many = "".join(line(f"u{i}", 10_000 + i) for i in range(20_000))
    base(guest, "ab\n" * 3_000_000 + many + "\n" * 3_000_000,
         "", group="crowd:x:27:" + "x," * 3_000_000 + "u7\n")  # fmt: skip
    started = time.monotonic()
    found, warnings = users(guest)
    assert time.monotonic() - started < 60
    assert len(found) == 20_000 and found["u7"].groups == ("crowd",)
    assert warnings == ["/etc/passwd: 3000000 malformed line(s) skipped"]


def test_roots_keys_for_other_addresses_are_counted(guest: Guest) -> None:
    base(guest, "root:x:0:0:root:/root:/bin/bash\n", "root:*:19000::::::\n",
         sshd="Match Address 10.0.0.0/8\n  AuthorizedKeysFile /etc/ssh/keys/%u\n")  # fmt: skip
    guest.write("/etc/ssh/keys/root", "ssh-ed25519 AAAA admin@jump\n")
    found, _ = users(guest)
    assert found["root"].authorized_keys == 1 and found["root"].can_login is True
