"""The scan pipeline: discover -> (cache | audit) -> evaluate -> score -> ``ScanReport``.

Only plain data goes in and out; the CLI draws progress from the ``ScanObserver`` events and
renders the report. One image failing is one error row; the scan always goes on.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from vmaudit.baseline.inventory import UNMAPPED, Inventory, load_inventory
from vmaudit.baseline.loader import load_baseline
from vmaudit.baseline.model import Baseline
from vmaudit.errors import ErrorKind
from vmaudit.feeds.db import default_feeds_path
from vmaudit.feeds.match import open_feeds
from vmaudit.judge.risk import score
from vmaudit.judge.rules import VulnerabilitySource, evaluate
from vmaudit.judge.verdict import exit_code
from vmaudit.models import (
    AuditedImage,
    Business,
    Facts,
    FailedImage,
    ImageError,
    ImageRef,
    ImageResult,
    ScanReport,
    Skipped,
)
from vmaudit.run.sizing import batch_size
from vmaudit.timeutil import iso_utc, utc_now

if TYPE_CHECKING:  # judging cached facts (the power-on gate) starts no worker
    from vmaudit.guest.appliance import LaunchOptions
    from vmaudit.run.runner import Auditors, RawOutcome, Runner


class ScanObserver(Protocol):
    def discovered(self, total: int) -> None: ...

    def finished(self, result: ImageResult) -> None: ...

    def notice(self, message: str) -> None: ...


class SilentObserver:
    def discovered(self, total: int) -> None:
        pass

    def finished(self, result: ImageResult) -> None:
        pass

    def notice(self, message: str) -> None:
        pass


class FactsCache(Protocol):
    """What the scan needs of the state database (vmaudit.state)."""

    def cached_facts(self, image: ImageRef) -> Facts | None: ...

    def begin(self, baselines: Sequence[str], started_at: datetime) -> None: ...

    def record(self, result: ImageResult) -> None: ...

    def finish(self, report: ScanReport, roots: Sequence[str]) -> None: ...


def _launch_options() -> LaunchOptions:
    from vmaudit.guest.appliance import LaunchOptions

    return LaunchOptions()


@dataclass(frozen=True)
class ScanOptions:
    paths: tuple[str, ...]
    baselines: tuple[str, ...] = ("default",)
    inventory: str | None = None
    fail_on: str = "high"
    jobs: int = field(default_factory=lambda: os.cpu_count() or 1)
    timeout: float = 600.0
    excludes: tuple[str, ...] = ()
    no_cache: bool = False
    batch: int | None = None  # None: spread evenly over the jobs (vmaudit.run.sizing)
    launch: LaunchOptions = field(default_factory=_launch_options)
    feeds_db: str | None = None  # the vulnerability feeds database; None: vmaudit's default
    libvirt: tuple[str, ...] = ()  # libvirt URIs, or folders of domain XMLs (/etc/libvirt/qemu)
    proxmox: tuple[str, ...] = ()  # Proxmox configuration folders (/etc/pve)
    stage_timing: bool = False  # a notice per appliance: seconds of launch, detect, reads...


@dataclass(frozen=True)
class Judge:
    """Baselines and inventory, loaded once: turn facts into a judged ``ImageResult``."""

    baselines: tuple[Baseline, ...]
    inventory: Inventory | None
    roots: tuple[str, ...]
    now: datetime
    feeds: VulnerabilitySource | None = None  # vuln.cve is judged against it when given
    feeds_notice: str | None = None  # why there are none, for the CLI to say once

    def business(self, image: ImageRef) -> Business:
        if self.inventory is None:
            return UNMAPPED
        root = _root_of(image.path, self.roots)
        return self.inventory.business_for(image.path, image.vm, root, image)

    def judge(self, image: ImageRef, facts: Facts, from_cache: bool) -> AuditedImage:
        evaluation = evaluate(facts, self.baselines, self.now, self.feeds)
        business = self.business(image)
        return AuditedImage(
            image=image,
            facts=facts,
            findings=evaluation.findings,
            risk=score(evaluation.findings, facts.dormancy.days_idle, business.criticality),
            business=business,
            from_cache=from_cache,
            rules_evaluated=evaluation.rules_evaluated,
            not_judged=evaluation.not_judged,
        )

    def outcome(self, image: ImageRef, outcome: RawOutcome) -> ImageResult:
        """An audit's outcome for ``image`` judged: its facts, or its error."""
        if outcome.facts is None:
            error = outcome.error or ImageError(ErrorKind.INTERNAL, "no facts")
            return self.failed(image, error)
        return self.judge(image, outcome.facts, from_cache=False)

    def failed(self, image: ImageRef, error: ImageError) -> FailedImage:
        return FailedImage(image=image, error=error, business=self.business(image))


def _root_of(path: str, roots: Sequence[str]) -> str:
    best = ""
    for root in roots:
        if (path == root or path.startswith(root.rstrip("/") + "/")) and len(root) > len(best):
            best = root
    return best or os.path.dirname(path)


def load_judge(options: ScanOptions, now: datetime) -> Judge:
    """Baselines and inventory; raises ``ConfigError`` (exit 2) before anything is scanned."""
    baselines = tuple(load_baseline(ref) for ref in options.baselines)
    inventory = load_inventory(options.inventory) if options.inventory else None
    roots = tuple(os.path.abspath(p) for p in options.paths)
    feeds_path = Path(options.feeds_db) if options.feeds_db else default_feeds_path()
    feeds, notice = open_feeds(feeds_path)
    if not any(b.vulnerabilities is not None for b in baselines):
        notice = None  # no baseline asks for vulnerabilities: nothing to say
    return Judge(baselines, inventory, roots, now, feeds, notice)


def rejudge(report: ScanReport, judge: Judge) -> ScanReport:
    """A stored report judged again with ``judge``'s baselines and feeds; no image is opened.

    Each audited image keeps its facts and business mapping; findings, risk and the exit
    code are recomputed. ``vmaudit report`` shows the last scan against the current feeds.
    """
    results: list[ImageResult] = []
    for stored in report.results:
        if stored.facts is None:
            results.append(stored)
            continue
        fresh = judge.judge(stored.image, stored.facts, stored.from_cache)
        # scored with the business mapping stored with the scan, not today's inventory
        risk = score(fresh.findings, stored.facts.dormancy.days_idle, stored.business.criticality)
        results.append(replace(fresh, business=stored.business, risk=risk))
    return replace(
        report,
        baselines=tuple(b.name for b in judge.baselines),
        results=tuple(results),
        exit_code=exit_code(results, report.fail_on),
    )


def skipped_ref(skipped: Skipped) -> ImageRef:
    return skipped.image or ImageRef(path=skipped.path, format="unknown", disks=())


def run_scan(
    options: ScanOptions,
    observer: ScanObserver | None = None,
    cache: FactsCache | None = None,
    judge: Judge | None = None,
    auditors: Auditors | None = None,
) -> ScanReport:
    """Scan ``options.paths`` and return the judged report (exit code included).

    ``auditors`` says who discovers and audits (default: local worker processes, as many
    at once as ``options.jobs``); the CLI builds a Dask fleet's (vmaudit.run.fleet) when asked.
    """
    from vmaudit.run.runner import Auditors

    observer = observer or SilentObserver()
    started = utc_now()
    judge = judge or load_judge(options, started)
    return _scan(options, observer, cache, judge, started, auditors or Auditors.local(options.jobs))


def _scan(
    options: ScanOptions,
    observer: ScanObserver,
    cache: FactsCache | None,
    judge: Judge,
    started: datetime,
    auditors: Auditors,
) -> ScanReport:
    found = auditors.discover(options.paths, options.excludes) if options.paths else None
    if options.libvirt or options.proxmox:  # hypervisors' own inventories, read here
        from vmaudit.discover.hypervisor import inventories, merge

        guests = inventories(options.libvirt, options.proxmox, options.paths)
        found = merge(found, guests) if found is not None else guests
    found = found if found is not None else auditors.discover((), options.excludes)
    observer.discovered(len(found.images) + len(found.skipped))
    if cache is not None:
        cache.begin(options.baselines, started)
    results: list[ImageResult] = []

    def done(result: ImageResult) -> None:
        results.append(result)
        if cache is not None:
            cache.record(result)
        observer.finished(result)

    for skipped in found.skipped:
        done(judge.failed(skipped_ref(skipped), ImageError(skipped.kind, skipped.message)))
    to_audit: list[ImageRef] = []
    for image in found.images:
        facts = None if (cache is None or options.no_cache) else cache.cached_facts(image)
        if facts is not None:
            done(judge.judge(image, facts, from_cache=True))
        else:
            to_audit.append(image)
    from vmaudit.run.runner import Runner

    runner = Runner(
        options.jobs,
        options.timeout,
        options.launch,
        on_notice=observer.notice,
        batch=batch_size(options.batch, len(to_audit), auditors.capacity),
        executor=auditors.executor,
        stage_timing=options.stage_timing,
    )
    for outcome in runner.run(to_audit, started):
        done(judge.outcome(outcome.image, outcome))
    results.sort(key=lambda r: r.image.path)
    report = ScanReport(
        started_at=iso_utc(started),
        finished_at=iso_utc(utc_now()),
        baselines=tuple(options.baselines),
        fail_on=options.fail_on,
        results=tuple(results),
        exit_code=exit_code(results, options.fail_on),
    )
    if cache is not None:
        cache.finish(report, judge.roots)
    return report


def audit_one(
    image: ImageRef, runner: Runner, judge: Judge, cache: FactsCache | None = None
) -> ScanReport:
    """One image audited now (``vmaudit watch``), recorded in the state as a one-image scan."""
    started = utc_now()
    judge = replace(judge, now=started)  # a long watch judges each image on its own day
    if cache is not None:
        cache.begin([b.name for b in judge.baselines], started)
    result = judge.outcome(image, runner.run_one(image, started))
    if cache is not None:
        cache.record(result)
    report = ScanReport(
        started_at=iso_utc(started),
        finished_at=iso_utc(utc_now()),
        baselines=tuple(b.name for b in judge.baselines),
        fail_on="never",
        results=(result,),
        exit_code=exit_code([result], "never"),
    )
    if cache is not None:
        cache.finish(report, [])
    return report
