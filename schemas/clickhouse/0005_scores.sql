-- Survey answers are `survey_response` touchpoints whose properties carry the metric,
-- the score and, optionally, the touchpoint they are about and the invitation.
CREATE VIEW IF NOT EXISTS survey_responses AS
SELECT
    event_id,
    customer_key,
    ts,
    channel,
    segment,
    lower(properties['metric'])             AS metric,
    toFloat64OrNull(properties['score'])    AS score,
    properties['about']                     AS about_touchpoint,
    properties['invitation_id']             AS invitation_id,
    properties['comment']                   AS comment
FROM touchpoints FINAL
WHERE type = 'survey_response' AND score IS NOT NULL;

-- NPS: % promoters (9-10) minus % detractors (0-6); CSAT: % of 4-5 on a 5-point scale;
-- CES: mean effort on 1-7. Scores do not average across groups: for other cuts
-- (segment, channel, week), group survey_responses the same way.
CREATE VIEW IF NOT EXISTS scores_by_touchpoint AS
SELECT
    metric,
    about_touchpoint,
    count() AS responses,
    multiIf(
        metric = 'nps', round(100 * (countIf(score >= 9) - countIf(score <= 6)) / count(), 1),
        metric = 'csat', round(100 * countIf(score >= 4) / count(), 1),
        metric = 'ces', round(avg(score), 2),
        NULL
    ) AS score,
    responses < 30 AS small_sample  -- too few answers to trust the figure
FROM survey_responses
GROUP BY metric, about_touchpoint;
