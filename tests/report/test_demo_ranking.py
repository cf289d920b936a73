"""The ranking of ``make demo`` without an appliance: every sample guest's tree, judged.

Each guest of ``fixtures/guests/`` is staged as ``fixtures/build.py`` stages it before it
makes disks of it (the debootstrap base, the guest's overlay, package edits, login records
and logs dated from its ``guest.yaml``), the Windows guests as ``fixtures/windows/build.py``
builds their ``C:\\``; facts come from ``collect_facts`` on the tree, findings and
business mapping from the demo's own baselines and inventory, as ``make demo`` passes them.
The images are named as the datastore names them, so the inventory globs apply.
"""

from __future__ import annotations

import re
import shutil
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from vmaudit.guest.tree import TreeFS
from vmaudit.models import ImageInfo, ImageRef, ImageResult, ScanReport
from vmaudit.report import Format, render
from vmaudit.report.common import sort_by_risk
from vmaudit.run.audit import collect_facts
from vmaudit.scan import ScanOptions, load_judge

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from fixtures import build  # noqa: E402
from fixtures.rootfs import ensure_rootfs  # noqa: E402
from fixtures.spec import GuestSpec  # noqa: E402
from fixtures.windows import build as windows_build  # noqa: E402

DEMO_BASELINES = (
    "default",
    str(REPO / "fixtures" / "demo-baseline.yaml"),
    str(REPO / "fixtures" / "demo-windows-baseline.yaml"),
)
INVENTORY = str(REPO / "fixtures" / "inventory.yaml")
DISPLAY_NAME = re.compile(r'^displayName\s*=\s*"([^"]*)"', re.MULTILINE)


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _linux_image(spec: GuestSpec, root: Path) -> tuple[str, str | None]:
    """The path ``vmaudit scan`` reports for the guest, and its VM name (a .vmx's)."""
    vm_folder = spec.folder / "vm"
    descriptors = sorted(vm_folder.iterdir()) if vm_folder.is_dir() else []
    for descriptor in descriptors:
        if descriptor.suffix == ".vmx":
            found = DISPLAY_NAME.search(descriptor.read_text())
            return str(root / spec.name / descriptor.name), found.group(1) if found else None
        if descriptor.suffix == ".ovf":
            return str(root / spec.name / descriptor.name), None
    return str(root / spec.name / spec.disks[0].filename), None


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ScanReport]:
    if shutil.which("debootstrap") is None:
        pytest.skip("debootstrap is not installed (make setup installs it)")
    base = ensure_rootfs()
    work = tmp_path_factory.mktemp("demo")
    root = work / "datastore"  # the scanned root: the inventory's globs are relative to it
    now = datetime.now(UTC).replace(microsecond=0)
    judge = load_judge(
        ScanOptions(paths=(str(root),), baselines=DEMO_BASELINES, inventory=INVENTORY), now
    )
    results: list[ImageResult] = []
    for spec in build.load_guests():
        tree = work / spec.name
        line = build.stage_tree(spec, base, tree, now)
        path, vm = _linux_image(spec, root)
        info = ImageInfo(path, "vmdk", 1, _iso(line.shutdown), "0" * 64, vm, (path,))
        facts = collect_facts(TreeFS(tree), info, now)
        results.append(judge.judge(ImageRef(path, "vmdk", (), vm=vm), facts, from_cache=False))
        shutil.rmtree(tree)
    for guest in windows_build.guests():
        tree = windows_build.build_tree(guest, work / guest.name / "root", now)
        path = str(windows_build.image_path(root, guest))
        info = ImageInfo(
            path, guest.image_format, 1, _iso(guest.last_shutdown(now)), "0" * 64, None, (path,)
        )
        facts = collect_facts(TreeFS(tree), info, now)
        results.append(judge.judge(ImageRef(path, guest.image_format, ()), facts, False))
        shutil.rmtree(work / guest.name)
    yield ScanReport(_iso(now), _iso(now), DEMO_BASELINES, "high", tuple(results), 1)


def _inputs(result: ImageResult) -> tuple[object, ...]:
    """What the exposure is made of: the findings by rule and severity, sleep, criticality."""
    assert result.facts is not None
    findings = sorted((f.rule, f.severity, f.subject) for f in result.findings)
    return (tuple(findings), result.facts.dormancy.days_idle, result.business.criticality)


def test_the_demo_has_its_twelve_guests_audited(demo: ScanReport) -> None:
    assert len(demo.results) == 12
    assert all(r.error is None for r in demo.results)


def test_no_two_demo_images_tie_unless_their_inputs_are_the_same(demo: ScanReport) -> None:
    by_exposure: dict[float | None, list[ImageResult]] = {}
    for result in demo.results:
        by_exposure.setdefault(result.risk.exposure, []).append(result)
    for exposure, tied in by_exposure.items():
        if exposure == 0:
            continue  # nothing found: nothing to rank by
        assert len({_inputs(r) for r in tied}) == 1, [r.image.path for r in tied]


def test_the_demo_table_ranks_payroll_first_and_shows_why(demo: ScanReport) -> None:
    ranked = sort_by_risk(demo.results)
    top = ranked[0]
    assert top.image.path.endswith("payroll-db-07/payroll-db-07.vmdk")
    exposures = [r.risk.exposure or 0 for r in ranked]
    assert exposures == sorted(exposures, reverse=True)
    text = render(demo, Format.TABLE, width=160)
    assert "days asleep, payroll (critical)" in text
    print(text)  # the table the README shows: pytest -s prints it
