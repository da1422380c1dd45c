-- `auto_compare`: one comparison per campaign (the latest; comparing again
-- replaces it) with the campaign it was compared with (NULL: there was no
-- earlier finished campaign of its name), the thresholds used, and one row
-- per compared metric of every run key that succeeded in both. `failed_now`
-- and `not_in_baseline` are JSON lists of run keys (succeeded in the
-- baseline and failed now; succeeded now without an earlier success);
-- `not_measured_now` and `notes` are JSON lists of `{run_key, note}`
-- objects (succeeded in the baseline, not measured now, and why; what makes
-- a key's numbers less comparable).

CREATE TABLE campaign_comparisons (
    campaign_id          TEXT PRIMARY KEY REFERENCES campaigns (id) ON DELETE CASCADE,
    baseline_id          TEXT REFERENCES campaigns (id) ON DELETE CASCADE,
    baseline_finished_at TEXT,
    created_at           TEXT NOT NULL,
    throughput_pct       REAL NOT NULL,
    latency_pct          REAL NOT NULL,
    compared_runs        INTEGER NOT NULL,
    regressions          INTEGER NOT NULL,
    improvements         INTEGER NOT NULL,
    failed_now           TEXT NOT NULL DEFAULT '[]',
    not_in_baseline      TEXT NOT NULL DEFAULT '[]',
    not_measured_now     TEXT NOT NULL DEFAULT '[]',
    notes                TEXT NOT NULL DEFAULT '[]'
) STRICT;

CREATE TABLE campaign_comparison_metrics (
    campaign_id TEXT NOT NULL REFERENCES campaign_comparisons (campaign_id) ON DELETE CASCADE,
    position    INTEGER NOT NULL,
    run_key     TEXT NOT NULL,
    benchmark   TEXT NOT NULL,
    metric      TEXT NOT NULL,
    class       TEXT NOT NULL CHECK (class IN ('throughput', 'latency')),
    baseline    REAL NOT NULL,
    current     REAL NOT NULL,
    change_pct  REAL NOT NULL,
    verdict     TEXT NOT NULL CHECK (verdict IN ('regression', 'improvement', 'unchanged')),
    PRIMARY KEY (campaign_id, position)
) STRICT;
