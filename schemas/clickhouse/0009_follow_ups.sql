-- Follow-up tasks for a person (see streams.follow_ups): the latest version per task
-- (open, then closed), read with FINAL.
CREATE TABLE IF NOT EXISTS follow_ups
(
    task_id            String,
    rule               LowCardinality(String),
    customer_key       String,
    reason             LowCardinality(String),  -- the leak rule that opened it
    category           LowCardinality(String),
    severity           LowCardinality(String),
    journey_id         String,
    journey            LowCardinality(String),
    stage              LowCardinality(String),
    anchor_event_id    String,
    recent_touchpoints Array(String),           -- the journey's last touchpoint types
    priority           LowCardinality(String),
    status             LowCardinality(String),  -- open, closed
    created_at         DateTime64(3, 'UTC'),    -- event time the leak fired
    due_at             DateTime64(3, 'UTC'),
    closed_at          DateTime64(3, 'UTC'),    -- 1970 while open
    closed_by          String,                  -- the closing touchpoint's event id
    version            UInt8,
    decided_at         DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree(version)
PARTITION BY toYYYYMM(created_at)
ORDER BY task_id
SETTINGS non_replicated_deduplication_window = 1000;

-- Open tasks past their due time, most overdue first.
CREATE VIEW IF NOT EXISTS follow_ups_overdue AS
SELECT task_id, rule, customer_key, reason, journey, stage, priority, created_at, due_at,
       dateDiff('hour', due_at, now64(3)) AS hours_overdue
FROM follow_ups FINAL
WHERE status = 'open' AND due_at < now64(3)
ORDER BY due_at;

-- Tasks per rule: opened, closed, open now, overdue now, and the median hours to close.
CREATE VIEW IF NOT EXISTS follow_up_summary AS
SELECT rule,
       count() AS tasks,
       countIf(status = 'closed') AS closed,
       countIf(status = 'open') AS open,
       countIf(status = 'open' AND due_at < now64(3)) AS overdue,
       round(quantileIf(0.5)(dateDiff('minute', created_at, closed_at) / 60, status = 'closed'), 1)
           AS median_hours_to_close
FROM follow_ups FINAL
GROUP BY rule
ORDER BY rule;
