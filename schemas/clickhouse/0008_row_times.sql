-- When each touchpoint row became visible (ClickHouse's clock at insert), so the time from
-- an event to its row can be measured where it is read (`parcours bench`, dashboards).
ALTER TABLE touchpoints
    ADD COLUMN IF NOT EXISTS inserted_at DateTime64(3, 'UTC') DEFAULT now64(3);
