-- Parallel campaigns: the devices a run's latest attempt was placed on
-- (`GPU 0,1`, or `CPU`; NULL when the campaign ran one run at a time), so
-- `campaign status` can show where each run in flight runs.

ALTER TABLE campaign_runs ADD COLUMN devices TEXT;
