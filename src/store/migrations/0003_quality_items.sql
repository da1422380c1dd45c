-- Scored items of quality benchmarks: one row per dataset item per
-- benchmark repetition, the full item as JSON (expected and extracted
-- answers, the reply's text) with a few fields copied out for queries.

CREATE TABLE quality_items (
    id           INTEGER PRIMARY KEY,
    benchmark_id INTEGER NOT NULL REFERENCES benchmarks (id) ON DELETE CASCADE,
    position     INTEGER NOT NULL,
    item_index   INTEGER NOT NULL,
    correct      INTEGER NOT NULL CHECK (correct IN (0, 1)),
    answered     INTEGER NOT NULL CHECK (answered IN (0, 1)),
    record       TEXT NOT NULL,
    UNIQUE (benchmark_id, position)
) STRICT;
