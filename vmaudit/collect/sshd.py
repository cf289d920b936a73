"""sshd's effective settings for one connection, as the daemon (OpenSSH 9.x) would read them.

The connection reported is ``sshd -T -C user=root,host=x,addr=192.0.2.1``: root, from an
address (192.0.2.1, TEST-NET-1) and host name (``x``) that no real rule names, with no local
address, local port or routing domain, so ``Match LocalAddress``/``LocalPort``/``RDomain``
never apply (a warning says so, as they may apply to real connections). ``Match all``,
``Match User *``/``root``, ``Match Group`` of any group root is in (read from the guest),
``Match Address 192.0.2.0/24`` and ``Match Host *`` do apply.

The config is read as servconf.c reads it, twice: once without a connection (the global
values; ``Match all`` applies there too) and once with it, where only the ``Match`` blocks
that apply set values, which then override the global ones. Within each pass the first value
wins. Lines split on ``\\n`` only; leading `` \\t\\r`` and trailing blanks (``\\f`` too) are
dropped; the keyword ends at a blank, ``\\r``, a quote or ``=``; arguments split on space
and tab only, with sshd's quoting and escapes; a line is cut at a NUL and joined to the next.
``Include`` globs are relative to ``/etc/ssh`` and read in sorted order; a ``Match`` opened
in an included file ends with it, and an Include met in a block that does not apply reads
nothing. The depth limit is OpenSSH's (16); every pass reads at most ``MAX_FILES`` files and
``MAX_CHARS`` characters in all, so nested globs cannot fan out exponentially and a huge
config stays a few seconds' work (a warning says what was left). A config sshd would refuse
to start with (an unknown keyword character or Match criterion, a directive not allowed in
Match, an invalid value, an Include loop) is a warning, the first ``MAX_MESSAGES`` of them
and then a count; the values read are still reported. Unset keywords take OpenSSH's
built-in default for the packaged version.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Iterator
from dataclasses import dataclass, field

from vmaudit.guest.base import GuestFS, guest_lines, is_dir, is_file, read_text, safe_path
from vmaudit.models import Package, SshFacts

from .accounts import (
    PasswdEntry,
    group_names,
    memberships,
    read_group,
    read_passwd,
    user_gids,
)
from .common import guest_glob, packages_by_name

CONFIG_PATH = "/etc/ssh/sshd_config"
SSHDIR = "/etc/ssh"
MAX_DEPTH = 16  # OpenSSH's SERVCONF_MAX_DEPTH
MAX_FILES = 256  # files parsed per pass, nested Includes counted
MAX_CHARS = 4 * 1024 * 1024  # characters parsed per pass, nested Includes counted
MAX_MESSAGES = 20  # distinct problems reported; the rest are counted
CHUNK = 1024 * 1024  # characters split into lines at once
SSHD_BINARIES = ("/usr/sbin/sshd", "/usr/bin/sshd", "/sbin/sshd")
SSHD_PACKAGES = ("openssh-server", "openssh")
ROOT_LOGIN = {
    "yes": "yes",
    "no": "no",
    "prohibit-password": "prohibit-password",
    "without-password": "prohibit-password",  # the pre-7.0 name of the same setting
    "forced-commands-only": "forced-commands-only",
}
BOOLEAN = {"yes": "yes", "no": "no"}
DEFAULT_KEYS_FILES = (".ssh/authorized_keys", ".ssh/authorized_keys2")
WHITESPACE = " \t\r\n"  # servconf.c's WHITESPACE
BLANKS = WHITESPACE + "\f"  # what sshd strips from the end of a line
# Keywords sshd refuses inside a Match block (the ones a stock config uses).
GLOBAL_ONLY = frozenset({
    "usepam", "port", "listenaddress", "hostkey", "subsystem", "printmotd", "addressfamily",
    "pidfile", "protocol", "usedns", "printlastlog",
})  # fmt: skip
MULTISTATE = {"permitrootlogin": ROOT_LOGIN, "passwordauthentication": BOOLEAN,
              "usepam": BOOLEAN}  # fmt: skip
MATCH_ONLY, NEVER_MATCH = "match-only", "never-match"  # SSHCFG_MATCH_ONLY, SSHCFG_NEVERMATCH


@dataclass(frozen=True)
class Connection:
    """The connection whose settings are reported (``sshd -T -C``)."""

    user: str = "root"
    host: str = "x"
    address: str = "192.0.2.1"

    def spec(self) -> str:
        return f"user={self.user},host={self.host},addr={self.address}"


CONNECTION = Connection()


@dataclass(frozen=True)
class SshdConfig:
    """The settings the collectors need, for ``CONNECTION``, defaults applied."""

    installed: bool
    permit_root_login: str
    password_authentication: bool
    use_pam: bool
    authorized_keys_files: tuple[str, ...]  # as written: %h, %u, %U tokens, relative to home
    # Every keys file some connection may consult: the global value, every Match block's.
    any_keys_files: tuple[str, ...] = ()

    def facts(self) -> SshFacts:
        if not self.installed:
            return SshFacts(installed=False, permit_root_login=None, password_authentication=None)
        return SshFacts(True, self.permit_root_login, self.password_authentication)


_BLOCK_KEYWORD = re.compile(r'[ \t\r\n="]*(?:match|include)', re.IGNORECASE)
_DELIMITER = re.compile(r'[ \t\r\n"=]')
_NOT_WHITESPACE = re.compile(r"[^ \t\r\n]")


def _skip_whitespace(text: str, pos: int) -> int:
    found = _NOT_WHITESPACE.search(text, pos)
    return found.start() if found else len(text)


def _strdelim_at(text: str, pos: int | None) -> tuple[str | None, int | None]:
    """misc.c's ``strdelim`` from ``pos``: (token, where the rest starts, None at the end).

    The token ends at a blank, ``\r``, ``\n``, ``=`` or a quote; a quote opens a quoted
    token; blanks and one ``=`` after it are skipped. Positions, not copies: linear time.
    """
    if pos is None:
        return None, None
    found = _DELIMITER.search(text, pos)
    if found is None:
        return text[pos:], None
    at = found.start()
    if text[at] == '"':
        close = text.find('"', at + 1)
        if close < 0:
            return None, None  # no matching quote
        return text[pos:at] + text[at + 1 : close], _skip_whitespace(text, close + 1)
    after = _skip_whitespace(text, at + 1)
    if text[at] != "=" and text.startswith("=", after):
        after = _skip_whitespace(text, after + 1)  # one "=" may follow blanks
    return text[pos:at], after


def _strdelim(text: str | None) -> tuple[str | None, str | None]:
    """``strdelim`` on a whole string: (token, the rest; None when nothing follows)."""
    if text is None:
        return None, None
    token, pos = _strdelim_at(text, 0)
    return token, None if pos is None else text[pos:]


def _argv_split(text: str) -> list[str] | None:
    """misc.c's ``argv_split`` with comments: blanks are space and tab; None on bad quotes."""
    if not any(char in text for char in "\"'\\"):  # no quoting: words up to a "#" word
        words = re.split(r"[ \t]+", text.strip(" \t"))
        for index, word in enumerate(words):
            if word.startswith("#"):
                return words[:index]
        return words if words != [""] else []
    args: list[str] = []
    pos = 0
    while pos < len(text):
        if text[pos] in " \t":
            pos += 1
            continue
        if text[pos] == "#":
            break
        quote = ""
        arg: list[str] = []
        while pos < len(text):
            char = text[pos]
            following = text[pos + 1] if pos + 1 < len(text) else ""
            escaped = following in ("'", '"', "\\") or (not quote and following == " ")
            if char == "\\" and escaped:
                pos += 1
                arg.append(following)
            elif not quote and char in " \t":
                break
            elif not quote and char in "\"'":
                quote = char
            elif quote and char == quote:
                quote = ""
            else:
                arg.append(char)
            pos += 1
        if quote:
            return None
        args.append("".join(arg))
    return args


def _config_lines(text: str) -> Iterator[str]:
    """Lines as load_server_config stores them: leading `` \t\r`` dropped, cut at a NUL.

    A line cut at a NUL loses its newline too (sshd copies ``strlen`` bytes), so it joins
    the next one. Split a chunk at a time: a file of millions of lines stays small.
    """
    joined: list[str] = []
    start = 0
    while start < len(text):
        cut = text.find("\n", start + CHUNK)
        end = len(text) if cut < 0 else cut + 1
        for raw in guest_lines(text[start:end]):
            line = raw.lstrip(" \t\r")
            if "\0" in line:
                joined.append(line.split("\0", 1)[0])
                continue
            if joined:
                line, joined = "".join([*joined, line]), []
            yield line
        start = end
    if joined:
        yield "".join(joined)


def _quoted(text: str) -> str:
    """A guest word for a message: escaped by ``repr``, and at most 60 characters of it."""
    return repr(text if len(text) <= 60 else text[:60] + "...")


class _Log(list[str]):
    """Messages without repeats, at most ``MAX_MESSAGES``; the rest are only counted."""

    def __init__(self) -> None:
        super().__init__()
        self.dropped = 0

    def append(self, message: str) -> None:
        if message in self:
            return
        if len(self) < MAX_MESSAGES:
            super().append(message)
        else:
            self.dropped += 1

    def messages(self) -> list[str]:
        more = [f"... and {self.dropped} more"] if self.dropped else []
        return [*self, *more]


def match_pattern(string: str, pattern: str) -> bool:
    """match.c's ``match_pattern``: ``*`` and ``?`` wildcards, nothing else.

    Matched with the two-pointer glob algorithm, in len(string) * len(pattern) steps at
    worst: no backtracking blow-up on a guest pattern of many stars.
    """
    pos = index = 0
    star, mark = -1, 0
    while pos < len(string):
        if index < len(pattern) and pattern[index] == "*":
            star, mark = index, pos
            index += 1
        elif index < len(pattern) and pattern[index] in ("?", string[pos]):
            pos += 1
            index += 1
        elif star >= 0:
            index, mark = star + 1, mark + 1
            pos = mark
        else:
            return False
    return pattern[index:].strip("*") == ""


def match_pattern_list(string: str, patterns: str, lower: bool = False) -> int:
    """match.c's ``match_pattern_list``: 1 match, 0 none, -1 a negated match."""
    found = 0
    for sub in patterns.split(","):
        negated = sub.startswith("!")
        sub = sub[1:] if negated else sub
        if len(sub) >= 1023:
            return 0
        if lower:
            sub = sub.translate(str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ",
                                              "abcdefghijklmnopqrstuvwxyz"))  # fmt: skip
        if match_pattern(string, sub):
            if negated:
                return -1
            found = 1
    return found


IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def _addr_pton(text: str) -> IPAddress | None:
    """addrmatch.c's ``addr_pton``: getaddrinfo with AI_NUMERICHOST, as sshd calls it.

    Numeric only, so no name is ever resolved; glibc accepts inet_aton's forms
    (``3221225985``, ``0300.0.2.1``) for vmaudit exactly as it does for sshd.
    """
    try:
        raw = text.encode("utf-8", errors="surrogateescape")
        infos = socket.getaddrinfo(raw, None, flags=socket.AI_NUMERICHOST)
        return ipaddress.ip_address(str(infos[0][4][0]).split("%", 1)[0])
    except (OSError, UnicodeError, ValueError, IndexError):
        return None


def _addr_pton_cidr(text: str) -> IPNetwork | int:
    """addrmatch.c's ``addr_pton_cidr``: the network, -1 (not one) or -2 (bad mask)."""
    if len(text) >= 64:
        return -1
    base, slash, mask = text.partition("/")
    if slash and (not re.fullmatch(r"[0-9]+", mask) or int(mask) > 128):
        return -1
    address = _addr_pton(base)
    if address is None:
        return -1
    masklen = int(mask) if slash else address.max_prefixlen
    try:
        return ipaddress.ip_network(f"{address}/{masklen}", strict=True)
    except ValueError:
        return -2  # a mask too long for the family, or host bits set


def _addr_match_list(address: str | None, patterns: str) -> int:
    """addrmatch.c's ``addr_match_list``: 1, 0, -1 (negated match) or -2 (invalid)."""
    addr = _addr_pton(address) if address is not None else None
    if address is not None and addr is None:
        return 0
    result = 0
    for entry in patterns.split(","):
        negated = entry.startswith("!")
        entry = entry[1:] if negated else entry
        if entry == "":
            return -2
        network = _addr_pton_cidr(entry)
        if network == -2:
            return -2
        if isinstance(network, int):
            hit = address is not None and match_pattern(address, entry)
        else:
            hit = addr is not None and addr.version == network.version and addr in network
        if hit:
            if negated:
                return -1
            result = 1
    return result


@dataclass
class _Pass:
    """One reading of the config: ``connection`` None is sshd's first, global pass."""

    fs: GuestFS
    connection: Connection | None
    problems: _Log
    notes: _Log
    contents: dict[str, str]
    globs: dict[str, list[str]]
    values: dict[str, list[str]] = field(default_factory=dict)
    match_keys_files: list[str] = field(default_factory=list)
    files_read: int = 0
    chars_read: int = 0
    passwd: list[PasswdEntry] | None = None
    root_groups: list[str] | None = None

    def read(self, path: str, active: list[bool], flags: set[str], depth: int) -> None:
        if depth > MAX_DEPTH:  # sshd stops dead here; the rest is read for the report
            self.problems.append(f"{safe_path(path)}: too many recursive Includes")
            return
        if self.files_read >= MAX_FILES:
            if self.files_read == MAX_FILES:
                self.notes.append(f"sshd: over {MAX_FILES} included files, the rest ignored")
                self.files_read += 1
            return
        self.files_read += 1
        if path not in self.contents:
            self.contents[path] = read_text(self.fs, path, self.notes) or ""
        text = self.contents[path]
        if len(text) > MAX_CHARS - self.chars_read:
            self.notes.append(f"sshd: over {MAX_CHARS} characters of config, the rest ignored")
            text = text[: max(0, MAX_CHARS - self.chars_read)]
        self.chars_read += len(text)
        flags = set(flags)
        shown = safe_path(path)
        # The second pass only looks for Match blocks: an inactive line that cannot be a
        # Match or an Include changes nothing there (its problems were the first pass's).
        skim = self.connection is not None
        for number, line in enumerate(_config_lines(text), 1):
            if not line or line[0] == "#":
                continue  # the other blank lines: line(), as sshd
            if skim and not active[0] and not _BLOCK_KEYWORD.match(line):
                continue
            self.line(line, f"{shown} line {number}", active, flags, depth)

    def line(self, line: str, where: str, active: list[bool], flags: set[str], depth: int) -> None:
        end = len(line)
        while end > 1 and line[end - 1] in BLANKS:
            end -= 1
        keyword, rest = _strdelim(line[:end])
        if keyword == "":
            keyword, rest = _strdelim(rest)
        if not keyword or keyword.startswith("#"):
            return
        if not rest:
            self.problems.append(f"{where}: no argument after keyword {_quoted(keyword)}")
            return
        args = _argv_split(rest)
        if args is None:
            self.problems.append(f"{where}: invalid quotes")
            return
        opcode = keyword.lower()
        if not re.fullmatch(r"[a-z0-9]+", opcode):  # no sshd keyword has any other character
            self.problems.append(f"{where}: bad configuration option {_quoted(keyword)}")
            return
        if opcode == "match":
            result = self.match(rest, where, NEVER_MATCH not in flags)
            active[0] = result and NEVER_MATCH not in flags
            flags.discard(MATCH_ONLY)
            return
        if not active[0] and opcode in GLOBAL_ONLY:
            if self.connection is None:
                self.problems.append(f"{where}: {keyword} is not allowed within a Match block")
            return
        if opcode == "include":
            self.include(args, active, flags, depth)
        elif opcode in MULTISTATE:
            table = MULTISTATE[opcode]
            if len(args) != 1 or args[0].lower() not in table:
                self.problems.append(f"{where}: bad value for {keyword}: {_quoted(' '.join(args))}")
            elif active[0]:
                self.values.setdefault(opcode, [table[args[0].lower()]])
        elif opcode == "authorizedkeysfile":
            if "" in args:
                self.problems.append(f"{where}: empty argument to {keyword}")
                return
            paths = [self.tilde(arg, where) for arg in args]
            if None in paths:
                return
            expanded = [path for path in paths if path is not None]
            if active[0]:
                self.values.setdefault(opcode, expanded)
            else:
                self.match_keys_files += expanded

    def include(self, args: list[str], active: list[bool], flags: set[str], depth: int) -> None:
        before = active[0]
        # An Include in a block that does not apply reads nothing, its Match blocks included.
        child = {MATCH_ONLY} if MATCH_ONLY in flags else set() if before else {NEVER_MATCH}
        for arg in args:
            pattern = arg if arg.startswith(("/", "~")) else f"{SSHDIR}/{arg}"
            if pattern not in self.globs:
                absolute = pattern if pattern.startswith("/") else "/" + pattern
                self.globs[pattern] = guest_glob(self.fs, absolute, self.notes)
            for path in self.globs[pattern]:
                if is_dir(self.fs, path):
                    continue  # sshd reads nothing from a directory
                self.read(path, active, child, depth + 1)
                active[0] = before

    def match(self, criteria: str, where: str, evaluate: bool) -> bool:
        """servconf.c's ``match_cfg_line``; a bad condition is a problem and matches nothing."""
        connection = self.connection if evaluate else None
        rest: int | None = 0
        count = 0
        result = True
        while True:
            attribute, rest = _strdelim_at(criteria, rest)
            if not attribute or attribute.startswith("#"):
                break
            count += 1
            name = attribute.lower()
            if name == "all":
                following, _ = _strdelim_at(criteria, rest)
                if count > 1 or (following and not following.startswith("#")):
                    self.problems.append(f"{where}: 'all' cannot be combined with other criteria")
                    return False
                return True
            argument, rest = _strdelim_at(criteria, rest)
            if not argument or argument.startswith("#"):
                self.problems.append(f"{where}: missing Match criteria for {_quoted(attribute)}")
                return False
            if name in ("user", "group", "host"):
                if connection is not None and not self.matches(name, argument, connection):
                    result = False
            elif name == "address":
                if connection is None:
                    if _addr_match_list(None, argument) != 0:
                        self.problems.append(f"{where}: invalid Match address {_quoted(argument)}")
                        return False
                    result = False
                    continue
                outcome = _addr_match_list(connection.address, argument)
                if outcome == -2:
                    self.problems.append(f"{where}: invalid Match address {_quoted(argument)}")
                    return False
                result = result and outcome == 1
            elif name in ("localaddress", "localport", "rdomain"):
                if name == "localport" and not re.fullmatch(r"[0-9]{1,5}", argument):
                    self.problems.append(f"{where}: invalid LocalPort {_quoted(argument)}")
                    return False
                if name == "localaddress" and _addr_match_list(None, argument) != 0:
                    self.problems.append(f"{where}: invalid Match localaddress {_quoted(argument)}")
                    return False
                if connection is not None:
                    criterion = safe_path(f"{attribute} {argument}"[:80])
                    self.notes.append(
                        f"sshd: {where}: Match {criterion} is not evaluated (the reported "
                        f"connection {connection.spec()} has no local side)"
                    )
                result = False
            else:
                self.problems.append(f"{where}: unsupported Match attribute {_quoted(attribute)}")
                return False
        if count == 0:
            self.problems.append(f"{where}: Match without criteria")
            return False
        return result and connection is not None

    def matches(self, name: str, patterns: str, connection: Connection) -> bool:
        if name == "user":
            return match_pattern_list(connection.user, patterns) == 1
        if name == "host":
            return match_pattern_list(connection.host.lower(), patterns, lower=True) == 1
        found = False
        for group in self.groups_of(connection.user):
            outcome = match_pattern_list(group, patterns)
            if outcome == -1:
                return False
            found = found or outcome == 1
        return found

    def accounts(self) -> list[PasswdEntry]:
        """The guest's passwd, read once (the accounts section reports its problems)."""
        if self.passwd is None:
            self.passwd = read_passwd(self.fs, [])
        return self.passwd

    def tilde(self, path: str, where: str) -> str | None:
        """misc.c's ``tilde_expand`` as sshd applies it to AuthorizedKeysFile when it reads
        the config: ``~`` is the home of sshd's own uid 0, ``~user`` that user's; None (a
        config sshd refuses) for an unknown user."""
        if not path.startswith("~"):
            return path
        user, slash, rest = path[1:].partition("/")
        entries = self.accounts()
        if user:
            entry = next((e for e in entries if e.name == user), None)
        else:
            entry = next((e for e in entries if e.uid == 0), None)
        if entry is None:
            self.problems.append(f"{where}: tilde_expand: no such user {_quoted(user or 'uid 0')}")
            return None
        home = entry.home if entry.home.endswith("/") else entry.home + "/"
        return home + rest.lstrip("/") if slash else home

    def groups_of(self, user: str) -> list[str]:
        """``ga_init``: the user's groups by name, from the guest's passwd and group."""
        if self.root_groups is None:
            scratch: list[str] = []  # the accounts section reports these files' problems
            entry = next((e for e in self.accounts() if e.name == user), None)
            self.root_groups = []
            if entry is not None:
                groups = read_group(self.fs, scratch)
                names = group_names(groups)
                gids = user_gids(user, entry.gid, memberships(groups))
                self.root_groups = [names[gid] for gid in gids if gid in names]
        return self.root_groups


def _openssh_version(packages: dict[str, Package]) -> tuple[int, int] | None:
    for name in SSHD_PACKAGES:
        package = packages.get(name)
        if package is None:
            continue
        upstream = package.version.split(":", 1)[-1]
        match = re.match(r"(\d+)\.(\d+)", upstream)
        if match:
            return int(match.group(1)), int(match.group(2))
    return None


def read_config(
    fs: GuestFS, warnings: list[str], connection: Connection = CONNECTION
) -> tuple[dict[str, list[str]], list[str]]:
    """(the values for ``connection``, the AuthorizedKeysFile values other connections
    may get: the global one and every Match block's)."""
    problems, notes = _Log(), _Log()
    contents: dict[str, str] = {}
    globs: dict[str, list[str]] = {}
    passes = (_Pass(fs, None, problems, notes, contents, globs),
              _Pass(fs, connection, _Log(), notes, contents, globs))  # fmt: skip
    for index, reading in enumerate(passes):
        reading.read(CONFIG_PATH, [index == 0], {MATCH_ONLY} if index else set(), 0)
    first, second = passes
    warnings += notes.messages()
    warnings += [f"sshd would refuse to start: {problem}" for problem in problems.messages()]
    values = dict(first.values)
    values.update(second.values)
    other_keys = first.values.get("authorizedkeysfile", list(DEFAULT_KEYS_FILES))
    return values, [*other_keys, *first.match_keys_files]


def collect_sshd(fs: GuestFS, packages: list[Package], warnings: list[str]) -> SshdConfig:
    """sshd's effective PermitRootLogin, PasswordAuthentication, UsePAM and keys files."""
    by_name = packages_by_name(packages)
    installed = any(name in by_name for name in SSHD_PACKAGES) or any(
        is_file(fs, path) for path in SSHD_BINARIES
    )
    values, other_keys = read_config(fs, warnings)

    version = _openssh_version(by_name)
    # OpenSSH 7.0 changed the default from "yes"; an unknown version is taken as current.
    permit_root_login = "yes" if version is not None and version < (7, 0) else "prohibit-password"
    permit_root_login = values.get("permitrootlogin", [permit_root_login])[0]
    password_authentication = values.get("passwordauthentication", ["yes"])[0] == "yes"
    use_pam = values.get("usepam", ["no"])[0] == "yes"
    # Each "none" entry is skipped on its own (auth2-pubkeyfile.c).
    written = tuple(values.get("authorizedkeysfile") or DEFAULT_KEYS_FILES)
    keys_files = tuple(path for path in written if path.lower() != "none")
    any_keys = tuple(dict.fromkeys(
        [*keys_files, *(path for path in other_keys if path.lower() != "none")]))  # fmt: skip
    return SshdConfig(installed, permit_root_login, password_authentication, use_pam,
                      keys_files, any_keys)  # fmt: skip
