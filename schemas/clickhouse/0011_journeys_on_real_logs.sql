-- Journeys that start mid-flow and are re-opened after their goal (see README
-- "Journeys"): the stage a journey entered at, and how often it was re-opened.
ALTER TABLE journeys ADD COLUMN IF NOT EXISTS entry_stage LowCardinality(String) DEFAULT '';
ALTER TABLE journeys ADD COLUMN IF NOT EXISTS reopened UInt16 DEFAULT 0;

-- Touchpoints of a journey's types that joined no instance of it, with the reason
-- (no_open_journey, reentry_not_allowed, entry_blocked, goal_not_reached). Written once
-- the answer is final (the journey sealed past it, or it left the customer's state).
CREATE TABLE IF NOT EXISTS outside_journeys
(
    event_id     String,
    journey      LowCardinality(String),
    reason       LowCardinality(String),
    customer_key String,
    type         LowCardinality(String),
    ts           DateTime64(3, 'UTC'),
    detected_at  DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree(detected_at)
PARTITION BY toYYYYMM(ts)
ORDER BY (journey, event_id)
SETTINGS non_replicated_deduplication_window = 1000;

-- How many, by journey, reason and touchpoint type.
CREATE VIEW IF NOT EXISTS touchpoints_outside_journeys AS
SELECT journey, reason, type, count() AS touchpoints, uniqExact(customer_key) AS customers,
       min(ts) AS first_at, max(ts) AS last_at
FROM outside_journeys FINAL
GROUP BY journey, reason, type;

-- The funnel tells stages reached through a touchpoint (`touched`) from stages a journey
-- went past without one (`skipped`: it entered later, or jumped over them).
DROP VIEW IF EXISTS journey_funnel_touched;
CREATE VIEW journey_funnel_touched AS
SELECT
    o.journey AS journey,
    o.stage AS stage,
    o.stage_index AS stage_index,
    countIf(j.stage_index >= o.stage_index) AS journeys,
    countIf(has(j.stages_reached, o.stage)) AS touched,
    journeys - touched AS skipped
FROM journeys_between(since = {since:DateTime64(3)}, until = {until:DateTime64(3)}) AS j
INNER JOIN (SELECT * FROM journey_stage_order FINAL) AS o ON o.journey = j.journey
GROUP BY journey, stage, stage_index;
