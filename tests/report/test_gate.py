"""The exit code of a scan: 1 for findings at or above --fail-on, else 3 for errors, else 0."""

from __future__ import annotations

import pytest

from vmaudit.judge.verdict import exit_code
from vmaudit.models import (
    AuditedImage,
    Facts,
    FailedImage,
    Finding,
    ImageError,
    ImageInfo,
    ImageRef,
    ImageResult,
    OsInfo,
    Severity,
)

IMAGE = ImageRef("/ds/a.qcow2", "qcow2", ())
FACTS = Facts(
    ImageInfo(IMAGE.path, "qcow2", 1, "2026-01-01T00:00:00Z", "0" * 64, None, (IMAGE.path,)),
    OsInfo("linux"),
)


def _audited(*severities: Severity) -> ImageResult:
    return AuditedImage(IMAGE, FACTS, findings=tuple(Finding("r", s, "x", "m") for s in severities))


ERROR = FailedImage(IMAGE, ImageError("timeout", "took too long"))


@pytest.mark.parametrize(
    ("results", "fail_on", "code"),
    [
        ([], "high", 0),
        ([_audited()], "high", 0),
        ([_audited("medium")], "high", 0),
        ([_audited("high")], "high", 1),
        ([_audited("critical")], "high", 1),
        ([_audited("low")], "low", 1),
        ([_audited("info")], "low", 0),
        ([_audited("critical")], "never", 0),
        ([_audited("medium"), ERROR], "high", 3),
        ([_audited("high"), ERROR], "high", 1),  # findings beat errors
        ([ERROR], "never", 3),
    ],
)
def test_exit_code(results: list[ImageResult], fail_on: str, code: int) -> None:
    assert exit_code(results, fail_on) == code


def test_unknown_fail_on_is_refused() -> None:
    with pytest.raises(ValueError, match="fail_on"):
        exit_code([], "info")
