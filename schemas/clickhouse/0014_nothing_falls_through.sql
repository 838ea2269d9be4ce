-- A journey re-opened after its closing touchpoint (`after_close: reopen`) keeps the
-- time of each closure it undid; `closed_at` is the latest close.
ALTER TABLE journeys ADD COLUMN IF NOT EXISTS closures Array(DateTime64(3, 'UTC')) DEFAULT [];

-- Touchpoints outside journeys are written once the watermark has passed them. An
-- identity merge may later bring older touchpoints that put one in an instance after
-- all: it is written again with reason 'in_journey', which replaces the first row (same
-- journey and event id, later detected_at) and is left out here.
DROP VIEW IF EXISTS touchpoints_outside_journeys;
CREATE VIEW touchpoints_outside_journeys AS
SELECT journey, reason, type, count() AS touchpoints, uniqExact(customer_key) AS customers,
       min(ts) AS first_at, max(ts) AS last_at
FROM outside_journeys FINAL
WHERE reason != 'in_journey'
GROUP BY journey, reason, type;
