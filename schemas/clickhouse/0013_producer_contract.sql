-- Touchpoint schema 1.1 (the producer contract, see README "Sending events"): where the
-- touchpoint happened (`context`, flattened: context['campaign.source']), the schema
-- version the producer wrote to, the top-level fields of a newer minor version kept as
-- they came, and the collector's clock-skew correction: the client's own `ts`
-- (original_ts), when it sent the event by its clock (sent_at) and when the collector
-- received it by its own (received_at); `ts` is the corrected time.
ALTER TABLE touchpoints ADD COLUMN IF NOT EXISTS context Map(String, String);
ALTER TABLE touchpoints ADD COLUMN IF NOT EXISTS schema_version LowCardinality(String) DEFAULT '';
ALTER TABLE touchpoints ADD COLUMN IF NOT EXISTS extensions Map(String, String);
ALTER TABLE touchpoints ADD COLUMN IF NOT EXISTS original_ts Nullable(DateTime64(3, 'UTC'));
ALTER TABLE touchpoints ADD COLUMN IF NOT EXISTS sent_at Nullable(DateTime64(3, 'UTC'));
ALTER TABLE touchpoints ADD COLUMN IF NOT EXISTS received_at Nullable(DateTime64(3, 'UTC'));
