"""Shared fixtures of the Windows tests: guest trees built from the fixture sources."""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from fixtures.windows.build import build_tree, guest  # noqa: E402

BUILD_TIME = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


@pytest.fixture(scope="session")
def windows_trees(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Guest roots (``C:\\``) of every fixture guest, hives built at ``BUILD_TIME``."""
    base = tmp_path_factory.mktemp("windows-trees")
    return {
        name: build_tree(guest(name), base / name / "root", BUILD_TIME)
        for name in ("win2019-patched", "win2016-dormant")
    }
