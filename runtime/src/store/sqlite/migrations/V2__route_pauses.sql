-- Paused routes (the console's pause): the scheduler skips their
-- deliveries, which wait; the row outlives a restart.
CREATE TABLE IF NOT EXISTS route_pauses (
    route     TEXT PRIMARY KEY,
    paused_ms INTEGER NOT NULL
);
