"""The power-on gate's decision from cache: milliseconds for an unchanged image (goal < 200).

Scans the sample datastore once into a fresh state database (every image opened; or takes
the state a scan left, ``--state``), then
decides each image as the libvirt hook would, twice: the whole hook process as ``gate
install`` writes it (``python -I -m vmaudit.act.hook ... prepare begin`` with a domain XML on
stdin, what ``virsh start`` waits for) and ``Gate.decide`` alone in this process. Prints
each image's times and the slowest hook run against the goal; exits 1 when it is missed.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from vmaudit.act.domain import DiskSpec, GuestDisks  # noqa: E402
from vmaudit.act.gate import Gate  # noqa: E402
from vmaudit.act.policy import load_policy  # noqa: E402
from vmaudit.discover.walk import discover  # noqa: E402

GOAL_MS = 200.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("datastore", nargs="?", default=str(REPO / "build" / "datastore"))
    parser.add_argument(
        "--state",
        help="a state database a scan of the datastore left "
        "(e.g. build/demo-state.db): no scan first",
    )
    args = parser.parse_args()
    datastore = Path(args.datastore).resolve()
    # a VM found through its descriptor (.vmx, .ovf) is keyed by the descriptor in a scan,
    # by its disk in the gate: not the same guest record, so not comparable here
    images = [
        ref
        for ref in discover([str(datastore)]).images
        if len(ref.disks) == 1 and ref.disks[0].path == ref.path
    ]
    if not images:
        raise SystemExit(f"no single-disk image under {datastore} (make fixtures)")
    with tempfile.TemporaryDirectory(prefix="vmaudit-gate-bench-") as tmp:
        state = Path(args.state).resolve() if args.state else Path(tmp) / "state.db"
        if not args.state:
            scan = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "vmaudit.cli",
                    "scan",
                    str(datastore),
                    "--state",
                    str(state),
                    "-q",
                    "-f",
                    "json",
                ],
                capture_output=True,
                check=False,
            )
            if scan.returncode not in (0, 1, 3):
                raise SystemExit(scan.stderr.decode(errors="replace")[-2000:])
        policy = Path(tmp) / "gate.yaml"
        policy.write_text(
            f"apiVersion: vmaudit/v1\nkind: GatePolicy\nstate: {state}\ndatastores: [{datastore}]\n"
        )
        gate = Gate(load_policy(str(policy)))
        slowest = 0.0
        print(f"{'image':<40} {'hook ms':>8} {'decide ms':>9}  decision")
        for ref in images:
            disk = ref.disks[0]
            xml = (
                f"<domain type='qemu'><name>bench</name><devices><disk type='file' "
                f"device='disk'><driver name='qemu' type='{disk.format}'/><source "
                f"file='{disk.path}'/><target dev='vda'/></disk></devices></domain>"
            )
            started = time.monotonic()
            hook = subprocess.run(
                [
                    sys.executable,
                    "-I",
                    "-m",
                    "vmaudit.act.hook",
                    "--policy",
                    str(policy),
                    "bench",
                    "prepare",
                    "begin",
                    "-",
                ],
                input=xml.encode(),
                capture_output=True,
                check=False,
            )
            hook_ms = (time.monotonic() - started) * 1000
            started = time.monotonic()
            decision = gate.decide(
                GuestDisks("bench", (DiskSpec("vda", "file", disk.path, "", disk.format),)), "check"
            )
            decide_ms = (time.monotonic() - started) * 1000
            cached = decision.result is not None and decision.result.from_cache
            slowest = max(slowest, hook_ms)
            name = Path(ref.path).name[:40]
            verdict = ("allow" if hook.returncode == 0 else "refuse") + (
                "" if cached else " (not from cache)"
            )
            print(f"{name:<40} {hook_ms:8.0f} {decide_ms:9.1f}  {verdict}")
        print(f"slowest hook decision: {slowest:.0f} ms (goal < {GOAL_MS:.0f} ms)")
        raise SystemExit(0 if slowest < GOAL_MS else 1)


if __name__ == "__main__":
    main()
