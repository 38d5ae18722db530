-- Retention (docs/RELIABILITY.md, "Retention").

-- The newest cursor pruned from the change feed (or the moment models.db was rebuilt): a
-- WatchChanges from an older cursor answers OUT_OF_RANGE, since events after it are gone.
CREATE TABLE change_floor (
    id     INTEGER PRIMARY KEY CHECK (id = 1),
    cursor INTEGER NOT NULL
);

-- When each hash was cached, so the oldest entries can go.
ALTER TABLE hash_cache ADD COLUMN cached_ms INTEGER NOT NULL DEFAULT 0;
UPDATE hash_cache SET cached_ms = CAST(strftime('%s', 'now') AS INTEGER) * 1000;
CREATE INDEX hash_cache_age ON hash_cache (cached_ms);
