-- Every valid touchpoint, once. ReplacingMergeTree on the sort key makes a
-- re-delivered event (same customer, time and event_id) collapse into one row
-- at merge time; read with FINAL where exact counts matter before a merge.
-- The dedup window makes a retried batch with the same insert token a no-op.
CREATE TABLE IF NOT EXISTS touchpoints
(
    event_id      String,
    customer_key  String,
    customer_id   String,
    anonymous_id  String,
    type          LowCardinality(String),
    phase         LowCardinality(String),
    ts            DateTime64(3, 'UTC'),
    channel       LowCardinality(String),
    source        LowCardinality(String),
    session_id    String,
    segment       LowCardinality(String),
    properties    Map(String, String),
    src_partition UInt16,
    src_offset    UInt64,
    ingested_at   DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree(ingested_at)
PARTITION BY toYYYYMM(ts)
ORDER BY (customer_key, ts, event_id)
-- Keep raw touchpoints for as long as journeys are analysed; to expire them:
-- TTL toDateTime(ts) + INTERVAL 2 YEAR
SETTINGS non_replicated_deduplication_window = 1000;
