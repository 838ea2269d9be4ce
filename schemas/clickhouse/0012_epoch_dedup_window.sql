-- The worker inserts each table's rows once per epoch (a batch of one partition's
-- offsets), with a deduplication token naming the epoch; an epoch re-run after a crash
-- repeats its tokens. The window must hold every epoch since the oldest one a restart can
-- re-run (at a few epochs a second per partition: minutes). Replicated tables use
-- replicated_deduplication_window instead.
ALTER TABLE touchpoints MODIFY SETTING non_replicated_deduplication_window = 10000;
ALTER TABLE dead_letters MODIFY SETTING non_replicated_deduplication_window = 10000;
ALTER TABLE journeys MODIFY SETTING non_replicated_deduplication_window = 10000;
ALTER TABLE leaks MODIFY SETTING non_replicated_deduplication_window = 10000;
ALTER TABLE survey_invitations MODIFY SETTING non_replicated_deduplication_window = 10000;
ALTER TABLE survey_suppressions MODIFY SETTING non_replicated_deduplication_window = 10000;
ALTER TABLE customer_health MODIFY SETTING non_replicated_deduplication_window = 10000;
ALTER TABLE follow_ups MODIFY SETTING non_replicated_deduplication_window = 10000;
ALTER TABLE outside_journeys MODIFY SETTING non_replicated_deduplication_window = 10000;
