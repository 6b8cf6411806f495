-- (c8) Group admission: 8 webhooks (8 different alerts) in one statement
-- and one commit, as a node that gathers what arrives while the previous
-- commit is flushed (like the SQLite writer's group commit).  Alerts are
-- locked in key order, so concurrent batches cannot deadlock.  (Several
-- updates of one alert in one batch need last_alert_seq + n; not here.)
\set base random(0, 624)
WITH input AS (
    SELECT 'alert-' || lpad((:base * 8 + i)::text, 5, '0') AS alert_key,
           sha256(convert_to(:client_id || '-' || i || '-' || random(), 'UTF8')) AS hash,
           'r-' || :client_id || '-' || i || '-' || random() AS receipt
    FROM generate_series(1, 8) AS i
    ORDER BY 1
), a AS (
    INSERT INTO alerts AS a (alert_key, last_alert_seq, head_hash, head_receipt, head_received_at)
    SELECT alert_key, 1, hash, receipt, clock_timestamp() FROM input
    ORDER BY alert_key
    ON CONFLICT (alert_key) DO UPDATE
       SET last_alert_seq = a.last_alert_seq + 1, head_hash = excluded.head_hash,
           head_receipt = excluded.head_receipt, head_received_at = excluded.head_received_at
     WHERE NOT (a.head_hash = excluded.head_hash
                AND a.head_received_at > excluded.head_received_at - interval '10 minutes')
    RETURNING alert_key, last_alert_seq, head_receipt, head_hash
), e AS (
    INSERT INTO events (receipt_id, received_by, event_id, alert_key, alert_seq,
                        severity, body_hash, body)
    SELECT a.head_receipt, 'node-' || :client_id, a.alert_key, a.alert_key, a.last_alert_seq,
           'critical', a.head_hash, repeat('{"zeroTrustAlertEvent":"x",', 25)
    FROM a
    RETURNING seq, alert_key, alert_seq, received_at
)
INSERT INTO deliveries (event_seq, route, alert_key, alert_seq, next_at, deadline)
SELECT e.seq, 'pagerduty', e.alert_key, e.alert_seq, e.received_at, e.received_at + interval '1 day'
FROM e;
