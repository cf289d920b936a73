"""sshd settings as the guest's sshd reads them: vmaudit against ``sshd -T -C`` in the tree.

Each test writes sshd_config (and included files) into a copy of the real debootstrap tree
and runs the tree's own ``/usr/sbin/sshd -T -C user=root,host=x,addr=192.0.2.1``, the
connection vmaudit reports. When sshd accepts the config, PermitRootLogin,
PasswordAuthentication, UsePAM and AuthorizedKeysFile must be equal; when it refuses it,
vmaudit must say that sshd would refuse to start.
"""

from __future__ import annotations

import random
import subprocess
from pathlib import Path

import pytest

from vmaudit.collect.sshd import SshdConfig, collect_sshd
from vmaudit.models import Package

from .conftest import Guest
from .guestprog import prepare_sshd, sshd_test

OPENSSH = [Package("openssh-server", "1:9.2p1-2+deb12u3", "amd64", "openssh")]
REFUSED = "sshd would refuse to start"


@pytest.fixture(scope="module")
def tree(debian_rootfs: Path, tmp_path_factory: pytest.TempPathFactory) -> Guest:
    """One copy of the debootstrap tree for the module: each test rewrites sshd's files."""
    copy = tmp_path_factory.mktemp("sshd") / "debian"
    subprocess.run(["cp", "-a", str(debian_rootfs), str(copy)], check=True)
    guest = Guest(copy)
    prepare_sshd(guest)
    return guest


def write(tree: Guest, config: str | bytes, **included: str) -> None:
    """sshd_config, and ``inc/NAME.conf`` files for ``Include inc/*.conf``."""
    tree.write("/etc/ssh/sshd_config", config)
    for old in tree.host("/etc/ssh/inc").glob("*") if tree.host("/etc/ssh/inc").is_dir() else ():
        old.unlink()
    for name, text in included.items():
        tree.write(f"/etc/ssh/inc/{name}.conf", text)


def vmaudit(tree: Guest) -> tuple[SshdConfig, list[str]]:
    warnings: list[str] = []
    return collect_sshd(tree.fs, OPENSSH, warnings), warnings


def assert_agree(tree: Guest) -> bool:
    """vmaudit's settings equal ``sshd -T``'s; returns whether sshd accepted the config."""
    result = sshd_test(tree)
    config, warnings = vmaudit(tree)
    refused = [warning for warning in warnings if warning.startswith(REFUSED)]
    if result.returncode != 0:
        assert refused, result.stderr
        return False
    assert not refused, result.stderr
    settings = result.settings
    root_login = settings["permitrootlogin"]
    keys = tuple(path for path in settings["authorizedkeysfile"].split() if path != "none")
    assert (
        config.permit_root_login,
        config.password_authentication,
        config.use_pam,
        config.authorized_keys_files,
    ) == (
        "prohibit-password" if root_login == "without-password" else root_login,
        settings["passwordauthentication"] == "yes",
        settings["usepam"] == "yes",
        keys,
    )
    return True


def test_stock_config_agrees(tree: Guest) -> None:
    assert assert_agree(tree)
    assert vmaudit(tree) == (
        SshdConfig(True, "prohibit-password", True, True, (".ssh/authorized_keys",
                   ".ssh/authorized_keys2"), (".ssh/authorized_keys", ".ssh/authorized_keys2")),
        [],
    )  # fmt: skip


HOSTILE = {
    "carriage return in a comment": "# hardened\rPermitRootLogin no\nPasswordAuthentication no\n",
    "carriage return as a separator": "\rPermitRootLogin\rno\nPasswordAuthentication no\r\f\n",
    "carriage return inside a value": "PermitRootLogin no\r yes\n",
    "form feed before a keyword": "\fPermitRootLogin no\n",
    "a lone form feed": "PermitRootLogin no\n\f\n",
    "match all": "PermitRootLogin no\nMatch all\nPermitRootLogin yes\n",
    "match user star": "PasswordAuthentication no\nMatch User *\nPasswordAuthentication yes\n",
    "match user root by pattern": "Match User r?ot,bob\nPermitRootLogin yes\n",
    "match user negated": "Match User !root,*\nPermitRootLogin yes\n",
    "match user case": "Match User ROOT\nPermitRootLogin yes\n",
    "match host case": "Match Host X\nPermitRootLogin yes\n",
    "match address cidr": "Match Address 192.0.2.0/24\nPasswordAuthentication no\n",
    "match address inet_aton": "Match Address 3221225985\nPasswordAuthentication no\n",
    "match address octal": "Match Address 0300.0.2.1\nPasswordAuthentication no\n",
    "match address wildcard": "Match Address 192.0.2.*\nPasswordAuthentication no\n",
    "match address negated": "Match Address !192.0.2.1,*\nPasswordAuthentication no\n",
    "match address other family": "Match Address ::ffff:192.0.2.1\nPermitRootLogin yes\n",
    "match address host bits": "Match Address 192.0.2.1/24\nPermitRootLogin yes\n",
    "match group of root": "Match Group root\nPermitRootLogin yes\n",
    "match group not roots": "Match Group nogroup\nPermitRootLogin yes\n",
    "match both criteria": "Match User root Address 10.0.0.0/8\nPermitRootLogin yes\n",
    "match local address": "Match LocalAddress *\nPermitRootLogin yes\n",
    "match rdomain": "Match RDomain *\nPermitRootLogin yes\n",
    "match all combined": "Match all User root\nPermitRootLogin yes\n",
    "match unknown criterion": "Match Colour blue\nPermitRootLogin yes\n",
    "first applying match wins": (
        "PermitRootLogin no\nMatch User bob\nPermitRootLogin yes\nMatch User root\n"
        "PermitRootLogin forced-commands-only\nPermitRootLogin yes\nMatch all\n"
        "PermitRootLogin yes\n"
    ),
    "first global value wins": "PermitRootLogin no\npermitrootlogin YES\n",
    "equals and quotes": 'PermitRootLogin="no"\n"PasswordAuthentication" \'no\'\n',
    "equals after a quoted keyword": '"PermitRootLogin" = no\n',
    "comment glued to a value": "PermitRootLogin no#yes\n",
    "escaped value": "PermitRootLogin n\\o\n",
    "unterminated quote": 'PermitRootLogin "no\n',
    "missing value": "PermitRootLogin\n",
    "extra value": "PermitRootLogin no yes\n",
    "global directive in match": "Match User bob\nUsePAM yes\n",
    "global directive in match all": "Match all\nUsePAM yes\n",
    "keys files with a tilde": "AuthorizedKeysFile ~/.ssh/x ~daemon//k ~ ~sys\n",
    "keys file of an unknown user's tilde": "Match User bob\nAuthorizedKeysFile ~nosuch/k\n",
    "keys file none and more": "AuthorizedKeysFile none .ssh/k\nMatch User root\n"
    "AuthorizedKeysFile /etc/keys/%u\n",
}


@pytest.mark.parametrize("config", HOSTILE.values(), ids=HOSTILE.keys())
def test_hostile_config_agrees_with_sshd(tree: Guest, config: str) -> None:
    write(tree, config)
    assert_agree(tree)


def test_a_nul_byte_joins_two_lines_for_both(tree: Guest) -> None:
    write(tree, b"PermitRootLogin no\0junk\nPasswordAuthentication no\n")
    assert assert_agree(tree) is False


INCLUDES = {
    "include order is glob order": ("Include inc/*.conf\nPermitRootLogin no\n",
                                    {"b": "PermitRootLogin yes\n", "a": "UsePAM no\n"}),
    "include list order": ("Include inc/b.conf inc/a.conf\n",
                           {"a": "PermitRootLogin yes\n", "b": "PermitRootLogin no\n"}),
    "match ends with the included file": ("Include inc/a.conf\nPermitRootLogin no\n",
                                          {"a": "Match User bob\nPermitRootLogin yes\n"}),
    "include in a match that applies": ("Match User root\nInclude inc/a.conf\n",
                                        {"a": "PermitRootLogin yes\n"}),
    "include in a match that does not apply": (
        "PermitRootLogin no\nMatch User bob\nInclude inc/a.conf\n",
        {"a": "Match all\nPermitRootLogin yes\n"}),
    "match all in an include from the global section": (
        "PermitRootLogin no\nInclude inc/a.conf\n", {"a": "Match all\nPermitRootLogin yes\n"}),
    "include loop": ("Include inc/*.conf\n", {"a": "Include inc/a.conf\n"}),
    "include of nothing": ("Include inc/none*\nPermitRootLogin no\n", {}),
    "hidden files are not globbed": ("Include inc/*\n", {".h": "PermitRootLogin yes\n"}),
}  # fmt: skip


@pytest.mark.parametrize("config, included", INCLUDES.values(), ids=INCLUDES.keys())
def test_includes_agree_with_sshd(tree: Guest, config: str, included: dict[str, str]) -> None:
    write(tree, config, **included)
    assert_agree(tree)


def test_include_fan_out_ends_with_the_same_values_as_sshd(tree: Guest) -> None:
    """sshd reads all 2^12 leaves; vmaudit stops at its file cap with a warning."""
    write(tree, "Include /etc/ssh/l1/*.conf\nPermitRootLogin no\n")
    for level in range(1, 12):
        for name in "ab":
            tree.write(f"/etc/ssh/l{level}/{name}.conf", f"Include /etc/ssh/l{level + 1}/*.conf\n")
    tree.write("/etc/ssh/l12/a.conf", "PasswordAuthentication no\n")
    tree.write("/etc/ssh/l12/b.conf", "PermitRootLogin yes\n")
    assert assert_agree(tree)
    assert "sshd: over 256 included files, the rest ignored" in vmaudit(tree)[1]


def test_match_on_the_local_side_needs_a_local_address_sshd_test_does_not_have(
    tree: Guest,
) -> None:
    """sshd -T cannot evaluate Match LocalPort without lport= (it exits, as documented in
    sshd(8) for -C); vmaudit's connection has no local side either, so it does not apply the
    block and warns."""
    write(tree, "Match LocalPort 22\nPermitRootLogin yes\n")
    result = sshd_test(tree)
    assert result.returncode != 0 and "'lport' not in connection test" in result.stderr
    config, warnings = vmaudit(tree)
    assert config.permit_root_login == "prohibit-password"
    assert warnings and "Match LocalPort 22 is not evaluated" in warnings[0]


LEADS = ["", "", " ", "\t", "\r", "\r \t"]
ENDS = ["", "", " ", "\r", "\f", " # note", "#x", "\t"]
SEPARATORS = [" ", " ", "\t", "=", " = ", "\r", "  "]
VALUES = {
    "PermitRootLogin": ["yes", "no", "prohibit-password", "without-password",
                        "forced-commands-only", "Yes", '"no"', "'yes'", "maybe"],
    "PasswordAuthentication": ["yes", "no", "NO", '"yes"', "no\r"],
    "UsePAM": ["yes", "no"],
    "AuthorizedKeysFile": [".ssh/k", "none", "none .ssh/k", "/etc/k/%u %h/.ssh/x", '""'],
}  # fmt: skip
MATCHES = ["all", "User *", "User root", "User bob", "User !root,*", "Address 192.0.2.0/24",
           "Address 10.0.0.0/8", "Host x", "Group root", "Group nogroup", "User=root",
           "User root Address 192.0.2.1", "all # c", "User root,bob Host *"]  # fmt: skip


def _line(rng: random.Random, files: list[str]) -> str:
    kind = rng.random()
    if kind < 0.15:
        body = "Match " + rng.choice(MATCHES)
    elif kind < 0.22 and files:
        body = "Include inc/" + rng.choice([*files, "*"]) + ".conf"
    elif kind < 0.3:
        body = rng.choice(["# PermitRootLogin yes", "# x\rPermitRootLogin yes", ""])
    else:
        keyword = rng.choice(list(VALUES))
        spelled = rng.choice([keyword, keyword.lower(), keyword.upper()])
        body = spelled + rng.choice(SEPARATORS) + rng.choice(VALUES[keyword])
    return rng.choice(LEADS) + body + rng.choice(ENDS)


def test_generated_configs_agree_with_sshd(tree: Guest) -> None:
    """Seeded random configs of sshd's lexical and Match corner cases, with includes."""
    accepted = 0
    for seed in range(60):
        rng = random.Random(seed)
        included = {name: "\n".join(_line(rng, []) for _ in range(rng.randrange(1, 5))) + "\n"
                    for name in ("a", "b")[: rng.randrange(3)]}  # fmt: skip
        lines = [_line(rng, list(included)) for _ in range(rng.randrange(2, 9))]
        write(tree, "\n".join(lines) + "\n", **included)
        accepted += assert_agree(tree)
    assert accepted >= 10  # the generator must not only produce configs sshd refuses


GROUPS = {  # config: (vmaudit's and sshd's PermitRootLogin, AuthorizedKeysFile)
    "root's supplementary group": ("Match Group admins\nPermitRootLogin yes\n", "yes", None),
    "a member with a trailing blank is not root": (
        "Match Group spaced\nPermitRootLogin yes\n", "prohibit-password", None),
    "a compat line's gid, named by the first group with it": (
        "Match Group staff\nPermitRootLogin yes\n", "yes", None),
    "a negated group wins": (
        "Match Group *,!admins\nPermitRootLogin yes\n", "prohibit-password", None),
    "a tilde is uid 0's first home": (
        "AuthorizedKeysFile ~/k ~root/k\n", "prohibit-password", ("/srv/toor/k", "/root/k")),
}  # fmt: skip


@pytest.mark.parametrize("config, root_login, keys", GROUPS.values(), ids=GROUPS.keys())
def test_match_group_and_tilde_read_the_guests_accounts_as_sshd_does(
    tree: Guest, config: str, root_login: str, keys: tuple[str, ...] | None
) -> None:
    files = {path: tree.host(path).read_text() for path in ("/etc/passwd", "/etc/group")}
    try:
        tree.write("/etc/passwd", "toor:x:0:0::/srv/toor:/bin/sh\n" + files["/etc/passwd"])
        tree.write("/etc/group", files["/etc/group"] + "admins:x:3100:root\n"
                   "spaced:x:3101:root \n+nis:x:50:root\n")  # fmt: skip
        write(tree, config)
        assert assert_agree(tree)
        config_read, _ = vmaudit(tree)
        assert config_read.permit_root_login == root_login
        assert keys is None or config_read.authorized_keys_files == keys
    finally:
        for path, text in files.items():
            tree.write(path, text)
