"""Accounts as the guest's glibc reads them: vmaudit's users against getent and perl.

Each test writes passwd, shadow and group into a copy of the real debootstrap tree and asks
the tree's own programs (``chroot TREE getent passwd|shadow|group``, ``getpwnam`` through the
tree's perl, ``getent initgroups``) what the accounts are; vmaudit's facts must be the same.
"""

from __future__ import annotations

import random
from datetime import UTC, date, datetime, timedelta

from vmaudit.collect.accounts import HASH, collect_users
from vmaudit.collect.sshd import collect_sshd
from vmaudit.collect.sudoers import parse_sudoers
from vmaudit.models import Package, User

from .conftest import Guest
from .guestprog import getent, glibc_accounts, glibc_groups, pam_account

OPENSSH = [Package("openssh-server", "1:9.2p1-2", "amd64", "openssh")]
CRYPT = "$6$salt$" + "a" * 86


def vmaudit_users(tree: Guest) -> tuple[dict[str, User], list[str]]:
    warnings: list[str] = []
    sshd = collect_sshd(tree.fs, OPENSSH, warnings)
    # Today, not the suite's fixed NOW: pam_unix (through su) judges expiry by the clock.
    now = datetime.now(UTC)
    found = collect_users(tree.fs, now, sshd, parse_sudoers(tree.fs, warnings), warnings)
    return {user.name: user for user in found}, warnings


def first_rows(tree: Guest, database: str) -> dict[str, list[str]]:
    """``getent DATABASE`` rows by name, the first of each, as getpwnam/getspnam find them
    (compat ``+``/``-`` names are never found; rows getent cannot print are missing)."""
    rows: dict[str, list[str]] = {}
    for row in getent(tree, database):
        if row[0][:1] not in ("+", "-"):
            rows.setdefault(row[0], row)
    return rows


def state_of(field: str | None) -> str:
    """The spec's password state of the field pam_unix verifies."""
    if field is None:
        return "none"
    if field == "":
        return "empty"
    return "set" if not field.startswith(("!", "*")) and HASH.match(field) else "locked"


def day(field: str) -> str | None:
    """A shadow day as a date; None when unset, or before year 1 (vmaudit's convention)."""
    if field == "":
        return None
    try:
        return (date(1970, 1, 1) + timedelta(days=int(field))).isoformat()
    except OverflowError:
        return None


def assert_agree(tree: Guest) -> dict[str, User]:
    """vmaudit's users equal glibc's accounts, field by field; returns vmaudit's."""
    users, _ = vmaudit_users(tree)
    glibc = glibc_accounts(tree)
    assert {name: (u.uid, u.gid, u.home or "", u.shell or "") for name, u in users.items()} == {
        name: (a.uid, a.gid, a.home, a.shell) for name, a in glibc.items()
    }
    passwd, shadow = first_rows(tree, "passwd"), first_rows(tree, "shadow")
    for name, user in users.items():
        row = passwd.get(name)
        if row is None or row[2:] != [str(user.uid), str(user.gid), row[4], user.home or "",
                                      user.shell or ""]:  # fmt: skip
            continue  # getent could not print getpwnam's entry (a colon in the shell)
        shadowed = row[1] in ("x", "##" + name)  # pam_unix's is_pwd_shadowed
        spent = shadow.get(name) if shadowed else None
        field = (spent[1] if spent else None) if shadowed else row[1]
        assert user.password == state_of(field), name
        if spent is not None:
            lstchg, max_days, expire = spent[2], spent[4], spent[7]
            assert (user.last_change, user.max_days, user.expires) == (
                day(lstchg),
                int(max_days) if max_days else None,
                day(expire),
            ), name
    simple = [name for name in users if name and all(c.isalnum() or c in "_." for c in name)]
    groups = glibc_groups(tree, {name: users[name].gid or 0 for name in simple})
    assert {name: list(users[name].groups) for name in simple} == groups
    # Where only expiry can stop a login (a usable password, a shell that exists), vmaudit's
    # can_login is pam_unix's account check: su as root runs it and nothing else.
    judged = [name for name in simple if users[name].password in ("set", "empty")
              and users[name].shell in ("/bin/bash", "/bin/sh")]  # fmt: skip
    verdicts = pam_account(tree, judged)
    assert {name: users[name].can_login for name in judged} == {
        name: verdicts[name] != "expired" for name in judged}  # fmt: skip
    return users


def test_stock_tree_accounts_agree_with_glibc(debian_tree: Guest) -> None:
    users = assert_agree(debian_tree)
    assert users["root"].uid == 0 and "sshd" in users


def test_hostile_passwd_lines_read_as_glibc_reads_them(debian_tree: Guest) -> None:
    passwd = debian_tree.host("/etc/passwd")
    passwd.write_bytes(passwd.read_bytes() + (
        b"plus:x:+0:+0::/root:/bin/bash\n"          # strtoul: +0 is root
        b"lead:x:0000:00::/root:/bin/bash\n"        # leading zeros
        b"blank:x: \t0:\r0::/root:/bin/bash\n"      # leading C blanks in a number
        b"# hardened\rtoor::0:0::/root:/bin/bash\n" # a comment to glibc, whatever \r does
        b"\r\vcr::0:0::/root:/bin/bash\n"           # leading blanks of a line are skipped
        b"crlf:x:1001:1001::/home/crlf:/bin/bash\r\n"  # the shell is "/bin/bash\r"
        b"short::0:0\n"                             # four fields are enough: empty shell
        b"colon:x:1002:1002::/h:/bin/sh:more\n"     # the shell is the rest of the line
        b"neg:x:-1:0::/root:/bin/bash\n"            # wraps above 2^32-1: rejected
        b"wrap:x:-18446744073709551615:0::/:/bin/sh\n"  # wraps to 1
        b"big:x:4294967296:0::/root:/bin/bash\n"    # above 2^32-1: rejected
        b"max:x:4294967295:0::/:/bin/sh\n"
        b"empty:x::0::/root:/bin/bash\n"            # empty uid: rejected
        b"trail:x:0 :0::/root:/bin/bash\n"          # trailing garbage: rejected
        b"hex:x:0x0:0::/root:/bin/bash\n"           # base 10 only: rejected
        b"nul:x:1003:1003::/h:/bin/sh\0/../../evil\n"  # a C string ends at NUL
        b"+nis:x:0:0::/root:/bin/bash\n+\n-gone\n"  # compat references: never resolved
        b":x:0:0::/:/bin/sh\n"                      # an empty name is a name
        b"dup:x:1004:1004::/first:/bin/sh\ndup:x:0:0::/second:/bin/sh\n"
        b"\x1c:x:1005:1005::/:/bin/sh\n"            # not a C blank: a name
        b"huge:x:" + b"0" * 5000 + b"1:1::/:/bin/sh\n"
    ))  # fmt: skip
    users = assert_agree(debian_tree)
    uid0 = sorted(name for name, user in users.items() if user.uid == 0)
    assert uid0 == ["", "blank", "cr", "lead", "plus", "root", "short"]
    assert users["crlf"].shell == "/bin/bash\r" and not users["crlf"].can_login
    assert users["colon"].shell == "/bin/sh:more"
    assert (users["wrap"].uid, users["max"].uid, users["huge"].uid) == (1, 4294967295, 1)
    assert users["nul"].shell == "/bin/sh" and users["dup"].home == "/first"
    assert not {"toor", "neg", "big", "empty", "trail", "hex", "+nis", "+"} & set(users)
    assert users["plus"].admin_via[0] == "uid0" and users["short"].password == "empty"


def test_hostile_shadow_fields_read_as_glibc_reads_them(debian_tree: Guest) -> None:
    names = ["old5", "old6", "full", "neg", "wrap", "blank", "garbage", "seven", "ten",
             "flagged", "plus", "cr", "hidden", "passwd-empty"]  # fmt: skip
    passwd = debian_tree.host("/etc/passwd")
    passwd.write_text(passwd.read_text() + "".join(
        f"{name}:x:{2000 + i}:{2000 + i}::/home/{name}:/bin/bash\n" for i, name in enumerate(names)
    ).replace("passwd-empty:x:", "passwd-empty::"))  # fmt: skip
    shadow = debian_tree.host("/etc/shadow")
    shadow.write_text(shadow.read_text() + (
        f"old5:{CRYPT}:19000:0:90\n"              # the old form: five fields with a max
        f"old6:{CRYPT}:19000:0:90:\n"
        f"full:{CRYPT}:19000:0:90:7:10:20089:\n"
        f"neg:{CRYPT}:-1:0:90:7:::\n"             # -1 wraps above 2^32-1: rejected
        f"wrap:{CRYPT}:4294967295:0:2147483648:7::4294967294:\n"  # 32-bit: -1, INT_MIN, -2
        f"blank:{CRYPT}: 19000:+0:\t90:7:::\n"
        f"garbage:{CRYPT}:19000x:0:90:7:::\n"     # trailing garbage: rejected
        f"seven:{CRYPT}:19000:0:90:7:\n"          # seven fields: rejected
        f"ten:{CRYPT}:19000:0:90:7:::0:\n"        # a field after the flag: rejected
        f"flagged:{CRYPT}:19000:0:90:7:::5\n"
        "+plus::19000:0:90:7:::\n"
        f"cr:\r{CRYPT}:19000:0:90:7:::\n"         # "\r$6$..." is not a hash
        f"# note\rhidden::19000:0:99999:7:::\n"   # a comment, not an empty password
        f"passwd-empty:{CRYPT}:19000:0:99999:7:::\n"  # passwd's own empty field wins
    ))  # fmt: skip
    users = assert_agree(debian_tree)
    assert users["wrap"].expires == "1969-12-30" and users["wrap"].last_change is None
    assert users["wrap"].can_login is False  # expire -2 is a day in the past for pam_unix
    rejected = ("neg", "garbage", "seven", "ten", "hidden")  # no shadow entry for glibc
    assert {name: users[name].password for name in rejected} == dict.fromkeys(rejected, "none")
    assert users["cr"].password == "locked" and users["passwd-empty"].password == "empty"
    assert users["old5"].max_days == 90 and users["blank"].last_change == "2022-01-08"


def test_hostile_groups_read_as_initgroups_reads_them(debian_tree: Guest) -> None:
    passwd = debian_tree.host("/etc/passwd")
    passwd.write_text(passwd.read_text() + "eve:x:3000:3000::/home/eve:/bin/bash\n"
                      "mal:x:3001:3001::/home/mal:/bin/bash\n")  # fmt: skip
    group = debian_tree.host("/etc/group")
    group.write_text(group.read_text() + (
        "eve:x:3000:\n"
        "wheelish:x:27:eve\n"       # gid 27 is sudo's: getgrgid names it sudo
        "+nisgrp:x:4:eve\n"         # a compat line's gid still counts for initgroups
        "spaced:x:3002:mal ,\teve\n"  # "mal " does not match, "\teve" does
        "cr:x:3003:\rmal\r\n"       # leading \r skipped, trailing \r kept
        "short:x:3004\n"            # three fields are enough
        "members:x:+3005:mal:eve\n"  # one member named "mal:eve"
    ))  # fmt: skip
    users = assert_agree(debian_tree)
    assert users["eve"].groups == ("eve", "sudo", "adm", "spaced")
    # Debian's "%sudo ALL=(ALL:ALL) ALL" grants it too: sudo compares gids.
    assert users["eve"].admin_via == ("group:sudo", "sudoers:/etc/sudoers")
    assert users["mal"].groups == ()  # no group 3001, "mal " and "mal\r" are not "mal"


NUMBERS = ["0", "+0", "-0", "007", " 1", "\t2", "\r3", "\v4", "5 ", "-1", "-2", "4294967295",
           "4294967296", "2147483648", "", "x", "1x", "1000", "+-1", "18446744073709551616",
           "-18446744073709551615", "19000"]  # fmt: skip


def _number(rng: random.Random) -> str:
    return rng.choice(NUMBERS)


def _name(rng: random.Random, index: int) -> str:
    return rng.choice(["", " ", "\r", "+", "-", "#", "\v", "\x1c"]) + f"g{index % 23}"


def _passwd_line(rng: random.Random, index: int) -> str:
    shell = rng.choice(["/bin/bash", "/bin/sh\r", "", " /bin/sh", "/bin/sh:x", "/bin/\0sh"])
    fields = [_name(rng, index), rng.choice(["x", "", "!", CRYPT, "##g1"]), _number(rng),
              _number(rng), "gecos", rng.choice(["/home/g", "", "/\r"]), shell]  # fmt: skip
    return ":".join(fields[: rng.choice([3, 4, 5, 7, 7, 7, 8])])


def _shadow_line(rng: random.Random, index: int) -> str:
    fields = [_name(rng, index), rng.choice(["", "!", "*", CRYPT, "!" + CRYPT, "\r" + CRYPT])]
    fields += [_number(rng) for _ in range(7)]
    return ":".join(fields[: rng.choice([3, 5, 6, 7, 8, 9, 9, 9, 10])])


def _group_line(rng: random.Random, index: int) -> str:
    members = ",".join(rng.choice(["g1", " g2", "g3 ", "\rg4", "", "g5:g6", "g7"])
                       for _ in range(rng.randrange(4)))  # fmt: skip
    # Not gid 4294967295: getent initgroups passes (gid_t)-1 as the base gid, which glibc
    # then leaves out; a login passes the user's own gid.
    gid = rng.choice([n for n in NUMBERS if n != "4294967295"])
    fields = [rng.choice(["", "+", "-"]) + f"grp{index % 7}", "x", gid, members]
    return ":".join(fields[: rng.choice([2, 3, 4, 4])])


def test_generated_account_files_agree_with_glibc(debian_tree: Guest) -> None:
    """Seeded random passwd, shadow and group files of tricky fields, 24 rounds of 60 lines."""
    stock = {path: debian_tree.host(path).read_text()
             for path in ("/etc/passwd", "/etc/shadow", "/etc/group")}  # fmt: skip
    for seed in range(24):
        rng = random.Random(seed)
        for path, make in (("/etc/passwd", _passwd_line), ("/etc/shadow", _shadow_line),
                           ("/etc/group", _group_line)):  # fmt: skip
            lines = "\n".join(make(rng, index) for index in range(60))
            debian_tree.host(path).write_text(stock[path] + lines + "\n")
        assert_agree(debian_tree)


def test_account_expiry_is_pam_unixs(debian_tree: Guest) -> None:
    today = (datetime.now(UTC).date() - date(1970, 1, 1)).days
    cases = {  # name: (shadow numbers from the last change on, pam_unix's verdict)
        "exp-today": (f"19000:0:99999:7::{today}:", "expired"),
        "exp-tomorrow": (f"19000:0:99999:7::{today + 1}:", "ok"),
        "exp-wrapped": ("19000:0:99999:7::4294967294:", "expired"),  # -2
        "change-now": ("0:0:99999:7:::", "other"),  # a new password is due: login changes it
        "aged-inactive": (f"{today - 100}:0:30:7:10::", "expired"),
        "aged-grace": (f"{today - 35}:0:30:7:10::", "other"),
        "changed-later": (f"{today + 10}:0:30:7:0::", "ok"),
        "never-changed": (":0:30:7:10::", "expired"),  # no last change: aged since 1970
    }
    passwd = debian_tree.host("/etc/passwd")
    passwd.write_text(
        passwd.read_text()
        + "".join(f"{name}:x:{3000 + i}:{3000 + i}::/:/bin/sh\n" for i, name in enumerate(cases))
    )
    shadow = debian_tree.host("/etc/shadow")
    shadow.write_text(
        shadow.read_text()
        + "".join(f"{name}:{CRYPT}:{numbers}\n" for name, (numbers, _) in cases.items())
    )
    assert pam_account(debian_tree, list(cases)) == {n: v for n, (_, v) in cases.items()}
    users = assert_agree(debian_tree)
    assert {name: users[name].can_login for name in cases} == {
        name: verdict != "expired" for name, (_, verdict) in cases.items()
    }
