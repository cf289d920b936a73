"""Differential: vmaudit's firewall facts against the loaders that run at boot.

- ufw: the guest's own ``/lib/ufw/ufw-init start quiet`` (dash, as systemd runs it: a clean
  environment) in the debootstrap tree, inside a private network namespace (``unshare -n``),
  then the guest's ``iptables -S``: ufw started when its chains exist, and its INPUT policy.
  Also ``sh -c '. /etc/ufw/ufw.conf; echo "$ENABLED"'`` against the sh evaluator itself.
- nftables: ``nft -f`` (nftables 1.0.6, the guest's version; the tree has no nft, so the
  host's runs, with the tree's /etc as include path) in a private network namespace, then
  ``nft -j list ruleset``: whether the file loads at all, and the input policies it leaves.
- iptables-persistent: the guest's ``iptables-restore``/``ip6tables-restore`` (1.8.9, nf_tables)
  in a private network namespace, then ``iptables -S INPUT``.
"""

from __future__ import annotations

import random
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from vmaudit.collect.firewall import (
    NftError,
    collect_firewall,
    iptables_input_policy,
    nft_input_policy,
    nft_load,
)
from vmaudit.collect.shsource import source
from vmaudit.models import Package

from .conftest import Guest

CLEAN_ENV = ["env", "-i", "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]


class FirewallTree:
    def __init__(self, root: Path) -> None:
        self.guest = Guest(root)
        self.default_ufw = self.guest.host("/etc/default/ufw").read_text()

    def netns(self, script: str) -> str:
        result = subprocess.run(["unshare", "-n", "sh", "-c", script], capture_output=True,
                                text=True, timeout=120, check=False)  # fmt: skip
        return result.stdout

    # -- ufw
    def ufw_oracle(self) -> tuple[bool, str | None]:
        root = self.guest.root
        out = self.netns(
            f"chroot {root} {' '.join(CLEAN_ENV)} /lib/ufw/ufw-init start quiet >/dev/null 2>&1;"
            f" echo ---; chroot {root} iptables -S"
        ).split("---", 1)[-1]
        started = "-N ufw-user-input" in out
        policy = next((line.split()[2] for line in out.splitlines()
                       if line.startswith("-P INPUT ")), None)  # fmt: skip
        return started, policy

    def ufw_vmaudit(self) -> tuple[bool, str | None]:
        facts = collect_firewall(self.guest.fs, [Package("ufw", "0.36.2-1", "all", "ufw")], [])
        backend = facts.backends[0]
        return backend.enabled, backend.default_inbound

    def sh_enabled(self) -> str:
        # Generated files may name commands (yes, no, ...): an empty PATH leaves dash only
        # its builtins, and no input to read.
        result = subprocess.run(
            ["chroot", str(self.guest.root), "env", "-i", "PATH=/nonexistent", "/bin/sh", "-c",
             '. /etc/ufw/ufw.conf; printf "@@%s|%s" "$?" "$ENABLED"'],
            capture_output=True, text=True, timeout=60, check=False, stdin=subprocess.DEVNULL,
        )  # fmt: skip
        # "export" alone lists the environment: only what follows the marker counts.
        return result.stdout.rsplit("@@", 1)[-1] if result.returncode == 0 else "fatal"


@pytest.fixture(scope="module")
def fw_tree(
    debian_rootfs: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[FirewallTree]:
    if shutil.which("unshare") is None:
        pytest.skip("needs unshare (util-linux)")
    root = tmp_path_factory.mktemp("fw") / "tree"
    subprocess.run(["cp", "-a", str(debian_rootfs), str(root)], check=True)
    yield FirewallTree(root)
    shutil.rmtree(root, ignore_errors=True)


UFW_CASES = [
    "ENABLED=yes\n",
    "ENABLED=no\n",
    "ENABLED=yes\r\n",
    'ENABLED="yes"\n',
    "ENABLED='yes' # on\n",
    "ENABLED=yes #\n",
    "ENABLED=yes#\n",
    "ENABLED=no\nENABLED=yes\n",
    "ENABLED=yes\nENABLED=no\n",
    "export ENABLED=yes\n",
    "ENABLED=Yes\n",
    "ENABLED=YES\n",
    "ENABLED = yes\n",
    "# note\rENABLED=yes\n",
    "ENABLED=y\\\nes\n",
    'ENABLED=y"e"s\n',
    'ENABLED="yes\n',
    "X=yes\nENABLED=$X\n",
    "ENABLED=${X}yes\n",
    "readonly ENABLED=no\nENABLED=yes\n",
    "ENABLED=yes; LOGLEVEL=low\n",
    "ENABLED=yes\nunset ENABLED\n",
    "ENABLED=yes :\n",
    "ENABLED=yes\nfalse\n",
    "LOGLEVEL=low\n",
    "ENABLED=yes\nexit 0\n",
    "ENABLED=$1\n",
]


@pytest.mark.parametrize("conf", UFW_CASES)
def test_ufw_enabled_as_ufw_init_reads_ufw_conf(fw_tree: FirewallTree, conf: str) -> None:
    fw_tree.guest.write("/etc/ufw/ufw.conf", conf)
    fw_tree.guest.write("/etc/default/ufw", fw_tree.default_ufw)
    started, policy = fw_tree.ufw_oracle()
    enabled, inbound = fw_tree.ufw_vmaudit()
    assert enabled == started, repr(conf)
    if started:
        assert inbound == {"DROP": "deny", "ACCEPT": "accept"}[policy or ""]


def test_ufw_cases_cover_both_outcomes(fw_tree: FirewallTree) -> None:
    outcomes = set()
    for conf in ("ENABLED=yes\n", "ENABLED=yes\r\n"):
        fw_tree.guest.write("/etc/ufw/ufw.conf", conf)
        outcomes.add(fw_tree.ufw_oracle()[0])
    assert outcomes == {True, False}


@pytest.mark.parametrize("policy", ["DROP", "REJECT", "ACCEPT", "drop", '"DROP" # x', "DROP\r"])
def test_ufw_input_policy_as_ufw_init_sets_it(fw_tree: FirewallTree, policy: str) -> None:
    fw_tree.guest.write("/etc/ufw/ufw.conf", "ENABLED=yes\n")
    fw_tree.guest.write("/etc/default/ufw", fw_tree.default_ufw.replace(
        'DEFAULT_INPUT_POLICY="DROP"', f"DEFAULT_INPUT_POLICY={policy}"))  # fmt: skip
    started, oracle = fw_tree.ufw_oracle()
    enabled, inbound = fw_tree.ufw_vmaudit()
    assert enabled == started
    # ufw's REJECT is a DROP policy plus a reject rule: both deny.
    assert inbound == ({"DROP": "deny", "ACCEPT": "accept"}[oracle or ""] if started else inbound)


SH_FRAGMENTS = ["ENABLED=", "yes", "no", "\n", " ", "#", "'", '"', "\\", "\r", ";", "$X",
                "X=", "export ", "${X}", "=", "\t", "Y"]  # fmt: skip


def test_sh_evaluator_matches_dash_on_generated_files(fw_tree: FirewallTree) -> None:
    rng = random.Random(15)
    compared = 0
    for _ in range(60):
        text = "".join(rng.choice(SH_FRAGMENTS) for _ in range(rng.randint(2, 12))) + "\n"
        fw_tree.guest.write("/etc/ufw/ufw.conf", text)
        by_dash = fw_tree.sh_enabled()
        result = source(text, {})
        if result.unknown is not None:
            continue  # not evaluated: vmaudit then counts ufw as not starting
        compared += 1
        if result.fatal is not None:
            assert by_dash == "fatal" or not by_dash.startswith("0|"), repr(text)
        else:
            assert by_dash == "0|" + result.variables.get("ENABLED", ""), repr(text)
    assert compared >= 30


# ---------------------------------------------------------------- nftables


def nft_oracle(tree: FirewallTree) -> str | None:
    """deny/accept as the loaded ruleset says, None when nft rejects the file.

    Read from nft's text listing (its JSON listing of a dormant table is not valid JSON in
    1.0.6): "table FAMILY NAME {", "flags dormant", "type T hook H ...; policy P;".
    """
    etc = tree.guest.host("/etc")
    out = tree.netns(f"nft -I {etc} -f {etc}/nftables.conf && echo @LOADED && nft list ruleset")
    if "@LOADED\n" not in out:
        return None
    out = out.split("@LOADED\n", 1)[1]  # a "list ruleset" in the file prints before
    covered: set[str] = set()
    family, dormant = "", False
    drops: list[str] = []
    for line in [*out.splitlines(), "table end x {"]:
        words = line.split()
        if line.startswith("table "):
            if not dormant:
                for fam in drops:
                    covered |= {"ip": {"4"}, "ip6": {"6"}, "inet": {"4", "6"}}.get(fam, set())
            family, dormant, drops = words[1], False, []
        elif words == ["flags", "dormant"]:
            dormant = True
        elif words[:1] == ["type"] and words[1] == "filter" and words[3] == "input" and \
                "policy drop;" in line:  # fmt: skip
            drops.append(family)
    return "deny" if covered == {"4", "6"} else "accept"


def nft_vmaudit(tree: FirewallTree) -> str | None:
    try:
        tables = nft_load(tree.guest.fs, "/etc/nftables.conf", [])
    except NftError:
        return None
    assert tables is not None
    return nft_input_policy(tables)


CHAIN = "chain input {\n type filter hook input priority 0; policy drop;\n}\n"
NFT_CASES: list[tuple[str, dict[str, str]]] = [
    (f"table inet filter {{\n{CHAIN}}}\n", {}),
    (f"table ip filter {{\n{CHAIN}}}\n", {}),
    (f"table ip filter {{\n{CHAIN}}}\ntable ip6 filter {{\n{CHAIN}}}\n", {}),
    (f"table arp filter {{\n{CHAIN}}}\n", {}),
    (f"table bridge filter {{\n{CHAIN}}}\n", {}),
    (
        "table inet filter {\n chain input {\n  type filter hook input priority 0;\n"
        "  # policy drop;\n }\n}\n",
        {},
    ),
    (
        "table inet filter {\n chain input {\n  type filter hook input priority 0;\n"
        '  comment "policy drop;"\n }\n}\n',
        {},
    ),
    (f"table inet filter {{\n{CHAIN}}}\nflush ruleset\n", {}),
    (f"table inet filter {{\n{CHAIN}}}\ndelete table inet filter\n", {}),
    (f"table inet filter {{\n{CHAIN}}}\nflush table inet filter\n", {}),
    (
        f"table inet filter {{\n{CHAIN}}}\ntable inet filter {{\n chain input {{\n"
        "  type filter hook input priority 0; policy accept;\n }\n}\n",
        {},
    ),
    (f"table inet filter {{\n flags dormant\n{CHAIN}}}\n", {}),
    ("table inet f { chain input { type filter hook input priority 0; policy drop; } }\n", {}),
    ("table inet f { chain input { type filter hook input priority 0; policy drop; }; }\n", {}),
    (f"table inet filter {{\r\n{CHAIN}}}\r\n", {}),
    (f"table inet filter {{ \\\n{CHAIN}}}\n", {}),
    (
        "define POL = drop\ntable inet f {\n chain input {\n"
        "  type filter hook input priority 0; policy $POL;\n }\n}\n",
        {},
    ),
    (
        'define POL = "drop"\ntable inet f {\n chain input {\n'
        "  type filter hook input priority 0; policy $POL;\n }\n}\n",
        {},
    ),
    (
        "table inet f {\n chain input {\n  type filter hook input priority 0; policy drop\n }\n}\n",
        {},
    ),
    (f"table inet filter {{\n{CHAIN}}}\nthis is not nft\n", {}),
    (
        'include "vmaudit-nft.d/*.nft"\n',
        {"/etc/vmaudit-nft.d/10.nft": f"table inet filter {{\n{CHAIN}}}\n"},
    ),
    (
        'include "vmaudit-nft.d/*.nft"\nflush ruleset\n',
        {"/etc/vmaudit-nft.d/10.nft": f"table inet filter {{\n{CHAIN}}}\n"},
    ),
    (
        'table inet filter {\n include "vmaudit-nft.d/chain.nft"\n}\n',
        {"/etc/vmaudit-nft.d/chain.nft": CHAIN},
    ),
    ('include "vmaudit-nft.d/missing.nft"\n' + f"table inet filter {{\n{CHAIN}}}\n", {}),
    ('include "vmaudit-nft.d/none-*.nft"\n' + f"table inet filter {{\n{CHAIN}}}\n", {}),
    (
        'include "vmaudit-nft.d/self.nft"\n',
        {"/etc/vmaudit-nft.d/self.nft": 'include "vmaudit-nft.d/self.nft"\n'},
    ),
    (
        "add table inet f\nadd chain inet f input { type filter hook input priority 0; "
        "policy drop; }\n",
        {},
    ),
    (
        "add table inet f\nadd chain inet f input { type filter hook input priority 0; "
        "policy drop; }\ndelete chain inet f input\n",
        {},
    ),
    (
        f"table inet filter {{\n{CHAIN} chain forward {{ type filter hook forward priority 0; }}\n"
        " set s { type ipv4_addr; elements = { 10.0.0.1, 10.0.0.2 } }\n}\n"
        "add rule inet filter input tcp dport { 22, 80 } accept\n",
        {},
    ),
]


@pytest.mark.parametrize(("conf", "extra"), NFT_CASES, ids=[str(i) for i in range(len(NFT_CASES))])
def test_nftables_policy_as_nft_loads_it(fw_tree: FirewallTree, conf: str,
                                         extra: dict[str, str]) -> None:  # fmt: skip
    if shutil.which("nft") is None:
        pytest.skip("needs nft on the host (apt-get install nftables)")
    shutil.rmtree(fw_tree.guest.host("/etc/vmaudit-nft.d"), ignore_errors=True)
    fw_tree.guest.write("/etc/nftables.conf", conf)
    for path, text in extra.items():
        fw_tree.guest.write(path, text)
    assert nft_vmaudit(fw_tree) == nft_oracle(fw_tree), repr(conf)


def test_nft_cases_cover_every_outcome(fw_tree: FirewallTree) -> None:
    if shutil.which("nft") is None:
        pytest.skip("needs nft on the host (apt-get install nftables)")
    seen = set()
    for conf, _ in NFT_CASES[:15]:
        fw_tree.guest.write("/etc/nftables.conf", conf)
        seen.add(nft_oracle(fw_tree))
    assert seen == {"deny", "accept", None}


# ---------------------------------------------------------------- iptables-restore


def iptables_oracle(tree: FirewallTree) -> str:
    root = tree.guest.root
    out = tree.netns(
        f"chroot {root} sh -c 'iptables-restore < /etc/iptables/rules.v4; "
        "ip6tables-restore < /etc/iptables/rules.v6' >/dev/null 2>&1; "
        f"chroot {root} iptables -S INPUT; chroot {root} ip6tables -S INPUT"
    )
    policies = [line.split()[2] for line in out.splitlines() if line.startswith("-P INPUT ")]
    assert len(policies) == 2, out
    return "deny" if policies == ["DROP", "DROP"] else "accept"


V6_DROP = "*filter\n:INPUT DROP [0:0]\nCOMMIT\n"
IPTABLES_CASES = [
    "*filter\n:INPUT DROP [0:0]\nCOMMIT\n",
    "*filter\n:INPUT DROP [0:0]\n",
    "*filter\n:INPUT DROP [0:0]\nCOMMIT",
    "*filter\n:INPUT DROP [0:0]\nCOMMIT \n",
    "*filter\r\n:INPUT DROP [0:0]\r\nCOMMIT\r\n",
    "*filter\n:INPUT DROP [0:0]\nCOMMIT\n*filter\n:INPUT ACCEPT [0:0]\nCOMMIT\n",
    "*filter\n:INPUT DROP [0:0]\nCOMMIT\n*filter\n-A INPUT -j ACCEPT\nCOMMIT\n",
    "*filter\n:INPUT DROP [0:0]\nCOMMIT\n*nat\n:PREROUTING ACCEPT [0:0]\n",
    "*filter\n:INPUT DROP [0:0]\n*nat\nCOMMIT\n",
    "# c\n*filter\n  :INPUT DROP [0:0]\nCOMMIT\n",
    "*filter\n:INPUT drop [0:0]\nCOMMIT\n",
    "*filter\n:INPUT DROP\nCOMMIT\n",
    "*filter \n:INPUT DROP [0:0]\n# x\n\nCOMMIT\n",
    "*filter\n:INPUT DROP [0:0]\n:INPUT ACCEPT [0:0]\nCOMMIT\n",
    "*filter\n   \n:INPUT DROP [0:0]\nCOMMIT\n",
    "*mangle\n:INPUT DROP [0:0]\nCOMMIT\n",
    "*filter\n:INPUT DROP [0:0]\nCOMMIT\n*filter\n:INPUT DROP [0:0]\n",
]


@pytest.mark.parametrize("rules", IPTABLES_CASES)
def test_iptables_policy_as_iptables_restore_loads_it(fw_tree: FirewallTree, rules: str) -> None:
    fw_tree.guest.write("/etc/iptables/rules.v4", rules)
    fw_tree.guest.write("/etc/iptables/rules.v6", V6_DROP)
    assert iptables_input_policy(fw_tree.guest.fs, []) == iptables_oracle(fw_tree), repr(rules)


def generated_nft(rng: random.Random) -> str:
    """A mostly well-formed nftables.conf with random families, hooks, policies, separators
    and trailing commands; some separators are dropped or doubled to probe nft's grammar."""

    def sep() -> str:
        return rng.choice(["\n", ";\n", "; ", "\n\n", " ", ""]) if rng.random() < 0.08 else \
            rng.choice(["\n", ";\n"])  # fmt: skip

    parts: list[str] = []
    for index in range(rng.randint(1, 3)):
        family = rng.choice(["inet", "inet", "inet", "ip", "ip6", "arp", "bridge", "netdev", ""])
        name = f"t{index}"
        chains = []
        for number in range(rng.randint(0, 2)):
            hook = rng.choice(["input", "input", "input", "forward", "output", "ingress"])
            kind = rng.choice(["filter", "filter", "filter", "nat", "route"])
            policy = rng.choice(["drop", "accept", "drop", "", "# policy drop"])
            body = f"type {kind} hook {hook} priority 0" + sep()
            if hook == "ingress":
                body = f"type {kind} hook {hook} device lo priority 0" + sep()
            if policy.startswith("#"):
                body += policy + "\n"
            elif policy:
                body += f"policy {policy}" + sep()
            if rng.random() < 0.3 and family in ("inet", "ip", "ip6", ""):
                # rule expressions are not validated: only ones valid in the family
                body += "tcp dport { 22, 80 } accept" + sep()
            chains.append(f"chain c{number} {{ {body}}}" + sep())
        flags = "flags dormant" + sep() if rng.random() < 0.15 else ""
        spec = f"{family} {name}" if family else name
        parts.append(f"table {spec} {{\n{flags}{''.join(chains)}}}\n")
        if rng.random() < 0.2:
            parts.append(rng.choice(["flush ruleset\n", f"delete table {spec}\n",
                                     f"flush table {spec}\n", "list ruleset\n"]))  # fmt: skip
    if rng.random() < 0.1:
        parts.insert(0, "flush ruleset\n")
    return "".join(parts)


def test_generated_nftables_files_match_nft(fw_tree: FirewallTree) -> None:
    if shutil.which("nft") is None:
        pytest.skip("needs nft on the host (apt-get install nftables)")
    rng = random.Random(15)
    outcomes = []
    for _ in range(50):
        conf = generated_nft(rng)
        fw_tree.guest.write("/etc/nftables.conf", conf)
        oracle = nft_oracle(fw_tree)
        assert nft_vmaudit(fw_tree) == oracle, conf
        outcomes.append(oracle)
    assert {"deny", "accept", None} <= set(outcomes)
