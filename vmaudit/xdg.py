"""vmaudit's folders under the XDG base directories (state, data, cache)."""

from __future__ import annotations

import os
from pathlib import Path


def xdg_folder(variable: str, *default: str) -> Path:
    """``$variable/vmaudit``, or ``~/<default...>/vmaudit`` when it is unset.

    The XDG spec says a relative value is invalid and must be ignored.
    """
    configured = os.environ.get(variable, "")
    base = Path(configured) if os.path.isabs(configured) else Path.home().joinpath(*default)
    return base / "vmaudit"
