"""Each feed ecosystem's own version ordering, and apk's, which no maintained library offers.

Debian and Ubuntu compare as dpkg does (python-debian), the RHEL family and SUSE as rpm
does (rpm-vercmp), Alpine as apk-tools does. apk's algorithm is written out here from
apk-tools' ``src/version.c`` (the ``digit{.digit}...{letter}{_suf{#}}...{~hash}{-r#}``
grammar), token by token, so an Alpine fix is never judged by dotted numbers.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache

from debian.debian_support import Version as DebianVersion
from rpm_vercmp import vercmp as _rpm_segment_compare

from vmaudit.versions import dpkg_compare, rpm_compare

Comparator = Callable[[str, str], int]

# apk-tools' token kinds, in its order: a version that ends earlier, or goes on with a
# token of a later kind, is the older one (unless the other goes on with a pre-release).
_INITIAL, _DIGIT, _LETTER, _SUFFIX, _SUFFIX_NO, _HASH, _REVISION, _END, _INVALID = range(9)
_PRE_SUFFIXES = ("alpha", "beta", "pre", "rc")
_POST_SUFFIXES = ("cvs", "svn", "git", "hg", "p")
# Suffix ranks: pre-releases below the plain release (rank 0), post-releases above it.
_SUFFIX_RANK = {name: rank - len(_PRE_SUFFIXES) for rank, name in enumerate(_PRE_SUFFIXES)}
_SUFFIX_RANK.update({name: rank + 1 for rank, name in enumerate(_POST_SUFFIXES)})
_DIGITS = re.compile(r"[0-9]*")
_LOWER = re.compile(r"[a-z]*")
_HEX = re.compile(r"[0-9a-fA-F]*")


@dataclass
class _Token:
    kind: int
    text: str = ""
    number: int = 0
    suffix: int = 0


class _ApkTokens:
    """apk-tools' token_first/token_next over one version string."""

    def __init__(self, version: str) -> None:
        self.text = version
        self.pos = 0
        self.token = _Token(_INITIAL)
        self._digits()

    def _digits(self) -> None:
        found = _DIGITS.match(self.text, self.pos)
        digits = found.group(0) if found else ""
        self.pos += len(digits)
        self.token.text = digits
        self.token.number = int(digits) if digits else 0
        if not digits:
            self.token.kind = _INVALID

    def advance(self) -> None:
        token, text = self.token, self.text
        if self.pos >= len(text):
            token.kind = _END
            return
        char = text[self.pos]
        if "a" <= char <= "z":
            if token.kind > _DIGIT:
                token.kind = _INVALID
                return
            token.kind, token.text = _LETTER, char
            self.pos += 1
        elif char == "." or (char.isdigit() and char.isascii()):
            if char == ".":
                if token.kind > _DIGIT:
                    token.kind = _INVALID
                    return
                self.pos += 1
            if token.kind in (_INITIAL, _DIGIT):
                token.kind = _DIGIT
            elif token.kind == _SUFFIX:
                token.kind = _SUFFIX_NO
            else:
                token.kind = _INVALID
                return
            self._digits()
        elif char == "_":
            if token.kind > _SUFFIX_NO:
                token.kind = _INVALID
                return
            found = _LOWER.match(text, self.pos + 1)
            name = found.group(0) if found else ""
            self.pos += 1 + len(name)
            if name not in _SUFFIX_RANK:
                token.kind = _INVALID
                return
            token.kind, token.text, token.suffix = _SUFFIX, name, _SUFFIX_RANK[name]
        elif char == "~":
            found = _HEX.match(text, self.pos + 1)
            digest = found.group(0) if found else ""
            if token.kind >= _HASH or not digest:
                token.kind = _INVALID
                return
            self.pos += 1 + len(digest)
            token.kind, token.text = _HASH, digest
        elif char == "-":
            if token.kind >= _REVISION or not text.startswith("-r", self.pos):
                token.kind = _INVALID
                return
            self.pos += 2
            token.kind = _REVISION
            self._digits()
        else:
            token.kind = _INVALID


def _token_order(left: _Token, right: _Token) -> int:
    if left.kind == _DIGIT and (left.text.startswith("0") or right.text.startswith("0")):
        # a leading zero makes apk compare the digits as text, as Gentoo does
        return _text_order(left.text, right.text)
    if left.kind in (_INITIAL, _DIGIT, _SUFFIX_NO, _REVISION):
        a, b = left.number, right.number
    elif left.kind == _LETTER:
        a, b = ord(left.text), ord(right.text)
    elif left.kind == _SUFFIX:
        a, b = left.suffix, right.suffix
    else:
        return _text_order(left.text, right.text)
    return (a > b) - (a < b)


def _text_order(left: str, right: str) -> int:
    # apk_blob_sort: bytes, then the shorter first
    a, b = left.encode(), right.encode()
    common = min(len(a), len(b))
    if a[:common] != b[:common]:
        return -1 if a[:common] < b[:common] else 1
    return (len(a) > len(b)) - (len(a) < len(b))


def apk_compare(left: str, right: str) -> int:
    """apk-tools' ordering of two Alpine package versions: -1, 0 or 1."""
    a, b = _ApkTokens(left), _ApkTokens(right)
    while a.token.kind == b.token.kind and a.token.kind < _END:
        order = _token_order(a.token, b.token)
        if order:
            return order
        a.advance()
        b.advance()
    ka, kb = a.token.kind, b.token.kind
    if ka == kb:
        return 0
    if ka == _SUFFIX and a.token.suffix < 0:
        return -1
    if kb == _SUFFIX and b.token.suffix < 0:
        return 1
    return -1 if ka > kb else 1


def apk_valid(version: str) -> bool:
    """Whether apk-tools accepts the version (apk_version_validate)."""
    tokens = _ApkTokens(version)
    while tokens.token.kind < _END:
        tokens.advance()
    return tokens.token.kind == _END


def _dpkg_valid(version: str) -> bool:
    try:
        DebianVersion(version)
    except ValueError:
        return False
    return True


_RPM_TEXT = re.compile(r"[0-9A-Za-z.+~^_:-]+")


def _rpm_valid(version: str) -> bool:
    if not _RPM_TEXT.fullmatch(version):
        return False
    try:
        _rpm_segment_compare(version, version)
    except (ValueError, TypeError):
        return False
    return True


@dataclass(frozen=True)
class Ordering:
    """One family's comparator and the check that a feed's version is one of its own."""

    name: str  # dpkg | rpm | apk
    compare: Comparator
    valid: Callable[[str], bool]


# Comparisons repeat across a fleet (each image's version against the same fixed
# versions): each ordering's answers are memoised, the answer itself always the library's.
COMPARE_CACHE = 1 << 18
DPKG = Ordering("dpkg", lru_cache(maxsize=COMPARE_CACHE)(dpkg_compare), _dpkg_valid)
RPM = Ordering("rpm", lru_cache(maxsize=COMPARE_CACHE)(rpm_compare), _rpm_valid)
APK = Ordering("apk", lru_cache(maxsize=COMPARE_CACHE)(apk_compare), apk_valid)

# The ecosystem key's family (before the first ':') -> its ordering.
ORDERINGS: dict[str, Ordering] = {
    "Debian": DPKG,
    "Ubuntu": DPKG,
    "Alpine": APK,
    "Red Hat": RPM,
    "Rocky Linux": RPM,
    "AlmaLinux": RPM,
    "SUSE": RPM,
    "openSUSE": RPM,
}


def ordering_for(ecosystem: str) -> Ordering | None:
    """The ordering of an ecosystem key (``Debian:12``), None for one vmaudit cannot judge."""
    return ORDERINGS.get(ecosystem.split(":", 1)[0])
