"""Baselines: load and validate YAML (extends, match), the inventory, facts from JSON."""

from vmaudit.baseline.factsio import facts_from_dict
from vmaudit.baseline.inventory import Inventory, load_inventory
from vmaudit.baseline.loader import (
    builtin_baselines,
    dump_resolved,
    load_baseline,
    validate_files,
)
from vmaudit.baseline.model import Baseline, Match
from vmaudit.baseline.schema import Problem

__all__ = [
    "Baseline",
    "Inventory",
    "Match",
    "Problem",
    "builtin_baselines",
    "dump_resolved",
    "facts_from_dict",
    "load_baseline",
    "load_inventory",
    "validate_files",
]
