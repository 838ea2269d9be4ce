-- Invitations are held in the customer's state until their send time and checked again
-- then (see streams.surveys): what one waited for (another journey open, another
-- survey sent recently), '' if nothing held it beyond its delay and quiet hours.
ALTER TABLE survey_invitations
    ADD COLUMN IF NOT EXISTS held_for String DEFAULT '';

ALTER TABLE survey_suppressions
    ADD COLUMN IF NOT EXISTS held_for String DEFAULT '';
