"""The scan pipeline without an appliance: facts from a cache, re-judged, and error rows.

The cache here is an in-memory ``FactsCache`` (the protocol the state database implements),
so these tests run in the fast suite; the images are real qcow2 files made by ``qemu-img``,
found by the real discovery. An image the cache does not hold would need an appliance:
none is ever asked for (the auditors refuse to run).
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path

import pytest

from vmaudit.baseline.factsio import facts_from_dict
from vmaudit.discover import discover
from vmaudit.discover.walk import DiscoveryResult
from vmaudit.errors import ErrorKind, ExitCode
from vmaudit.models import Facts, ImageRef, ImageResult, ScanReport
from vmaudit.run.runner import Auditors
from vmaudit.scan import ScanOptions, run_scan

FIXTURES = Path(__file__).resolve().parent / "baseline" / "rules"


class MemoryCache:
    """Facts by image path; records what the scan tells it, as the state database would."""

    def __init__(self, facts: dict[str, Facts]) -> None:
        self.facts = facts
        self.recorded: list[ImageResult] = []
        self.finished: ScanReport | None = None

    def cached_facts(self, image: ImageRef) -> Facts | None:
        return self.facts.get(image.path)

    def begin(self, baselines: Sequence[str], started_at: datetime) -> None:
        self.recorded.clear()

    def record(self, result: ImageResult) -> None:
        self.recorded.append(result)

    def finish(self, report: ScanReport, roots: Sequence[str]) -> None:
        self.finished = report


class NoLaunch:
    """An executor that fails the test if the scan tries to audit anything."""

    def submit(self, fn: Callable[..., object], *args: object, **kwargs: object) -> object:
        pytest.fail(f"the scan asked for an audit of {args[0]!r}")


def auditors() -> Auditors:
    return Auditors(discover, 1, NoLaunch())  # type: ignore[arg-type]


def qcow2(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(path), "16M"], check=True)
    return path


def rule_facts(rule: str, case: str, image: Path) -> Facts:
    facts = facts_from_dict(json.loads((FIXTURES / rule / f"{case}.json").read_text()))
    info = dataclasses.replace(facts.image, path=str(image), disks=(str(image),))
    return dataclasses.replace(facts, image=info)


@pytest.fixture
def store(tmp_path: Path) -> Path:
    qcow2(tmp_path / "store" / "risky" / "risky.qcow2")
    qcow2(tmp_path / "store" / "clean" / "clean.qcow2")
    (tmp_path / "store" / "broken").mkdir()
    (tmp_path / "store" / "broken" / "broken.qcow2").write_bytes(b"QFI\xfb" + b"\xff" * 60)
    return tmp_path / "store"


def cache_for(store: Path) -> MemoryCache:
    risky, clean = store / "risky" / "risky.qcow2", store / "clean" / "clean.qcow2"
    return MemoryCache(
        {
            str(risky): rule_facts("account.extra-uid0", "fail", risky),
            str(clean): rule_facts("account.extra-uid0", "pass", clean),
        }
    )


def test_cached_images_are_judged_without_an_audit(store: Path) -> None:
    cache = cache_for(store)
    report = run_scan(
        ScanOptions(paths=(str(store),), fail_on="high"), cache=cache, auditors=auditors()
    )
    by_name = {Path(r.image.path).parent.name: r for r in report.results}
    assert set(by_name) == {"risky", "clean", "broken"}
    assert by_name["risky"].from_cache and by_name["clean"].from_cache
    assert [f.rule for f in by_name["risky"].findings] == ["account.extra-uid0"]
    assert "account.extra-uid0" not in {f.rule for f in by_name["clean"].findings}
    assert report.exit_code == ExitCode.FINDINGS


def test_an_unopenable_image_is_an_error_row_recorded_like_the_others(store: Path) -> None:
    cache = cache_for(store)
    report = run_scan(
        ScanOptions(paths=(str(store),), fail_on="never"), cache=cache, auditors=auditors()
    )
    broken = next(r for r in report.results if "broken" in r.image.path)
    assert broken.status == "error" and broken.facts is None
    assert broken.error is not None and broken.error.kind is ErrorKind.CORRUPT_IMAGE
    assert {r.image.path for r in cache.recorded} == {r.image.path for r in report.results}
    assert cache.finished is report
    assert report.exit_code == ExitCode.NOT_AUDITED  # nothing fails "never"; one not audited


def test_a_changed_baseline_rejudges_the_cached_facts(store: Path, tmp_path: Path) -> None:
    relaxed = tmp_path / "relaxed.yaml"
    relaxed.write_text(
        "apiVersion: vmaudit/v1\nkind: Baseline\nmetadata:\n  name: relaxed\n"
        "accounts:\n  forbid_extra_uid0: false\n"
    )
    strict = run_scan(ScanOptions(paths=(str(store),)), cache=cache_for(store), auditors=auditors())
    loose = run_scan(
        ScanOptions(paths=(str(store),), baselines=(str(relaxed),)),
        cache=cache_for(store),
        auditors=auditors(),
    )

    def rules(report: ScanReport) -> set[str]:
        return {f.rule for r in report.results if "risky" in r.image.path for f in r.findings}

    assert "account.extra-uid0" in rules(strict)
    assert "account.extra-uid0" not in rules(loose)


def test_with_no_cache_every_image_goes_to_the_auditors(store: Path) -> None:
    asked: list[list[str]] = []

    class Recording:
        def submit(self, fn: Callable[..., object], *args: object, **kwargs: object) -> object:
            asked.append([image.path for image in args[0]])  # type: ignore[attr-defined]
            raise RuntimeError("stop here: no appliance in the fast suite")

    found: Callable[[Sequence[str], Sequence[str]], DiscoveryResult] = discover
    with pytest.raises(RuntimeError, match="no appliance"):
        run_scan(
            ScanOptions(paths=(str(store),), no_cache=True),
            cache=cache_for(store),
            auditors=Auditors(found, 1, Recording()),
        )  # type: ignore[arg-type]
    assert sorted(Path(p).parent.name for batch in asked for p in batch) == ["clean", "risky"]
