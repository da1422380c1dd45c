-- Cron schedules of campaign files and every fire of them. A schedule keeps
-- the crontab line kitt installed for it (to tell whether the crontab still
-- has it) and the environment its fires run with. A fire is one firing of a
-- schedule at a due minute: at most one row per schedule and minute, so cron
-- and `kitt campaign scheduler` firing the same minute run it once. Its
-- campaign is kept as an id, not a reference: a fire whose config failed to
-- load has none, and campaigns may be removed while history stays.

CREATE TABLE schedules (
    id            TEXT PRIMARY KEY,
    config_path   TEXT NOT NULL,
    campaign_name TEXT NOT NULL,
    cron          TEXT NOT NULL,
    source        TEXT NOT NULL CHECK (source IN ('option', 'config')),
    kitt_path     TEXT NOT NULL,
    environment   TEXT NOT NULL,
    cron_line     TEXT NOT NULL,
    created_at    TEXT NOT NULL,
    updated_at    TEXT NOT NULL
) STRICT;

CREATE TABLE schedule_fires (
    id           INTEGER PRIMARY KEY,
    schedule_id  TEXT NOT NULL REFERENCES schedules (id) ON DELETE CASCADE,
    due_at       TEXT NOT NULL,
    due_unix     INTEGER NOT NULL,
    started_at   TEXT NOT NULL,
    finished_at  TEXT,
    pid          INTEGER NOT NULL,
    host         TEXT NOT NULL,
    status       TEXT NOT NULL
                 CHECK (status IN ('waiting', 'running', 'completed', 'failed', 'interrupted',
                                   'error', 'skipped')),
    action       TEXT CHECK (action IN ('new', 'resume')),
    campaign_id  TEXT,
    exit_code    INTEGER,
    note         TEXT,
    log_path     TEXT NOT NULL,
    UNIQUE (schedule_id, due_unix)
) STRICT;
