"""The SQLite schema as an ordered list of migrations, applied in place at start-up.

``meta.schema_version`` says which have run. Each migration runs in one
transaction with the version bump, so a crash leaves the file at the old
version or the new one, never between. A file from a newer monitor is refused
rather than guessed at. (Alembic would do the same behind SQLAlchemy, which
this monitor does not otherwise load: at 256 MB and a sub-second start-up
budget, a short list of SQL scripts is the better trade.)
"""

from __future__ import annotations

import sqlite3

from monitor.store.base import StoreError

# Version 1: release 0.1.0, one issue sink. Written as it shipped (IF NOT EXISTS
# because 0.1.0 ran it at every start).
_V1 = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS sessions (
    id INTEGER PRIMARY KEY,
    started_at REAL NOT NULL,
    last_seen_at REAL NOT NULL,
    stopped_at REAL
);
CREATE TABLE IF NOT EXISTS check_results (
    id INTEGER PRIMARY KEY,
    target TEXT NOT NULL,
    check_name TEXT NOT NULL,
    started_at REAL NOT NULL,
    duration_s REAL NOT NULL,
    outcome TEXT NOT NULL,
    reason TEXT NOT NULL,
    status INTEGER,
    detail TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS check_results_by_time ON check_results (target, check_name, started_at);
CREATE INDEX IF NOT EXISTS check_results_started ON check_results (started_at);
CREATE TABLE IF NOT EXISTS target_samples (
    target TEXT NOT NULL,
    at REAL NOT NULL,
    outcome TEXT NOT NULL,
    hold_s REAL NOT NULL,
    PRIMARY KEY (target, at)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS target_samples_at ON target_samples (at);
CREATE TABLE IF NOT EXISTS tracker_state (
    target TEXT PRIMARY KEY,
    state TEXT NOT NULL,
    updated_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS incidents (
    id TEXT PRIMARY KEY,
    target TEXT NOT NULL,
    started_at REAL NOT NULL,
    resolved_at REAL,
    issue_number INTEGER,
    issue_url TEXT,
    probes_total INTEGER NOT NULL DEFAULT 0,
    probes_failed INTEGER NOT NULL DEFAULT 0,
    reopened INTEGER NOT NULL DEFAULT 0,
    deployment TEXT,
    updated_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS incidents_by_target ON incidents (target, started_at);
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY,
    incident_id TEXT NOT NULL,
    target TEXT NOT NULL,
    kind TEXT NOT NULL,
    payload TEXT NOT NULL,
    created_at REAL NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at REAL NOT NULL,
    done_at REAL,
    last_error TEXT
);
CREATE INDEX IF NOT EXISTS outbox_pending ON outbox (done_at, incident_id, id);
CREATE TABLE IF NOT EXISTS versions (
    target TEXT NOT NULL,
    check_name TEXT NOT NULL,
    version TEXT NOT NULL,
    seen_at REAL NOT NULL,
    PRIMARY KEY (target, check_name)
);
CREATE TABLE IF NOT EXISTS deployments (
    id INTEGER PRIMARY KEY,
    target TEXT NOT NULL,
    from_version TEXT,
    to_version TEXT NOT NULL,
    seen_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS deployments_by_target ON deployments (target, seen_at);
CREATE TABLE IF NOT EXISTS rollups (
    period TEXT NOT NULL,
    target TEXT NOT NULL,
    check_name TEXT NOT NULL,
    bucket REAL NOT NULL,
    probes INTEGER NOT NULL,
    failures INTEGER NOT NULL,
    degraded INTEGER NOT NULL,
    up_s REAL NOT NULL,
    degraded_s REAL NOT NULL,
    down_s REAL NOT NULL,
    unknown_s REAL NOT NULL,
    latency_sum REAL NOT NULL,
    latency_min REAL,
    latency_max REAL,
    latency_hist TEXT NOT NULL,
    PRIMARY KEY (period, target, check_name, bucket)
) WITHOUT ROWID;
"""

# Version 2: outbox rows belong to a channel (0.1.0's were all GitHub's), and each
# channel keeps its own handle per incident (the issue numbers known so far move over).
_V2 = """
ALTER TABLE outbox ADD COLUMN channel TEXT NOT NULL DEFAULT 'github';
DROP INDEX IF EXISTS outbox_pending;
CREATE INDEX outbox_pending ON outbox (channel, done_at, target, id);
CREATE TABLE channel_handles (
    channel TEXT NOT NULL,
    incident_id TEXT NOT NULL,
    number INTEGER,
    url TEXT,
    ref TEXT,
    PRIMARY KEY (channel, incident_id)
) WITHOUT ROWID;
INSERT INTO channel_handles (channel, incident_id, number, url, ref)
    SELECT 'github', id, issue_number, issue_url, NULL
    FROM incidents WHERE issue_number IS NOT NULL;
"""

# Version 3: several instances. Results name the region that probed; each region's
# latest view of each target is its quorum vote; sessions name their instance; the
# leadership row carries the epoch that fences a deposed leader's writes.
_V3 = """
ALTER TABLE check_results ADD COLUMN region TEXT NOT NULL DEFAULT 'local';
ALTER TABLE sessions ADD COLUMN instance TEXT NOT NULL DEFAULT 'local';
CREATE TABLE region_views (
    target TEXT NOT NULL,
    region TEXT NOT NULL,
    at REAL NOT NULL,
    seen_at REAL NOT NULL,
    outcome TEXT NOT NULL,
    since REAL NOT NULL,
    streak INTEGER NOT NULL,
    hold_s REAL NOT NULL,
    result TEXT NOT NULL,
    PRIMARY KEY (target, region)
) WITHOUT ROWID;
CREATE TABLE leadership (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    epoch INTEGER NOT NULL,
    region TEXT NOT NULL,
    instance TEXT NOT NULL,
    since REAL NOT NULL
);
"""

# Version 4: the status page's chart and median queries read a target's recent results;
# with three regions' rows interleaved, indexes that hold every column those queries read
# answer them from the index alone (docs/benchmarks.md, "PostgreSQL against SQLite").
_V4 = """
DROP INDEX IF EXISTS check_results_by_time;
CREATE INDEX check_results_by_time
    ON check_results (target, check_name, started_at, duration_s, outcome);
CREATE INDEX check_results_by_target
    ON check_results (target, started_at, check_name, duration_s, outcome);
"""

# Version 5: paging channels and people. An outbox retry says what kind of wait it is
# (a transient backoff a success releases, or a hold the service asked for); incidents
# record who acknowledged or closed their issue; ad-hoc maintenance windows (the API's);
# rollups account maintenance time apart, like unknown time.
_V5 = """
ALTER TABLE outbox ADD COLUMN retry_class TEXT;
ALTER TABLE incidents ADD COLUMN acknowledged_at REAL;
ALTER TABLE incidents ADD COLUMN acknowledged_by TEXT;
ALTER TABLE incidents ADD COLUMN closed_at REAL;
ALTER TABLE incidents ADD COLUMN closed_by TEXT;
ALTER TABLE rollups ADD COLUMN maintenance_s REAL NOT NULL DEFAULT 0;
CREATE TABLE maintenance (
    id INTEGER PRIMARY KEY,
    targets TEXT,
    starts_at REAL NOT NULL,
    ends_at REAL NOT NULL,
    reason TEXT NOT NULL,
    source TEXT NOT NULL,
    created_at REAL NOT NULL
);
CREATE INDEX maintenance_by_end ON maintenance (ends_at);
"""

# Version 6: what the KPIs read from GitHub (deployments, workflow runs, Lighthouse
# statuses, each deployment's commits) and the ETags that make a re-read free, as
# documents keyed by kind and GitHub's own id; ``at`` orders and expires them.
_V6 = """
CREATE TABLE github_records (
    kind TEXT NOT NULL,
    key TEXT NOT NULL,
    at REAL NOT NULL,
    payload TEXT NOT NULL,
    PRIMARY KEY (kind, key)
) WITHOUT ROWID;
CREATE INDEX github_records_by_time ON github_records (kind, at);
"""

MIGRATIONS: tuple[str, ...] = (_V1, _V2, _V3, _V4, _V5, _V6)
SCHEMA_VERSION = len(MIGRATIONS)


def current_version(db: sqlite3.Connection) -> int:
    """The schema version of the file: 0 when it is new."""
    has_meta = db.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'meta'"
    ).fetchone()
    if not has_meta:
        return 0
    row = db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    return int(row[0]) if row else 0


def migrate(db: sqlite3.Connection) -> int:
    """Bring the file to :data:`SCHEMA_VERSION`; return the version it had."""
    found = current_version(db)
    if found > SCHEMA_VERSION:
        raise StoreError(
            f"the state database has schema version {found}, newer than this monitor"
            f" understands ({SCHEMA_VERSION}): run a newer monitor, or point"
            " monitor.state_path at a new file"
        )
    for version in range(found + 1, SCHEMA_VERSION + 1):
        script = MIGRATIONS[version - 1]
        try:
            db.executescript(
                "BEGIN IMMEDIATE;"
                + script
                + "INSERT OR REPLACE INTO meta (key, value) VALUES"
                + f" ('schema_version', '{version}');COMMIT;"
            )
        except sqlite3.Error:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
    return found
