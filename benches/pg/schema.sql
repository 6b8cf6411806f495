-- Tables for the pgbench ceiling (benches/pg/run.sh).  Rows shaped like
-- ztbridge's: a Superna webhook body of about 700 bytes, its hash, the
-- alert it belongs to.

-- (a) durable single-row inserts.
DROP TABLE IF EXISTS bench_inserts;
CREATE TABLE bench_inserts (
    seq         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    order_key   text NOT NULL,
    body_hash   bytea NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now(),
    body        text NOT NULL
);

-- (b) the naive queue: one row per event, admitted pending, claimed with
-- SKIP LOCKED, completed.
DROP TABLE IF EXISTS naive_queue;
CREATE TABLE naive_queue (
    seq          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    order_key    text NOT NULL,
    body_hash    bytea NOT NULL,
    received_at  timestamptz NOT NULL DEFAULT now(),
    body         text NOT NULL,
    state        text NOT NULL DEFAULT 'pending',
    lease_owner  text,
    lease_until  timestamptz
);
CREATE INDEX naive_queue_pending ON naive_queue (seq) WHERE state = 'pending';
