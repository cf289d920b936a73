"""The gate tests may share a PostgreSQL state database (tests/pgserver.py)."""

from tests.pgserver import pg_server

__all__ = ["pg_server"]
