"""A top-level JSON object read member by member from a byte stream, in bounded memory.

The Debian tracker's JSON is one object of ~40,000 source packages (tens of MB): each
member is decoded on its own with the standard library's decoder, so memory holds one
member at a time, and a member larger than its cap, a truncated file or a nesting too
deep for the decoder is an error naming the member, never a crash.
"""

from __future__ import annotations

import codecs
import json
from collections.abc import Iterator
from typing import IO, Any

CHUNK = 1 << 20


class JsonStreamError(ValueError):
    """Malformed or oversized JSON; ``member`` is the key being read when it went wrong."""

    def __init__(self, message: str, member: str | None = None) -> None:
        super().__init__(message)
        self.member = member


class _Buffer:
    def __init__(self, stream: IO[bytes]) -> None:
        self.stream = stream
        self.decoder = codecs.getincrementaldecoder("utf-8")("strict")
        self.text = ""
        self.pos = 0
        self.eof = False

    def more(self, at_least: int = CHUNK) -> bool:
        """Read at least ``at_least`` more bytes; False at the end of the stream."""
        if self.eof:
            return False
        data = self.stream.read(max(CHUNK, at_least))
        try:
            self.text = self.text[self.pos :] + self.decoder.decode(data, final=not data)
        except UnicodeDecodeError as exc:
            raise JsonStreamError(f"not UTF-8 text ({exc.reason})") from None
        self.pos = 0
        if not data:
            self.eof = True
        return bool(data)

    def skip_space(self) -> str:
        """The next non-blank character ('' at the end)."""
        while True:
            while self.pos < len(self.text) and self.text[self.pos] in " \t\r\n":
                self.pos += 1
            if self.pos < len(self.text):
                return self.text[self.pos]
            if not self.more():
                return ""


_DECODER = json.JSONDecoder()


def _decode(buffer: _Buffer, cap: int, member: str | None) -> Any:
    while True:
        try:
            value, end = _DECODER.raw_decode(buffer.text, buffer.pos)
        except json.JSONDecodeError as exc:
            pending = len(buffer.text) - buffer.pos
            if pending > cap:
                raise JsonStreamError(f"a value larger than {cap} characters", member) from None
            # Incomplete so far: read as much again (linear overall), then retry.
            if not buffer.more(pending):
                raise JsonStreamError(f"truncated or malformed JSON ({exc.msg})", member) from None
            continue
        except RecursionError:
            raise JsonStreamError("JSON nested too deeply", member) from None
        except ValueError as exc:  # e.g. an integer of more digits than Python converts
            raise JsonStreamError(f"unreadable JSON value ({exc})", member) from None
        if end == len(buffer.text) and not buffer.eof and buffer.more():
            continue  # a number may go on in the next chunk: decode it again whole
        buffer.pos = end
        return value


def object_members(stream: IO[bytes], member_cap: int) -> Iterator[tuple[str, Any]]:
    """Each ``(key, value)`` of the top-level object, in file order."""
    buffer = _Buffer(stream)
    first = buffer.skip_space()
    if first == "\ufeff":
        buffer.pos += 1
        first = buffer.skip_space()
    if first != "{":
        raise JsonStreamError("not a JSON object")
    buffer.pos += 1
    key: str | None = None
    while True:
        char = buffer.skip_space()
        if char == "}":
            buffer.pos += 1
            break
        if key is not None:
            if char != ",":
                raise JsonStreamError("expected ',' between members", key)
            buffer.pos += 1
            char = buffer.skip_space()
        if char != '"':
            raise JsonStreamError("expected a member name" if char else "truncated JSON", key)
        name = _decode(buffer, 4096, key)
        if not isinstance(name, str):
            raise JsonStreamError("expected a member name", key)
        key = name
        if buffer.skip_space() != ":":
            raise JsonStreamError("expected ':' after the member name", key)
        buffer.pos += 1
        buffer.skip_space()
        yield key, _decode(buffer, member_cap, key)
    if buffer.skip_space() != "":
        raise JsonStreamError("text after the top-level object", key)
