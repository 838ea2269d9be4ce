-- Input that could not be used, with the original bytes and why. One row per
-- rejected message (or per rejected event of a batch envelope); the id is a
-- hash of the origin (topic/partition/offset/index), so a re-delivery replaces.
CREATE TABLE IF NOT EXISTS dead_letters
(
    dead_letter_id String,
    reason         LowCardinality(String),
    detail         String,
    path           String,
    payload        String,
    origin_topic   LowCardinality(String),
    origin_partition UInt16,
    origin_offset  UInt64,
    origin_index   Int32,
    source         LowCardinality(String),
    received_at    DateTime64(3, 'UTC'),
    stored_at      DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree(stored_at)
PARTITION BY toYYYYMM(received_at)
ORDER BY (dead_letter_id)
-- Dead letters are for repair and replay, not for history:
-- TTL toDateTime(received_at) + INTERVAL 90 DAY
SETTINGS non_replicated_deduplication_window = 1000;
