-- (b) The naive pattern, per event: one insert to admit, then one
-- SKIP LOCKED claim of one row, then one completion.  Three transactions
-- (three WAL flushes), as a node without batching would do.  The claim may
-- take another client's event; each loop still admits one and completes one.
\set alert random(1, 5000)
INSERT INTO naive_queue (order_key, body_hash, body)
VALUES ('alert-' || :alert, sha256(convert_to(:client_id || '-' || random(), 'UTF8')),
        repeat('{"zeroTrustAlertEvent":"x",', 25));
WITH next AS (
    SELECT seq FROM naive_queue
    WHERE state = 'pending'
    ORDER BY seq
    LIMIT 1
    FOR UPDATE SKIP LOCKED
), claimed AS (
    UPDATE naive_queue q
    SET state = 'in_flight', lease_owner = 'node-' || :client_id,
        lease_until = now() + interval '30 seconds'
    FROM next WHERE q.seq = next.seq
    RETURNING q.seq
)
SELECT coalesce(max(seq), 0) AS claimed FROM claimed
\gset
UPDATE naive_queue SET state = 'delivered', lease_owner = NULL, lease_until = NULL
WHERE seq = :claimed;
