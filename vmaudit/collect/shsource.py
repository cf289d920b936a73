"""What variables a POSIX ``sh`` (Debian's dash) holds after sourcing a config file.

``. /etc/ufw/ufw.conf`` runs the file as shell code, so its values are what dash makes of it:
lines end at ``\\n`` only (``ENABLED=yes\\r`` sets ``yes\\r``); quotes, backslashes and
``$VAR``/``${VAR}`` are expanded; a ``#`` starts a comment only at the start of a word
(``ENABLED=yes#x`` is ``yes#x``); later assignments win; ``export``/``readonly`` assign;
``unset`` removes; prefix assignments persist only before the special builtin ``:``. An
unterminated quote is a syntax error, an assignment to a read-only variable, ``exit`` or
(under ``set -e``) a failing ``false`` end the sourcing script: the caller never continues.

Anything else (other commands, ``$(...)``, ``&&``, pipes, control structures, redirections,
``${X:-y}`` forms) is not evaluated: the variables it could change are reported unknown.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
ASSIGNMENT = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)=")
RESERVED = {"if", "then", "else", "elif", "fi", "do", "done", "case", "esac", "while", "until",
            "for", "{", "}", "!", "in"}  # fmt: skip
OPERATOR_CHARS = set(";&|()<>")
BLANKS = re.compile(r"(?:[ \t]|\\\n)*")  # blanks and line continuations between words
NEWLINES = re.compile(r"\n(?:[ \t]*\n)*")  # a run of empty lines is one separator
PLAIN = re.compile(r"[^ \t\n;&|()<>\\'\"`$=]+")  # characters that stand for themselves


class _Unknown(Exception):
    """A construct this evaluator does not run."""


class _Fatal(Exception):
    """dash would stop the sourcing script here."""


@dataclass
class SourceResult:
    """The variables after sourcing, or why sourcing ends the calling script."""

    variables: dict[str, str]
    fatal: str | None = None  # dash exits the calling script: it never gets past the "."
    unknown: str | None = None  # a construct not evaluated: any variable may have changed
    readonly: set[str] = field(default_factory=set)


@dataclass
class _Word:
    text: str  # expanded value
    raw: str  # as written (for assignment detection)
    quoted_prefix: bool  # the "NAME=" part contained quoting (then it is no assignment)


def _expand_name(name: str, variables: dict[str, str], unset_known: bool) -> str:
    if name in variables:
        return variables[name]
    if not unset_known:
        raise _Unknown(f"${name}")
    return ""


class _Parser:
    def __init__(self, text: str, variables: dict[str, str], unset_known: bool) -> None:
        self.text = text
        self.pos = 0
        self.variables = variables
        self.unset_known = unset_known

    def _dollar(self) -> str:
        """An expansion after ``$`` (self.pos at the ``$``)."""
        text = self.text
        i = self.pos + 1
        if i < len(text) and text[i] == "{":
            end = text.find("}", i)
            if end < 0:
                raise _Fatal("bad substitution")
            inner = text[i + 1 : end]
            self.pos = end + 1
            if NAME.fullmatch(inner) or inner.isdigit():
                return _expand_name(inner, self.variables, self.unset_known)
            raise _Unknown("${" + inner + "}")
        if i < len(text) and text[i] == "(":
            raise _Unknown("$(...)")
        match = NAME.match(text, i)
        if match:
            self.pos = match.end()
            return _expand_name(match.group(), self.variables, self.unset_known)
        if i < len(text) and text[i].isdigit():
            self.pos = i + 1
            return _expand_name(text[i], self.variables, self.unset_known)
        if i < len(text) and text[i] in "#?@*!$-":
            raise _Unknown("$" + text[i])
        self.pos = i
        return "$"  # a lone "$" is literal

    def word(self) -> _Word | None:
        """The next word, or None at an operator, a newline or the end."""
        text = self.text
        n = len(text)
        self.pos = BLANKS.match(text, self.pos).end()  # type: ignore[union-attr]
        if self.pos >= n or text[self.pos] in "\n" or text[self.pos] in OPERATOR_CHARS:
            return None
        if text[self.pos] == "#":
            end = text.find("\n", self.pos)
            self.pos = n if end < 0 else end
            return None
        start = self.pos
        value: list[str] = []
        quoted_prefix = False
        saw_equals = False
        while self.pos < n:
            ch = text[self.pos]
            if ch in " \t\n" or ch in OPERATOR_CHARS:
                break
            if ch == "=" and not saw_equals:
                saw_equals = True
                value.append(ch)
                self.pos += 1
            elif ch == "\\":
                if self.pos + 1 >= n:
                    self.pos += 1
                elif text[self.pos + 1] == "\n":
                    self.pos += 2
                else:
                    quoted_prefix = quoted_prefix or not saw_equals
                    value.append(text[self.pos + 1])
                    self.pos += 2
            elif ch == "'":
                end = text.find("'", self.pos + 1)
                if end < 0:
                    raise _Fatal("Unterminated quoted string")
                quoted_prefix = quoted_prefix or not saw_equals
                value.append(text[self.pos + 1 : end])
                self.pos = end + 1
            elif ch == '"':
                quoted_prefix = quoted_prefix or not saw_equals
                value.append(self._double_quoted())
            elif ch == "`":
                raise _Unknown("`...`")
            elif ch == "$":
                value.append(self._dollar())
            else:
                plain = PLAIN.match(text, self.pos)
                end = plain.end() if plain else self.pos + 1  # a second "=" stands for itself
                value.append(text[self.pos : end])
                self.pos = end
        return _Word("".join(value), text[start : self.pos], quoted_prefix)

    def _double_quoted(self) -> str:
        text = self.text
        self.pos += 1
        out: list[str] = []
        while self.pos < len(text):
            ch = text[self.pos]
            if ch == '"':
                self.pos += 1
                return "".join(out)
            if ch == "\\" and self.pos + 1 < len(text):
                nxt = text[self.pos + 1]
                if nxt == "\n":
                    self.pos += 2
                    continue
                if nxt in '$`"\\':
                    out.append(nxt)
                    self.pos += 2
                    continue
                out.append(ch)
                self.pos += 1
                continue
            if ch == "`":
                raise _Unknown("`...`")
            if ch == "$":
                out.append(self._dollar())
                continue
            out.append(ch)
            self.pos += 1
        raise _Fatal("Unterminated quoted string")

    def separator(self) -> str | None:
        """The operator or newline ending a command ("" at the end of the text)."""
        text = self.text
        if self.pos >= len(text):
            return ""
        ch = text[self.pos]
        if ch == "\n":
            self.pos = NEWLINES.match(text, self.pos).end()  # type: ignore[union-attr]
            return "\n"
        if ch == ";" and not text.startswith(";;", self.pos):
            self.pos += 1
            return ";"
        return None


def source(
    text: str,
    variables: dict[str, str],
    readonly: set[str] | None = None,
    unset_known: bool = True,
) -> SourceResult:
    """Run ``text`` as dash would run a sourced file, over a copy of ``variables``.

    ``unset_known``: a variable not in ``variables`` is known to be unset (expands to "").
    """
    env = dict(variables)
    frozen = set(readonly or ())
    parser = _Parser(text, env, unset_known)

    def assign(name: str, value: str) -> None:
        if name in frozen:
            raise _Fatal(f"{name}: is read only")
        env[name] = value

    try:
        while True:
            words: list[_Word] = []
            while (word := parser.word()) is not None:
                words.append(word)
            end = parser.separator()
            if end is None:
                raise _Unknown(f"operator {parser.text[parser.pos : parser.pos + 2]!r}")
            if end == ";" and not words:
                raise _Fatal('Syntax error: ";" unexpected')
            _run(words, env, assign, frozen)
            if end == "":
                break
    except _Fatal as exc:
        return SourceResult(env, fatal=str(exc), readonly=frozen)
    except _Unknown as exc:
        return SourceResult(env, unknown=str(exc), readonly=frozen)
    except _Return:
        pass
    return SourceResult(env, readonly=frozen)


class _Return(Exception):
    pass


def _assignment(word: _Word) -> tuple[str, str] | None:
    match = ASSIGNMENT.match(word.raw)
    if match is None or word.quoted_prefix:
        return None
    return match.group(1), word.text[len(match.group(1)) + 1 :]


def _run(words: list[_Word], env: dict[str, str], assign: object, frozen: set[str]) -> None:
    assert callable(assign)
    index = 0
    prefix: list[tuple[str, str]] = []
    while index < len(words) and (pair := _assignment(words[index])) is not None:
        prefix.append(pair)
        index += 1
    if index == len(words):
        for name, value in prefix:
            assign(name, value)
        return
    command = words[index].text
    args = words[index + 1 :]
    if words[index].raw in RESERVED:
        raise _Unknown(f"shell keyword {command!r}")
    if command == ":":
        for name, value in prefix:
            assign(name, value)
        return
    if command == "true":
        return
    if command == "false":
        raise _Fatal("false under set -e")
    if command == "exit":
        raise _Fatal("exit")
    if command == "return":
        raise _Return()
    if prefix:
        raise _Unknown(f"assignments before {command!r}")
    if command in ("export", "readonly"):
        for arg in args:
            pair = _assignment(arg)
            name = pair[0] if pair else arg.text
            if not NAME.fullmatch(name):
                raise _Fatal(f"{command}: bad variable name")
            if pair:
                assign(*pair)
            if command == "readonly":
                frozen.add(name)
        return
    if command == "unset":
        for arg in args:
            if arg.text in frozen:
                raise _Fatal(f"unset: {arg.text}: is read only")
            env.pop(arg.text, None)
        return
    raise _Unknown(f"command {command!r}")
