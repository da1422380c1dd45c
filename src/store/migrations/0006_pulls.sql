-- Models kitt pulls into an Ollama server's store for a campaign: one row per
-- run, model and store, written before the pull starts, so a resumed campaign
-- knows which models it pulled (cleanup deletes only those, never a model the
-- store already had) even after a crash in the middle of a pull.

CREATE TABLE campaign_pulls (
    id           INTEGER PRIMARY KEY,
    campaign_id  TEXT NOT NULL REFERENCES campaigns (id) ON DELETE CASCADE,
    run_id       INTEGER NOT NULL REFERENCES campaign_runs (id) ON DELETE CASCADE,
    session_id   INTEGER NOT NULL REFERENCES campaign_sessions (id) ON DELETE CASCADE,
    -- `name:tag`, as the server lists it.
    model        TEXT NOT NULL,
    -- The server's store: a directory, or `docker volume <name>`.
    store        TEXT NOT NULL,
    -- Its size in the store once pulled.
    bytes        INTEGER NOT NULL DEFAULT 0,
    status       TEXT NOT NULL
                 CHECK (status IN ('pulling', 'present', 'failed', 'removed')),
    error        TEXT,
    created_at   TEXT NOT NULL,
    started_at   TEXT NOT NULL,
    updated_at   TEXT NOT NULL,
    finished_at  TEXT,
    removed_at   TEXT,
    UNIQUE (campaign_id, run_id, model, store)
) STRICT;

CREATE INDEX campaign_pulls_by_model ON campaign_pulls (campaign_id, model, store, status);
