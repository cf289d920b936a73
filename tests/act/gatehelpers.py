"""Guest images, cached facts and policies for the gate tests, without an appliance.

An image is a real raw disk built from a literal tree (``tests.imaging``); its facts are
read from that same tree by the collectors and recorded in a real state database under
the image's real identity, as a ``vmaudit scan`` that read the image would have left them.
"""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

from tests.imaging import MINI_FILES, raw_disk_from_tree, write_tree
from vmaudit.baseline.loader import load_baseline
from vmaudit.discover.identity import image_identity
from vmaudit.discover.walk import discover
from vmaudit.guest.tree import TreeFS
from vmaudit.models import ScanReport
from vmaudit.run.audit import collect_facts, image_info
from vmaudit.scan import Judge
from vmaudit.state import StateDB

# MINI_FILES's guest has a second uid 0 account (toor): critical for the default baseline
OUT_OF_BASELINE = MINI_FILES
COMPLIANT = {
    **MINI_FILES,
    "etc/passwd": "root:x:0:0:root:/root:/bin/bash\n"
    "alice:x:1000:1000:Alice:/home/alice:/bin/bash\n",
    "etc/shadow": "root:$6$abc$def:19000:0:99999:7:::\nalice:$6$x$y:19000:0:99999:7:::\n",
}


def build_image(folder: Path, name: str, files: dict[str, str]) -> tuple[Path, Path]:
    """(image, tree): a raw disk ``folder/name`` whose root filesystem is the tree."""
    folder.mkdir(parents=True, exist_ok=True)
    tree = write_tree(folder.parent / f"tree-{name}", files)
    return raw_disk_from_tree(tree, folder / name, size_mb=16), tree


def cache_facts(state: Path | str, image: Path, tree: Path) -> None:
    """Record the tree's facts for the image, keyed by its identity, as a scan would."""
    ref = discover([str(image)]).images[0]
    now = datetime.now(UTC).replace(microsecond=0)
    facts = collect_facts(TreeFS(tree), image_info(ref), now)
    judge = Judge((load_baseline("default"),), None, (str(image.parent),), now)
    result = judge.judge(ref, facts, from_cache=False)
    with StateDB(state) as db:
        scan_id = db.begin_scan(["default"], now)
        db.record_result(scan_id, result, image_identity(ref))
        stamp = now.strftime("%Y-%m-%dT%H:%M:%SZ")
        report = ScanReport(stamp, stamp, ("default",), "high", (result,), 1)
        db.finish_scan(scan_id, report, [str(image.parent)])


def write_policy(path: Path, datastores: list[Path], state: Path | str, **extra: str) -> Path:
    lines = [
        "apiVersion: vmaudit/v1",
        "kind: GatePolicy",
        "baselines: [default]",
        f"state: {state}",
        "datastores:",
        *(f"  - {store}" for store in datastores),
        *(f"{key}: {value}" for key, value in extra.items()),
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


def vmaudit_gate(
    *args: str, stdin: bytes = b"", timeout: float = 600, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[bytes]:
    """``vmaudit gate ...`` in an isolated Python (``-I``), as the installed hook runs."""
    return subprocess.run(
        [sys.executable, "-I", "-m", "vmaudit.act.cli", *args],
        input=stdin,
        capture_output=True,
        timeout=timeout,
        check=False,
        env=env,
    )
