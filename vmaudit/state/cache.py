"""The scan's view of the state database: cached facts by identity, results recorded as they come.

Adapts ``vmaudit.state.StateDB`` to the ``FactsCache`` protocol of ``vmaudit.scan``. The
identity of an image (stat + hash of the first MiB of every file of its chain) is computed
once per scan and used both to find cached facts and to record the new result.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from vmaudit.discover.identity import Identity, image_identity
from vmaudit.errors import VmauditError
from vmaudit.models import Facts, ImageRef, ImageResult, ScanReport
from vmaudit.state import StateDB, open_state


class StateCache:
    def __init__(self, db: StateDB) -> None:
        self.db = db
        self.scan_id: int | None = None
        self._identities: dict[str, Identity | None] = {}

    def identity(self, image: ImageRef) -> Identity | None:
        if image.path not in self._identities:
            try:
                self._identities[image.path] = image_identity(image) if image.disks else None
            except VmauditError:
                self._identities[image.path] = None
        return self._identities[image.path]

    def cached_facts(self, image: ImageRef) -> Facts | None:
        identity = self.identity(image)
        return None if identity is None else self.db.lookup_facts(identity)

    def begin(self, baselines: Sequence[str], started_at: datetime) -> None:
        self._identities.clear()  # files may have changed since the last scan (watch)
        self.scan_id = self.db.begin_scan(baselines, started_at)

    def record(self, result: ImageResult) -> None:
        assert self.scan_id is not None, "begin() first"
        identity = self.identity(result.image) if result.error is None else None
        self.db.record_result(self.scan_id, result, identity)

    def finish(self, report: ScanReport, roots: Sequence[str]) -> None:
        assert self.scan_id is not None, "begin() first"
        self.db.finish_scan(self.scan_id, report, list(roots))

    def close(self) -> None:
        self.db.close()


def open_cache(path: str | None) -> StateCache:
    """The state database at ``path`` (a file, or a ``postgresql://`` URL; default
    ``$XDG_STATE_HOME/vmaudit/state.db``)."""
    return StateCache(open_state(path))
