"""The inventory: validation like baselines, globs on relative paths or VM names."""

from __future__ import annotations

from pathlib import Path

import pytest

from vmaudit.baseline import load_inventory
from vmaudit.baseline.inventory import validate_inventory
from vmaudit.errors import ConfigError
from vmaudit.models import Business

INVENTORY = """apiVersion: vmaudit/v1
kind: Inventory
applications:
  - name: payroll
    owner: finance-it
    criticality: high
    images: ["*/payroll-*"]
  - name: directory
    images: [dc-01]
"""


@pytest.fixture()
def inventory_file(tmp_path: Path) -> Path:
    path = tmp_path / "inventory.yaml"
    path.write_text(INVENTORY, "utf-8")
    return path


def test_glob_matches_the_path_relative_to_the_scanned_root(inventory_file: Path) -> None:
    inventory = load_inventory(inventory_file)
    business = inventory.business_for("/ds/prod/payroll-db-07.vmdk", None, "/ds")
    assert business == Business("payroll", "finance-it", "high")


def test_glob_does_not_see_the_root_itself(inventory_file: Path) -> None:
    inventory = load_inventory(inventory_file)
    # relative path is "payroll-db.vmdk": no folder, so "*/payroll-*" does not match
    assert inventory.business_for("/payroll/payroll-db.vmdk", None, "/payroll").owner is None


def test_vm_name_matches_and_criticality_defaults_to_medium(inventory_file: Path) -> None:
    inventory = load_inventory(inventory_file)
    assert inventory.business_for("/ds/x/disk0.vhdx", "dc-01", "/ds") == Business(
        "directory", None, "medium"
    )


def test_unmatched_image_is_medium_with_no_owner(inventory_file: Path) -> None:
    inventory = load_inventory(inventory_file)
    assert inventory.business_for("/ds/web.qcow2", None, "/ds") == Business(None, None, "medium")


def test_inventory_problems_have_file_line_and_key(tmp_path: Path) -> None:
    path = tmp_path / "inv.yaml"
    path.write_text(
        "apiVersion: vmaudit/v1\nkind: Inventory\napplications:\n"
        "  - name: payroll\n    criticality: severe\n    images: ['*']\n"
        "  - name: web\n    owner: ops\n    team: x\n",
        "utf-8",
    )
    _, problems = validate_inventory(path)
    assert [(p.line, p.key) for p in problems] == [
        (5, "applications[0].criticality"),
        (9, "applications[1].team"),
        (7, "applications[1].images"),
    ]
    with pytest.raises(ConfigError, match=rf"{path}:5: applications\[0\].criticality: "):
        load_inventory(path)


def test_a_baseline_is_not_an_inventory(tmp_path: Path) -> None:
    path = tmp_path / "inv.yaml"
    path.write_text("apiVersion: vmaudit/v1\nkind: Baseline\napplications: []\n", "utf-8")
    with pytest.raises(ConfigError, match=rf"{path}:2: kind: must be 'Inventory'"):
        load_inventory(path)
