"""``vmaudit remediate`` of a Windows guest (VHDX): the revoked account disabled in the SAM.

One remediation and one appliance reading the SAM of the base and of the overlay.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import pytest

from fixtures.windows.build import build_image, build_tree, guest
from tests.act.remedyguests import guestfs_handle, run_env, vmaudit
from vmaudit.act.fixes import WINDOWS_RECORD
from vmaudit.collect.windows_registry import Hive, open_hivex
from vmaudit.collect.windows_sam import ACB_DISABLED, collect_sam_users
from vmaudit.models import User

pytestmark = pytest.mark.appliance
REPO = Path(__file__).resolve().parents[2]
SAM = "/Windows/System32/config/SAM"


def _remediate(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return vmaudit("remediate", *args, env=env)


def _users(hive_file: Path) -> dict[str, User]:
    hive = Hive(open_hivex(str(hive_file)), "SAM")
    try:
        return {u.name: u for u in collect_sam_users(hive, datetime(2026, 12, 1, tzinfo=UTC), [])}
    finally:
        hive.close()


def test_the_revoked_windows_account_reads_back_disabled_from_the_overlay_sam(
    tmp_path: Path,
) -> None:
    g = guest("win2016-dormant")
    g = dataclasses.replace(g, spec={**g.spec, "image_format": "vhdx"})
    work = tmp_path / "build"
    work.mkdir()
    tree = build_tree(g, work / "root", datetime(2026, 6, 1, 12, tzinfo=UTC))
    store = tmp_path / "store"
    image = build_image(g, tree, store / "erp.vhdx", work)
    before = (hashlib.sha256(image.read_bytes()).hexdigest(), image.stat().st_mtime_ns)
    overlay = store / "erp-fixed.qcow2"

    proc = _remediate(
        str(image),
        "-o",
        str(overlay),
        "-b",
        str(REPO / "fixtures/demo-windows-baseline.yaml"),
        "--format",
        "json",
        env=run_env(tmp_path),
    )

    assert proc.returncode == 0, proc.stderr
    document = json.loads(proc.stdout)
    assert [(c["fix"], c["subject"]) for c in document["changes"]] == [
        ("lock-revoked", "contractor")
    ]
    assert (hashlib.sha256(image.read_bytes()).hexdigest(), image.stat().st_mtime_ns) == before
    assert sorted(os.listdir(store)) == ["erp-fixed.qcow2", "erp.vhdx"]

    handle = guestfs_handle([overlay, image], tmp_path, ["qcow2", "vhdx"])
    try:
        handle.mount_ro("/dev/sda1", "/")
        handle.download(SAM, str(tmp_path / "SAM.fixed"))
        record = json.loads(handle.read_file(WINDOWS_RECORD))
        handle.umount_all()
        handle.mount_ro("/dev/sdb1", "/")
        handle.download(SAM, str(tmp_path / "SAM.base"))
    finally:
        handle.close()

    fixed, base = _users(tmp_path / "SAM.fixed"), _users(tmp_path / "SAM.base")
    assert base["contractor"].disabled is False and base["contractor"].can_login
    assert fixed["contractor"].disabled is True and not fixed["contractor"].can_login
    assert fixed["contractor"] == dataclasses.replace(
        base["contractor"], disabled=True, can_login=False
    )
    assert {n: u for n, u in fixed.items() if n != "contractor"} == {
        n: u for n, u in base.items() if n != "contractor"
    }
    hive = Hive(open_hivex(str(tmp_path / "SAM.fixed")), "SAM")
    try:
        node = hive.key(["SAM", "Domains", "Account", "Users", "000003EA"])
        assert node is not None
        f_value = hive.binary(node, "F")
    finally:
        hive.close()
    assert f_value is not None and f_value[0x38] & ACB_DISABLED
    assert [(c["fix"], c["subject"]) for c in record["changes"]] == [("lock-revoked", "contractor")]
