"""Host firewalls and whether they would load rules at the next boot (spec/baseline.md).

Each file is read as its loader reads it at boot:

- ufw: ``/lib/ufw/ufw-init start quiet`` (dash, ``set -e``) sources ``/etc/ufw/ufw.conf``,
  stops when ``ENABLED`` is ``no``, then sources ``/etc/default/ufw`` and ``ufw.conf`` again
  (both must be non-empty) and starts only when ``ENABLED`` is exactly ``yes`` or ``YES``
  (:mod:`vmaudit.collect.shsource` runs the files as dash would). ``DEFAULT_INPUT_POLICY``
  ``DROP``/``REJECT`` denies, ``ACCEPT`` accepts; iptables refuses any other spelling, and the
  built-in ACCEPT stays.
- nftables: ``nft -f /etc/nftables.conf`` loads the whole file or, on any error, nothing. The
  file is tokenized in one pass (linear time); blocks need nft's separators, a base chain a
  hook its family and type have (and a priority, and a device for ingress); rule expressions
  are not validated (a rule nft rejects still fails the whole file there); ``include`` is
  followed (relative to ``/etc``, globs sorted, a missing plain file is an error, 16 levels);
  commands apply in order (``flush ruleset`` drops what came before, ``delete table`` drops a
  table, a re-declared chain takes the new policy, a ``dormant`` table filters nothing). Only
  ``type filter hook input`` chains of ``ip``/``ip6``/``inet`` tables filter what the host
  receives; an ``arp``, ``bridge`` or ``netdev`` chain does not.
- iptables-persistent: ``iptables-restore`` of ``/etc/iptables/rules.v4`` and
  ``ip6tables-restore`` of ``rules.v6``, as iptables 1.8.9 does: a table loads at its exact
  ``COMMIT`` line; each ``*filter`` section starts from an empty table (INPUT accepts unless
  its own ``:INPUT`` line says otherwise); the first error (a section without ``COMMIT``,
  ``COMMIT `` with a blank, a ``\\r`` at a line's end, a bad policy, an indented line) stops
  the load, and only the tables committed before it stay. Rule lines are not validated (a
  rule iptables rejects stops the load there too).
- firewalld: the default zone's target.

A default inbound policy is ``deny`` only when both IPv4 and IPv6 input are dropped by
default: an IPv4-only drop leaves the host open over IPv6.

A unit is enabled when systemd would start it at boot (:mod:`vmaudit.collect.units`); in a
guest without a systemd boot target, when it is linked from a ``*.target.wants`` directory
and not masked. ufw also needs its unit to start (or, without systemd, not to be masked). A
backend is listed when installed (package, binary or unit file).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from vmaudit.guest.base import GuestFS, is_file, read_lines, read_text, safe_path
from vmaudit.models import FirewallBackend, FirewallFacts, Package

from .common import guest_glob, packages_by_name, shell_assignments
from .shsource import SourceResult, source
from .units import BootUnits, boot_units

UNIT_DIRS = ("/etc/systemd/system", "/lib/systemd/system", "/usr/lib/systemd/system")
CONFIG_CAP = 4 * 1024 * 1024
MAX_NFT_FILES = 64
MAX_NFT_DEPTH = 16  # nft's include depth limit
MAX_NFT_BYTES = 16 * 1024 * 1024  # over all included files: bounds a hostile ruleset's cost


@dataclass
class _Context:
    fs: GuestFS
    packages: dict[str, Package]
    warnings: list[str]
    _units: BootUnits | None = None

    @property
    def units(self) -> BootUnits:
        if self._units is None:
            self._units = boot_units(self.fs, self.warnings)
        return self._units

    def unit_enabled(self, unit: str) -> bool:
        """systemd would start the unit at boot (see the module docstring)."""
        units = self.units
        state = units.state(unit)
        if units.systemd:
            return state == "started"
        if state == "masked":
            return False
        return any(
            self.fs.lstat(f"{wants}/{unit}") is not None
            for wants in guest_glob(self.fs, "/etc/systemd/system/*.target.wants", self.warnings)
        )


def unit_exists(fs: GuestFS, unit: str) -> bool:
    return any(fs.lstat(f"{directory}/{unit}") is not None for directory in UNIT_DIRS)


def _installed(ctx: _Context, names: tuple[str, ...], binaries: tuple[str, ...], unit: str) -> bool:
    return (
        any(name in ctx.packages for name in names)
        or any(is_file(ctx.fs, path) for path in binaries)
        or unit_exists(ctx.fs, unit)
    )


# ---------------------------------------------------------------- ufw

# What ufw-init holds before it sources ufw.conf: systemd's PATH, dash's own variables,
# ufw-init's variables and "$1 $2" = "start quiet".
UFW_INIT_VARIABLES = {
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "IFS": " \t\n", "PWD": "/", "OPTIND": "1",
    "rootdir": "", "datadir": "", "DATA_DIR": "", "1": "start", "2": "quiet",
}  # fmt: skip
UFW_FUNCTIONS_PATH = "/sbin:/bin:/usr/sbin:/usr/bin"


def _source_file(ctx: _Context, path: str, variables: dict[str, str],
                 readonly: set[str]) -> SourceResult | None:  # fmt: skip
    lines = read_lines(ctx.fs, path, ctx.warnings, cap=CONFIG_CAP)
    if lines is None:
        return None
    return source("\n".join(lines) + "\n", variables, readonly)


def ufw_init(ctx: _Context) -> tuple[bool, dict[str, str]]:
    """Whether ``ufw-init start quiet`` would start ufw, and the variables it would hold."""
    variables = dict(UFW_INIT_VARIABLES)
    readonly: set[str] = set()
    conf = "/etc/ufw/ufw.conf"
    first = _source_file(ctx, conf, variables, readonly)
    if first is None or not _sourced(ctx, conf, first):
        return False, {}
    # ENABLED=no stops ufw-init here; the rest is still read for the configured policy.
    stops = first.variables.get("ENABLED") == "no"
    variables = {**first.variables, "PATH": UFW_FUNCTIONS_PATH}
    readonly = first.readonly
    for path in ("/etc/default/ufw", conf):
        variables["s"] = path
        st = ctx.fs.stat(path)
        if st is None or st.size == 0:
            return False, variables  # ufw-init-functions: "Could not find ... (aborting)"
        result = _source_file(ctx, path, variables, readonly)
        if result is None or not _sourced(ctx, path, result, quiet=stops):
            return False, {}
        variables, readonly = result.variables, result.readonly
    return not stops and variables.get("ENABLED") in ("yes", "YES"), variables


def _sourced(ctx: _Context, path: str, result: SourceResult, quiet: bool = False) -> bool:
    if quiet:
        return result.fatal is None and result.unknown is None
    if result.fatal is not None:
        ctx.warnings.append(f"{safe_path(path)}: sh stops sourcing it ({result.fatal}): "
                            "ufw does not start")  # fmt: skip
        return False
    if result.unknown is not None:
        ctx.warnings.append(f"{safe_path(path)}: not evaluated ({safe_path(result.unknown)}): "
                            "ufw counted as not starting")  # fmt: skip
        return False
    return True


def _ufw(ctx: _Context) -> FirewallBackend:
    installed = _installed(ctx, ("ufw",), ("/usr/sbin/ufw", "/sbin/ufw"), "ufw.service")
    if not installed:
        return FirewallBackend("ufw", False, False, None)
    starts, variables = ufw_init(ctx)
    unit = ctx.units.state("ufw.service")
    unit_ok = unit == "started" if ctx.units.systemd else unit != "masked"
    if not variables:
        # ufw.conf could not be evaluated: read the policy from /etc/default/ufw alone.
        lines = read_lines(ctx.fs, "/etc/default/ufw", ctx.warnings, cap=CONFIG_CAP) or []
        variables = shell_assignments(lines)
    policy = variables.get("DEFAULT_INPUT_POLICY")
    inbound = {"DROP": "deny", "REJECT": "deny", "ACCEPT": "accept"}.get(policy or "")
    if policy is not None and inbound is None:
        inbound = "accept"  # iptables rejects the policy; the built-in ACCEPT stays
    return FirewallBackend("ufw", True, starts and unit_ok, inbound)


# ---------------------------------------------------------------- nftables

NFT_TOKEN = re.compile(
    r"""(?P<nl>\n(?:[ \t]*\n)*)|(?P<ws>[ \t]+)|(?P<cont>\\\n)|(?P<comment>\#[^\n]*)"""
    r"""|(?P<str>"[^"\n]*")|(?P<punct>[{};])|(?P<word>[^ \t\n{};#"\\]+)|(?P<junk>.)""",
    re.DOTALL,
)
FAMILIES = ("ip", "ip6", "inet", "arp", "bridge", "netdev")
VERBS = ("add", "create", "insert", "replace", "delete", "destroy", "flush", "list", "reset",
         "rename")  # fmt: skip
# The hooks nft 1.0.6 accepts per family and chain type (nft -c on each combination).
_IP_HOOKS = ("prerouting", "input", "forward", "output", "postrouting")
_NAT_HOOKS = ("prerouting", "input", "output", "postrouting")
HOOKS: dict[tuple[str, str | None], tuple[str, ...]] = {
    **{(f, "filter"): _IP_HOOKS for f in ("ip", "ip6", "bridge")},
    ("inet", "filter"): (*_IP_HOOKS, "ingress"),
    **{(f, "nat"): _NAT_HOOKS for f in ("ip", "ip6", "inet")},
    **{(f, "route"): ("output",) for f in ("ip", "ip6", "inet")},
    ("arp", "filter"): ("input", "output"),
    ("netdev", "filter"): ("ingress", "egress"),
}
PRIORITY = re.compile(
    r"-?[0-9]+|\$[A-Za-z_][A-Za-z0-9_]*"
    r"|(?:raw|mangle|dstnat|filter|security|srcnat|out)(?: ?[+-] ?[0-9]+)?"
)
VERDICTS = ("accept", "drop", "reject", "queue", "continue", "return", "jump", "goto")
OBJECTS = ("table", "chain", "rule", "set", "map", "element", "flowtable", "counter", "quota",
           "ct", "limit", "secmark", "synproxy")  # fmt: skip


class NftError(Exception):
    """nft would reject the file: it loads nothing."""


class NftTooLarge(Exception):
    """More than vmaudit reads: what nft would make of it is not known."""


@dataclass(frozen=True)
class _Tok:
    kind: str  # nl ; { } word str
    text: str
    file: str
    line: int


@dataclass
class _Chain:
    hook: str | None = None
    kind: str | None = None
    policy: str = "accept"


@dataclass
class _Table:
    dormant: bool = False
    chains: dict[str, _Chain] = field(default_factory=dict)


class _NftLoader:
    """One pass over the tokens of nftables.conf and its includes, applying commands."""

    def __init__(self, fs: GuestFS, warnings: list[str]) -> None:
        self.fs = fs
        self.warnings = warnings
        self.files = 0
        self.bytes = 0
        self.tables: dict[tuple[str, str], _Table] = {}
        self.defines: dict[str, list[str]] = {}
        self.stack: list[Iterator[_Tok]] = []
        self.depth = 0
        self.peeked: _Tok | None = None

    # -- tokens
    def _tokens(self, path: str, text: str) -> Iterator[_Tok]:
        line = 1
        for match in NFT_TOKEN.finditer(text):
            kind = match.lastgroup or "junk"
            if kind == "nl":  # a run of blank lines is one separator
                yield _Tok("nl", "\n", path, line)
                line += match.group().count("\n")
            elif kind == "cont":
                line += 1
            elif kind in ("ws", "comment"):
                continue
            elif kind == "junk":
                raise NftError(f"{path}:{line}: unexpected junk")
            elif kind == "punct":
                yield _Tok(match.group(), match.group(), path, line)
            else:
                yield _Tok(kind, match.group(), path, line)
        yield _Tok("nl", "\n", path, line)  # the end of a file ends its last statement

    def read(self, path: str) -> str | None:
        """A file's text, counted against the byte budget as soon as it is read."""
        text = read_text(self.fs, path, self.warnings, cap=CONFIG_CAP)
        self.bytes += len(text or "")
        if self.bytes > MAX_NFT_BYTES:
            raise NftTooLarge(f"over {MAX_NFT_BYTES} bytes of nftables files in all")
        return text

    def push_file(self, path: str, text: str) -> None:
        self.files += 1
        self.stack.append(self._tokens(path, text))

    def next(self) -> _Tok | None:
        if self.peeked is not None:
            peeked, self.peeked = self.peeked, None
            return peeked
        while self.stack:
            token = next(self.stack[-1], None)
            if token is not None:
                return token
            self.stack.pop()
        return None

    def peek(self) -> _Tok | None:
        if self.peeked is None:
            self.peeked = self.next()
        return self.peeked

    def expect(self, *kinds: str) -> _Tok:
        token = self.next()
        if token is None or token.kind not in kinds:
            where = f"{token.file}:{token.line}" if token else "end of file"
            raise NftError(f"{where}: syntax error, expected {' or '.join(kinds)}")
        return token

    def word(self) -> str:
        return self.expect("word").text

    def separator(self) -> None:
        token = self.peek()
        if token is None:
            return
        if token.kind in ("nl", ";"):
            self.next()
            return
        raise NftError(f"{token.file}:{token.line}: expecting newline or semicolon")

    def statement_words(self) -> list[str]:
        """The words up to the end of the statement (consumed), blocks included."""
        words: list[str] = []
        depth = 0
        while (token := self.peek()) is not None:
            if token.kind == "{":
                depth += 1
            elif token.kind == "}":
                if depth == 0:
                    break
                depth -= 1
            elif token.kind in ("nl", ";") and depth == 0:
                break
            words.append(token.text)
            self.next()
        if depth:
            raise NftError("end of file inside a block")
        return words

    def skip_statement(self) -> None:
        """Tokens to the end of the statement, blocks included (rules, sets, elements)."""
        self.statement_words()

    # -- statements
    def run(self) -> None:
        while (token := self.next()) is not None:
            if token.kind in ("nl", ";"):
                continue
            if token.kind != "word":
                raise NftError(f"{token.file}:{token.line}: syntax error at {token.text!r}")
            if self.command(token):
                self.separator()

    def common(self, token: _Tok) -> str:
        """``include`` and ``define``, allowed in every block: "include" (its separator is
        already read, and the included text comes next), "define" or ""."""
        if token.text == "include":
            name = self.expect("str").text.strip('"')
            end = self.next()
            if end is not None and end.kind not in ("nl", ";"):
                raise NftError(f"{end.file}:{end.line}: expecting newline or semicolon")
            self.include(name, token)
            return "include"
        if token.text in ("define", "redefine"):
            name = self.word()
            equals = self.next()
            if equals is None or equals.text != "=":
                raise NftError(f"{token.file}:{token.line}: define without '='")
            value: list[str] = []
            first = self.peek()
            if first is not None and first.kind == "word" and first.text in VERDICTS:
                # nft 1.0.6: "define P = drop" is a syntax error; "drop" must be quoted
                raise NftError(f"{first.file}:{first.line}: syntax error, unexpected {first.text}")
            while (nxt := self.peek()) is not None and nxt.kind not in ("nl", ";"):
                if nxt.kind == "{":
                    self.skip_statement()
                    value.append("{...}")
                    break
                value.append(nxt.text)
                self.next()
            self.defines[name] = value
            return "define"
        if token.text == "undefine":
            self.defines.pop(self.word(), None)
            return "define"
        return ""

    def command(self, token: _Tok) -> bool:
        """Run one top-level command; False when its separator is already read."""
        common = self.common(token)
        if common:
            return common != "include"
        verb = "add"
        if token.text in VERBS:
            verb = token.text
            token = self.expect("word")
        if verb == "flush" and token.text == "ruleset":
            nxt = self.peek()
            if nxt is not None and nxt.kind == "word" and nxt.text in FAMILIES:
                family = self.word()
                self.tables = {k: v for k, v in self.tables.items() if k[0] != family}
            else:
                self.tables = {}
            return True
        if token.text == "table":
            self.table_command(verb)
        elif token.text == "chain":
            self.chain_command(verb)
        elif token.text in OBJECTS or verb in ("list", "reset"):
            self.skip_statement()  # rules, sets, elements, listings: no policy in them
        else:
            raise NftError(f"{token.file}:{token.line}: unknown command {token.text!r}")
        return True

    def family_and_name(self) -> tuple[str, str]:
        first = self.word()
        nxt = self.peek()
        if first in FAMILIES and nxt is not None and nxt.kind == "word":
            return first, self.word()
        return "ip", first

    def table_command(self, verb: str) -> None:
        key = self.family_and_name()
        if verb in ("delete", "destroy"):
            if key not in self.tables and verb == "delete":
                raise NftError(f"delete table {key[0]} {key[1]}: no such table")
            self.tables.pop(key, None)
            return
        if verb == "flush":
            if key not in self.tables:
                raise NftError(f"flush table {key[0]} {key[1]}: no such table")
            return  # rules go; chains and policies stay
        if verb not in ("add", "create"):
            self.skip_statement()
            return
        if verb == "create" and key in self.tables:
            raise NftError(f"create table {key[0]} {key[1]}: it exists")
        table = self.tables.setdefault(key, _Table())
        nxt = self.peek()
        if nxt is not None and nxt.kind == "{":
            self.next()
            self.table_block(key, table)

    def block_items(self, block: str) -> Iterator[_Tok]:
        """The first token of each item of a ``{ ... }`` block, up to its "}". ``include``
        and ``define``, allowed in every block, are handled here; so is the separator that
        must follow each item once it is read."""
        while True:
            token = self.next()
            if token is None:
                raise NftError(f"end of file inside a {block}")
            if token.kind in ("nl", ";"):
                continue
            if token.kind == "}":
                return
            common = self.common(token) if token.kind == "word" else ""
            if common == "include":
                continue
            if not common:
                yield token
            self.block_separator()

    def table_block(self, key: tuple[str, str], table: _Table) -> None:
        for token in self.block_items("table"):
            if token.kind != "word":
                raise NftError(f"{token.file}:{token.line}: syntax error in table")
            if token.text == "chain":
                name = self.word()
                chain = table.chains.setdefault(name, _Chain())
                self.expect("{")
                self.chain_block(key[0], chain)
            elif token.text == "flags":
                flags = self.word()
                table.dormant = "dormant" in flags.split(",")
            elif token.text == "comment":
                self.expect("str")
            elif token.text in OBJECTS:
                # a named object: "set NAME { ... }", "ct helper NAME { ... }"
                name = self.word()
                if token.text == "ct" and name not in ("helper", "timeout", "expectation"):
                    raise NftError(f"{token.file}:{token.line}: unexpected 'ct {name}' in table")
                self.skip_statement()
            else:
                raise NftError(f"{token.file}:{token.line}: unexpected {token.text!r} in table")

    def block_separator(self) -> None:
        """After an item of a block: a separator, as nft requires (a "}" is not one)."""
        token = self.peek()
        if token is None or token.kind not in ("nl", ";"):
            where = f"{token.file}:{token.line}" if token else "end of file"
            raise NftError(f"{where}: expecting newline or semicolon")
        self.next()

    def chain_command(self, verb: str) -> None:
        first = self.word()
        second = self.word()
        nxt = self.peek()
        if first in FAMILIES and nxt is not None and nxt.kind == "word":
            key, name = (first, second), self.word()
        else:
            key, name = ("ip", first), second
        if verb in ("delete", "destroy"):
            table = self.tables.get(key)
            if (table is None or name not in table.chains) and verb == "delete":
                raise NftError(f"delete chain {name}: no such chain")
            if table is not None:
                table.chains.pop(name, None)
            return
        if verb not in ("add", "create"):
            self.skip_statement()
            return
        table = self.tables.get(key)
        if table is None:
            raise NftError(f"chain {name}: table {key[0]} {key[1]} does not exist")
        chain = table.chains.setdefault(name, _Chain())
        token = self.peek()
        if token is not None and token.kind == "{":
            self.next()
            self.chain_block(key[0], chain)

    def chain_block(self, family: str, chain: _Chain) -> None:
        for token in self.block_items("chain"):
            if token.kind == "word" and token.text == "type":
                chain.kind = self.word()
                if self.word() != "hook":
                    raise NftError(f"{token.file}:{token.line}: type without hook")
                chain.hook = self.word()
                rest = self.statement_words()
                if chain.hook not in HOOKS.get((family, chain.kind), ()):
                    raise NftError(f"{token.file}:{token.line}: no {chain.kind} {chain.hook} "
                                   f"hook in the {family} family")  # fmt: skip
                if chain.hook in ("ingress", "egress") and not {"device", "devices"} & set(rest):
                    raise NftError(f"{token.file}:{token.line}: missing device")
                if "priority" not in rest or not PRIORITY.fullmatch(
                    " ".join(rest[rest.index("priority") + 1 :])
                ):
                    raise NftError(f"{token.file}:{token.line}: missing or bad priority")
            elif token.kind == "word" and token.text == "policy":
                value = self.word()
                if value.startswith("$"):
                    resolved = self.defines.get(value[1:])
                    if resolved is None:
                        raise NftError(f"{token.file}:{token.line}: unknown variable {value}")
                    value = " ".join(resolved).strip('"')
                if value not in ("accept", "drop"):
                    raise NftError(f"{token.file}:{token.line}: bad policy {value!r}")
                chain.policy = value
            else:
                self.skip_statement()  # a rule: not validated

    def include(self, name: str, token: _Tok) -> None:
        if self.depth >= MAX_NFT_DEPTH or len(self.stack) > MAX_NFT_DEPTH:
            raise NftError(f"{token.file}:{token.line}: include nested too deep")
        pattern = name if name.startswith("/") else "/etc/" + name
        if any(ch in pattern for ch in "*?["):
            paths = guest_glob(self.fs, pattern, self.warnings)
        else:
            paths = [pattern]
        # nft splices files in order: push them reversed so the first is read first.
        texts: list[tuple[str, str]] = []
        for path in paths:
            if self.files + len(texts) >= MAX_NFT_FILES:
                raise NftError(f"over {MAX_NFT_FILES} included files")
            text = self.read(path)
            if text is None:
                raise NftError(f"{safe_path(path)}: included file not found")
            texts.append((path, text))
        if self.peeked is not None:
            raise NftError("internal: include after a look-ahead")
        for path, text in reversed(texts):
            self.push_file(path, text)


def nft_load(fs: GuestFS, path: str, warnings: list[str]) -> dict[tuple[str, str], _Table] | None:
    """The tables ``nft -f path`` would leave, None when the file is missing; raises
    ``NftError`` when nft would reject it."""
    loader = _NftLoader(fs, warnings)
    text = loader.read(path)
    if text is None:
        return None
    loader.push_file(path, text)
    loader.run()
    return loader.tables


def nft_input_policy(tables: dict[tuple[str, str], _Table]) -> str:
    """deny when base chains on the input hook drop by default for both IPv4 and IPv6."""
    covered: set[str] = set()
    for (family, _), table in tables.items():
        if table.dormant or family not in ("ip", "ip6", "inet"):
            continue
        for chain in table.chains.values():
            if chain.kind == "filter" and chain.hook == "input" and chain.policy == "drop":
                covered |= {"ip": {"4"}, "ip6": {"6"}, "inet": {"4", "6"}}[family]
    return "deny" if covered == {"4", "6"} else "accept"


def _nftables(ctx: _Context) -> FirewallBackend:
    unit = "nftables.service"
    installed = _installed(ctx, ("nftables",), ("/usr/sbin/nft", "/sbin/nft"), unit)
    if not installed:
        return FirewallBackend("nftables", False, False, None)
    enabled = ctx.unit_enabled(unit)
    try:
        tables = nft_load(ctx.fs, "/etc/nftables.conf", ctx.warnings)
    except NftTooLarge as exc:
        ctx.warnings.append(f"/etc/nftables.conf: {exc}: its policy is not known")
        return FirewallBackend("nftables", True, enabled, None)
    except NftError as exc:
        ctx.warnings.append(f"/etc/nftables.conf: nft would reject it ({safe_path(str(exc))}): "
                            "no rules are loaded")  # fmt: skip
        return FirewallBackend("nftables", True, False, "accept")
    if tables is None:
        return FirewallBackend("nftables", True, False, None)
    return FirewallBackend("nftables", True, enabled, nft_input_policy(tables))


# ---------------------------------------------------------------- iptables-restore

IPTABLES_TABLES = ("filter", "nat", "mangle", "raw", "security")
BUILTIN_POLICIES = ("ACCEPT", "DROP")


def restore_input_policy(lines: list[str]) -> tuple[str, str | None]:
    """The filter table's INPUT policy after ``iptables-restore`` of these lines (ACCEPT or
    DROP), and the error that stopped it, if any."""
    committed = "ACCEPT"
    table: str | None = None
    policy = "ACCEPT"
    for number, line in enumerate(lines, 1):
        if line == "" or line.startswith("#"):
            continue
        if line == "COMMIT" and table is not None:
            if table == "filter":
                committed = policy
            table = None
            continue
        if line.startswith("*") and table is None:
            parts = line[1:].split()
            name = parts[0] if parts else ""
            if name not in IPTABLES_TABLES:
                return committed, f"line {number}: table name {name!r} invalid"
            table, policy = name, "ACCEPT"  # without --noflush the table starts empty
            continue
        if table is None:
            return committed, f"line {number}: no table"
        if line.startswith(":"):
            parts = line[1:].split()
            if len(parts) < 2:
                return committed, f"line {number}: bad chain line"
            chain, chain_policy = parts[0], parts[1]
            if chain_policy != "-" and chain_policy not in BUILTIN_POLICIES:
                return committed, f"line {number}: bad policy name"
            if table == "filter" and chain == "INPUT":
                policy = chain_policy
            continue
        if line.startswith("-"):
            continue  # a rule: not validated
        return committed, f"line {number}: bad argument"
    if table is not None:
        return committed, f"COMMIT expected at line {len(lines) + 1}"
    return committed, None


def iptables_input_policy(fs: GuestFS, warnings: list[str]) -> str | None:
    """deny when rules.v4 and rules.v6 both leave INPUT dropping; None when neither exists."""
    policies: list[str] = []
    found = False
    for path in ("/etc/iptables/rules.v4", "/etc/iptables/rules.v6"):
        lines = read_lines(fs, path, warnings, cap=CONFIG_CAP)
        if lines is None:
            policies.append("ACCEPT")
            continue
        found = True
        policy, error = restore_input_policy(lines)
        if error is not None:
            warnings.append(f"{path}: iptables-restore stops at {safe_path(error)}")
        policies.append(policy)
    if not found:
        return None
    return "deny" if all(p == "DROP" for p in policies) else "accept"


def _iptables(ctx: _Context) -> FirewallBackend:
    unit = "netfilter-persistent.service"
    installed = _installed(ctx, ("iptables-persistent", "netfilter-persistent"),
                           ("/usr/sbin/netfilter-persistent",), unit)  # fmt: skip
    if not installed:
        return FirewallBackend("iptables-persistent", False, False, None)
    enabled = ctx.unit_enabled(unit)
    inbound = iptables_input_policy(ctx.fs, ctx.warnings)
    return FirewallBackend("iptables-persistent", True, enabled, inbound)


# ---------------------------------------------------------------- firewalld

FIREWALLD_TARGETS = {"drop": "deny", "%%reject%%": "deny", "reject": "deny", "default": "deny",
                     "accept": "accept"}  # fmt: skip


def firewalld_inbound(fs: GuestFS, warnings: list[str]) -> str | None:
    """From the default zone's target; a zone without target rejects (firewalld's default)."""
    conf = shell_assignments(
        read_lines(fs, "/etc/firewalld/firewalld.conf", warnings, cap=CONFIG_CAP) or []
    )
    zone = conf.get("DefaultZone") or "public"
    if not re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", zone):
        warnings.append(f"firewalld: DefaultZone {safe_path(zone)!r} is not a zone name")
        return None
    for directory in ("/etc/firewalld/zones", "/usr/lib/firewalld/zones"):
        text = read_text(fs, f"{directory}/{zone}.xml", warnings, cap=CONFIG_CAP)
        if text is None:
            continue
        # A regex, not an XML parser: a guest file must not get entity expansion.
        match = re.search(r"<zone\b[^>]*\btarget\s*=\s*[\"']([^\"']*)[\"']", text)
        return FIREWALLD_TARGETS.get(match.group(1).lower()) if match else "deny"
    builtin: dict[str, str] = {"trusted": "accept"}
    return builtin.get(zone, "deny")


def _firewalld(ctx: _Context) -> FirewallBackend:
    unit = "firewalld.service"
    installed = _installed(ctx, ("firewalld",), ("/usr/sbin/firewalld",), unit)
    if not installed:
        return FirewallBackend("firewalld", False, False, None)
    enabled = ctx.unit_enabled(unit)
    inbound = firewalld_inbound(ctx.fs, ctx.warnings)
    return FirewallBackend("firewalld", True, enabled, inbound)


BACKENDS: tuple[Callable[[_Context], FirewallBackend], ...] = (
    _ufw,
    _nftables,
    _iptables,
    _firewalld,
)


def collect_firewall(fs: GuestFS, packages: list[Package], warnings: list[str]) -> FirewallFacts:
    """The installed firewalls; enabled when any of them would load rules at boot."""
    ctx = _Context(fs, packages_by_name(packages), warnings)
    backends = tuple(
        backend for backend in (probe(ctx) for probe in BACKENDS) if backend.installed
    )  # fmt: skip
    return FirewallFacts(enabled=any(b.enabled for b in backends), backends=backends)
