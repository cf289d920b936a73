"""Every state test that takes ``state_ref`` runs on both backends: an SQLite file and a
database on a real PostgreSQL server (tests/pgserver.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.pgserver import Server, pg_server

__all__ = ["pg_server"]


@pytest.fixture(params=["sqlite", "postgresql"])
def state_ref(request: pytest.FixtureRequest, tmp_path: Path) -> Path | str:
    """Where a fresh state database lives: a file path, or a ``postgresql://`` URL."""
    if request.param == "sqlite":
        return tmp_path / "state" / "state.db"
    server: Server = request.getfixturevalue("pg_server")
    return server.new_database()
