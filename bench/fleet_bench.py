"""Seconds of a scan on a throw-away Dask ``LocalCluster``: ``python bench/fleet_bench.py PATH...``.

The cluster's start and stop are not counted. Without ``--state`` no cache is used, so every
image is opened; with it, results are recorded there as a CLI scan would (and an image
unchanged since a previous bench into the same file is not opened).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Sequence


def bench(
    paths: Sequence[str], workers: int = 2, batch: int | None = None, state: str | None = None
) -> float:
    """Seconds for a scan of ``paths`` on a new ``LocalCluster`` (workers, 1 thread each)."""
    from distributed import LocalCluster

    from vmaudit.run.fleet import connect
    from vmaudit.scan import ScanOptions, run_scan
    from vmaudit.state.cache import open_cache

    with (
        tempfile.TemporaryDirectory(prefix="vmaudit-fleet-") as scratch,
        LocalCluster(
            n_workers=workers,
            processes=True,
            threads_per_worker=1,
            dashboard_address=":0",
            local_directory=scratch,
        ) as cluster,
        connect(cluster.scheduler_address) as fleet,
    ):
        options = ScanOptions(paths=tuple(paths), batch=batch, fail_on="never")
        cache = open_cache(state) if state else None
        try:
            started = time.monotonic()
            run_scan(options, cache=cache, auditors=fleet.auditors())
            return time.monotonic() - started
        finally:
            if cache is not None:
                cache.close()


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python bench/fleet_bench.py")
    parser.add_argument("paths", nargs="+", metavar="PATH")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch", type=int, default=None)
    parser.add_argument(
        "--state",
        default=None,
        metavar="FILE",
        help="record into this state database (default: no cache)",
    )
    args = parser.parse_args(argv)
    seconds = bench(args.paths, workers=args.workers, batch=args.batch, state=args.state)
    sys.stdout.write(f"{seconds:.1f}\n")


if __name__ == "__main__":
    main()
