-- The first PostgreSQL schema (docs/notes/postgres.md, section 5).
-- Event and delivery times are milliseconds since the epoch, as the node
-- that received or attempted them saw them (the store interface passes
-- them in; `ztbridge events` shows them).  What nodes must agree on (the
-- leases, the rate limits, live nodes) uses the database's clock,
-- clock_timestamp(), whatever the nodes' clocks say.

-- Live nodes: one row per node name, heartbeat every lease/3.
CREATE TABLE nodes (
    node_id       text PRIMARY KEY,
    started_at    timestamptz NOT NULL DEFAULT clock_timestamp(),
    heartbeat_at  timestamptz NOT NULL DEFAULT clock_timestamp(),
    version       text NOT NULL,
    stopping      boolean NOT NULL DEFAULT false
);

-- One row per alert (order key): serialises the admits of one alert across
-- nodes (the upsert locks the row until commit), numbers them (alert_seq),
-- and holds the dedupe window's head (latest body hash and receive time).
CREATE TABLE alerts (
    alert_key         text PRIMARY KEY,
    last_alert_seq    bigint NOT NULL,
    head_hash         text NOT NULL,
    head_receipt      text NOT NULL,
    head_received_ms  bigint NOT NULL
);

CREATE TABLE events (
    seq          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    receipt_id   text NOT NULL UNIQUE,
    received_ms  bigint NOT NULL,
    received_by  text NOT NULL,
    event_id     text,
    alert_key    text NOT NULL,
    alert_seq    bigint NOT NULL,
    severity     text NOT NULL,
    state        text,
    body_hash    text NOT NULL,
    body         text NOT NULL,
    headers      text NOT NULL,
    UNIQUE (alert_key, alert_seq)
);
CREATE INDEX events_by_hash ON events (body_hash, received_ms);
CREATE INDEX events_by_event_id ON events (event_id);
CREATE INDEX events_by_time ON events (received_ms);

CREATE TABLE deliveries (
    event_seq    bigint NOT NULL REFERENCES events (seq) ON DELETE CASCADE,
    route        text NOT NULL,
    alert_key    text NOT NULL,
    alert_seq    bigint NOT NULL,
    state        text NOT NULL DEFAULT 'pending'
                 CHECK (state IN ('pending', 'in_flight', 'delivered', 'failed')),
    attempts     integer NOT NULL DEFAULT 0,
    next_at_ms   bigint NOT NULL,
    deadline_ms  bigint NOT NULL,
    updated_ms   bigint NOT NULL,
    lease_owner  text,
    lease_until  timestamptz,
    last_status  integer,
    reason       text,
    PRIMARY KEY (event_seq, route),
    CHECK ((state = 'in_flight') = (lease_owner IS NOT NULL AND lease_until IS NOT NULL))
);
-- The scheduler's scan: pending work, oldest first.
CREATE INDEX deliveries_due ON deliveries (event_seq) WHERE state = 'pending';
-- The earliest retry.
CREATE INDEX deliveries_next ON deliveries (next_at_ms) WHERE state = 'pending';
-- Takeover: expired leases; a node's own claims.
CREATE INDEX deliveries_leased ON deliveries (lease_until) WHERE state = 'in_flight';
CREATE INDEX deliveries_owner ON deliveries (lease_owner) WHERE state = 'in_flight';
-- Head-of-line check per (route, alert); the backlog.
CREATE INDEX deliveries_open ON deliveries (route, alert_key, alert_seq)
    WHERE state IN ('pending', 'in_flight');
-- Dead letters: a partial index, not a table (a retry flips the state back).
CREATE INDEX deliveries_dead ON deliveries (updated_ms) WHERE state = 'failed';

CREATE TABLE attempts (
    event_seq    bigint NOT NULL,
    route        text NOT NULL,
    attempt      integer NOT NULL,
    node_id      text NOT NULL,
    at_ms        bigint NOT NULL,
    outcome      text NOT NULL,
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
-- p_burst), atomically for the whole cluster: the row stays locked until
-- the caller's transaction ends.  Returns how many were granted and, if
-- fewer than asked, how long until the next one.
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
    granted := least(p_n, greatest(0,
        floor(extract(epoch FROM tau - (base - now_)) / extract(epoch FROM p_interval))::integer + 1));
    IF granted > 0 THEN
        UPDATE rate_limits SET tat = base + p_interval * granted WHERE rate_key = p_key;
    END IF;
    retry_after := CASE WHEN granted < p_n
        THEN greatest(base + p_interval * granted - tau - now_, interval '0')
        ELSE interval '0' END;
END $$;

-- Route pauses, shared by every node (claims skip a paused route).
CREATE TABLE route_pauses (
    route       text PRIMARY KEY,
    until_ms    bigint,
    reason      text,
    paused_at   timestamptz NOT NULL DEFAULT clock_timestamp()
);
