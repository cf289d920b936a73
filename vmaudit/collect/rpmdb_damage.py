"""The tally of damage an rpm database reader stepped over: a count and the first instance.

A hostile file can be damaged in millions of places; one count and one example make a
warning of bounded size however many there are.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Damage:
    count: int = 0
    first: str | None = None

    def note(self, what: str) -> None:
        self.count += 1
        if self.first is None:
            self.first = what

    def summary(self, kind: str) -> str | None:
        """``"3 damaged page chain(s) skipped (first: ...)"``, or None when undamaged."""
        if not self.count:
            return None
        return f"{self.count} damaged {kind} skipped (first: {self.first})"
