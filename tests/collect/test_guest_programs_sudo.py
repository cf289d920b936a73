"""Differential: vmaudit's sudoers grants against sudo itself, run in the debootstrap tree.

The oracle is ``chroot TREE sudo -l -U USER -u root PROBE``: sudo 1.9 of the guest says
whether USER may run an arbitrary command (a probe binary no rule names) as root, with its
own lexer, include handling, error recovery and last-match-wins rule. ``cvtsudoers -f json``
is the oracle for syntax alone: it stops at the first syntax error (where sudo drops that
entry and reads on), so it accepts a file exactly when vmaudit finds no entry to drop.
"""

from __future__ import annotations

import random
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from vmaudit.collect.sudoers import parse_sudoers

from .conftest import Guest

PROBE = "/usr/local/bin/vmaudit-probe"
USERS = ("alice", "bob", "carol")


class SudoTree:
    """One copy of the tree with users alice (uid 1001), bob (group ops) and carol."""

    def __init__(self, root: Path) -> None:
        self.guest = Guest(root)
        self.ids: dict[str, tuple[int, set[str], set[int]]] = {}
        self.sudo_conf = self.guest.host("/etc/sudo.conf").read_text()

    def chroot(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["chroot", str(self.guest.root), *args], capture_output=True,
                              text=True, timeout=60, check=False)  # fmt: skip

    def setup(self) -> None:
        self.chroot("groupadd", "-g", "3000", "ops")
        self.chroot("useradd", "-M", "-u", "1001", "alice")
        self.chroot("useradd", "-M", "-u", "1002", "-G", "ops", "bob")
        self.chroot("useradd", "-M", "-u", "1003", "carol")
        shutil.copy(self.guest.host("/usr/bin/true"), self.guest.host(PROBE))
        for user in USERS:
            uid = int(self.chroot("id", "-u", user).stdout)
            names = set(self.chroot("id", "-Gn", user).stdout.split())
            gids = {int(g) for g in self.chroot("id", "-G", user).stdout.split()}
            self.ids[user] = (uid, names, gids)

    def write(self, text: str, extra: dict[str, str] | None = None) -> None:
        self.guest.write("/etc/sudo.conf", self.sudo_conf)
        for path in ("/etc/sudoers.d", "/etc/inc", "/etc/incd", "/etc/other-sudoers"):
            target = self.guest.host(path)
            if target.is_dir():
                shutil.rmtree(target)
            elif target.exists():
                target.unlink()
        self.guest.mkdir("/etc/sudoers.d")
        self.guest.write("/etc/sudoers", text, mode=0o440)
        for path, content in (extra or {}).items():
            self.guest.write(path, content, mode=0o440)

    def sudo_admits(self, user: str) -> bool:
        result = self.chroot("sudo", "-l", "-U", user, "-u", "root", PROBE)
        return result.returncode == 0 and result.stdout.strip() == PROBE

    def vmaudit_admits(self, user: str) -> bool:
        uid, names, gids = self.ids[user]
        sudoers = parse_sudoers(self.guest.fs, [])
        return bool(sudoers.admin_files(user, uid, names, gids))

    def verdicts(self) -> tuple[dict[str, bool], dict[str, bool]]:
        return ({u: self.sudo_admits(u) for u in USERS},
                {u: self.vmaudit_admits(u) for u in USERS})  # fmt: skip


@pytest.fixture(scope="module")
def sudo_tree(debian_rootfs: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[SudoTree]:
    root = tmp_path_factory.mktemp("sudo") / "tree"
    subprocess.run(["cp", "-a", str(debian_rootfs), str(root)], check=True)
    tree = SudoTree(root)
    tree.setup()
    yield tree
    shutil.rmtree(root, ignore_errors=True)


# (name, sudoers text, extra files, users sudo admits): the last column is what sudo 1.9.13
# said when these were written; the test checks sudo still says it and that vmaudit agrees.
CASES: list[tuple[str, str, dict[str, str], set[str]]] = [
    (
        "comment ending in a backslash does not continue",
        "# hardened \\\nalice ALL=(ALL) ALL\n",
        {},
        {"alice"},
    ),
    (
        "continuation backslash followed by blanks",
        "alice ALL=(ALL) \\  \t\n    ALL\n",
        {},
        {"alice"},
    ),
    ("blanks around the tag colon", "alice ALL = (root) NOPASSWD : ALL\n", {}, {"alice"}),
    (
        "#-uid in runas",
        "alice ALL=(#0) ALL\nbob ALL=(#00) ALL\ncarol ALL=(#1001) ALL\n",
        {},
        {"alice", "bob"},
    ),
    (
        "#-uid and %#gid as the user",
        "#1001 ALL=(ALL) ALL\n%#3000 ALL=(ALL) ALL\n",
        {},
        {"alice", "bob"},
    ),
    ("CRLF line ends are newlines", "alice ALL=(ALL) ALL\r\n", {}, {"alice"}),
    (
        "a carriage return inside a comment hides the rest",
        "# note\ralice ALL=(ALL) ALL\n",
        {},
        set(),
    ),
    (
        "a stray carriage return is a syntax error for that entry only",
        "alice ALL=(ALL)\rALL\nbob ALL=(ALL) ALL\n",
        {},
        {"bob"},
    ),
    (
        "#include with leading blanks is a comment",
        "  #include /etc/inc\n#include /etc/inc2\n",
        {"/etc/inc": "alice ALL=(ALL) ALL\n", "/etc/inc2": "bob ALL=(ALL) ALL\n"},
        {"bob"},
    ),
    (
        "@include with leading blanks and a relative path",
        "  @include inc\n",
        {"/etc/inc": "carol ALL=(ALL) ALL\n"},
        {"carol"},
    ),
    (
        "includedir skips names with a dot or a tilde",
        "@includedir /etc/incd\n",
        {
            "/etc/incd/a": "alice ALL=(ALL) ALL\n",
            "/etc/incd/b.conf": "bob ALL=(ALL) ALL\n",
            "/etc/incd/c~": "carol ALL=(ALL) ALL\n",
        },
        {"alice"},
    ),
    (
        "aliases defined after use, a second definition ignored",
        "ADMINS ALL=(ALL) ALL\nUser_Alias ADMINS = alice\nUser_Alias ADMINS = bob\n",
        {},
        {"alice"},
    ),
    (
        "runas and command aliases",
        "Runas_Alias R = root\nCmnd_Alias C = ALL\nalice ALL = (R) C\nbob ALL = (R) !C, C\n"
        "carol ALL = (R) C, !C\n",
        {},
        {"alice", "bob"},
    ),
    (
        "the last matching rule wins",
        "%ops ALL=(ALL) ALL\nALL, !alice ALL=(ALL) ALL\nbob ALL=(ALL) !ALL\n",
        {},
        {"carol"},
    ),
    ("double negation is none", "alice ALL=(ALL) !!ALL\n", {}, {"alice"}),
    (
        "a Defaults continuation swallows the next line",
        "Defaults env_reset \\\nalice ALL=(ALL) ALL\nbob ALL=(ALL) ALL\n",
        {},
        {"bob"},
    ),
    # "()" (run as the invoking user) is left out: sudo -l run by root as the oracle compares
    # the runas user with root, not with -U's user (test_sudoers covers it).
    ("runas lists", "alice ALL=(ALL, !root) ALL\nbob ALL=(%root) ALL\n", {}, {"bob"}),
    (
        "options before the command",
        "alice ALL=(ALL) CWD=/tmp ALL\n"
        "bob ALL=(ALL) TIMEOUT=1h NOPASSWD: ALL\ncarol ALL=(ALL) NOPASSWD: CWD=/ ALL\n",
        {},
        {"alice", "bob"},
    ),
    ("no final newline", "alice ALL=(ALL) ALL", {}, {"alice"}),
    (
        "an alias loop",
        "User_Alias LA = LB\nUser_Alias LB = LA, alice\nLA ALL=(ALL) ALL\n",
        {},
        {"alice"},
    ),
    (
        "a deep alias chain",
        "".join(f"User_Alias U{i} = U{i + 1}\n" for i in range(500)) + "User_Alias U500 = bob\n"
        "U0 ALL=(ALL) ALL\n",
        {},
        {"bob"},
    ),
    (
        "a last entry continued into the end of the file",
        "bob ALL=(ALL) ALL\nalice ALL=ALL \\\n",
        {},
        set(),
    ),
    (
        "an included file ending in a continuation",
        "bob ALL=(ALL) ALL\n@includedir /etc/incd\n",
        {"/etc/incd/a": "alice ALL=(ALL) ALL \\\n"},
        set(),
    ),
    ("a bare continuation at the end", "bob ALL=(ALL) ALL\n\\\n", {}, {"bob"}),
    (
        "sudo.conf names another policy file",
        "alice ALL=(ALL) ALL\n",
        {
            "/etc/sudo.conf": "Plugin sudoers_policy sudoers.so sudoers_file=/etc/other-sudoers\n",
            "/etc/other-sudoers": "bob ALL=(ALL) ALL\n",
        },
        {"bob"},
    ),
    (
        "sudo.conf comments and the first policy line",
        "alice ALL=(ALL) ALL\n",
        {
            "/etc/sudo.conf": "#Plugin sudoers_policy sudoers.so sudoers_file=/etc/x\n"
            "Plugin sudoers_policy sudoers.so sudoers_file=/etc/other-sudoers\n"
            "Plugin sudoers_policy sudoers.so #sudoers_file=/etc/x\n",
            "/etc/other-sudoers": "bob ALL=(ALL) ALL\n",
        },
        {"bob"},
    ),
    ("several privileges", "alice h1 = /bin/ls : ALL = (root) ALL\n", {}, {"alice"}),
    (
        "commands with arguments end at a colon",
        "alice ALL = /bin/ls -l : ALL = ALL\nbob ALL = /bin/echo a\\,b, ALL\n",
        {},
        {"alice", "bob"},
    ),
    (
        "quoted and escaped user names",
        '"alice" ALL=(ALL) ALL\nb\\ob ALL=(ALL) ALL\n',
        {},
        {"alice", "bob"},
    ),
    (
        "a comment after a command",
        "alice ALL=(ALL) /bin/ls # ALL\nbob ALL=(ALL) ALL #\\\n",
        {},
        {"bob"},
    ),
    (
        "syntax errors drop one entry",
        "alice ALL=(ALL ALL\nbob ALL=ALL junk\ncarol ALL=ALL\n",
        {},
        {"carol"},
    ),
    # The denial names a host the tree is not (it is "vm"): vmaudit cannot know the host at
    # boot, so a host-limited denial never cancels a grant, and both admit alice.
    (
        "Defaults lines and a host-limited denial",
        "alice ALL=(ALL) ALL\nalice h1=(ALL) !ALL\nDefaults:bob !authenticate\n",
        {},
        {"alice"},
    ),
]


@pytest.mark.parametrize(("name", "text", "extra", "admitted"), CASES,
                         ids=[case[0] for case in CASES])  # fmt: skip
def test_hand_written_sudoers_variant_matches_sudo(
    sudo_tree: SudoTree, name: str, text: str, extra: dict[str, str], admitted: set[str]
) -> None:
    sudo_tree.write(text, extra)
    by_sudo, by_vmaudit = sudo_tree.verdicts()
    assert {u for u, ok in by_sudo.items() if ok} == admitted, f"sudo changed its mind: {name}"
    assert by_vmaudit == by_sudo


FRAGMENTS = [
    "alice",
    "bob",
    "%ops",
    "#1003",
    "ALL",
    "!",
    ",",
    " ",
    "\t",
    "=",
    ":",
    "(",
    ")",
    "(ALL)",
    "(root)",
    "(#0)",
    "(:ops)",
    "NOPASSWD:",
    "NOPASSWD :",
    "PASSWD:",
    "/bin/ls",
    "!ALL",
    "\\\n",
    "\\ \n",
    "#",
    "# c \\\n",
    "\n",
    "\r",
    "\r\n",
    "User_Alias U = bob\n",
    "Cmnd_Alias C = ALL\n",
    "C",
    "U",
    "Defaults ",
    '"',
    "CWD=/",
    "@include /etc/inc\n",
]


def generated_variants(count: int, seed: int = 15) -> list[str]:
    """Sudoers texts built from the fragments sudo's lexer treats specially (seeded)."""
    rng = random.Random(seed)
    variants = []
    for _ in range(count):
        parts = [rng.choice(FRAGMENTS) for _ in range(rng.randint(3, 14))]
        variants.append(
            "alice ALL=(ALL) " + "".join(parts) + "\ncarol ALL = " + "".join(reversed(parts))
        )
    return variants


def test_generated_sudoers_match_sudo(sudo_tree: SudoTree) -> None:
    admitted = 0
    for text in generated_variants(40):
        sudo_tree.write(text, {"/etc/inc": "bob ALL=(ALL) ALL\n"})
        by_sudo, by_vmaudit = sudo_tree.verdicts()
        assert by_vmaudit == by_sudo, repr(text)
        admitted += sum(by_sudo.values())
    assert admitted > 0  # the variants are not all rejected by sudo


LINES = [
    "alice ALL=(ALL) ALL",
    "bob ALL=(root) NOPASSWD: ALL",
    "carol ALL=(ALL) !ALL",
    "%ops ALL=(ALL:ALL) ALL",
    "ALL, !bob ALL=(ALL) ALL",
    "User_Alias U = alice, carol",
    "User_Alias U = bob",
    "U ALL=(ALL) ALL",
    "Cmnd_Alias C = /bin/ls, ALL",
    "carol ALL = C",
    "Runas_Alias R = #0",
    "bob ALL = (R) ALL",
    "Defaults env_reset",
    "Defaults:bob !lecture",
    "# alice ALL=(ALL) ALL \\",
    "alice ALL=(ALL) \\",
    "  ALL",
    "@include /etc/inc",
    "#include /etc/inc",
    "  #includedir /etc/incd",
    "@includedir /etc/incd",
    "carol ALL=(ALL) ALL\r",
    "bob ALL=(ALL) /bin/sh, !ALL",
    "alice h1=(ALL) !ALL",
    "Host_Alias H = ALL",
    "alice H=(ALL) !ALL",
    "",
    "#",
    "carol ALL=(ALL) TIMEOUT=5m ALL",
]


def generated_files(count: int, seed: int = 7) -> list[str]:
    """Whole sudoers files of lines that interact: aliases, negations, includes, CRs."""
    rng = random.Random(seed)
    return ["\n".join(rng.choice(LINES) for _ in range(rng.randint(2, 9))) + "\n"
            for _ in range(count)]  # fmt: skip


INCLUDES = {"/etc/inc": "bob ALL=(ALL) ALL\n", "/etc/incd/x": "carol ALL=(ALL) ALL\n"}


def test_generated_sudoers_files_match_sudo(sudo_tree: SudoTree) -> None:
    admitted = 0
    for text in generated_files(40):
        sudo_tree.write(text, INCLUDES)
        by_sudo, by_vmaudit = sudo_tree.verdicts()
        assert by_vmaudit == by_sudo, repr(text)
        admitted += sum(by_sudo.values())
    assert admitted > 0


def test_cvtsudoers_accepts_exactly_the_files_vmaudit_reads_without_error(
    sudo_tree: SudoTree,
) -> None:
    accepted = 0
    for text in generated_variants(30, seed=3) + generated_files(30, seed=8):
        sudo_tree.write(text, INCLUDES)
        result = sudo_tree.chroot("cvtsudoers", "-f", "json", "/etc/sudoers")
        warnings: list[str] = []
        parse_sudoers(sudo_tree.guest.fs, warnings)
        clean = not any("syntax errors" in w or "rejects the whole policy" in w for w in warnings)
        assert clean == (result.returncode == 0), (repr(text), result.stderr[-300:])
        accepted += result.returncode == 0
    assert 0 < accepted < 60
