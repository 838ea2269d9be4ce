-- One row per journey instance; the highest version is the current one (read with
-- FINAL). Superseded rows (a provisional journey replaced after an earlier event
-- arrived, or after an identity merge) point to their successor in superseded_by.
CREATE TABLE IF NOT EXISTS journeys
(
    journey_id        String,
    journey           LowCardinality(String),
    customer_key      String,
    status            LowCardinality(String),  -- open, completed, closed, expired, superseded
    stage             LowCardinality(String),  -- furthest stage reached
    stage_index       UInt8,
    stages_reached    Array(LowCardinality(String)),
    stages_reached_at Array(DateTime64(3, 'UTC')),
    path              Array(LowCardinality(String)),
    path_event_ids    Array(String),
    path_stages       Array(LowCardinality(String)),
    path_truncated    Bool,
    touchpoints       UInt32,
    entry_event_id    String,
    opened_at         DateTime64(3, 'UTC'),
    last_event_at     DateTime64(3, 'UTC'),
    completed_at      Nullable(DateTime64(3, 'UTC')),
    closed_at         Nullable(DateTime64(3, 'UTC')),
    superseded_by     String,
    version           UInt64,
    updated_at        DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree(version)
ORDER BY journey_id
SETTINGS non_replicated_deduplication_window = 1000;

-- Touchpoints with the journeys they belong to (a touchpoint may belong to several).
CREATE VIEW IF NOT EXISTS touchpoint_journeys AS
SELECT
    event_id,
    journey_id,
    journey,
    customer_key,
    stage,
    status AS journey_status
FROM journeys FINAL
ARRAY JOIN path_event_ids AS event_id, path_stages AS stage
WHERE status != 'superseded';
