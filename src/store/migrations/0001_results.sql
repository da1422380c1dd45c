-- Results of benchmark runs: one row per run, its benchmarks, every metric,
-- every raw request record, and the machines the runs measured.
--
-- `results.json` is the full RunResult without the per-request arrays; the
-- other columns copy fields out of it so they can be queried. Requests live
-- only in `requests`, one JSON record each, with a few fields copied out.

CREATE TABLE hardware (
    fingerprint   TEXT PRIMARY KEY,
    json          TEXT NOT NULL,
    first_seen_at TEXT NOT NULL
) STRICT;

CREATE TABLE results (
    id                   TEXT PRIMARY KEY,
    started_at           TEXT NOT NULL,
    started_unix_ms      INTEGER NOT NULL,
    finished_at          TEXT NOT NULL,
    kitt_version         TEXT NOT NULL,
    metric_version       INTEGER NOT NULL,
    suite                TEXT NOT NULL,
    config_hash          TEXT NOT NULL,
    model_name           TEXT NOT NULL,
    model_path           TEXT NOT NULL,
    model_quant          TEXT NOT NULL,
    model_size_bytes     INTEGER NOT NULL,
    engine_name          TEXT NOT NULL,
    engine_version       TEXT NOT NULL,
    passed               INTEGER NOT NULL CHECK (passed IN (0, 1)),
    hardware_fingerprint TEXT NOT NULL REFERENCES hardware (fingerprint),
    json                 TEXT NOT NULL,
    stored_at            TEXT NOT NULL
) STRICT;

CREATE INDEX results_by_start ON results (started_unix_ms);
CREATE INDEX results_by_model ON results (model_name, started_unix_ms);
CREATE INDEX results_by_engine ON results (engine_name, started_unix_ms);
CREATE INDEX results_by_suite ON results (suite, started_unix_ms);
CREATE INDEX results_by_hardware ON results (hardware_fingerprint);

CREATE TABLE benchmarks (
    id         INTEGER PRIMARY KEY,
    result_id  TEXT NOT NULL REFERENCES results (id) ON DELETE CASCADE,
    position   INTEGER NOT NULL,
    name       TEXT NOT NULL,
    run_number INTEGER NOT NULL,
    status     TEXT NOT NULL CHECK (status IN ('passed', 'failed', 'not_run')),
    reason     TEXT,
    UNIQUE (result_id, position)
) STRICT;

CREATE INDEX benchmarks_by_name ON benchmarks (name);

CREATE TABLE metrics (
    benchmark_id INTEGER NOT NULL REFERENCES benchmarks (id) ON DELETE CASCADE,
    name         TEXT NOT NULL,
    value        REAL NOT NULL,
    PRIMARY KEY (benchmark_id, name)
) STRICT, WITHOUT ROWID;

CREATE INDEX metrics_by_name ON metrics (name);

CREATE TABLE requests (
    id            INTEGER PRIMARY KEY,
    benchmark_id  INTEGER NOT NULL REFERENCES benchmarks (id) ON DELETE CASCADE,
    position      INTEGER NOT NULL,
    ttft_ns       INTEGER,
    e2e_ns        INTEGER,
    output_tokens INTEGER,
    failure_class TEXT,
    record        TEXT NOT NULL,
    UNIQUE (benchmark_id, position)
) STRICT;
