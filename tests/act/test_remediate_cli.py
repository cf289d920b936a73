"""``vmaudit remediate`` refusals decided before any appliance starts (fast)."""

from __future__ import annotations

import os
from pathlib import Path

from tests.act.remedyguests import baseline_file, remedy_tree, run_env, vmaudit
from tests.imaging import convert, raw_disk_from_tree


def _image(tmp_path: Path) -> Path:
    store = tmp_path / "store"
    store.mkdir()
    raw = raw_disk_from_tree(remedy_tree(tmp_path / "tree"), tmp_path / "guest.raw", 24)
    return convert(raw, "qcow2", store / "guest.qcow2")


def test_an_existing_overlay_is_never_overwritten(tmp_path: Path) -> None:
    image = _image(tmp_path)
    taken = image.parent / "fixed.qcow2"
    taken.write_bytes(b"mine")

    proc = vmaudit(
        "remediate",
        str(image),
        "-o",
        str(taken),
        "-b",
        str(baseline_file(tmp_path)),
        env=run_env(tmp_path),
    )

    assert proc.returncode == 2
    assert "exists; remediate never overwrites a file" in proc.stderr
    assert taken.read_bytes() == b"mine"


def test_the_image_itself_is_refused_as_the_output(tmp_path: Path) -> None:
    image = _image(tmp_path)
    before = image.read_bytes()
    proc = vmaudit("remediate", str(image), "-o", str(image), env=run_env(tmp_path))
    assert proc.returncode == 2
    assert image.read_bytes() == before


def test_an_image_a_vmware_host_holds_is_refused_without_force(tmp_path: Path) -> None:
    image = _image(tmp_path)
    (image.parent / "guest.qcow2.lck").mkdir()

    proc = vmaudit(
        "remediate",
        str(image),
        "-o",
        str(image.parent / "fixed.qcow2"),
        "-b",
        str(baseline_file(tmp_path)),
        env=run_env(tmp_path),
    )

    assert proc.returncode == 3
    assert "in use by a running VM" in proc.stderr and "--force" in proc.stderr
    assert sorted(os.listdir(image.parent)) == ["guest.qcow2", "guest.qcow2.lck"]


def test_an_unknown_fix_is_a_usage_error(tmp_path: Path) -> None:
    proc = vmaudit(
        "remediate",
        str(tmp_path / "x.qcow2"),
        "-o",
        str(tmp_path / "o.qcow2"),
        "--fix",
        "delete-users",
        env=run_env(tmp_path),
    )
    assert proc.returncode == 2
    assert "delete-users" in proc.stderr
