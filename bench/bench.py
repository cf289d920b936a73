"""``make bench``: vmaudit against virt-inspector on the sample datastore, same machine.

Runs ``virt-inspector`` once per image (the peer to beat), then ``vmaudit scan`` cold (an
empty state database: every image opened) and warm (nothing changed: no image opened), and
prints seconds per image for each and the ratios the issues ask for:
cold <= 1/4 of virt-inspector per image, warm < 2% of cold.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from vmaudit.discover.formats import qemu_driver  # noqa: E402
from vmaudit.discover.walk import discover  # noqa: E402
from vmaudit.models import ImageRef  # noqa: E402

VMAUDIT = [sys.executable, "-m", "vmaudit.cli"]


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


def virt_inspector(image: ImageRef, env: dict[str, str]) -> float:
    args = ["virt-inspector"]
    for disk in image.disks:
        args += [f"--format={qemu_driver(disk.format)}", "-a", disk.path]
    started = time.monotonic()
    proc = subprocess.run(args, capture_output=True, env=env, check=False)
    elapsed = time.monotonic() - started
    if proc.returncode != 0:
        print(
            f"  virt-inspector failed on {image.path}: "
            f"{proc.stderr.decode(errors='replace').strip()[-200:]}",
            file=sys.stderr,
        )
    return elapsed


def vmaudit_scan(datastore: str, state: str, extra: list[str]) -> float:
    started = time.monotonic()
    proc = subprocess.run(
        [
            *VMAUDIT,
            "scan",
            datastore,
            "--state",
            state,
            "--format",
            "json",
            "--fail-on",
            "never",
            "-q",
            *extra,
        ],
        capture_output=True,
        check=False,
    )
    elapsed = time.monotonic() - started
    if proc.returncode not in (0, 3):
        print(proc.stderr.decode(errors="replace")[-2000:], file=sys.stderr)
        raise SystemExit(f"vmaudit scan failed with {proc.returncode}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("datastore", nargs="?", default=str(REPO / "build" / "datastore"))
    parser.add_argument("--skip-peer", action="store_true", help="do not run virt-inspector")
    parser.add_argument(
        "--fleet", action="store_true", help="also scan through a local Dask cluster"
    )
    args = parser.parse_args()

    images = discover([args.datastore]).images
    count = len(images)
    if count < 8:
        raise SystemExit(f"the benchmark wants at least 8 images, found {count}")
    print(
        f"datastore: {args.datastore}: {count} images "
        f"({', '.join(sorted({i.format for i in images}))})"
    )
    env = dict(os.environ)
    if not kvm_works():
        env["LIBGUESTFS_BACKEND_SETTINGS"] = "force_tcg"
        print("KVM unusable here: everything runs in software emulation (force_tcg)")

    rows: list[tuple[str, float]] = []
    if not args.skip_peer:
        peer = sum(virt_inspector(image, env) for image in images)
        rows.append(("virt-inspector, one run per image", peer))
    with tempfile.TemporaryDirectory(prefix="vmaudit-bench-") as tmp:
        state = os.path.join(tmp, "state.db")
        cold = vmaudit_scan(args.datastore, state, [])
        rows.append(("vmaudit scan, cold (empty state)", cold))
        warm = vmaudit_scan(args.datastore, state, [])
        rows.append(("vmaudit scan, warm (nothing changed)", warm))
        if args.fleet:
            fleet_state = os.path.join(tmp, "fleet.db")
            started = time.monotonic()
            fleet_bench = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fleet_bench.py")
            subprocess.run(
                [sys.executable, fleet_bench, args.datastore, "--state", fleet_state],
                check=True,
                capture_output=True,
            )
            rows.append(("vmaudit scan via a local Dask cluster, cold", time.monotonic() - started))

    print(f"{'what':<46} {'total s':>9} {'s/image':>9}")
    for label, seconds in rows:
        print(f"{label:<46} {seconds:9.1f} {seconds / count:9.2f}")
    timings = dict(rows)
    if "virt-inspector, one run per image" in timings:
        ratio = cold / timings["virt-inspector, one run per image"]
        print(
            f"cold / virt-inspector: {ratio:.3f}  (goal <= 0.25: "
            f"{'met' if ratio <= 0.25 else 'NOT met'})"
        )
    print(
        f"warm / cold:           {warm / cold:.4f}  (goal < 0.02: "
        f"{'met' if warm / cold < 0.02 else 'NOT met'})"
    )


if __name__ == "__main__":
    main()
