-- Invitations are held in the customer's state until their send time and checked again
-- then (see streams.surveys): what one waited for (another journey open, another
-- survey sent recently), '' if nothing held it beyond its delay and quiet hours. For
-- an invitation, decided_at is now the wall time it was sent: checked a last time and
-- published, once the watermark reached send_at.
ALTER TABLE survey_invitations
    ADD COLUMN IF NOT EXISTS held_for String DEFAULT '';

ALTER TABLE survey_suppressions
    ADD COLUMN IF NOT EXISTS held_for String DEFAULT '';
