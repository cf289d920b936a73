"""The sample datastore (fixtures/build.py, cached in build/datastore) scanned once per run.

Every test here shares one cold scan of the whole datastore into a fresh state database;
later scans of the same state are rescans that must not open an image.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from fixtures.build import build_datastore

REPO = Path(__file__).resolve().parents[2]
DATASTORE = REPO / "build" / "datastore"
BASELINES = [
    "-b",
    "default",
    "-b",
    str(REPO / "fixtures" / "demo-baseline.yaml"),
    "-b",
    str(REPO / "fixtures" / "demo-windows-baseline.yaml"),
]
INVENTORY = ["-i", str(REPO / "fixtures" / "inventory.yaml")]


@dataclass(frozen=True)
class Scan:
    report: dict[str, Any]
    state: Path
    seconds: float
    stderr: str
    exit_code: int

    def image(self, folder: str) -> dict[str, Any]:
        return next(i for i in self.report["images"] if Path(i["path"]).parent.name == folder)


def run_scan(state: Path, *extra: str, paths: tuple[str, ...] = (str(DATASTORE),)) -> Scan:
    started = time.monotonic()
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "vmaudit.cli",
            "scan",
            *paths,
            *BASELINES,
            *INVENTORY,
            "--state",
            str(state),
            "--format",
            "json",
            *extra,
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=1800,
    )
    elapsed = time.monotonic() - started
    assert proc.returncode in (0, 1, 3), proc.stderr
    return Scan(json.loads(proc.stdout), state, elapsed, proc.stderr, proc.returncode)


@pytest.fixture(scope="session")
def datastore() -> Path:
    build_datastore(DATASTORE)
    return DATASTORE


@pytest.fixture(scope="session")
def first_scan(datastore: Path, tmp_path_factory: pytest.TempPathFactory) -> Scan:
    state = tmp_path_factory.mktemp("state") / "state.db"
    return run_scan(state)
