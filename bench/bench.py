"""``make bench``: vmaudit against virt-inspector and dissect.target on the same images, one run.

On the sample datastore and on a datastore of 24 images (the sample guests copied under new
names into ``build/bench-24``), in turn: ``virt-inspector`` once per image, dissect.target's
``target-query`` once per image (and once for all images), ``vmaudit scan`` cold (an empty
state database: every image opened), warm (nothing changed: no image opened) and cold through
a local Dask cluster. Prints seconds per image, the ratios against the goals of issue 21
(cold <= 0.1 x virt-inspector and <= dissect.target per image, warm < 2 % of cold), the peak
memory of each vmaudit scan (the PSS summed over its whole process tree, sampled from
/proc: the scan, its workers and their qemu), and cold seconds per image at 8, 16 and 24
images, so that the cost of a launch per batch shows.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from vmaudit.discover.formats import qemu_driver  # noqa: E402
from vmaudit.discover.walk import discover  # noqa: E402
from vmaudit.models import ImageRef  # noqa: E402

VMAUDIT = [sys.executable, "-m", "vmaudit.cli"]
TARGET_QUERY = str(Path(sys.executable).parent / "target-query")
# What vmaudit reads, as dissect.target 3.2x names it: OS name, version and hostname
# (osinfo), accounts (users), packages (dpkg.status); one output type (records).
DISSECT_FUNCTIONS = "osinfo,users,dpkg.status"
GIB = 1 << 30
MIB = 1 << 20
APPLIANCE_BOUND = 1.3 * GIB  # the memory goal: jobs x this + 200 MiB for the host process
HOST_BOUND = 200 * MIB


def kvm_works() -> bool:
    """Whether a plain (KVM) launch works here; virt-inspector does not fall back by itself."""
    probe = (
        "import guestfs\ng=guestfs.GuestFS()\ng.set_backend('direct')\n"
        "g.add_drive_scratch(16*1024*1024)\ng.launch()\ng.close()\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, check=False, timeout=600
    )
    return proc.returncode == 0


def load_average() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} {five:.2f} {fifteen:.2f}"


def tree_pss(root: int) -> int:
    """Proportional set size of ``root`` and all its descendants, in bytes.

    PSS shares each page among the processes that map it, so the sum is the memory the
    process tree takes (a plain sum of RSS counts Python's and qemu's shared libraries once
    per process).
    """
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as handle:
                fields = handle.read().rsplit(b")", 1)[1].split()
        except (OSError, IndexError):
            continue  # gone meanwhile
        children.setdefault(int(fields[1]), []).append(int(entry))
    total, todo = 0, [root]
    while todo:
        pid = todo.pop()
        todo.extend(children.get(pid, []))
        try:
            with open(f"/proc/{pid}/smaps_rollup", "rb") as handle:
                for line in handle:
                    if line.startswith(b"Pss:"):
                        total += int(line.split()[1]) * 1024
                        break
        except (OSError, ValueError):
            continue
    return total


@dataclass(frozen=True)
class Timed:
    seconds: float
    peak_rss: int  # bytes: the process tree's PSS, summed, at its sampled peak
    returncode: int
    stderr: str
    stdout: str


def timed_run(args: Sequence[str], env: dict[str, str] | None = None) -> Timed:
    """Run ``args``, sampling its process tree's resident memory every 0.2 s."""
    started = time.monotonic()
    proc = subprocess.Popen(
        args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=False
    )
    peak = 0
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.wait(0.2):
            peak = max(peak, tree_pss(proc.pid))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    out, err = proc.communicate()
    elapsed = time.monotonic() - started
    done.set()
    sampler.join()
    return Timed(
        elapsed, peak, proc.returncode, err.decode(errors="replace"), out.decode(errors="replace")
    )


def virt_inspector(images: Sequence[ImageRef], env: dict[str, str]) -> float:
    total = 0.0
    for image in images:
        args = ["virt-inspector"]
        for disk in image.disks:
            args += [f"--format={qemu_driver(disk.format)}", "-a", disk.path]
        run = timed_run(args, env)
        total += run.seconds
        if run.returncode != 0:
            print(f"  virt-inspector failed on {image.path}: {run.stderr.strip()[-200:]}")
    return total


def dissect_one_each(images: Sequence[ImageRef]) -> float:
    total = 0.0
    for image in images:
        run = timed_run([TARGET_QUERY, "-q", "-f", DISSECT_FUNCTIONS, "-j", image.path])
        total += run.seconds
        if run.returncode != 0:
            print(f"  target-query failed on {image.path}: {run.stderr.strip()[-200:]}")
    return total


def dissect_all(images: Sequence[ImageRef]) -> float:
    run = timed_run([TARGET_QUERY, "-q", "-f", DISSECT_FUNCTIONS, "-j", *(i.path for i in images)])
    if run.returncode != 0:
        print(f"  target-query failed: {run.stderr.strip()[-200:]}")
    return run.seconds


def vmaudit_scan(paths: Sequence[str], state: str, extra: Sequence[str] = ()) -> Timed:
    run = timed_run(
        [
            *VMAUDIT,
            "scan",
            *paths,
            "--state",
            state,
            "--format",
            "json",
            "--fail-on",
            "never",
            "-q",
            *extra,
        ]
    )
    if run.returncode not in (0, 3):
        print(run.stderr[-2000:], file=sys.stderr)
        raise SystemExit(f"vmaudit scan failed with {run.returncode}")
    return run


def outcomes(report: str) -> str:
    """How many images a scan's JSON report says were audited, and the errors of the rest."""
    try:
        images = json.loads(report)["images"]
    except (ValueError, KeyError, TypeError):
        return "no JSON report"
    audited = sum(1 for image in images if image.get("status") == "audited")
    errors = sorted({str((image.get("error") or {}).get("kind")) for image in images} - {"None"})
    return f"{audited} of {len(images)} images audited" + (f"; errors: {errors}" if errors else "")


def fleet_scan(paths: Sequence[str], state: str) -> Timed:
    """A cold scan on a local Dask cluster (its start and stop not counted by the script)."""
    script = str(Path(__file__).resolve().parent / "fleet_bench.py")
    run = timed_run([sys.executable, script, *paths, "--state", state])
    if run.returncode != 0:
        print(run.stderr[-2000:], file=sys.stderr)
        raise SystemExit("the Dask benchmark failed")
    scan_seconds = float(run.stdout.split()[-1])  # fleet_bench's own figure
    return Timed(scan_seconds, run.peak_rss, 0, run.stderr, run.stdout)


def copy_datastore(source: Path, target: Path, copies: int) -> None:
    """``copies`` copies of every image folder of ``source`` as ``cN-NAME`` under ``target``:
    new paths (nothing cached), the same bytes and mtimes, sparse where the source is."""
    wanted = sorted(p.name for p in source.iterdir() if p.is_dir())
    stamp = target / ".copied-from"
    key = f"{source.resolve()} {copies} {[(n, (source / n).stat().st_mtime) for n in wanted]}"
    if stamp.exists() and stamp.read_text() == key:
        return
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir(parents=True)
    for copy in range(1, copies + 1):
        for name in wanted:
            folder = target / f"c{copy}-{name}"
            folder.mkdir()
            for file in (source / name).iterdir():
                if file.name.startswith("."):
                    continue  # the fixture builder's own notes
                subprocess.run(
                    ["cp", "-p", "--sparse=always", str(file), str(folder / file.name)],
                    check=True,
                )
    stamp.write_text(key)


@dataclass
class Table:
    count: int
    rows: list[tuple[str, float, int | None]]

    def add(self, label: str, seconds: float, rss: int | None = None) -> None:
        self.rows.append((label, seconds, rss))

    def seconds(self, label: str) -> float | None:
        return next((s for name, s, _ in self.rows if name == label), None)

    def print(self) -> None:
        print(f"  {'what':<50} {'total s':>8} {'s/image':>8} {'peak PSS':>10}")
        for label, seconds, rss in self.rows:
            memory = f"{rss / MIB:7.0f} MiB" if rss else ""
            print(f"  {label:<50} {seconds:8.1f} {seconds / self.count:8.2f} {memory:>10}")


PEER = "virt-inspector, one run per image"
DISSECT = "dissect.target target-query, one run per image"
DISSECT_ALL = "dissect.target target-query, all images in one run"
COLD = "vmaudit scan, cold (empty state)"
WARM = "vmaudit scan, warm (nothing changed)"
FLEET = "vmaudit scan via a local Dask cluster, cold"


def bench_datastore(
    path: str, args: argparse.Namespace, env: dict[str, str]
) -> tuple[Table, Timed]:
    images = discover([path]).images
    formats = ", ".join(sorted({i.format for i in images}))
    print(f"\ndatastore {path}: {len(images)} images ({formats}); load {load_average()}")
    table = Table(len(images), [])
    with tempfile.TemporaryDirectory(prefix="vmaudit-bench-") as tmp:
        cold = vmaudit_scan([path], os.path.join(tmp, "state.db"))
        table.add(COLD, cold.seconds, cold.peak_rss)
        print(f"  cold scan: {outcomes(cold.stdout)}")
        warm = vmaudit_scan([path], os.path.join(tmp, "state.db"))
        table.add(WARM, warm.seconds, warm.peak_rss)
        if not args.skip_dissect:
            table.add(DISSECT, dissect_one_each(images))
            table.add(DISSECT_ALL, dissect_all(images))
        if not args.skip_peer:
            table.add(PEER, virt_inspector(images, env))
        if args.fleet:
            fleet = fleet_scan([path], os.path.join(tmp, "fleet.db"))
            table.add(FLEET, fleet.seconds, fleet.peak_rss)
    print(f"  load after: {load_average()}")
    table.print()
    verdicts(table, cold)
    return table, cold


def verdicts(table: Table, cold: Timed) -> None:
    def goal(met: bool) -> str:
        return "met" if met else "NOT met"

    peer = table.seconds(PEER)
    if peer:
        ratio = cold.seconds / peer
        print(f"  cold / virt-inspector:         {ratio:.3f}  (goal <= 0.1: {goal(ratio <= 0.1)})")
    for label in (DISSECT, DISSECT_ALL):
        seconds = table.seconds(label)
        if seconds:
            ratio = cold.seconds / seconds
            which = "one run each" if label == DISSECT else "one run for all"
            print(
                f"  cold / dissect.target ({which}): {ratio:.3f}  (goal <= 1: {goal(ratio <= 1)})"
            )
    warm = table.seconds(WARM) or 0.0
    print(
        f"  warm / cold:                   {warm / cold.seconds:.4f}  "
        f"(goal < 0.02: {goal(warm / cold.seconds < 0.02)})"
    )
    jobs = os.cpu_count() or 1
    bound = jobs * APPLIANCE_BOUND + HOST_BOUND
    print(
        f"  cold scan peak memory (PSS of the process tree: scan, workers, qemu; "
        f"/proc sampled every 0.2 s): "
        f"{cold.peak_rss / MIB:.0f} MiB; goal < {jobs} jobs x 1.3 GiB + 200 MiB = "
        f"{bound / MIB:.0f} MiB: {goal(cold.peak_rss < bound)}"
    )


def scaling(path: str, sizes: Sequence[int], whole: Timed, whole_count: int) -> None:
    """Cold seconds per image on the first N image folders of ``path``, for each N (the
    whole datastore's cold scan, ``whole``, stands for its own size)."""
    folders = sorted(str(p) for p in Path(path).iterdir() if p.is_dir())
    print(f"\ncold seconds per image as the datastore grows ({path}); load {load_average()}")
    print(f"  {'images':>6} {'total s':>8} {'s/image':>8} {'peak PSS':>10}")
    for size in sizes:
        chosen = folders[:size]
        count = len(discover(chosen).images)
        if count == whole_count:
            run = whole
        else:
            with tempfile.TemporaryDirectory(prefix="vmaudit-bench-") as tmp:
                run = vmaudit_scan(chosen, os.path.join(tmp, "state.db"))
        print(
            f"  {count:6} {run.seconds:8.1f} {run.seconds / count:8.2f} "
            f"{run.peak_rss / MIB:6.0f} MiB"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("datastore", nargs="?", default=str(REPO / "build" / "datastore"))
    parser.add_argument("--big", default=str(REPO / "build" / "bench-24"), metavar="DIR")
    parser.add_argument("--copies", type=int, default=2, help="copies of each sample image")
    parser.add_argument("--skip-peer", action="store_true", help="do not run virt-inspector")
    parser.add_argument("--skip-dissect", action="store_true", help="do not run dissect.target")
    parser.add_argument("--skip-sample", action="store_true", help="only the big datastore")
    parser.add_argument("--sizes", default="8,16,24", help="image counts for the scaling rows")
    parser.add_argument("--fleet", action="store_true", help="also scan on a local Dask cluster")
    args = parser.parse_args()

    if not args.skip_dissect and not os.path.exists(TARGET_QUERY):
        raise SystemExit(f"{TARGET_QUERY} missing: pip install -e '.[bench]'")
    print(f"machine: {os.cpu_count()} CPUs, load {load_average()}")
    env = dict(os.environ)
    if not kvm_works():
        env["LIBGUESTFS_BACKEND_SETTINGS"] = "force_tcg"
        print("KVM unusable here: everything runs in software emulation (force_tcg)")
    if not args.skip_sample:
        bench_datastore(args.datastore, args, env)
    copy_datastore(Path(args.datastore), Path(args.big), args.copies)
    big, cold = bench_datastore(args.big, args, env)
    sizes = [int(size) for size in args.sizes.split(",") if size]
    if sizes:
        scaling(args.big, sizes, cold, big.count)


if __name__ == "__main__":
    main()
