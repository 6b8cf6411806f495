-- (c) The sketched store, delivery side: claim up to 32 heads of their
-- (route, alert) with SKIP LOCKED in one transaction, then complete them
-- all in a second one (a node's batch; the deliveries themselves cost
-- nothing here).
BEGIN;
WITH c AS (
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
    LIMIT 32
    FOR UPDATE OF d SKIP LOCKED
)
UPDATE deliveries d
   SET state = 'in_flight', lease_owner = 'node-' || :client_id,
       lease_until = clock_timestamp() + interval '30 seconds', updated_at = clock_timestamp()
  FROM c, events e
 WHERE d.event_seq = c.event_seq AND d.route = c.route AND e.seq = d.event_seq;
COMMIT;
UPDATE deliveries
   SET state = 'delivered', attempts = attempts + 1, lease_owner = NULL, lease_until = NULL,
       last_status = 202, updated_at = clock_timestamp()
 WHERE state = 'in_flight' AND lease_owner = 'node-' || :client_id;
