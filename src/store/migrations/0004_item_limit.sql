-- Smoke runs: `kitt campaign run --limit N` scores only the first N items of
-- every quality benchmark. A session records the limit it ran with, and a run
-- the limit of its latest attempt (NULL: whole datasets), so a limited
-- success is never mistaken for a full one.

ALTER TABLE campaign_sessions
    ADD COLUMN item_limit INTEGER CHECK (item_limit IS NULL OR item_limit > 0);

ALTER TABLE campaign_runs
    ADD COLUMN item_limit INTEGER CHECK (item_limit IS NULL OR item_limit > 0);
