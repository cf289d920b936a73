"""Guest-controlled text made safe for a medium: a terminal, an XML file, a spreadsheet cell.

Host names, user names and package names come from the guest and may hold terminal
escapes, newlines, bidi overrides, formula prefixes or bytes that are not text.
"""

from __future__ import annotations

import re

# C0 and C1 controls, DEL, and the Unicode bidi/format controls that reorder what a
# terminal shows ("Trojan Source"); lone surrogates from undecodable bytes.
_TERMINAL_UNSAFE = re.compile(
    "[\x00-\x1f\x7f-\x9f\u200b-\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069\ufeff\ud800-\udfff]"
)
# Everything XML 1.0 forbids (section 2.2), plus the discouraged C1 controls.
_XML_ILLEGAL = re.compile("[^\t\n\r\x20-\x7e\xa0-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _escape_char(match: re.Match[str]) -> str:
    code = ord(match.group(0))
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def terminal_safe(text: str) -> str:
    """Control and reordering characters shown as ``\\xNN``/``\\uNNNN``, never sent raw."""
    return _TERMINAL_UNSAFE.sub(_escape_char, text)


def xml_safe(text: str) -> str:
    """Characters XML 1.0 cannot carry shown as ``\\xNN``; markup escaping is the writer's."""
    return _XML_ILLEGAL.sub(_escape_char, text)


def csv_cell(text: str) -> str:
    """A cell a spreadsheet will show as text: formula starts get a leading ``'``.

    NUL is replaced too: spreadsheet importers and some csv readers cut the row at it.
    """
    text = text.replace("\x00", "\\x00")
    return "'" + text if text.startswith(_FORMULA_START) else text
