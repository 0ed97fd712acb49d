"""The store's SQLite schema, and the migration of database files an older server wrote.

Each table belongs to one section of the store: ``batches`` and ``requests``
(``batches.py``; results are columns of their request, ``results.py``),
``files`` (``files.py``) and ``idempotency`` (``idempotency.py``).
"""

from __future__ import annotations

import sqlite3

SCHEMA = """
CREATE TABLE IF NOT EXISTS batches (
    seq INTEGER PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    name TEXT NOT NULL,
    description TEXT,
    model TEXT,
    endpoint TEXT NOT NULL,
    status TEXT NOT NULL,
    created_at REAL NOT NULL,
    started_at REAL,
    ended_at REAL,
    request_count INTEGER NOT NULL DEFAULT 0,
    completed_count INTEGER NOT NULL DEFAULT 0,
    failed_count INTEGER NOT NULL DEFAULT 0,
    cancelled_count INTEGER NOT NULL DEFAULT 0,
    request_bytes INTEGER NOT NULL DEFAULT 0,
    prompt_tokens INTEGER NOT NULL DEFAULT 0,
    completion_tokens INTEGER NOT NULL DEFAULT 0,
    error TEXT,
    dialect TEXT NOT NULL DEFAULT 'seed',
    meta TEXT,
    cancel_requested_at REAL
);
CREATE INDEX IF NOT EXISTS ix_batches_status ON batches(status, seq);
CREATE INDEX IF NOT EXISTS ix_batches_name ON batches(name, seq);
CREATE TABLE IF NOT EXISTS requests (
    n INTEGER PRIMARY KEY,
    batch_seq INTEGER NOT NULL,
    custom_id TEXT NOT NULL,
    body BLOB NOT NULL,
    status TEXT NOT NULL,
    result_seq INTEGER,
    result BLOB
);
CREATE UNIQUE INDEX IF NOT EXISTS ux_requests_custom_id ON requests(batch_seq, custom_id);
CREATE INDEX IF NOT EXISTS ix_requests_status ON requests(batch_seq, status);
CREATE INDEX IF NOT EXISTS ix_requests_results ON requests(batch_seq, result_seq)
    WHERE result_seq IS NOT NULL;
CREATE TABLE IF NOT EXISTS files (
    seq INTEGER PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    purpose TEXT NOT NULL,
    filename TEXT NOT NULL,
    bytes INTEGER NOT NULL,
    created_at REAL NOT NULL,
    content BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS idempotency (
    key TEXT PRIMARY KEY,
    fingerprint TEXT NOT NULL,
    status_code INTEGER NOT NULL,
    response BLOB NOT NULL,
    created_at REAL NOT NULL
);
"""

BATCH_COLUMNS = (
    "seq, id, name, description, model, endpoint, status, created_at, started_at, ended_at, "
    "request_count, completed_count, failed_count, cancelled_count, request_bytes, "
    "prompt_tokens, completion_tokens, error, dialect, meta, cancel_requested_at"
)
# columns added after the first release, with their definitions, for older database files
ADDED_COLUMNS = {
    "dialect": "TEXT NOT NULL DEFAULT 'seed'",
    "meta": "TEXT",
    "cancel_requested_at": "REAL",
}


def open_database(path: str) -> sqlite3.Connection:
    """Open (or create) a store's database, in WAL mode when it is a file, and migrate it."""
    conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
    if path != ":memory:":
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("PRAGMA busy_timeout=10000")
    conn.executescript(SCHEMA)
    migrate(conn)
    return conn


def migrate(conn: sqlite3.Connection) -> None:
    """Add the columns that a database file written by an older server lacks."""
    have = {r[1] for r in conn.execute("PRAGMA table_info(batches)")}
    for column, definition in ADDED_COLUMNS.items():
        if column not in have:
            conn.execute(f"ALTER TABLE batches ADD COLUMN {column} {definition}")
    conn.execute("CREATE INDEX IF NOT EXISTS ix_batches_dialect ON batches(dialect, seq)")
