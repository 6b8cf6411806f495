-- Sketch of migration V1 of the PostgreSQL store (docs/notes/postgres.md).
-- Run by tests/pg_sketch.rs against a real server, with the statements of
-- queries.sql.  Times come from the database's clock (clock_timestamp()),
-- never a node's, so dedupe windows, leases and rate limits agree across
-- nodes whatever their clocks say.

-- (schema_migrations, the runner's own table, is made by migrate_bootstrap
-- in queries.sql before any migration runs.)

-- Live nodes: one row per node, heartbeat every few seconds.
CREATE TABLE nodes (
    node_id       text PRIMARY KEY,          -- host:pid:random, new at each start
    started_at    timestamptz NOT NULL DEFAULT clock_timestamp(),
    heartbeat_at  timestamptz NOT NULL DEFAULT clock_timestamp(),
    version       text NOT NULL,             -- ztbridge version
    stopping      boolean NOT NULL DEFAULT false
);

-- One row per alert (order key): serialises the admits of one alert across
-- nodes (the upsert locks the row until commit), numbers them (alert_seq, so
-- per-alert order is commit order), and holds the dedupe window (the head's
-- body hash and receive time).  Events without a Superna event ID are keyed
-- by 'body:' || hash, so the same body is deduplicated there too.
CREATE TABLE alerts (
    alert_key        text PRIMARY KEY,
    last_alert_seq   bigint NOT NULL,
    head_hash        bytea NOT NULL,
    head_receipt     text NOT NULL,
    head_received_at timestamptz NOT NULL
);

CREATE TABLE events (
    seq          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    receipt_id   text NOT NULL UNIQUE,
    received_at  timestamptz NOT NULL DEFAULT clock_timestamp(),
    received_by  text NOT NULL,              -- node_id
    event_id     text,
    alert_key    text NOT NULL,
    alert_seq    bigint NOT NULL,
    severity     text NOT NULL,
    state        text,
    body_hash    bytea NOT NULL,
    body         text NOT NULL,
    headers      jsonb NOT NULL DEFAULT '{}',
    UNIQUE (alert_key, alert_seq)
);
CREATE INDEX events_by_event_id ON events (event_id);
CREATE INDEX events_by_time ON events (received_at);

CREATE TABLE deliveries (
    event_seq    bigint NOT NULL REFERENCES events (seq) ON DELETE CASCADE,
    route        text NOT NULL,
    alert_key    text NOT NULL,
    alert_seq    bigint NOT NULL,
    state        text NOT NULL DEFAULT 'pending'
                 CHECK (state IN ('pending', 'in_flight', 'delivered', 'failed')),
    attempts     integer NOT NULL DEFAULT 0,
    next_at      timestamptz NOT NULL DEFAULT clock_timestamp(),
    deadline     timestamptz NOT NULL,
    lease_owner  text,                       -- node_id while in_flight
    lease_until  timestamptz,
    updated_at   timestamptz NOT NULL DEFAULT clock_timestamp(),
    last_status  integer,
    reason       text,
    PRIMARY KEY (event_seq, route),
    CHECK ((state = 'in_flight') = (lease_owner IS NOT NULL AND lease_until IS NOT NULL))
);
-- The scheduler's scan: due pending work, oldest first.
CREATE INDEX deliveries_due ON deliveries (next_at, event_seq) WHERE state = 'pending';
-- Takeover: expired leases.
CREATE INDEX deliveries_leased ON deliveries (lease_until) WHERE state = 'in_flight';
-- Head-of-line check per (route, alert); also the backlog gauges.
CREATE INDEX deliveries_open ON deliveries (route, alert_key, alert_seq)
    WHERE state IN ('pending', 'in_flight');
-- Dead letters: a partial index, not a table (a retry flips the state back).
CREATE INDEX deliveries_dead ON deliveries (updated_at) WHERE state = 'failed';

CREATE TABLE attempts (
    event_seq    bigint NOT NULL,
    route        text NOT NULL,
    attempt      integer NOT NULL,
    node_id      text NOT NULL,
    at           timestamptz NOT NULL DEFAULT clock_timestamp(),
    outcome      jsonb NOT NULL,
    last_status  integer,
    error        text,
    steps        integer NOT NULL,
    fuel_used    bigint NOT NULL,
    duration_ms  double precision NOT NULL,
    transform_digest text NOT NULL,
    PRIMARY KEY (event_seq, route, attempt),
    FOREIGN KEY (event_seq, route) REFERENCES deliveries (event_seq, route) ON DELETE CASCADE
);

-- Per-route transform state (Jitbit: Superna event ID -> ticket ID).
CREATE TABLE transform_state (
    route       text NOT NULL,
    key         text NOT NULL,
    value       text NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (route, key)
);

-- Rate limits, cluster-wide: GCRA's theoretical arrival time per rate key.
CREATE TABLE rate_limits (
    rate_key  text PRIMARY KEY,
    tat       timestamptz NOT NULL
);

-- Takes up to p_n tokens of p_key (GCRA: one per p_interval, bursts of
-- p_burst), atomically for the whole cluster: the row is locked until the
-- caller's transaction ends.  Returns how many were granted and, if fewer
-- than asked, how long until the next one.
CREATE FUNCTION rate_take(p_key text, p_n integer, p_interval interval, p_burst integer,
                          OUT granted integer, OUT retry_after interval)
LANGUAGE plpgsql AS $$
DECLARE
    now_ timestamptz := clock_timestamp();
    tau  interval := p_interval * (p_burst - 1);
    base timestamptz;
BEGIN
    INSERT INTO rate_limits (rate_key, tat) VALUES (p_key, now_)
        ON CONFLICT (rate_key) DO NOTHING;
    SELECT greatest(tat, now_) INTO base FROM rate_limits WHERE rate_key = p_key FOR UPDATE;
    -- Token k (1-based) conforms when base + (k-1)*T - now <= tau.
    granted := least(p_n, greatest(0,
        floor(extract(epoch FROM tau - (base - now_)) / extract(epoch FROM p_interval))::integer + 1));
    IF granted > 0 THEN
        UPDATE rate_limits SET tat = base + p_interval * granted WHERE rate_key = p_key;
    END IF;
    retry_after := CASE WHEN granted < p_n
        THEN greatest(base + p_interval * granted - tau - now_, interval '0')
        ELSE interval '0' END;
END $$;

-- Pause and retry commands, shared by every node.
CREATE TABLE route_pauses (
    route       text PRIMARY KEY,
    until       timestamptz,                 -- NULL: until resumed
    reason      text,
    paused_at   timestamptz NOT NULL DEFAULT clock_timestamp()
);
