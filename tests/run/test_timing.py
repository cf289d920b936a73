"""Stage timing of an appliance batch: what --verbose prints, and what crosses the pipe."""

from __future__ import annotations

import time

from vmaudit.run.timing import STAGES, StageClock, StageTimes, TimedHandle


class Slow:
    """Stands for any object with methods: the proxy times calls, whatever they are."""

    label = "not callable"

    def wait(self, seconds: float) -> float:
        time.sleep(seconds)
        return seconds

    def fail(self) -> None:
        raise RuntimeError("appliance error")


def test_reads_are_the_handle_calls_and_parse_the_rest() -> None:
    clock = StageClock()
    handle = TimedHandle(Slow(), clock)
    with clock.collecting():
        assert handle.wait(0.05) == 0.05
        time.sleep(0.05)  # host-side parsing
    totals = clock.totals
    assert 0.05 <= totals["reads"] < 0.09
    assert 0.04 <= totals["parse"] < 0.09
    assert clock.calls == 1
    assert handle.label == "not callable"


def test_a_failing_call_is_counted_and_still_raises() -> None:
    clock = StageClock()
    handle = TimedHandle(Slow(), clock)
    try:
        handle.fail()
    except RuntimeError as exc:
        assert str(exc) == "appliance error"
    else:
        raise AssertionError("the error was swallowed")
    assert clock.calls == 1


def test_stage_times_cross_the_pipe_and_read_as_one_line() -> None:
    clock = StageClock()
    with clock.stage("launch"):
        time.sleep(0.01)
    times = clock.result(images=3)
    again = StageTimes.from_dict(times.to_dict())
    assert again == times
    assert [name for name, _ in times.seconds] == list(STAGES)
    line = times.line()
    assert line.startswith("appliance of 3 image(s):") and "launch 0.0" in line


def test_figures_that_are_not_ours_are_ignored() -> None:
    assert StageTimes.from_dict(None) is None
    assert StageTimes.from_dict({"images": 1, "seconds": {"launch": "soon"}}) is None
    assert StageTimes.from_dict({"images": "x", "seconds": {}}) is None
