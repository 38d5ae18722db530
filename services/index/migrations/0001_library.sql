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
    tags_key     TEXT NOT NULL DEFAULT '', -- '|tag1|tag2|', for tag filters while streaming
    record       TEXT NOT NULL,          -- merged metadata JSON (metadata.json + overrides.json)
    -- What full-text search sees (the FTS table below indexes these columns).
    fts_name         TEXT NOT NULL DEFAULT '',
    fts_family       TEXT NOT NULL DEFAULT '',
    fts_architecture TEXT NOT NULL DEFAULT '',
    fts_tags         TEXT NOT NULL DEFAULT '',
    fts_description  TEXT NOT NULL DEFAULT '',
    fts_files        TEXT NOT NULL DEFAULT '',
    fts_repo         TEXT NOT NULL DEFAULT ''
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

-- Which model holds which dependency binding (ids are unique across the library).
CREATE TABLE model_bindings (
    binding_id TEXT PRIMARY KEY,
    model_id   TEXT NOT NULL REFERENCES models (id) ON DELETE CASCADE
) WITHOUT ROWID;
CREATE INDEX model_bindings_by_model ON model_bindings (model_id);

-- Full-text search over the fts_* columns of models (external content: the index only), kept in
-- step by triggers, so a batch of inserts updates it inside SQLite with no extra round trips.
CREATE VIRTUAL TABLE models_fts USING fts5 (
    fts_name, fts_family, fts_architecture, fts_tags, fts_description, fts_files, fts_repo,
    content = 'models',
    content_rowid = 'rowid',
    tokenize = 'unicode61 remove_diacritics 2',
    prefix = '2 3'
);
CREATE TRIGGER models_fts_insert AFTER INSERT ON models BEGIN
    INSERT INTO models_fts (rowid, fts_name, fts_family, fts_architecture, fts_tags, fts_description, fts_files, fts_repo)
    VALUES (new.rowid, new.fts_name, new.fts_family, new.fts_architecture, new.fts_tags, new.fts_description, new.fts_files, new.fts_repo);
END;
CREATE TRIGGER models_fts_delete AFTER DELETE ON models BEGIN
    INSERT INTO models_fts (models_fts, rowid, fts_name, fts_family, fts_architecture, fts_tags, fts_description, fts_files, fts_repo)
    VALUES ('delete', old.rowid, old.fts_name, old.fts_family, old.fts_architecture, old.fts_tags, old.fts_description, old.fts_files, old.fts_repo);
END;
CREATE TRIGGER models_fts_update AFTER UPDATE ON models BEGIN
    INSERT INTO models_fts (models_fts, rowid, fts_name, fts_family, fts_architecture, fts_tags, fts_description, fts_files, fts_repo)
    VALUES ('delete', old.rowid, old.fts_name, old.fts_family, old.fts_architecture, old.fts_tags, old.fts_description, old.fts_files, old.fts_repo);
    INSERT INTO models_fts (rowid, fts_name, fts_family, fts_architecture, fts_tags, fts_description, fts_files, fts_repo)
    VALUES (new.rowid, new.fts_name, new.fts_family, new.fts_architecture, new.fts_tags, new.fts_description, new.fts_files, new.fts_repo);
END;

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
