"""The state database's schema as an ordered list of migrations (``PRAGMA user_version``).

Migration N takes a database at version N-1 to version N: its SQL, then, when SQL alone
cannot do it, a Python step in the same transaction. Never edit a released migration:
append a new one. Paths are stored as BLOB keys (``codec.path_key``) and every
guest string inside JSON text, so nothing read from a guest is ever part of an SQL string.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass

from vmaudit.judge.risk import FORMULA, WEIGHTS, score
from vmaudit.models import Finding, Risk
from vmaudit.state.postgres import AnyConnection

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

# v3: the risk score of spec/baseline.md as revised: an uncapped exposure that images sort
# by, and a score with one decimal (REAL values in the old INTEGER column: SQLite keeps them
# as they are). ``risk_formula`` says which formula a row's score came from: 1 the capped
# ``min(100, W x D x C)`` of v1 and v2, 2 the exposure (``vmaudit.judge.risk.FORMULA``). Rows of
# the capped formula are scored again from their stored findings, facts and business
# mapping by ``rescore_capped_results``; one that cannot be (no facts, a finding without a
# severity) keeps its old score, formula 1 and no exposure, and history says so.
V3 = """
ALTER TABLE results ADD COLUMN risk_exposure REAL;
ALTER TABLE results ADD COLUMN risk_formula INTEGER NOT NULL DEFAULT 1;
"""

# v4: power-on decisions of the gate (vmaudit.act). Every decision is a ``decisions`` row,
# even one about a domain whose XML could not be read; a decision about a guest is also a
# ``power-on`` event of its image, in the scan row that holds the result it was judged on
# (that scan has no ``finished_rank``: a gate's one-image judgement is never "the last
# report"). SQLite cannot alter a CHECK constraint: ``events`` is rebuilt as it was, with
# the new kind allowed, ids kept.
V4 = """
CREATE TABLE events_v4 (
    id INTEGER PRIMARY KEY,
    scan_id INTEGER NOT NULL REFERENCES scans(id),
    image_key BLOB NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('appeared', 'modified', 'disappeared', 'power-on')),
    at TEXT NOT NULL,
    changes_json TEXT NOT NULL
);
INSERT INTO events_v4 (id, scan_id, image_key, kind, at, changes_json)
    SELECT id, scan_id, image_key, kind, at, changes_json FROM events;
DROP TABLE events;
ALTER TABLE events_v4 RENAME TO events;
CREATE INDEX events_by_image ON events (image_key, scan_id);
CREATE INDEX events_by_scan ON events (scan_id);
CREATE TABLE decisions (
    id INTEGER PRIMARY KEY,
    at TEXT NOT NULL,
    source TEXT NOT NULL,
    domain TEXT,
    decision TEXT NOT NULL CHECK (decision IN ('allow', 'refuse')),
    reason TEXT NOT NULL,
    image_key BLOB,
    scan_id INTEGER REFERENCES scans(id),
    details_json TEXT NOT NULL
);
CREATE INDEX decisions_by_time ON decisions (at);
"""

CAPPED_FORMULA = 1

# The same migrations on PostgreSQL (vmaudit.state.postgres): identity ids, BYTEA keys, a
# DOUBLE PRECISION score column from the start (SQLite keeps REAL values in its INTEGER
# column), and v4's new event kind as a swapped CHECK constraint instead of a rebuild.
PG_V1 = """
CREATE TABLE scans (
    id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
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
    key BYTEA PRIMARY KEY,
    first_scan BIGINT NOT NULL REFERENCES scans(id),
    last_scan BIGINT NOT NULL REFERENCES scans(id),
    identity_digest TEXT,
    identity_json TEXT,
    facts_digest TEXT REFERENCES facts(digest),
    facts_identity_digest TEXT,
    gone INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE results (
    id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    scan_id BIGINT NOT NULL REFERENCES scans(id),
    image_key BYTEA NOT NULL,
    recorded_at TEXT NOT NULL,
    status TEXT NOT NULL,
    image_json TEXT NOT NULL,
    identity_digest TEXT,
    identity_json TEXT,
    facts_digest TEXT REFERENCES facts(digest),
    findings_json TEXT NOT NULL,
    risk_score DOUBLE PRECISION NOT NULL,
    risk_level TEXT NOT NULL,
    business_json TEXT NOT NULL,
    error_json TEXT,
    from_cache INTEGER NOT NULL,
    rules_json TEXT NOT NULL,
    UNIQUE (scan_id, image_key)
);
CREATE TABLE events (
    id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    scan_id BIGINT NOT NULL REFERENCES scans(id),
    image_key BYTEA NOT NULL,
    kind TEXT NOT NULL CONSTRAINT events_kind_check
        CHECK (kind IN ('appeared', 'modified', 'disappeared')),
    at TEXT NOT NULL,
    changes_json TEXT NOT NULL
);
"""

PG_V2 = """
ALTER TABLE scans ADD COLUMN roots_json TEXT NOT NULL DEFAULT '[]';
ALTER TABLE results ADD COLUMN findings_count INTEGER NOT NULL DEFAULT 0;
UPDATE results SET findings_count = json_array_length(findings_json::json);
CREATE INDEX results_by_image ON results (image_key, scan_id);
CREATE INDEX events_by_image ON events (image_key, scan_id);
CREATE INDEX events_by_scan ON events (scan_id);
ALTER TABLE scans ADD COLUMN finished_rank BIGINT;
UPDATE scans SET finished_rank = id WHERE finished_at IS NOT NULL;
CREATE UNIQUE INDEX scans_by_finish ON scans (finished_rank);
"""

PG_V3 = """
ALTER TABLE results ADD COLUMN risk_exposure DOUBLE PRECISION;
ALTER TABLE results ADD COLUMN risk_formula INTEGER NOT NULL DEFAULT 1;
"""

PG_V4 = """
ALTER TABLE events DROP CONSTRAINT events_kind_check;
ALTER TABLE events ADD CONSTRAINT events_kind_check
    CHECK (kind IN ('appeared', 'modified', 'disappeared', 'power-on'));
CREATE TABLE decisions (
    id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    at TEXT NOT NULL,
    source TEXT NOT NULL,
    domain TEXT,
    decision TEXT NOT NULL CHECK (decision IN ('allow', 'refuse')),
    reason TEXT NOT NULL,
    image_key BYTEA,
    scan_id BIGINT REFERENCES scans(id),
    details_json TEXT NOT NULL
);
CREATE INDEX decisions_by_time ON decisions (at);
"""


def _capped_row_risk(
    status: str, findings_json: str, business_json: str, facts_json: str | None
) -> Risk | None:
    """The risk of a row recorded by the capped formula, by today's; None when unknowable."""
    if status != "audited":
        return Risk(0.0, "none", 0.0)  # an image in error has no score in either formula
    if facts_json is None:
        return None
    try:
        findings = [
            Finding(str(item["rule"]), item["severity"], str(item.get("subject", "")), "")
            for item in json.loads(findings_json)
        ]
        if any(finding.severity not in WEIGHTS for finding in findings):
            return None
        days_idle = json.loads(facts_json)["dormancy"]["days_idle"]
        criticality = str(json.loads(business_json).get("criticality", "medium"))
    except (ValueError, KeyError, TypeError, AttributeError):
        return None
    if days_idle is not None and not isinstance(days_idle, int):
        return None
    return score(findings, days_idle, criticality)


def rescore_capped_results(conn: AnyConnection) -> None:
    """Score again every row of the capped formula that holds what the score needs."""
    rows = conn.execute(
        "SELECT r.id, r.status, r.findings_json, r.business_json, f.facts_json"
        " FROM results AS r LEFT JOIN facts AS f ON f.digest = r.facts_digest"
        " WHERE r.risk_formula = ?",
        (CAPPED_FORMULA,),
    ).fetchall()
    for row_id, status, findings_json, business_json, facts_json in rows:
        risk = _capped_row_risk(status, findings_json, business_json, facts_json)
        if risk is None:
            continue
        conn.execute(
            "UPDATE results SET risk_score = ?, risk_level = ?, risk_exposure = ?,"
            " risk_formula = ? WHERE id = ?",
            (risk.score, risk.level, risk.exposure, FORMULA, row_id),
        )


@dataclass(frozen=True)
class Migration:
    """SQL statements, then what SQL alone cannot do (``then``), in one transaction;
    ``postgres`` is the same step in PostgreSQL's SQL."""

    sql: str
    postgres: str
    then: Callable[[AnyConnection], None] | None = None


MIGRATIONS: tuple[Migration, ...] = (
    Migration(V1, PG_V1),
    Migration(V2, PG_V2),
    Migration(V3, PG_V3, rescore_capped_results),
    Migration(V4, PG_V4),
)
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
