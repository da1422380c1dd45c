-- Model files kitt downloads for a campaign: one row per file and run that
-- downloaded it, written before the first byte, so a resumed campaign knows
-- which files are its own (cleanup deletes only those) and every download
-- keeps its timestamps. Runs gain the files they load and the bytes the plan
-- said they download, so `campaign status` can tell how much is left.

CREATE TABLE campaign_downloads (
    id               INTEGER PRIMARY KEY,
    campaign_id      TEXT NOT NULL REFERENCES campaigns (id) ON DELETE CASCADE,
    run_id           INTEGER NOT NULL REFERENCES campaign_runs (id) ON DELETE CASCADE,
    session_id       INTEGER NOT NULL REFERENCES campaign_sessions (id) ON DELETE CASCADE,
    repo             TEXT NOT NULL,
    file             TEXT NOT NULL,
    path             TEXT NOT NULL,
    created_dir      TEXT,
    bytes            INTEGER NOT NULL,
    bytes_done       INTEGER NOT NULL DEFAULT 0,
    status           TEXT NOT NULL
                     CHECK (status IN ('downloading', 'present', 'failed', 'removed')),
    error            TEXT,
    created_at       TEXT NOT NULL,
    started_at       TEXT NOT NULL,
    updated_at       TEXT NOT NULL,
    finished_at      TEXT,
    removed_at       TEXT,
    UNIQUE (campaign_id, run_id, path)
) STRICT;

CREATE INDEX campaign_downloads_by_path ON campaign_downloads (path, status);

ALTER TABLE campaign_runs ADD COLUMN download_bytes INTEGER NOT NULL DEFAULT 0;
ALTER TABLE campaign_runs ADD COLUMN files TEXT NOT NULL DEFAULT '[]';
