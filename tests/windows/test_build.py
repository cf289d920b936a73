"""The Windows image builder: images in their own folders, cached, dated by dormancy."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from fixtures.windows.build import build_windows_images


def test_images_are_built_once_in_their_own_folders(tmp_path: Path) -> None:
    out, cache = tmp_path / "datastore", tmp_path / "cache"
    images = build_windows_images(out, cache)
    assert [p.relative_to(out).as_posix() for p in images] == [
        "win2016-dormant/win2016-dormant.vmdk",
        "win2019-patched/win2019-patched.vhdx",
    ]
    for image, fmt in zip(images, ["vmdk", "vhdx"], strict=True):
        info = json.loads(subprocess.run(
            ["qemu-img", "info", "-U", "-f", fmt, "--output=json", str(image)],
            check=True, capture_output=True, text=True,
        ).stdout)  # fmt: skip
        assert info["format"] == fmt and info["virtual-size"] == 48 * 1024 * 1024
    dormant, patched = (p.stat().st_mtime for p in images)
    assert abs(patched - dormant - 428 * 86400) < 60  # idle 430 days vs 2 days
    before = [p.stat().st_mtime_ns for p in images]
    assert build_windows_images(out, cache) == images
    assert [p.stat().st_mtime_ns for p in images] == before  # up to date: not rebuilt
