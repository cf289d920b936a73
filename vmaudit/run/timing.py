"""Where an appliance batch's seconds go: launch, detect, mounts, reads, parse (``--verbose``).

``reads`` is the time spent waiting for the appliance while the collectors ran (every call
through the libguestfs handle); ``parse`` is the rest of the collectors' time, on the host.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

STAGES = ("prepare", "launch", "detect", "mounts", "reads", "parse", "close")


@dataclass(frozen=True)
class StageTimes:
    """Seconds per stage of one appliance batch of ``images`` images."""

    images: int
    seconds: tuple[tuple[str, float], ...]  # (stage, seconds) in STAGES order
    calls: int = 0  # calls through the libguestfs handle

    def line(self) -> str:
        parts = ", ".join(f"{name} {value:.1f}" for name, value in self.seconds)
        total = sum(value for _, value in self.seconds)
        return (
            f"appliance of {self.images} image(s): {total:.1f} s ({parts}; "
            f"{self.calls} appliance calls)"
        )

    def to_dict(self) -> dict[str, Any]:
        return {"images": self.images, "seconds": dict(self.seconds), "calls": self.calls}

    @classmethod
    def from_dict(cls, data: Any) -> StageTimes | None:
        """The worker's figures, or None when they are not what we send."""
        if not isinstance(data, dict) or not isinstance(data.get("seconds"), dict):
            return None
        try:
            seconds = tuple(
                (name, float(data["seconds"][name])) for name in STAGES if name in data["seconds"]
            )
            return cls(int(data["images"]), seconds, int(data.get("calls", 0)))
        except (KeyError, TypeError, ValueError):
            return None


class StageClock:
    """Adds up seconds per stage, and the appliance's own share through ``timed``."""

    def __init__(self) -> None:
        self.totals = dict.fromkeys(STAGES, 0.0)
        self.waiting = 0.0  # seconds inside handle calls, all stages together
        self.calls = 0

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            self.totals[name] += time.perf_counter() - started

    @contextmanager
    def collecting(self) -> Iterator[None]:
        """The collectors' run: split into the appliance's time (reads) and ours (parse)."""
        started, waited = time.perf_counter(), self.waiting
        try:
            yield
        finally:
            reads = self.waiting - waited
            self.totals["reads"] += reads
            self.totals["parse"] += time.perf_counter() - started - reads

    def result(self, images: int) -> StageTimes:
        return StageTimes(images, tuple(self.totals.items()), self.calls)


class TimedHandle:
    """A libguestfs handle whose every call adds to a ``StageClock``'s waiting time."""

    def __init__(self, handle: Any, clock: StageClock) -> None:
        self._handle = handle
        self._clock = clock

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._handle, name)
        if not callable(attribute):
            return attribute
        clock = self._clock

        def timed(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return attribute(*args, **kwargs)
            finally:
                clock.waiting += time.perf_counter() - started
                clock.calls += 1

        return _named(timed, name)


def _named(function: Callable[..., Any], name: str) -> Callable[..., Any]:
    function.__name__ = name
    return function
