"""The state database's schema as an ordered list of migrations (``PRAGMA user_version``).

Migration N takes a database at version N-1 to version N. Never edit a released
migration: append a new one. Paths are stored as BLOB keys (``codec.path_key``) and every
guest string inside JSON text, so nothing read from a guest is ever part of an SQL string.
"""

from __future__ import annotations

import sqlite3

APPLICATION_ID = 0x766D6175  # "vmau": tells our database from any other SQLite file

V1 = """
CREATE TABLE scans (
    id INTEGER PRIMARY KEY,
    started_at TEXT NOT NULL,
    finished_at TEXT,
    baselines_json TEXT NOT NULL,
    fail_on TEXT,
    exit_code INTEGER
);
CREATE TABLE facts (
    digest TEXT PRIMARY KEY,
    facts_json TEXT NOT NULL
);
CREATE TABLE images (
    key BLOB PRIMARY KEY,
    first_scan INTEGER NOT NULL REFERENCES scans(id),
    last_scan INTEGER NOT NULL REFERENCES scans(id),
    identity_digest TEXT,
    identity_json TEXT,
    facts_digest TEXT REFERENCES facts(digest),
    facts_identity_digest TEXT,
    gone INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE results (
    id INTEGER PRIMARY KEY,
    scan_id INTEGER NOT NULL REFERENCES scans(id),
    image_key BLOB NOT NULL,
    recorded_at TEXT NOT NULL,
    status TEXT NOT NULL,
    image_json TEXT NOT NULL,
    identity_digest TEXT,
    identity_json TEXT,
    facts_digest TEXT REFERENCES facts(digest),
    findings_json TEXT NOT NULL,
    risk_score INTEGER NOT NULL,
    risk_level TEXT NOT NULL,
    business_json TEXT NOT NULL,
    error_json TEXT,
    from_cache INTEGER NOT NULL,
    rules_json TEXT NOT NULL,
    UNIQUE (scan_id, image_key)
);
CREATE TABLE events (
    id INTEGER PRIMARY KEY,
    scan_id INTEGER NOT NULL REFERENCES scans(id),
    image_key BLOB NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('appeared', 'modified', 'disappeared')),
    at TEXT NOT NULL,
    changes_json TEXT NOT NULL
);
"""

# v2: the roots a scan walked (what "disappeared" is relative to), a findings count that
# history reads without decoding every finding, the order in which scans finished (two
# scans may overlap: "the last report" is the one that finished last), and the indexes
# that history and report use.
V2 = """
ALTER TABLE scans ADD COLUMN roots_json TEXT NOT NULL DEFAULT '[]';
ALTER TABLE results ADD COLUMN findings_count INTEGER NOT NULL DEFAULT 0;
UPDATE results SET findings_count = json_array_length(findings_json);
CREATE INDEX results_by_image ON results (image_key, scan_id);
CREATE INDEX events_by_image ON events (image_key, scan_id);
CREATE INDEX events_by_scan ON events (scan_id);
ALTER TABLE scans ADD COLUMN finished_rank INTEGER;
UPDATE scans SET finished_rank = id WHERE finished_at IS NOT NULL;
CREATE UNIQUE INDEX scans_by_finish ON scans (finished_rank);
"""

MIGRATIONS: tuple[str, ...] = (V1, V2)
LATEST = len(MIGRATIONS)


def statements(script: str) -> list[str]:
    """The statements of one migration, to run one by one inside our own transaction.

    ``sqlite3.executescript`` would commit first, and a migration must be all or nothing.
    """
    found: list[str] = []
    pending = ""
    for line in script.splitlines(keepends=True):
        pending += line
        if sqlite3.complete_statement(pending):
            found.append(pending.strip())
            pending = ""
    if pending.strip():
        raise ValueError(f"incomplete statement in migration: {pending.strip()[:60]}")
    return found
