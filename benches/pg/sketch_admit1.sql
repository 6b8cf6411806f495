-- (c1) The sketched admit as one statement (one round trip, autocommit):
-- the alert's row, then the event, then its delivery, chained through
-- RETURNING, so the event's seq is still drawn under the alert's lock.
-- A duplicate inserts nothing (the node then reads alerts for the message).
\set alert random(1, 5000)
WITH a AS (
    INSERT INTO alerts AS a (alert_key, last_alert_seq, head_hash, head_receipt, head_received_at)
    VALUES ('alert-' || :alert, 1, sha256(convert_to(:client_id || '-' || random(), 'UTF8')),
            'r-' || :client_id || '-' || random(), clock_timestamp())
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
