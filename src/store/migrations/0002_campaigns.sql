-- Campaign state: one row per campaign, one per run of its matrix, one per
-- attempt at a run, and one per invocation of `kitt campaign run` (a
-- session), so the history of resumes, the config each used and every
-- error are kept. Each state transition is one transaction.

CREATE TABLE campaigns (
    id              TEXT PRIMARY KEY,
    name            TEXT NOT NULL,
    status          TEXT NOT NULL
                    CHECK (status IN ('pending', 'running', 'completed', 'failed')),
    config_path     TEXT NOT NULL,
    config_hash     TEXT NOT NULL,
    config_yaml     TEXT NOT NULL,
    storage_root    TEXT NOT NULL,
    created_at      TEXT NOT NULL,
    created_unix_ms INTEGER NOT NULL,
    updated_at      TEXT NOT NULL,
    finished_at     TEXT,
    owner_pid       INTEGER,
    owner_host      TEXT,
    current_run     INTEGER
) STRICT;

CREATE INDEX campaigns_by_created ON campaigns (created_unix_ms);
CREATE INDEX campaigns_by_name ON campaigns (name, created_unix_ms);

CREATE TABLE campaign_sessions (
    id           INTEGER PRIMARY KEY,
    campaign_id  TEXT NOT NULL REFERENCES campaigns (id) ON DELETE CASCADE,
    started_at   TEXT NOT NULL,
    finished_at  TEXT,
    pid          INTEGER NOT NULL,
    host         TEXT NOT NULL,
    kitt_version TEXT NOT NULL,
    config_path  TEXT NOT NULL,
    config_hash  TEXT NOT NULL,
    config_yaml  TEXT NOT NULL,
    outcome      TEXT CHECK (outcome IN ('completed', 'failed', 'interrupted'))
) STRICT;

CREATE INDEX campaign_sessions_by_campaign ON campaign_sessions (campaign_id);

CREATE TABLE campaign_runs (
    id                       INTEGER PRIMARY KEY,
    campaign_id              TEXT NOT NULL REFERENCES campaigns (id) ON DELETE CASCADE,
    position                 INTEGER NOT NULL,
    key                      TEXT NOT NULL,
    model                    TEXT NOT NULL,
    engine                   TEXT NOT NULL,
    quant                    TEXT NOT NULL,
    suite                    TEXT NOT NULL,
    source                   TEXT NOT NULL,
    size_bytes               INTEGER,
    in_config                INTEGER NOT NULL DEFAULT 1 CHECK (in_config IN (0, 1)),
    status                   TEXT NOT NULL
                             CHECK (status IN ('pending', 'running', 'success', 'failed', 'skipped')),
    phase                    TEXT,
    attempts                 INTEGER NOT NULL DEFAULT 0,
    reason                   TEXT,
    started_at               TEXT,
    finished_at              TEXT,
    duration_s               REAL,
    result_id                TEXT REFERENCES results (id),
    run_dir                  TEXT,
    output_tokens_per_second REAL,
    ttft_ms_p50              REAL,
    error_rate               REAL,
    UNIQUE (campaign_id, key),
    UNIQUE (campaign_id, position)
) STRICT;

CREATE INDEX campaign_runs_by_status ON campaign_runs (campaign_id, status);

CREATE TABLE campaign_attempts (
    id          INTEGER PRIMARY KEY,
    run_id      INTEGER NOT NULL REFERENCES campaign_runs (id) ON DELETE CASCADE,
    session_id  INTEGER NOT NULL REFERENCES campaign_sessions (id) ON DELETE CASCADE,
    attempt     INTEGER NOT NULL,
    started_at  TEXT NOT NULL,
    finished_at TEXT,
    outcome     TEXT CHECK (outcome IN ('success', 'failed', 'skipped', 'interrupted')),
    error       TEXT,
    result_id   TEXT REFERENCES results (id),
    UNIQUE (run_id, attempt)
) STRICT;
