-- models.db is derived from the metadata files: every table here can be rebuilt by a reindex.

CREATE TABLE models (
    id           TEXT PRIMARY KEY,
    name_key     TEXT NOT NULL,          -- lowercase display name, for sorting
    model_type   TEXT NOT NULL,
    family       TEXT NOT NULL,
    format       TEXT NOT NULL,
    state        TEXT NOT NULL,
    total_size   INTEGER NOT NULL,
    added_ms     INTEGER NOT NULL,
    repo_id      TEXT NOT NULL DEFAULT '',
    has_binding  INTEGER NOT NULL DEFAULT 0,
    record       TEXT NOT NULL           -- merged metadata JSON (metadata.json + overrides.json)
);
CREATE INDEX models_by_name  ON models (name_key, id);
CREATE INDEX models_by_size  ON models (total_size DESC, id);
CREATE INDEX models_by_added ON models (added_ms DESC, id);
CREATE INDEX models_by_type  ON models (model_type, family);
CREATE INDEX models_by_repo  ON models (repo_id);

CREATE TABLE model_tags (
    model_id TEXT NOT NULL REFERENCES models (id) ON DELETE CASCADE,
    tag      TEXT NOT NULL,
    PRIMARY KEY (tag, model_id)
) WITHOUT ROWID;

CREATE TABLE model_digests (
    digest   TEXT NOT NULL,
    model_id TEXT NOT NULL REFERENCES models (id) ON DELETE CASCADE,
    PRIMARY KEY (digest, model_id)
) WITHOUT ROWID;
CREATE INDEX model_digests_by_model ON model_digests (model_id);

-- Full-text search; rowid = models.rowid.
CREATE VIRTUAL TABLE models_fts USING fts5 (
    name, family, architecture, tags, description, files, repo,
    tokenize = 'unicode61 remove_diacritics 2',
    prefix = '2 3'
);

-- The change feed. Cursors are microsecond timestamps made strictly increasing, so they keep
-- growing across a rebuild of this file.
CREATE TABLE changes (
    cursor      INTEGER PRIMARY KEY,
    kind        TEXT NOT NULL,
    model_id    TEXT NOT NULL,
    previous_id TEXT NOT NULL DEFAULT '',
    time_ms     INTEGER NOT NULL
);

-- Hashes of files by identity, so an unchanged file is never read twice.
CREATE TABLE hash_cache (
    dev      INTEGER NOT NULL,
    ino      INTEGER NOT NULL,
    size     INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    sha256   TEXT NOT NULL,
    blake3   TEXT NOT NULL,
    PRIMARY KEY (dev, ino)
);

-- Which mapper apps hold links to which models (DeleteModel refuses while any do).
CREATE TABLE link_holds (
    holder   TEXT NOT NULL,
    model_id TEXT NOT NULL,
    PRIMARY KEY (model_id, holder)
) WITHOUT ROWID;
