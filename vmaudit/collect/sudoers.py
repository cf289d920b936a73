"""Who sudoers lets run any command as root, and from which file, as sudo 1.9 reads it.

The file is lexed as sudo's own lexer (``toke.l``) lexes it: lines end at ``\\n`` only (a
``\\r`` right before it is dropped); a comment runs to the end of its line even when it ends in
``\\``; a backslash followed only by blanks continues the line; ``#123`` is a uid, not a
comment; ``NOPASSWD :`` is a tag even with blanks before the colon; ``#include`` is an include
only at the very start of a line (``  #include x`` is a comment) while ``@include`` may follow
blanks; a stray ``\\r`` or any other character sudo does not expect is a syntax error. As sudo
does (its ``error_recovery`` default), a syntax error drops that entry up to the end of its
line and the rest of the file still counts; but a file whose last entry a final backslash
continues into the end of the file makes sudo reject the whole policy (no grants at all).

Includes: ``@include``/``#include`` and ``@includedir``/``#includedir``; a relative path
resolves against the including file's directory; in a directory, names ending in ``~`` or
containing ``.`` are skipped and the rest read in byte order, as sudo does. ``%h`` in an
include path is the short host name from ``/etc/hostname``.

A user is an admin when, for an arbitrary command run as root, the last matching rule allows
it, as sudo decides (``alice ALL=(ALL) ALL`` then ``alice ALL=(ALL) !ALL`` denies). A rule
runs as root without a runas list, or when its runas list's last matching item is ``ALL``,
``root``, ``#0`` (any spelling of uid 0) or the ``root`` group; ``()`` and ``(:group)`` run as
the invoking user. Host lists are ignored for grants (a dormant image may boot under any
name); a denial counts only when its host list matches every host. Aliases are expanded where
they are used, wherever they are defined; a second definition of an alias is an error, as in
sudo, and the first stays. The policy file is the one ``/etc/sudo.conf`` names
(``sudoers_file=``). Not modelled: runas users other than root that have uid 0, and the
ownership checks sudo makes before trusting a file (vmaudit counts grants in files sudo would
refuse, the safe direction).
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Literal

from vmaudit.guest.base import GuestFS, is_dir, list_dir, read_lines, read_text, safe_path

SUDOERS_PATH = "/etc/sudoers"
SUDO_CONF = "/etc/sudo.conf"
MAX_DEPTH = 128  # sudo's include depth limit
MAX_FILES = 1000
# Real policies are a few hundred lines; these bound the time a hostile one costs (what is
# over is a warning, and its grants are not seen).
MAX_TOTAL_LINES = 100_000
MAX_TOTAL_TOKENS = 2_000_000
MAX_ALIAS_DEPTH = 64
ROOT_GROUPS = frozenset({"root"})

MemberKind = Literal["all", "name", "uid", "group", "gid", "alias", "none"]


@dataclass(frozen=True)
class Member:
    """One item of a user or runas list, as sudo's parser classifies it."""

    kind: MemberKind  # none: a netgroup or non-Unix group, which cannot be resolved offline
    value: str
    negated: bool = False


@dataclass(frozen=True)
class SudoGrant:
    """A rule that decides whether its users may run an arbitrary command as root."""

    users: tuple[Member, ...]
    file: str  # guest path of the sudoers file holding it
    allow: bool = True  # False: it denies every command as root (``!ALL``)
    every_host: bool = True  # its host list matches any host name


@dataclass(frozen=True)
class Sudoers:
    grants: tuple[SudoGrant, ...]
    user_aliases: dict[str, tuple[Member, ...]]

    def admin_files(
        self, user: str, uid: int | None, groups: set[str], gids: set[int]
    ) -> list[str]:
        """The sudoers files whose rules let ``user`` run every command as root.

        Empty when the last matching rule denies (sudo's last match wins).
        """
        files: list[str] = []
        resolver = _Resolver(self.user_aliases, _user_leaf(user, uid, groups, gids))
        for grant in self.grants:
            if resolver.members(grant.users) is not True:
                continue
            if grant.allow:
                if grant.file not in files:
                    files.append(grant.file)
            elif grant.every_host:
                files = []
        return files


_CYCLE = object()  # an alias being resolved: reached again, it is a loop (no match)


class _Resolver:
    """sudo's list matching: the last matching member decides, ``!`` flips it, an alias
    stands for its own list. Aliases resolve once per query, iteratively (a chain of
    thousands of aliases is fine) and an alias loop matches nothing, as in sudo."""

    def __init__(
        self, aliases: dict[str, tuple[Member, ...]], leaf: Callable[[Member], bool | None]
    ) -> None:
        self.aliases = aliases
        self.leaf = leaf
        self.cache: dict[str, object] = {}

    def members(self, members: tuple[Member, ...]) -> bool | None:
        for member in reversed(members):
            verdict = self.member(member)
            if verdict is not None:
                return verdict
        return None

    def member(self, member: Member) -> bool | None:
        if member.kind != "alias":
            return self.leaf(member)
        if member.value not in self.aliases:
            return None  # an undefined alias matches nothing
        inner = self.alias(member.value)
        return None if inner is None else inner != member.negated

    def alias(self, name: str) -> bool | None:
        if name not in self.cache:
            self.cache[name] = _CYCLE
            stack: list[tuple[str, int]] = [(name, 0)]
            while stack:
                current, index = stack[-1]
                members = self.aliases[current]
                while index < len(members):
                    value = members[index].value
                    if (
                        members[index].kind == "alias"
                        and value in self.aliases
                        and (value not in self.cache)
                    ):
                        break
                    index += 1
                if index < len(members):
                    stack[-1] = (current, index + 1)
                    dependency = members[index].value
                    self.cache[dependency] = _CYCLE
                    stack.append((dependency, 0))
                    continue
                stack.pop()
                self.cache[current] = self.members(members)
        resolved = self.cache[name]
        return None if resolved is _CYCLE else resolved  # type: ignore[return-value]


def _user_leaf(
    user: str, uid: int | None, groups: set[str] | frozenset[str], gids: set[int]
) -> Callable[[Member], bool | None]:
    def leaf(member: Member) -> bool | None:
        if member.kind == "all":
            hit = True
        elif member.kind == "name":
            hit = member.value == user
        elif member.kind == "uid":
            hit = uid is not None and _parse_id(member.value) == uid
        elif member.kind == "group":
            hit = member.value in groups
        elif member.kind == "gid":
            parsed = _parse_id(member.value)
            hit = parsed is not None and parsed in gids
        else:
            hit = False
        return (not member.negated) if hit else None

    return leaf


def _parse_id(text: str) -> int | None:
    """A ``#uid`` / ``%#gid`` number as sudo_strtoid reads it (decimal, may be negative)."""
    digits = text.lstrip("#")
    if not re.fullmatch(r"-?[0-9]+", digits):
        return None
    value = int(digits)
    if value < 0:
        value += 1 << 32  # uid_t wraps: #-1 is 4294967295
    return value if 0 <= value < 1 << 32 else None


# ---------------------------------------------------------------- lexer

TokenKind = Literal[
    "WORD",
    "ALIAS",
    "ALL",
    "USERGROUP",
    "NETGROUP",
    "COMMAND",
    "TAG",
    "OPTION",
    "DIGEST",
    "DEFAULTS",
    "ALIASKW",
    "INCLUDE",
    "INCLUDEDIR",
    "(",
    ")",
    ",",
    "=",
    ":",
    "!",
    "NL",
    "ERROR",
]


@dataclass(frozen=True)
class Token:
    kind: TokenKind
    text: str = ""


BLANKS = " \t"
PUNCTUATION = {"(": Token("("), ")": Token(")"), ",": Token(","), "=": Token("="),
               ":": Token(":")}  # fmt: skip
WORD_STOP = set('#>!=:,() \t\r\n\\"')
TAGS = (
    "NOPASSWD",
    "PASSWD",
    "NOEXEC",
    "EXEC",
    "INTERCEPT",
    "NOINTERCEPT",
    "SETENV",
    "NOSETENV",
    "LOG_OUTPUT",
    "NOLOG_OUTPUT",
    "LOG_INPUT",
    "NOLOG_INPUT",
    "MAIL",
    "NOMAIL",
    "FOLLOW",
    "NOFOLLOW",
)
TAG_RE = re.compile("(?:" + "|".join(sorted(TAGS, key=len, reverse=True)) + r")[ \t]*:")
# Debian builds sudo with SELinux (ROLE, TYPE) but not AppArmor: APPARMOR_PROFILE is an alias
# name there, as PRIVS/LIMITPRIVS (Solaris only) are.
OPTIONS = ("TIMEOUT", "NOTBEFORE", "NOTAFTER", "CWD", "CHROOT", "ROLE", "TYPE")
ALIAS_KEYWORDS = {"User_Alias": "User_Alias", "Runas_Alias": "Runas_Alias",
                  "Host_Alias": "Host_Alias", "Cmnd_Alias": "Cmnd_Alias",
                  "Cmd_Alias": "Cmnd_Alias"}  # fmt: skip
ALIAS_NAME = re.compile(r"[A-Z][A-Z0-9_]*")
CONTINUATION = re.compile(r"\\[ \t]*\r?\n")
NEWLINE = re.compile(r"\r?\n")
ID = re.compile(r"#-?[0-9]+")
HEX16 = r"[0-9A-Fa-f]{1,4}"
OCTET = r"(?:25[0-5]|2[0-4][0-9]|1?[0-9]{1,2})"
IPV4 = rf"{OCTET}(?:\.{OCTET}){{3}}"
IPV6 = rf"(?:(?:{HEX16}?:){{2,6}}:{IPV4}|(?:{HEX16}?:){{2,7}}{HEX16}?)"
IPV6_RE = re.compile(rf"{IPV6}(?:/(?:{IPV6}|[0-9]{{1,3}}))?")
PATH_RE = re.compile(r"/(?:\\[,:= \t#]|[^,:=\\ \t\r\n#])+")
DIGEST_NAMES = ("sha224", "sha256", "sha384", "sha512")
DIGEST_RE = re.compile(r"[ \t]*:[ \t]*[A-Za-z0-9+/=]+")
INCLUDE_AT_BOL = re.compile(r"#include(dir)?[ \t]")
INCLUDE_WORD = re.compile(r'[^" \t\n\r\f\v](?:\\[ \t]|[^ \t\n\r\f\v])*')  # flex [:space:]
STRING_CONTINUATION = re.compile(r"\\[ \t]*\r?\n[ \t]*")


def _word_end(text: str, start: int) -> int:
    """End of a WORD: ``([^#>!=:,() \\t\\r\\n\\\\"]|\\\\[^\\t\\n])+``."""
    i = start
    n = len(text)
    while i < n:
        ch = text[i]
        if ch == "\\":
            if i + 1 < n and text[i + 1] not in "\t\n":
                i += 2
                continue
            break
        if ch in WORD_STOP:
            break
        i += 1
    return i


def _unescape(raw: str) -> str:
    """A word as sudo stores it: each backslash escape collapsed to its character."""
    return re.sub(r"\\(.)", r"\1", raw, flags=re.DOTALL)


class _Lexer:
    """sudo's toke.l for the parts that decide grants; one pass, linear in the text."""

    def __init__(self, text: str) -> None:
        # sudo adds a missing final newline.
        self.text = text if text.endswith("\n") else text + "\n"
        self.pos = 0
        self.bol = True
        self.continued = False
        self.expect_path = False  # after CWD/CHROOT: the value is a path word, not a command
        self.regex_fails_before = 0  # memo: no "^...$" command starts before this position

    def tokens(self) -> Iterator[Token]:
        text = self.text
        n = len(text)
        while self.pos < n:
            ch = text[self.pos]
            start = self.pos
            if ch in BLANKS:
                while self.pos < n and text[self.pos] in BLANKS:
                    self.pos += 1
                if self.bol and (keyword := self._bol_keyword(start)) is not None:
                    yield from self._entry(keyword)
                    continue
                self.bol = False
                continue
            if ch == "\\" and (m := CONTINUATION.match(text, self.pos)):
                self.pos = m.end()
                self.continued = True
                self.bol = True
                continue
            if m := NEWLINE.match(text, self.pos):
                self.pos = m.end()
                yield self._newline()
                continue
            if ch in "(),:" or (ch == "=" and not self.bol):
                # punctuation: the common case, without the generic path's look-ups
                self.pos += 1
                self.bol = False
                self.expect_path = self.expect_path and ch == "="
                yield PUNCTUATION[ch]
                continue
            if self.bol and (keyword := self._bol_keyword(start)) is not None:
                yield from self._entry(keyword)
                continue
            self.bol = False
            if ch == "#":
                if m := ID.match(text, self.pos):
                    self.pos = m.end()
                    yield Token("WORD", m.group())
                    continue
                yield from self._comment()
                continue
            yield from self._token(ch)

    def _newline(self) -> Token:
        self.bol = True
        self.continued = False
        return Token("NL")

    def _comment(self) -> Iterator[Token]:
        text = self.text
        nxt = text[self.pos + 1] if self.pos + 1 < len(text) else ""
        after = text[self.pos + 2] if self.pos + 2 < len(text) else ""
        if (nxt == "\r" and after != "\n") or (nxt == "-" and after in "\r\n"):
            # Only "#" itself matches the comment rule, with no newline: sudo's lexer errors.
            self.pos += 1
            yield Token("ERROR", "#")
            return
        end = text.find("\n", self.pos)
        self.pos = len(text) if end < 0 else end + 1
        yield self._newline()

    def _bol_keyword(self, start: int) -> Token | None:
        """``#include`` at column 0, ``Defaults``/``*_Alias``/``@include`` after blanks."""
        text = self.text
        i = self.pos
        if start == i and INCLUDE_AT_BOL.match(text, i):
            kind: TokenKind = "INCLUDEDIR" if text.startswith("#includedir", i) else "INCLUDE"
            self.pos = i + len("#includedir" if kind == "INCLUDEDIR" else "#include")
            self.bol = False
            return Token("ERROR") if self.continued else Token(kind)
        end = _word_end(text, i)
        word = text[i:end]
        if word in ("@include", "@includedir"):
            return None  # not anchored: handled by _token
        if word == "Defaults" or word.startswith("Defaults@"):
            self.pos = i + 8
            self.bol = False
            return Token("ERROR") if self.continued else Token("DEFAULTS")
        if word in ALIAS_KEYWORDS:
            self.pos = end
            self.bol = False
            return Token("ERROR") if self.continued else Token("ALIASKW", ALIAS_KEYWORDS[word])
        return None

    def _entry(self, keyword: Token) -> Iterator[Token]:
        """A keyword that begins a line, then what it swallows: a Defaults entry whole,
        the argument of ``#include``/``#includedir`` (only ever at column 0)."""
        yield keyword
        if keyword.kind == "DEFAULTS":
            yield from self._skip_entry()
        elif keyword.kind in ("INCLUDE", "INCLUDEDIR"):
            yield from self._include_argument()

    def _include_argument(self) -> Iterator[Token]:
        """The path after an include keyword: a bare word or a double-quoted string."""
        text = self.text
        while self.pos < len(text) and text[self.pos] in BLANKS:
            self.pos += 1
        if self.pos < len(text) and text[self.pos] == '"':
            yield from self._string(as_include=True)
            return
        match = INCLUDE_WORD.match(text, self.pos)
        if match is not None:
            self.pos = match.end()
            yield Token("WORD", _unescape(match.group()))

    def _skip_entry(self) -> Iterator[Token]:
        """A Defaults entry grants nothing: skip to its end, honouring strings and
        continuations, so what follows is read where sudo reads it."""
        text = self.text
        n = len(text)
        in_string = False
        while self.pos < n:
            ch = text[self.pos]
            if ch == "\\":
                if m := CONTINUATION.match(text, self.pos):
                    self.pos = m.end()
                    continue
                self.pos += 2
                continue
            if in_string:
                if ch == '"':
                    in_string = False
                elif ch == "\n":
                    self.pos += 1
                    yield Token("ERROR")
                    yield self._newline()
                    return
                self.pos += 1
                continue
            if ch == '"':
                in_string = True
            elif ch == "#" and not ID.match(text, self.pos):
                yield from self._comment()
                return
            elif m := NEWLINE.match(text, self.pos):
                self.pos = m.end()
                yield self._newline()
                return
            self.pos += 1

    def _string(self, as_include: bool = False) -> Iterator[Token]:
        text = self.text
        self.pos += 1  # opening quote
        parts: list[str] = []
        while self.pos < len(text):
            ch = text[self.pos]
            if ch == "\\":
                m = STRING_CONTINUATION.match(text, self.pos)
                if m:
                    self.pos = m.end()
                    continue
                parts.append(text[self.pos : self.pos + 2])
                self.pos += 2
                continue
            if ch == '"':
                self.pos += 1
                value = _unescape("".join(parts))
                if not value:
                    yield Token("ERROR")
                elif as_include:
                    yield Token("WORD", value)
                elif value.startswith("%"):
                    yield Token("USERGROUP", value)
                elif value.startswith("+"):
                    yield Token("NETGROUP", value)
                else:
                    yield Token("WORD", value)
                return
            if ch in "\r\n":
                yield Token("ERROR")
                return
            parts.append(ch)
            self.pos += 1
        yield Token("ERROR")

    def _token(self, ch: str) -> Iterator[Token]:
        text = self.text
        i = self.pos
        if self.expect_path and ch != "=":
            self.expect_path = False
            path = PATH_RE.match(text, i)
            end = max(_word_end(text, i), path.end() if path else i)
            if end > i:
                self.pos = end
                yield Token("WORD", _unescape(text[i:end]))
                return
        if ch in "(),=:":
            self.pos += 1
            yield Token(ch)  # type: ignore[arg-type]
            return
        if ch == "!":
            end = i
            while end < len(text) and text[end] == "!":
                end += 1
            self.pos = end
            if (end - i) % 2:
                yield Token("!")
            return
        if ch == '"':
            yield from self._string()
            return
        if ch == "%":
            rest = i + 2 if text.startswith("%:", i) else i + 1
            id_match = ID.match(text, rest)
            end = id_match.end() if id_match else _word_end(text, rest)
            if end == rest:
                self.pos = rest
                yield Token("ERROR")
                return
            self.pos = end
            yield Token("USERGROUP", _unescape(text[i:end]))
            return
        if ch == "+":
            end = _word_end(text, i + 1)
            self.pos = max(end, i + 1)
            yield Token("NETGROUP", text[i:end]) if end > i + 1 else Token("ERROR")
            return
        if ch == "/" and (m := PATH_RE.match(text, i)):
            word_end = _word_end(text, i)
            if m.end() >= word_end:
                self.pos = m.end()
                if not m.group().endswith("/"):
                    self._command_args()
                yield Token("COMMAND", m.group())
                return
        if ch == "^" and (regex_end := self._regex_end(i)) is not None:
            command = text[i:regex_end]
            self.pos = regex_end
            self._command_args()
            yield Token("COMMAND", command)
            return
        tag = TAG_RE.match(text, i)
        end = _word_end(text, i)
        ipv6 = IPV6_RE.match(text, i)
        if tag is not None and tag.end() > end:
            self.pos = tag.end()
            yield Token("TAG", tag.group().rstrip(": \t"))
            return
        if ipv6 is not None and ipv6.end() > end:
            self.pos = ipv6.end()
            yield Token("WORD", ipv6.group())
            return
        if end == i:
            self.pos = i + 1
            yield Token("ERROR", ch)
            return
        word = text[i:end]
        self.pos = end
        if word in ("@include", "@includedir"):
            if self.continued:
                yield Token("ERROR")
                return
            yield Token("INCLUDEDIR" if word == "@includedir" else "INCLUDE")
            yield from self._include_argument()
        elif word == "ALL":
            yield Token("ALL")
        elif word in OPTIONS:
            self.expect_path = word in ("CWD", "CHROOT")
            yield Token("OPTION", word)
        elif word == "sudoedit":
            self._command_args()
            yield Token("COMMAND", word)
        elif word in DIGEST_NAMES and (m := DIGEST_RE.match(text, end)):
            self.pos = m.end()
            yield Token("DIGEST", word)
        elif ALIAS_NAME.fullmatch(word):
            yield Token("ALIAS", word)
        else:
            yield Token("WORD", _unescape(word))

    def _regex_end(self, start: int) -> int | None:
        """End of a ``^...$`` command regex at ``start``, in linear time over the text: a
        failed scan stops at a terminator that every later start before it would reach too."""
        if start < self.regex_fails_before:
            return None
        text = self.text
        j = start + 1
        while j < len(text):
            ch = text[j]
            if ch == "\\" and j + 1 < len(text) and text[j + 1] in "#$":
                j += 2
                continue
            if ch == "$":
                return j + 1
            if ch in "#\r\n":
                break
            j += 1
        self.regex_fails_before = j
        return None

    def _command_args(self) -> None:
        """Skip a command's arguments (sudo's GOTCMND state): they end at ``# : , =`` or
        the end of the line; an unknown backslash escape is an error, kept for the parser."""
        text = self.text
        n = len(text)
        while self.pos < n:
            ch = text[self.pos]
            if ch in "#:,=\r\n":
                return
            if ch == "\\":
                if m := CONTINUATION.match(text, self.pos):
                    self.pos = m.end()
                    continue
                if self.pos + 1 < n and text[self.pos + 1] in "*?[]!^:\\,= \t#":
                    self.pos += 2
                    continue
                return  # sudo: no match, a syntax error at this character
            self.pos += 1


# ---------------------------------------------------------------- parser


@dataclass
class _CmndSpec:
    runas_users: tuple[Member, ...] | None  # None: no runas list (root)
    runas_myself: bool
    command: Member  # kind all, alias or none (a path: never every command)


@dataclass
class _Privilege:
    hosts: tuple[Member, ...]
    commands: list[_CmndSpec]


@dataclass
class _UserSpec:
    users: tuple[Member, ...]
    privileges: list[_Privilege]
    file: str


@dataclass
class _State:
    specs: list[_UserSpec] = field(default_factory=list)
    aliases: dict[str, dict[str, tuple[Member, ...]]] = field(default_factory=dict)
    stack: list[str] = field(default_factory=list)
    files: int = 0
    lines: int = 0
    tokens: int = 0
    hostname: str | None = None


class _SyntaxError(Exception):
    pass


class _PolicyRejected(Exception):
    """sudo refuses every sudoers source ("no valid sudoers sources found")."""


class _Entry:
    """The tokens of one entry, consumed by the recursive-descent parser."""

    def __init__(self, tokens: list[Token]) -> None:
        self.tokens = tokens
        self.index = 0

    def peek(self) -> Token | None:
        return self.tokens[self.index] if self.index < len(self.tokens) else None

    def take(self, *kinds: str) -> Token:
        token = self.peek()
        if token is None or token.kind not in kinds:
            raise _SyntaxError(token.kind if token else "end of entry")
        self.index += 1
        return token

    def accept(self, *kinds: str) -> Token | None:
        token = self.peek()
        if token is not None and token.kind in kinds:
            self.index += 1
            return token
        return None

    def done(self) -> None:
        if self.peek() is not None:
            raise _SyntaxError("trailing tokens")


def _member(entry: _Entry, *, hosts: bool = False) -> Member:
    negated = entry.accept("!") is not None
    token = entry.take("WORD", "USERGROUP", "NETGROUP", "ALIAS", "ALL")
    if token.kind == "ALL":
        return Member("all", "ALL", negated)
    if token.kind == "ALIAS":
        return Member("alias", token.text, negated)
    if token.kind == "NETGROUP" or hosts:
        return Member("none", token.text, negated)
    if token.kind == "USERGROUP":
        name = token.text[1:]
        if name.startswith(":"):
            return Member("none", token.text, negated)
        if name.startswith("#"):
            return Member("gid", name, negated)
        return Member("group", name, negated)
    if token.text.startswith("#"):
        return Member("uid", token.text, negated)
    return Member("name", token.text, negated)


def _member_list(entry: _Entry, *, hosts: bool = False) -> tuple[Member, ...]:
    members = [_member(entry, hosts=hosts)]
    while entry.accept(","):
        members.append(_member(entry, hosts=hosts))
    return tuple(members)


def _command(entry: _Entry) -> Member:
    negated = entry.accept("!") is not None
    token = entry.take("ALL", "ALIAS", "COMMAND")
    if token.kind == "ALL":
        return Member("all", "ALL", negated)
    if token.kind == "ALIAS":
        return Member("alias", token.text, negated)
    return Member("none", token.text, negated)


def _digest_command(entry: _Entry) -> Member:
    digested = entry.accept("DIGEST") is not None
    command = _command(entry)
    if digested and command.kind != "none":
        raise _SyntaxError("a digest requires a path name")
    return command


def _cmndspec(entry: _Entry, previous: _CmndSpec | None) -> _CmndSpec:
    runas_users: tuple[Member, ...] | None = None
    myself = False
    explicit = False
    if entry.accept("("):
        explicit = True
        if entry.accept(")"):
            myself = True  # "()": run as the invoking user
        else:
            if entry.accept(":"):
                if not (entry.peek() and entry.peek().kind == ")"):  # type: ignore[union-attr]
                    _member_list(entry)
                myself = True  # no runas user: the invoking user with another group
            else:
                runas_users = _member_list(entry)
                if entry.accept(":"):
                    _member_list(entry)
            entry.take(")")
    while (option := entry.accept("OPTION")) is not None:
        entry.take("=")
        entry.take("WORD", "COMMAND", "ALIAS", "ALL")
        del option
    while entry.accept("TAG"):
        pass
    command = _digest_command(entry)
    if not explicit and previous is not None:
        runas_users, myself = previous.runas_users, previous.runas_myself
    return _CmndSpec(runas_users, myself, command)


def _privilege(entry: _Entry) -> _Privilege:
    hosts = _member_list(entry, hosts=True)
    entry.take("=")
    commands = [_cmndspec(entry, None)]
    while entry.accept(","):
        commands.append(_cmndspec(entry, commands[-1]))
    return _Privilege(hosts, commands)


def _alias_members(entry: _Entry, kind: str) -> tuple[Member, ...]:
    if kind == "Cmnd_Alias":
        members = [_digest_command(entry)]
        while entry.accept(","):
            members.append(_digest_command(entry))
        return tuple(members)
    return _member_list(entry, hosts=kind == "Host_Alias")


def _parse_entry(tokens: list[Token], path: str, state: _State) -> None:
    entry = _Entry(tokens)
    first = entry.peek()
    if first is None:
        return
    if first.kind == "ALIASKW":
        entry.take("ALIASKW")
        table = state.aliases.setdefault(first.text, {})
        while True:  # each definition is added as soon as it is read, as sudo's parser does
            name = entry.take("ALIAS").text
            entry.take("=")
            members = _alias_members(entry, first.text)
            if name in table:
                raise _SyntaxError(f"alias {name} already defined")
            table[name] = members
            if not entry.accept(":"):
                break
        entry.done()
        return
    users = _member_list(entry)
    privileges = [_privilege(entry)]
    while entry.accept(":"):
        privileges.append(_privilege(entry))
    entry.done()
    state.specs.append(_UserSpec(users, privileges, path))


def _include_target(argument: str, current: str, state: _State, warnings: list[str]) -> str | None:
    if "%h" in argument:
        if state.hostname is None:
            warnings.append(
                f"{safe_path(argument)}: sudoers include names the host (%h), "
                "and the guest has no /etc/hostname"
            )
            return None
        argument = argument.replace("%h", state.hostname)
    if argument.startswith("/"):
        return argument
    directory = current.rsplit("/", 1)[0]
    return directory + "/" + argument


def _parse_file(fs: GuestFS, path: str, state: _State, warnings: list[str], explicit: bool) -> None:
    if path in state.stack:
        warnings.append(f"{safe_path(path)}: sudoers include cycle, not read again")
        return
    if len(state.stack) >= MAX_DEPTH or state.files >= MAX_FILES:
        warnings.append(f"{safe_path(path)}: sudoers includes too deep or too many, skipped")
        return
    lines = read_lines(fs, path, warnings)
    if lines is None:
        if explicit and path != SUDOERS_PATH and fs.lstat(path) is None:
            warnings.append(f"{safe_path(path)}: included sudoers file missing")
        return
    if state.lines + len(lines) > MAX_TOTAL_LINES:
        warnings.append(f"{safe_path(path)}: sudoers files over {MAX_TOTAL_LINES} lines in all, "
                        "not read")  # fmt: skip
        return
    state.lines += len(lines)
    state.files += 1
    state.stack.append(path)
    errors = 0
    try:
        pending: list[Token] = []
        broken = False
        for token in itertools.chain(_Lexer("\n".join(lines)).tokens(), [Token("NL", "EOF")]):
            state.tokens += 1
            if state.tokens > MAX_TOTAL_TOKENS:
                warnings.append(f"{safe_path(path)}: sudoers files over {MAX_TOTAL_TOKENS} "
                                "tokens in all, the rest not read")  # fmt: skip
                break
            if token.text == "EOF" and pending:
                # A final backslash continued the last entry into the end of the file: sudo's
                # parser cannot recover there and rejects the whole policy.
                raise _PolicyRejected(path)
            if token.kind == "ERROR":
                broken = True
            if token.kind != "NL":
                pending.append(token)
                continue
            entry, pending = pending, []
            if broken:
                errors += 1
                broken = False
                continue
            if entry and entry[0].kind in ("INCLUDE", "INCLUDEDIR"):
                if len(entry) != 2 or entry[1].kind != "WORD":
                    errors += 1
                    continue
                _follow_include(fs, entry[0].kind, entry[1].text, path, state, warnings)
                continue
            if entry and entry[0].kind == "DEFAULTS":
                continue
            try:
                _parse_entry(entry, path, state)
            except _SyntaxError:
                errors += 1
    finally:
        state.stack.pop()
    if errors:
        warnings.append(
            f"{safe_path(path)}: {errors} sudoers entr{'y' if errors == 1 else 'ies'} "
            "with syntax errors ignored, as sudo ignores them"
        )


def _follow_include(
    fs: GuestFS, kind: str, argument: str, current: str, state: _State, warnings: list[str]
) -> None:
    target = _include_target(argument, current, state, warnings)
    if target is None:
        return
    if kind == "INCLUDE":
        _parse_file(fs, target, state, warnings, explicit=True)
        return
    if not is_dir(fs, target):
        return  # a missing include directory is not an error for sudo
    for name in sorted(
        list_dir(fs, target, warnings), key=lambda n: n.encode("utf-8", "surrogateescape")
    ):
        if not name or name.endswith("~") or "." in name:
            continue
        child = target.rstrip("/") + "/" + name
        st = fs.stat(child)
        if st is not None and st.kind != "file":
            continue  # sudo reads regular files only
        # A dangling or looping link is skipped by sudo too; reading it says why.
        _parse_file(fs, child, state, warnings, explicit=False)


# ---------------------------------------------------------------- decisions


def _runs_as_root(spec: _CmndSpec, runas: _Resolver) -> bool:
    if spec.runas_myself:
        return False
    if spec.runas_users is None:
        return True  # no runas list: sudo's runas_default, root
    return runas.members(spec.runas_users) is True


def _command_leaf(member: Member) -> bool | None:
    """An arbitrary command matches ``ALL`` only (a path names one command)."""
    return (not member.negated) if member.kind == "all" else None


def _every_host(
    hosts: tuple[Member, ...], aliases: dict[str, tuple[Member, ...]], depth: int = 0
) -> bool:
    for member in reversed(hosts):
        if member.kind == "all":
            return not member.negated
        if member.kind == "alias" and depth < MAX_ALIAS_DEPTH and member.value in aliases:
            inner = _every_host(aliases[member.value], aliases, depth + 1)
            return inner != member.negated if inner else False
        return False
    return False


def sudoers_path(fs: GuestFS, warnings: list[str]) -> str:
    """The policy file sudo reads: ``sudoers_file=`` of the ``Plugin sudoers_policy`` line
    of ``/etc/sudo.conf`` (a ``#`` at a line's start or after a blank starts a comment, as
    sudo_parseln reads it; the first such line counts), else ``/etc/sudoers``."""
    path = SUDOERS_PATH
    for line in read_lines(fs, SUDO_CONF, warnings) or []:
        comment = re.search(r"(?:^|(?<=[ \t]))#", line)
        words = (line[: comment.start()] if comment else line).split()
        if len(words) >= 3 and words[0].lower() == "plugin" and words[1] == "sudoers_policy":
            for arg in words[3:]:
                if arg.startswith("sudoers_file="):
                    path = arg[len("sudoers_file=") :]
            break  # sudo keeps the first policy plugin line
    return path


def parse_sudoers(fs: GuestFS, warnings: list[str], path: str | None = None) -> Sudoers:
    """The rules on running every command as root found from ``path`` (the file sudo.conf
    names, else /etc/sudoers) and its includes."""
    if path is None:
        path = sudoers_path(fs, warnings)
    state = _State()
    hostname = read_text(fs, "/etc/hostname", [], cap=4096)
    if hostname is not None and hostname.strip():
        state.hostname = hostname.strip().split("\n", 1)[0].split(".", 1)[0]
    try:
        _parse_file(fs, path, state, warnings, explicit=True)
    except _PolicyRejected as exc:
        warnings.append(f"{safe_path(str(exc))}: ends inside an entry continued by a backslash: "
                        "sudo rejects the whole policy and grants nothing")  # fmt: skip
        return Sudoers(grants=(), user_aliases={})
    runas = _Resolver(state.aliases.get("Runas_Alias", {}), _user_leaf("root", 0, ROOT_GROUPS, {0}))
    commands = _Resolver(state.aliases.get("Cmnd_Alias", {}), _command_leaf)
    host_aliases = state.aliases.get("Host_Alias", {})
    grants: list[SudoGrant] = []
    for spec in state.specs:
        for privilege in spec.privileges:
            every_host = _every_host(privilege.hosts, host_aliases)
            for command in privilege.commands:
                verdict = commands.member(command.command)
                if verdict is None or not _runs_as_root(command, runas):
                    continue
                grants.append(SudoGrant(spec.users, spec.file, verdict, every_host))
    return Sudoers(grants=tuple(grants), user_aliases=dict(state.aliases.get("User_Alias", {})))
