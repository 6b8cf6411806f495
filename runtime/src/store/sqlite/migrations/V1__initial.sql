-- The first schema: events as received, one delivery per route, every
-- attempt, and a one-row table the health check writes.
CREATE TABLE IF NOT EXISTS events (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    receipt_id  TEXT NOT NULL UNIQUE,
    received_ms INTEGER NOT NULL,
    event_id    TEXT,
    order_key   TEXT NOT NULL,
    severity    TEXT NOT NULL,
    state       TEXT,
    body_hash   TEXT NOT NULL,
    body        TEXT NOT NULL,
    headers     TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS events_by_hash ON events (body_hash, received_ms);
CREATE INDEX IF NOT EXISTS events_by_event_id ON events (event_id);
CREATE INDEX IF NOT EXISTS events_by_order_key ON events (order_key, seq);
CREATE INDEX IF NOT EXISTS events_by_time ON events (received_ms);
CREATE TABLE IF NOT EXISTS deliveries (
    event_seq   INTEGER NOT NULL REFERENCES events (seq) ON DELETE CASCADE,
    route       TEXT NOT NULL,
    order_key   TEXT NOT NULL,
    state       TEXT NOT NULL,
    attempts    INTEGER NOT NULL DEFAULT 0,
    next_at_ms  INTEGER NOT NULL,
    deadline_ms INTEGER NOT NULL,
    updated_ms  INTEGER NOT NULL,
    last_status INTEGER,
    reason      TEXT,
    PRIMARY KEY (event_seq, route)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS deliveries_due ON deliveries (state, next_at_ms);
CREATE INDEX IF NOT EXISTS deliveries_order ON deliveries (route, order_key, event_seq);
CREATE INDEX IF NOT EXISTS deliveries_open ON deliveries (route, order_key, event_seq)
    WHERE state IN ('pending', 'in_flight');
CREATE TABLE IF NOT EXISTS attempts (
    event_seq   INTEGER NOT NULL,
    route       TEXT NOT NULL,
    attempt     INTEGER NOT NULL,
    at_ms       INTEGER NOT NULL,
    outcome     TEXT NOT NULL,
    last_status INTEGER,
    error       TEXT,
    steps       INTEGER NOT NULL,
    fuel_used   INTEGER NOT NULL,
    duration_ms REAL NOT NULL,
    transform_digest TEXT NOT NULL,
    PRIMARY KEY (event_seq, route, attempt),
    FOREIGN KEY (event_seq, route) REFERENCES deliveries (event_seq, route) ON DELETE CASCADE
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS health (
    id    INTEGER PRIMARY KEY CHECK (id = 1),
    at_ms INTEGER NOT NULL
);
INSERT OR IGNORE INTO health (id, at_ms) VALUES (1, 0);
