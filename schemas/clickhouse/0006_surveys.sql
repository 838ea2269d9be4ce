-- Survey invitations decided by the journey step, one row per invitation id (its rule
-- and the touchpoint it is about), so a decision re-sent after a restart replaces itself.
CREATE TABLE IF NOT EXISTS survey_invitations
(
    invitation_id   String,
    rule            LowCardinality(String),
    trigger         LowCardinality(String),  -- touchpoint, completion, leak, relational
    metric          LowCardinality(String),  -- nps, csat, ces or a custom one
    customer_key    String,
    journey_id      String,
    journey         LowCardinality(String),
    stage           LowCardinality(String),
    touchpoint      LowCardinality(String),  -- type of the touchpoint it is about
    anchor_event_id String,
    channel         LowCardinality(String),  -- email, sms, in_app
    segment         LowCardinality(String),
    priority        UInt8,
    trigger_at      DateTime64(3, 'UTC'),    -- event time the rule fired at
    send_at         DateTime64(3, 'UTC'),    -- after the delay and out of quiet hours
    decided_at      DateTime64(3, 'UTC')     -- wall time of the decision
)
ENGINE = ReplacingMergeTree(decided_at)
PARTITION BY toYYYYMM(trigger_at)
ORDER BY invitation_id
SETTINGS non_replicated_deduplication_window = 1000;

-- Invitations a guardrail stopped: the same columns, and the reason (opted_out,
-- duplicate, outranked, sampled_out, capped) with its detail.
CREATE TABLE IF NOT EXISTS survey_suppressions AS survey_invitations
ENGINE = ReplacingMergeTree(decided_at)
PARTITION BY toYYYYMM(trigger_at)
ORDER BY invitation_id
SETTINGS non_replicated_deduplication_window = 1000;

ALTER TABLE survey_suppressions
    ADD COLUMN IF NOT EXISTS reason LowCardinality(String),
    ADD COLUMN IF NOT EXISTS detail String;

-- Customer health, the latest version per customer (read with FINAL). The score leaves
-- out recency, which depends on when it is read: see customer_health_now.
CREATE TABLE IF NOT EXISTS customer_health
(
    customer_key       String,
    score              Float64,
    segment            LowCardinality(String),
    leaks              UInt32,
    detractors         UInt32,
    promoters          UInt32,
    contacts           UInt32,
    last_touchpoint_at DateTime64(3, 'UTC'),
    idle_day_weight    Float64,
    window_days        Float64,
    version            UInt64,
    updated_at         DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree(version)
ORDER BY customer_key
SETTINGS non_replicated_deduplication_window = 1000;

CREATE VIEW IF NOT EXISTS customer_health_now AS
SELECT
    customer_key,
    greatest(0, score - idle_day_weight * greatest(0, dateDiff('day', last_touchpoint_at, now())))
        AS health,
    score AS health_without_recency,
    segment,
    leaks,
    detractors,
    promoters,
    contacts,
    last_touchpoint_at
FROM customer_health FINAL;

-- Each answer with what it was about: the invitation it answers (journey, stage, rule,
-- channel asked on) when it names one, else its own `about` touchpoint and channel.
CREATE VIEW IF NOT EXISTS scored_responses AS
SELECT
    r.event_id AS event_id,
    r.customer_key AS customer_key,
    r.ts AS ts,
    toMonday(r.ts) AS week,
    r.metric AS metric,
    r.score AS score,
    if(r.about_touchpoint != '', r.about_touchpoint, i.touchpoint) AS touchpoint,
    i.journey AS journey,
    i.stage AS stage,
    i.rule AS rule,
    if(i.channel != '', i.channel, r.channel) AS channel,
    if(r.segment != '', r.segment, i.segment) AS segment,
    r.invitation_id AS invitation_id
FROM survey_responses AS r
LEFT JOIN (SELECT * FROM survey_invitations FINAL) AS i ON r.invitation_id = i.invitation_id;

-- NPS (% promoters 9-10 minus % detractors 0-6), CSAT (% of 4-5 on 1-5) and CES (mean
-- on 1-7) per cut: touchpoint, stage (journey/stage), journey, channel, segment, week.
-- Read one cut at a time: WHERE cut = 'touchpoint'.
CREATE VIEW IF NOT EXISTS scores AS
SELECT
    cut,
    value,
    metric,
    count() AS responses,
    multiIf(
        metric = 'nps', round(100 * (countIf(score >= 9) - countIf(score <= 6)) / count(), 1),
        metric = 'csat', round(100 * countIf(score >= 4) / count(), 1),
        metric = 'ces', round(avg(score), 2),
        NULL
    ) AS score,
    responses < 30 AS small_sample  -- too few answers to trust the figure
FROM scored_responses
ARRAY JOIN
    ['touchpoint', 'stage', 'journey', 'channel', 'segment', 'week'] AS cut,
    [touchpoint, if(stage != '', concat(journey, '/', stage), ''), journey, channel, segment,
     toString(week)] AS value
WHERE value != ''
GROUP BY cut, value, metric;

-- Per rule: invitations sent, how many were answered, and the rate.
CREATE VIEW IF NOT EXISTS response_rate_by_rule AS
SELECT
    i.rule AS rule,
    count() AS invitations,
    countIf(a.answers > 0) AS answered,
    round(100 * answered / invitations, 1) AS response_rate
FROM (SELECT * FROM survey_invitations FINAL) AS i
LEFT JOIN
(
    SELECT invitation_id, count() AS answers
    FROM survey_responses
    WHERE invitation_id != ''
    GROUP BY invitation_id
) AS a ON i.invitation_id = a.invitation_id
GROUP BY rule;
