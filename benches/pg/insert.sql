-- (a) One durable single-row insert per transaction (autocommit: one WAL
-- flush each, shared by whichever commits wait at the same moment).
\set alert random(1, 5000)
INSERT INTO bench_inserts (order_key, body_hash, body)
VALUES ('alert-' || :alert, sha256(convert_to(:client_id || '-' || random(), 'UTF8')),
        repeat('{"zeroTrustAlertEvent":"x",', 25));
