-- One row per leak: a journey that lost its customer, by rule. The id is the rule and
-- the journey, so a leak re-sent after a restart replaces itself.
CREATE TABLE IF NOT EXISTS leaks
(
    leak_id         String,
    rule            LowCardinality(String),
    kind            LowCardinality(String),  -- absence, repeat, stall
    category        LowCardinality(String),  -- financial, productivity, support, process
    severity        LowCardinality(String),  -- low, medium, high
    customer_key    String,
    journey_id      String,
    journey         LowCardinality(String),
    stage           LowCardinality(String),  -- stage of the touchpoint the leak is about
    anchor_event_id String,
    anchor_type     LowCardinality(String),
    anchor_at       DateTime64(3, 'UTC'),
    due_at          DateTime64(3, 'UTC'),    -- event time at which the leak was decided
    detected_at     DateTime64(3, 'UTC')     -- wall time of detection
)
ENGINE = ReplacingMergeTree(detected_at)
PARTITION BY toYYYYMM(due_at)
ORDER BY leak_id
SETTINGS non_replicated_deduplication_window = 1000;
