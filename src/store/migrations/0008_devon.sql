-- Repositories kitt had Devon download for a campaign: one row per campaign
-- and repository, written before Devon is asked, so a resumed campaign knows
-- which repositories are its own. `preexisting` is decided once, before the
-- first request (1: Devon held the repository already, 0: it did not, NULL:
-- kitt could not tell); cleanup asks Devon to remove only a repository with
-- 0. `backend` is how Devon was reached (`http URL` or `cli PATH`); removal
-- goes the same way. `files` (a JSON list) and `bytes` are what kitt asked
-- Devon for.

CREATE TABLE campaign_devon (
    campaign_id   TEXT NOT NULL REFERENCES campaigns (id) ON DELETE CASCADE,
    repo          TEXT NOT NULL,
    run_id        INTEGER NOT NULL REFERENCES campaign_runs (id) ON DELETE CASCADE,
    session_id    INTEGER NOT NULL REFERENCES campaign_sessions (id) ON DELETE CASCADE,
    backend       TEXT NOT NULL,
    preexisting   INTEGER CHECK (preexisting IN (0, 1)),
    path          TEXT,
    files         TEXT NOT NULL DEFAULT '[]',
    bytes         INTEGER NOT NULL DEFAULT 0,
    status        TEXT NOT NULL
                  CHECK (status IN ('downloading', 'present', 'failed', 'removed')),
    error         TEXT,
    created_at    TEXT NOT NULL,
    started_at    TEXT NOT NULL,
    updated_at    TEXT NOT NULL,
    finished_at   TEXT,
    removed_at    TEXT,
    PRIMARY KEY (campaign_id, repo)
) STRICT;
