"""The state database (an SQLite file, or PostgreSQL): facts cache, scan history, events.

``StateDB`` owns the database (``db.py``; ``postgres.py`` what differs on PostgreSQL),
``schema.py`` its migrations, ``codec.py`` the exact JSON round trip of stored values,
``diff.py`` what changed in a guest between two audits.
"""

from vmaudit.state.db import (
    StateDB,
    StateError,
    default_state_path,
    open_state,
)
from vmaudit.state.diff import diff_facts

__all__ = [
    "StateDB",
    "StateError",
    "default_state_path",
    "diff_facts",
    "open_state",
]
