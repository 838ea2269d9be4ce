-- The journey map for analysts: funnels, top paths, transitions, leak rates, customers at
-- risk, scores. Views that take a time range are parameterized by the journeys' (or
-- answers') opening time, half-open [since, until):
--   SELECT * FROM journey_funnel(since = '2026-11-01', until = '2026-12-01')
--   WHERE journey = 'purchase' AND cut = 'all' ORDER BY stage_index
-- `cut` / `value` pairs slice one view several ways: 'all', 'segment', 'channel' (of the
-- journey's entry touchpoint), 'week' (Monday of the journey's opening), and 'stage'.

-- What the workers write with each journey row (older rows have '').
ALTER TABLE journeys ADD COLUMN IF NOT EXISTS entry_channel LowCardinality(String);
ALTER TABLE journeys ADD COLUMN IF NOT EXISTS segment LowCardinality(String);

-- The configured stages of each journey, in order; written by the workers at start.
CREATE TABLE IF NOT EXISTS journey_stage_order
(
    journey        LowCardinality(String),
    stage          LowCardinality(String),
    stage_index    UInt8,
    previous_stage LowCardinality(String),  -- '' for the first stage
    updated_at     DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree(updated_at)
ORDER BY (journey, stage_index);

-- Journeys as they stand (latest version, provisional ones left out) opened in the range.
CREATE VIEW IF NOT EXISTS journeys_between AS
SELECT *
FROM journeys FINAL
WHERE status != 'superseded'
  AND opened_at >= {since:DateTime64(3)} AND opened_at < {until:DateTime64(3)};

-- Leaks with the journey they belong to now: a leak found on a provisional journey
-- (superseded after a late event or an identity merge) follows it to its successor.
CREATE VIEW IF NOT EXISTS leaks_current AS
SELECT l.* REPLACE (if(s.superseded_by != '', s.superseded_by, l.journey_id) AS journey_id)
FROM (SELECT * FROM leaks FINAL) AS l
LEFT JOIN
(
    SELECT journey_id, superseded_by FROM journeys FINAL WHERE status = 'superseded'
) AS s ON l.journey_id = s.journey_id;

-- Per journey, stage and cut: journeys and customers that reached the stage or beyond,
-- the conversion from the previous stage (%), and the median and p90 seconds from the
-- previous stage's first touchpoint to this stage's (journeys that touched both).
CREATE VIEW IF NOT EXISTS journey_funnel AS
SELECT
    journey,
    stage,
    stage_index,
    cut,
    value,
    countIf(reached) AS journeys,
    uniqExactIf(customer_key, reached) AS customers,
    -- of the journeys that reached the previous stage (or beyond), how many reached this
    if(stage_index = 0, NULL,
       round(100 * journeys / nullIf(countIf(reached_previous), 0), 1)) AS conversion,
    -- NULL where no journey touched both stages
    if(countIf(seconds >= 0) > 0, quantileExactIf(0.5)(seconds, seconds >= 0), NULL)
        AS median_seconds,
    if(countIf(seconds >= 0) > 0, quantileExactIf(0.9)(seconds, seconds >= 0), NULL)
        AS p90_seconds
FROM
(
    SELECT
        o.journey AS journey,
        o.stage AS stage,
        o.stage_index AS stage_index,
        j.customer_key AS customer_key,
        j.stage_index >= o.stage_index AS reached,
        j.stage_index + 1 >= o.stage_index AS reached_previous,
        indexOf(j.stages_reached, o.stage) AS here,
        indexOf(j.stages_reached, o.previous_stage) AS before,
        -- -1 unless the journey touched both this stage and the previous one
        if(here > 0 AND before > 0,
           dateDiff('second', j.stages_reached_at[before], j.stages_reached_at[here]),
           -1) AS seconds,
        j.segment AS segment,
        j.entry_channel AS entry_channel,
        toString(toMonday(j.opened_at)) AS week
    FROM journeys_between(since = {since:DateTime64(3)}, until = {until:DateTime64(3)}) AS j
    INNER JOIN (SELECT * FROM journey_stage_order FINAL) AS o ON o.journey = j.journey
)
ARRAY JOIN
    ['all', 'segment', 'channel', 'week'] AS cut,
    ['all', segment, entry_channel, week] AS value
GROUP BY journey, stage, stage_index, cut, value;

-- The most frequent touchpoint sequences (repeats in a row collapsed, first 6 steps) to
-- the goal ('goal') and to each leak (its rule: the path up to the leak's touchpoint).
CREATE VIEW IF NOT EXISTS top_paths AS
SELECT
    journey,
    outcome,
    path,
    count() AS journeys,
    round(100 * journeys / sum(journeys) OVER (PARTITION BY journey, outcome), 1) AS share
FROM
(
    SELECT journey, 'goal' AS outcome, arraySlice(arrayCompact(path), 1, 6) AS path
    FROM journeys_between(since = {since:DateTime64(3)}, until = {until:DateTime64(3)})
    WHERE completed_at IS NOT NULL
    UNION ALL
    SELECT
        j.journey,
        l.rule,
        arraySlice(arrayCompact(arraySlice(j.path, 1, indexOf(j.path_event_ids, l.anchor_event_id))), 1, 6)
    FROM leaks_current AS l
    INNER JOIN journeys_between(since = {since:DateTime64(3)}, until = {until:DateTime64(3)}) AS j
        ON l.journey_id = j.journey_id
)
GROUP BY journey, outcome, path;

-- Moves from one touchpoint type to the next within journeys, with '(start)' before the
-- first and '(goal)', '(exit)' (expired) or '(open)' after the last: a Sankey's links.
CREATE VIEW IF NOT EXISTS touchpoint_transitions AS
SELECT journey, from_type, to_type, count() AS transitions, uniqExact(journey_id) AS journeys
FROM
(
    SELECT
        journey,
        journey_id,
        arrayConcat(['(start)'], path, [multiIf(
            completed_at IS NOT NULL, '(goal)', status = 'expired', '(exit)', '(open)')]) AS steps
    FROM journeys_between(since = {since:DateTime64(3)}, until = {until:DateTime64(3)})
)
ARRAY JOIN arrayPopBack(steps) AS from_type, arrayPopFront(steps) AS to_type
GROUP BY journey, from_type, to_type;

-- Leaks per 100 journeys, by rule and category, per cut: the journeys of the leak's
-- journey type in the same segment, entry channel or week, or (cut 'stage') that reached
-- the stage the leak is about.
CREATE VIEW IF NOT EXISTS leak_rates AS
SELECT
    n.journey AS journey,
    n.rule AS rule,
    n.category AS category,
    n.cut AS cut,
    n.value AS value,
    n.leaks AS leaks,
    d.journeys AS journeys,
    round(100 * n.leaks / d.journeys, 1) AS leak_rate
FROM
(
    SELECT l.journey AS journey, l.rule AS rule, l.category AS category, cut, value,
           count() AS leaks
    FROM leaks_current AS l
    INNER JOIN journeys_between(since = {since:DateTime64(3)}, until = {until:DateTime64(3)}) AS j
        ON l.journey_id = j.journey_id
    ARRAY JOIN
        ['all', 'stage', 'segment', 'channel', 'week'] AS cut,
        ['all', l.stage, j.segment, j.entry_channel, toString(toMonday(j.opened_at))] AS value
    GROUP BY journey, rule, category, cut, value
) AS n
INNER JOIN
(
    SELECT journey, cut, value, count() AS journeys
    FROM journeys_between(since = {since:DateTime64(3)}, until = {until:DateTime64(3)})
    ARRAY JOIN
        ['all', 'segment', 'channel', 'week'] AS cut,
        ['all', segment, entry_channel, toString(toMonday(opened_at))] AS value
    GROUP BY journey, cut, value
    UNION ALL
    SELECT journey, 'stage' AS cut, stage AS value, count() AS journeys
    FROM journeys_between(since = {since:DateTime64(3)}, until = {until:DateTime64(3)})
    ARRAY JOIN stages_reached AS stage
    GROUP BY journey, stage
) AS d ON n.journey = d.journey AND n.cut = d.cut AND n.value = d.value;

-- Customers to act on now: health below 50, or a leak in the last 30 days on a journey
-- that has not reached its goal.
CREATE VIEW IF NOT EXISTS customers_at_risk AS
SELECT
    h.customer_key AS customer_key,
    h.health AS health,
    h.segment AS segment,
    o.open_leaks AS open_leaks,
    o.rules AS leak_rules,
    o.last_leak_at AS last_leak_at,
    h.last_touchpoint_at AS last_touchpoint_at
FROM customer_health_now AS h
LEFT JOIN
(
    SELECT l.customer_key AS customer_key, count() AS open_leaks,
           arraySort(groupUniqArray(l.rule)) AS rules, max(l.due_at) AS last_leak_at
    FROM leaks_current AS l
    INNER JOIN (SELECT journey_id FROM journeys FINAL WHERE completed_at IS NULL
                AND status != 'superseded') AS j ON l.journey_id = j.journey_id
    WHERE l.due_at >= now() - INTERVAL 30 DAY
    GROUP BY l.customer_key
) AS o ON h.customer_key = o.customer_key
WHERE h.health < 50 OR o.open_leaks > 0;

-- Scores of the answers given in the range, per cut (touchpoint, stage, journey, channel,
-- segment, week): the `scores` view's figures for a time range.
CREATE VIEW IF NOT EXISTS scores_between AS
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
WHERE value != '' AND ts >= {since:DateTime64(3)} AND ts < {until:DateTime64(3)}
GROUP BY cut, value, metric;

-- `scores` over all time, from the same formulas (it was a copy of them).
CREATE OR REPLACE VIEW scores AS
SELECT * FROM scores_between(since = '1970-01-01 00:00:00', until = '2200-01-01 00:00:00');

-- `scores_by_touchpoint` (0005) from the same formulas too; an answer naming its
-- invitation is now about the invitation's touchpoint when it has no `about` of its own.
CREATE OR REPLACE VIEW scores_by_touchpoint AS
SELECT metric, value AS about_touchpoint, responses, score, small_sample
FROM scores
WHERE cut = 'touchpoint';
