"""The SQLite state database: facts cache of unchanged images, scan history and events.

``StateDB`` owns the file (``db.py``), ``schema.py`` its migrations, ``codec.py`` the exact
JSON round trip of stored values, ``diff.py`` what changed in a guest between two audits.
"""

from vmaudit.state.db import (
    HistoryEntry,
    HistoryEvent,
    PowerOn,
    StateDB,
    StateError,
    default_state_path,
)
from vmaudit.state.diff import diff_facts

__all__ = [
    "HistoryEntry",
    "HistoryEvent",
    "PowerOn",
    "StateDB",
    "StateError",
    "default_state_path",
    "diff_facts",
]
