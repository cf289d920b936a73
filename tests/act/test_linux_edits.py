"""The lock edit against the real ``usermod --root TREE -L -e 1`` of shadow-utils, byte for byte."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from vmaudit.act.linux_edits import (
    EditRefused,
    already_locked_and_expired,
    comment_keys,
    comment_spans,
    lock_and_expire,
    login_defs_number,
)

SOURCE_DATE_EPOCH = 1_796_083_200  # 2026-12-01: the day usermod stamps a created entry with
TODAY = SOURCE_DATE_EPOCH // 86400

PASSWD = (
    "root:x:0:0:root:/root:/bin/bash\n"
    "alice:x:1000:1000:Alice,,,:/home/alice:/bin/bash\n"
    "bob:$6$pp$hh:1001:1001::/home/bob:/bin/sh\n"
    "carol:x:1002:1002::/home/carol:/bin/sh\n"
    "+@netadmins::::::\n"
    "dave:x:+1003:01003:Dave:/home/dave:/bin/sh\n"
    "# a comment line\n"
    "frank:*:1005:1005::/home/frank:/bin/sh\n"
    "gina:x:1006:1006::/home/gina:/bin/sh\n"
    "heidi:x:1007:1007::/home/heidi:/bin/sh\n"
    "hank:x:1008:1008::/home/hank:/bin/sh\n"
    "judy:x:1010:1010::/home/judy:/bin/sh\r\n"
    "ivan:x:1009:1009::/home/ivan:/bin/sh"
)
SHADOW = (
    "root:$6$abc$def:19000:0:99999:7:::\n"
    "alice:$6$x$y:19000:0:99999:7:::\n"
    "carol::19000:0:99999:7:::\n"
    "+@netadmins::::::::\n"
    "dave:$y$j9T$salt$hash:+5: 0:99999:7:::\n"
    "\n"
    "frank:*:19000:0:99999:7:::\n"
    "gina:$6$g$h:19000:0:99999:7:::77\n"
    "heidi:$1$a$b:19000:0:99999\n"
    "hank:!$6$first:19000:0:99999:7:::\n"
    "hank:$6$second:19000:0:99999:7:::\n"
    "ivan:!:19000::::::"
)
LOGIN_DEFS = "# defaults\nPASS_MAX_DAYS\t0x63\nPASS_MIN_DAYS 010\nPASS_WARN_AGE   7\n"
USERS = ("alice", "bob", "carol", "dave", "frank", "gina", "heidi", "ivan", "root")


def _tree(root: Path) -> Path:
    etc = root / "etc"
    etc.mkdir(parents=True)
    (etc / "passwd").write_bytes(PASSWD.encode())
    (etc / "shadow").write_bytes(SHADOW.encode())
    (etc / "group").write_text("root:x:0:\n")
    (etc / "gshadow").write_text("root:*::\n")
    (etc / "login.defs").write_text(LOGIN_DEFS)
    (etc / "shadow").chmod(0o640)
    return root


def _usermod(root: Path, name: str) -> None:
    env = {**os.environ, "SOURCE_DATE_EPOCH": str(SOURCE_DATE_EPOCH)}
    subprocess.run(
        ["usermod", "--root", str(root), "-L", "-e", "1", name],
        check=True,
        capture_output=True,
        env=env,
    )


@pytest.mark.skipif(
    shutil.which("usermod") is None or os.geteuid() != 0,
    reason="needs shadow-utils' usermod and root for --root",
)
@pytest.mark.parametrize("name", USERS)
def test_lock_leaves_passwd_and_shadow_as_usermod_does(tmp_path: Path, name: str) -> None:
    tree = _tree(tmp_path / "tree")
    passwd, shadow = (tree / "etc/passwd").read_bytes(), (tree / "etc/shadow").read_bytes()

    edit = lock_and_expire(passwd, shadow, name, TODAY, LOGIN_DEFS.encode())
    _usermod(tree, name)

    assert edit.passwd == (tree / "etc/passwd").read_bytes()
    assert edit.shadow == (tree / "etc/shadow").read_bytes()
    assert edit.shadow_created == (name == "bob")


@pytest.mark.skipif(
    shutil.which("usermod") is None or os.geteuid() != 0,
    reason="needs shadow-utils' usermod and root for --root",
)
def test_locking_twice_gives_what_usermod_gives_twice(tmp_path: Path) -> None:
    tree = _tree(tmp_path / "tree")
    passwd, shadow = (tree / "etc/passwd").read_bytes(), (tree / "etc/shadow").read_bytes()
    for name in ("alice", "bob"):
        edit = lock_and_expire(passwd, shadow, name, TODAY, LOGIN_DEFS.encode())
        passwd, shadow = edit.passwd, edit.shadow
        _usermod(tree, name)
    assert (passwd, shadow) == (
        (tree / "etc/passwd").read_bytes(),
        (tree / "etc/shadow").read_bytes(),
    )
    assert already_locked_and_expired(shadow, "alice")
    assert not already_locked_and_expired(shadow, "carol")


def test_a_user_usermod_cannot_find_is_refused() -> None:
    with pytest.raises(EditRefused, match="no passwd entry of mallory"):
        lock_and_expire(PASSWD.encode(), SHADOW.encode(), "mallory", TODAY, None)


@pytest.mark.skipif(
    shutil.which("usermod") is None or os.geteuid() != 0,
    reason="needs shadow-utils' usermod and root for --root",
)
@pytest.mark.parametrize(
    ("name", "reason"), [("hank", "2 entries named hank"), ("judy", "control character")]
)
def test_what_usermod_refuses_is_refused(tmp_path: Path, name: str, reason: str) -> None:
    tree = _tree(tmp_path / "tree")
    with pytest.raises(EditRefused, match=reason):
        lock_and_expire(PASSWD.encode(), SHADOW.encode(), name, TODAY, LOGIN_DEFS.encode())
    with pytest.raises(subprocess.CalledProcessError):
        _usermod(tree, name)
    assert (tree / "etc/shadow").read_bytes() == SHADOW.encode()


def test_no_shadow_file_is_refused_as_usermod_refuses_e() -> None:
    with pytest.raises(EditRefused, match="shadow passwords"):
        lock_and_expire(PASSWD.encode(), None, "alice", TODAY, None)


def test_a_nul_byte_that_usermod_would_drop_is_refused() -> None:
    with pytest.raises(EditRefused, match="NUL"):
        lock_and_expire(PASSWD.encode(), SHADOW.encode() + b"x\0y\n", "alice", TODAY, None)


def test_login_defs_numbers_as_getdef_num_reads_them() -> None:
    defs = b"PASS_MAX_DAYS 0x10\nPASS_MIN_DAYS 010\nPASS_WARN_AGE seven\n#PASS_X 1\n"
    assert login_defs_number(defs, "PASS_MAX_DAYS") == 16
    assert login_defs_number(defs, "PASS_MIN_DAYS") == 8
    assert login_defs_number(defs, "PASS_WARN_AGE") == -1
    assert login_defs_number(defs, "PASS_X") == -1
    assert login_defs_number(None, "PASS_MAX_DAYS") == -1


def test_commented_spans_keep_every_other_byte() -> None:
    data = b"Defaults env_reset\nmallory ALL=(ALL) \\\n   ALL\n\r\nbob ALL=(ALL) ALL\n"
    out = comment_spans(data, [(1, 2)], ["# vmaudit remediate 2026-12-01: x"])
    assert out == (
        b"Defaults env_reset\n# vmaudit remediate 2026-12-01: x\n"
        b"# mallory ALL=(ALL) \\\n#    ALL\n\r\nbob ALL=(ALL) ALL\n"
    )


def test_key_lines_commented_under_one_note() -> None:
    data = b"# old\nssh-ed25519 AAAA a@b\n\n  ssh-rsa BBBB c@d\n"
    out, count = comment_keys(data, "2026-12-01", "revoked account")
    assert count == 2
    assert out == (
        b"# vmaudit remediate 2026-12-01: 2 key(s) commented out: revoked account\n"
        b"# old\n# ssh-ed25519 AAAA a@b\n\n#   ssh-rsa BBBB c@d\n"
    )
