"""Feeds benchmark (issue 16): import speed and re-judging speed, on this machine.

- importing the three real CVRF months of ../shared/vulndata (seconds, records per second);
- importing a generated OSV set of 100,000 records in one ``.zip`` (seconds, records/s);
- re-judging 1,000 cached images (bookworm guests of 400 packages each, drawn from a fleet's
  3,000 common packages, each current or a few security updates behind) against those
  feeds through ``evaluate()``, as a scan of unchanged images does: seconds; goal under 5 s;
- re-judging the same images against a changed built-in baseline (issue 21): goal under 2 s.

No image is opened: re-judging is host-side, which is what makes a new import instant.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
import zipfile
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from vmaudit.baseline.loader import load_baseline  # noqa: E402
from vmaudit.baseline.model import Baseline  # noqa: E402
from vmaudit.feeds import FeedsMatcher, import_feeds  # noqa: E402
from vmaudit.judge.rules import evaluate  # noqa: E402
from vmaudit.models import (  # noqa: E402
    AuditedImage,
    Facts,
    ImageInfo,
    ImageRef,
    OsInfo,
    Package,
    ScanReport,
)
from vmaudit.scan import Judge, rejudge  # noqa: E402
from vmaudit.state import StateDB  # noqa: E402

CVRF = REPO.parent / "shared" / "vulndata" / "windows" / "msrc-cvrf"
MONTHS = ("2021-Jun.xml.zst", "2021-Dec.xml.zst", "2024-Jul.xml.zst")
NOW = datetime(2026, 12, 1, tzinfo=UTC)


SOURCES = 30_000  # Debian 12 has about that many source packages
COMMON = 3_000  # the packages images of one fleet draw from
UPDATES = 6  # security updates a package had so far (+deb12u1 .. +deb12uN)


def _updates(source: int) -> int:
    return 1 + (source * 7919) % UPDATES


def _version(source: int, update: int) -> str:
    return f"1.{source % 50}-1+deb12u{update}" if update else f"1.{source % 50}-1"


def osv_zip(path: Path, records: int, seed: int = 16) -> None:
    """``records`` Debian 12 OSV records, each fixed in one of its package's updates."""
    rng = random.Random(seed)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for number in range(records):
            source = rng.randrange(SOURCES)
            fixed = _version(source, rng.randint(1, _updates(source)))
            record = {
                "id": f"DEBIAN-BENCH-{number}",
                "modified": "2025-01-01T00:00:00Z",
                "published": f"20{rng.randrange(18, 26)}-0{rng.randrange(1, 10)}-15T00:00:00Z",
                "aliases": [f"CVE-20{rng.randrange(18, 26)}-{number + 10000}"],
                "affected": [
                    {
                        "package": {"ecosystem": "Debian:12", "name": f"src{source}"},
                        "ranges": [
                            {"type": "ECOSYSTEM", "events": [{"introduced": "0"}, {"fixed": fixed}]}
                        ],
                    }
                ],
            }
            archive.writestr(f"DEBIAN-BENCH-{number}.json", json.dumps(record))


def guests(count: int, per_guest: int, seed: int = 7) -> list[Facts]:
    """Bookworm images of one fleet: common packages, each current or a few updates behind."""
    rng = random.Random(seed)
    found = []
    for number in range(count):
        image = ImageInfo(
            f"/datastore/vm-{number:04d}.qcow2",
            "qcow2",
            1,
            "2026-01-01T00:00:00Z",
            "0" * 64,
            None,
            (),
        )
        packages = []
        for source in rng.sample(range(COMMON), per_guest):
            behind = rng.choice((0, 0, 0, 1, 2))
            version = _version(source, max(0, _updates(source) - behind))
            packages.append(Package(f"bin{source}", version, "amd64", f"src{source}"))
        found.append(
            Facts(
                image,
                OsInfo("linux", "debian", "12.7", None, f"vm{number}", "x86_64", "deb"),
                packages=tuple(packages),
            )
        )
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--images", type=int, default=1_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="vmaudit-feeds-bench-") as tmp:
        folder = Path(tmp)
        db = folder / "feeds.db"

        started = time.perf_counter()
        results = import_feeds([str(CVRF / month) for month in MONTHS], db, lambda _: None)
        cvrf_seconds = time.perf_counter() - started
        cvrf_records = sum(r.counts.added + r.counts.skipped for r in results)

        archive = folder / "all.zip"
        osv_zip(archive, args.records)
        started = time.perf_counter()
        (result,) = import_feeds([str(archive)], db, lambda _: None)
        osv_seconds = time.perf_counter() - started

        matcher = FeedsMatcher.open(db)
        assert matcher is not None
        baseline = Baseline("bench", "", "bench", settings={"vulnerabilities": {}})
        facts = guests(args.images, per_guest=400)
        started, cpu_started = time.perf_counter(), time.process_time()
        findings = 0
        for guest in facts:
            findings += len(evaluate(guest, [baseline], NOW, matcher).findings)
        judge_seconds = time.perf_counter() - started
        judge_cpu = time.process_time() - cpu_started  # what a shared, loaded host hides

        # The operator edits the baseline (idle limit, a package's minimum version, a
        # forbidden package): every cached image is re-judged, none opened (issue 21).
        default = load_baseline("default")
        changed = replace(
            default,
            max_days_idle=30,
            minimum_versions={**default.minimum_versions, "openssl": "3.0.15"},
            forbidden_packages=(*default.forbidden_packages, "telnetd"),
        )
        started, cpu_started = time.perf_counter(), time.process_time()
        baseline_findings = sum(len(evaluate(g, [changed], NOW).findings) for g in facts)
        baseline_seconds = time.perf_counter() - started
        baseline_cpu = time.process_time() - cpu_started

        # The same images as a state database holds them: `vmaudit report` re-judging.
        state = StateDB(folder / "state.db")
        scan_id = state.begin_scan(["bench"], NOW)
        results = [AuditedImage(ImageRef(f.image.path, "qcow2", ()), f) for f in facts]
        for stored in results:
            state.record_result(scan_id, stored, None)
        state.finish_scan(
            scan_id,
            ScanReport(
                "2026-12-01T00:00:00Z",
                "2026-12-01T00:10:00Z",
                ("bench",),
                "high",
                tuple(results),
                0,
            ),
            [],
        )
        started = time.perf_counter()
        last = state.last_report()
        read_seconds = time.perf_counter() - started
        assert last is not None
        again = rejudge(last, Judge((baseline,), None, (), NOW, matcher))
        report_seconds = time.perf_counter() - started
        # ... and as `vmaudit report -b` does it: the state database read, then judged.
        started = time.perf_counter()
        stored = state.last_report()
        assert stored is not None
        rejudged = rejudge(stored, Judge((changed,), None, (), NOW, None))
        state_baseline_seconds = time.perf_counter() - started
        state.close()
        report_findings = sum(len(r.findings) for r in again.results)

    print(
        f"CVRF import: {len(MONTHS)} months, {cvrf_records} Windows advisories in "
        f"{cvrf_seconds:.2f} s ({cvrf_records / cvrf_seconds:,.0f} records/s)"
    )
    print(
        f"OSV import: {result.counts.added:,} records in {osv_seconds:.2f} s "
        f"({result.counts.added / osv_seconds:,.0f} records/s)"
    )
    print(
        f"re-judge: {args.images:,} cached images x 400 packages against "
        f"{result.counts.added + cvrf_records:,} advisories in {judge_seconds:.2f} s "
        f"({judge_cpu:.2f} s of CPU; {findings:,} findings; goal < 5 s)"
    )
    print(
        f"re-judge against a changed baseline: {args.images:,} cached images in "
        f"{baseline_seconds:.2f} s ({baseline_cpu:.2f} s of CPU; {baseline_findings:,} "
        f"findings; goal < 2 s); read from the state database and judged: "
        f"{state_baseline_seconds:.2f} s ({len(rejudged.results):,} images)"
    )
    print(
        f"report re-judge: the state database's {len(again.results):,} cached images read and "
        f"judged in {report_seconds:.2f} s, {read_seconds:.2f} s of it reading the stored facts "
        f"({report_findings:,} findings)"
    )
    return 0 if judge_seconds < 5 and state_baseline_seconds < 2 else 1


if __name__ == "__main__":
    raise SystemExit(main())
