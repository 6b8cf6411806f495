-- The PostgreSQL store's statements, sketched (docs/notes/postgres.md) and
-- run by tests/pg_sketch.rs against a real server.  Each starts with a
-- "-- name:" line; parameters are positional ($1...).  Every transaction is
-- READ COMMITTED (the default).

-- name: migrate_lock
-- Two nodes starting together: the second waits here until the first has
-- applied (and committed) the migrations, then finds nothing to do.
-- A session lock (not _xact_): CREATE INDEX CONCURRENTLY cannot run in a
-- transaction.  The key is 'ztbridge' as 8 ASCII bytes.
SELECT pg_advisory_lock(8823785813459625829);

-- name: migrate_bootstrap
-- Under the lock, before reading the applied versions.
CREATE TABLE IF NOT EXISTS schema_migrations (
    version     integer PRIMARY KEY,
    name        text NOT NULL,
    checksum    text NOT NULL,           -- sha256 of the file: an edited, applied migration is refused
    applied_at  timestamptz NOT NULL DEFAULT clock_timestamp(),
    applied_by  text NOT NULL            -- node_id
);

-- name: migrate_applied
SELECT version, checksum FROM schema_migrations ORDER BY version;

-- name: migrate_record
-- In the migration's own transaction.  $1 version, $2 name, $3 checksum, $4 node_id
INSERT INTO schema_migrations (version, name, checksum, applied_by) VALUES ($1, $2, $3, $4);

-- name: migrate_unlock
SELECT pg_advisory_unlock(8823785813459625829);

-- name: node_register
-- $1 node_id, $2 version
INSERT INTO nodes (node_id, version) VALUES ($1, $2);

-- name: admit_alert
-- First statement of the admit transaction.  Locks the alert's row until
-- commit (so admits of one alert are serialised across nodes and alert_seq
-- follows commit order) and decides dedupe: the same body as the alert's
-- latest within the window is a duplicate.  No row back: a duplicate (the
-- row stays locked; read duplicate_of, then commit).  The WHERE is evaluated
-- against the latest committed row, after waiting for a concurrent admit of
-- the same alert to commit: two nodes admitting one body at once store it
-- once.
-- $1 alert_key, $2 body_hash, $3 receipt_id, $4 dedupe window (ms; 0 never
-- deduplicates)
INSERT INTO alerts AS a (alert_key, last_alert_seq, head_hash, head_receipt, head_received_at)
VALUES ($1, 1, $2, $3, clock_timestamp())
ON CONFLICT (alert_key) DO UPDATE
   SET last_alert_seq = a.last_alert_seq + 1,
       head_hash = excluded.head_hash,
       head_receipt = excluded.head_receipt,
       head_received_at = excluded.head_received_at
 WHERE NOT (a.head_hash = excluded.head_hash
            AND a.head_received_at > excluded.head_received_at - $4::bigint * interval '1 ms')
RETURNING last_alert_seq;

-- name: duplicate_of
-- $1 alert_key
SELECT head_receipt, head_received_at FROM alerts WHERE alert_key = $1;

-- name: admit_event
-- Second statement: the event and one pending delivery per route.
-- $1 receipt_id, $2 node_id, $3 event_id, $4 alert_key, $5 alert_seq,
-- $6 severity, $7 state, $8 body_hash, $9 body, $10 headers (JSON text),
-- $11 routes (text[]), $12 give up after (ms)
WITH e AS (
    INSERT INTO events (receipt_id, received_by, event_id, alert_key, alert_seq,
                        severity, state, body_hash, body, headers)
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10::text::jsonb)
    RETURNING seq, alert_key, alert_seq, received_at
)
INSERT INTO deliveries (event_seq, route, alert_key, alert_seq, next_at, deadline)
SELECT e.seq, r.route, e.alert_key, e.alert_seq, e.received_at, e.received_at + $12::bigint * interval '1 ms'
FROM e, unnest($11::text[]) AS r(route)
RETURNING event_seq;

-- name: admit_notify
-- Last statement: wakes every node's scheduler once this commits.
-- Notifications are delivered only on commit, and several in one
-- transaction are folded into one.
SELECT pg_notify('ztbridge_due', '');

-- name: claim_candidates
-- First statement of the claim transaction.  Due pending deliveries that
-- are the head of their (route, alert): no open predecessor, no in-flight
-- successor (a retried predecessor never runs beside it).  Locked with
-- SKIP LOCKED, so concurrent claimers take disjoint rows without waiting.
-- A row another node claimed meanwhile is re-checked once locked (state is
-- no longer 'pending') and dropped.  The NOT EXISTS sees the statement's
-- snapshot; an open predecessor can only close, never reopen, and admits of
-- one alert commit in alert_seq order, so a stale snapshot only ever holds
-- a row back, never lets one through early.
-- $1 batch size
SELECT d.event_seq, d.route
FROM deliveries d
WHERE d.state = 'pending'
  AND d.next_at <= clock_timestamp()
  AND NOT EXISTS (
      SELECT 1 FROM deliveries p
      WHERE p.route = d.route AND p.alert_key = d.alert_key
        AND p.state IN ('pending', 'in_flight')
        AND (p.alert_seq < d.alert_seq OR (p.state = 'in_flight' AND p.alert_seq > d.alert_seq)))
  AND NOT EXISTS (
      SELECT 1 FROM route_pauses rp
      WHERE rp.route = d.route AND (rp.until IS NULL OR rp.until > clock_timestamp()))
ORDER BY d.next_at, d.event_seq
LIMIT $1
FOR UPDATE OF d SKIP LOCKED;

-- name: rate_take
-- Between the two claim statements, once per rate key among the candidates
-- (their routes' limits come from the node's configuration): the first
-- `granted` candidates of that key (by event_seq) are claimed, the rest are
-- left pending (unlocked at commit) and retry_after says when to look again.
-- $1 rate key, $2 candidates of that key, $3 interval (ms: 60 000 / per_minute),
-- $4 burst
SELECT granted, extract(epoch FROM retry_after)::float8 AS retry_after_s
FROM rate_take($1, $2, $3::bigint * interval '1 ms', $4);

-- name: claim_mark
-- Second statement: the granted candidates become this node's, leased.
-- $1 event_seqs (bigint[]), $2 routes (text[]), $3 node_id, $4 lease (ms)
UPDATE deliveries d
   SET state = 'in_flight', lease_owner = $3,
       lease_until = clock_timestamp() + $4::bigint * interval '1 ms', updated_at = clock_timestamp()
  FROM unnest($1::bigint[], $2::text[]) AS c(event_seq, route), events e
 WHERE d.event_seq = c.event_seq AND d.route = c.route AND e.seq = d.event_seq
RETURNING d.event_seq, d.route, d.alert_key, d.alert_seq, d.attempts + 1 AS attempt,
          d.deadline, e.receipt_id, e.received_at, e.event_id, e.body;

-- name: heartbeat
-- Every lease/3: the node is alive and keeps every claim it holds.
-- $1 node_id, $2 lease (ms)
-- Rows are locked in key order here, in finish and in release, so that two
-- of one node's statements never deadlock; expire_leases skips locked rows.
WITH n AS (
    UPDATE nodes SET heartbeat_at = clock_timestamp() WHERE node_id = $1
), mine AS (
    SELECT event_seq, route FROM deliveries
     WHERE state = 'in_flight' AND lease_owner = $1
     ORDER BY event_seq, route
       FOR UPDATE
)
UPDATE deliveries d SET lease_until = clock_timestamp() + $2::bigint * interval '1 ms'
  FROM mine
 WHERE d.event_seq = mine.event_seq AND d.route = mine.route
   AND d.state = 'in_flight' AND d.lease_owner = $1;

-- name: expire_leases
-- Any node, every few seconds: claims whose owner stopped renewing go back
-- to pending, to be claimed again, in order, by whichever node comes first.
-- The attempt the dead node may have made is counted.
UPDATE deliveries d
   SET state = 'pending', attempts = d.attempts + 1,
       reason = 'lease of ' || d.lease_owner || ' expired',
       lease_owner = NULL, lease_until = NULL,
       next_at = clock_timestamp(), updated_at = clock_timestamp()
  FROM (SELECT event_seq, route FROM deliveries
         WHERE state = 'in_flight' AND lease_until < clock_timestamp()
           FOR UPDATE SKIP LOCKED) x
 WHERE d.event_seq = x.event_seq AND d.route = x.route
RETURNING d.event_seq, d.route;

-- name: finish
-- After attempts, in a batch: one statement for many.  Only while the lease
-- is still ours (else it was taken over: the other node's outcome stands;
-- the row is not counted).
-- $1 event_seqs, $2 routes, $3 states ('delivered', 'pending', 'failed'),
-- $4 next attempt in (ms, bigint[]; retries), $5 last_status (int[]),
-- $6 reason (text[]), $7 node_id
WITH f AS (
    SELECT * FROM unnest($1::bigint[], $2::text[], $3::text[], $4::bigint[], $5::int[], $6::text[])
        AS f(event_seq, route, state, retry_ms, last_status, reason)
), mine AS (
    SELECT d.event_seq, d.route FROM deliveries d JOIN f USING (event_seq, route)
     WHERE d.state = 'in_flight' AND d.lease_owner = $7
     ORDER BY d.event_seq, d.route
       FOR UPDATE OF d
)
UPDATE deliveries d
   SET state = f.state, attempts = d.attempts + 1,
       next_at = clock_timestamp() + coalesce(f.retry_ms, 0) * interval '1 ms',
       last_status = f.last_status, reason = f.reason,
       lease_owner = NULL, lease_until = NULL, updated_at = clock_timestamp()
  FROM f JOIN mine USING (event_seq, route)
 WHERE d.event_seq = f.event_seq AND d.route = f.route
   AND d.state = 'in_flight' AND d.lease_owner = $7
RETURNING d.event_seq, d.route;

-- name: release
-- On SIGTERM, after the attempts under way have finished (or the drain
-- timeout): what this node claimed but did not start goes back at once.
-- $1 node_id
WITH gone AS (
    DELETE FROM nodes WHERE node_id = $1
), mine AS (
    SELECT event_seq, route FROM deliveries
     WHERE state = 'in_flight' AND lease_owner = $1
     ORDER BY event_seq, route
       FOR UPDATE
)
UPDATE deliveries d
   SET state = 'pending', lease_owner = NULL, lease_until = NULL,
       next_at = clock_timestamp(), updated_at = clock_timestamp()
  FROM mine
 WHERE d.event_seq = mine.event_seq AND d.route = mine.route
   AND d.state = 'in_flight' AND d.lease_owner = $1
RETURNING d.event_seq, d.route;

-- name: live_nodes
-- $1 heartbeat timeout (ms)
SELECT count(*) FROM nodes
 WHERE NOT stopping AND heartbeat_at > clock_timestamp() - $1::bigint * interval '1 ms';

-- name: state_put
-- Transform state, written in the same transaction as the finish of the
-- delivery whose flow produced it, so the next delivery of the alert (on
-- any node) sees it.  $1 route, $2 key, $3 value
INSERT INTO transform_state (route, key, value) VALUES ($1, $2, $3)
ON CONFLICT (route, key) DO UPDATE SET value = excluded.value, updated_at = clock_timestamp();
