//! Pages already answered, kept within a byte budget until the next write to the models.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering as AtomicOrdering};
use std::sync::{Arc, Mutex};

use super::Page;

/// Pages already answered, valid until the next write to the models. UIs ask the same list or
/// search again and again (every refresh, every keystroke that lands on a previous query); a
/// hit costs a hash lookup instead of the count and page queries, and a write empties it.
#[derive(Debug, Default)]
pub(super) struct PageCache {
    /// Bumped after every committed write that can change a page.
    generation: AtomicU64,
    /// The generation the entries belong to, and the entries.
    entries: Mutex<CachedPages>,
}

#[derive(Debug, Default)]
struct CachedPages {
    generation: u64,
    pages: HashMap<String, Arc<Page>>,
    /// What the kept pages hold, by [`PageCache::cost`].
    bytes: usize,
}

impl CachedPages {
    fn clear(&mut self) {
        self.pages.clear();
        self.bytes = 0;
    }
}

impl PageCache {
    /// Entries kept at most; when full, the cache starts over.
    const CAPACITY: usize = 1024;
    /// Memory the kept pages may hold (decoded records take about twice their JSON); when a
    /// page would go over, the cache starts over. 16 MiB keeps a UI's pages of 20-100 (about
    /// 60-300 KiB each at 1.4 KB of metadata a model) and keeps `pumas up` under 200 MiB at
    /// 100,000 models whatever is listed: memory the allocator got for the cache stays with the
    /// process after a clear.
    const CAPACITY_BYTES: usize = 16 << 20;

    /// A page's share of [`Self::CAPACITY_BYTES`]: twice its JSON, plus its key.
    fn cost(key: &str, page: &Page) -> usize {
        key.len() + 2 * page.bytes + 64 * page.rows.len()
    }

    pub(super) fn get(&self, key: &str) -> (u64, Option<Arc<Page>>) {
        let generation = self.generation.load(AtomicOrdering::Acquire);
        let Ok(mut entries) = self.entries.lock() else {
            return (generation, None);
        };
        if entries.generation != generation {
            entries.generation = generation;
            entries.clear();
        }
        (generation, entries.pages.get(key).cloned())
    }

    /// Keeps `page` if no write happened since `generation` was read (before the queries ran).
    pub(super) fn put(&self, generation: u64, key: String, page: Arc<Page>) {
        let cost = Self::cost(&key, &page);
        if cost > Self::CAPACITY_BYTES / 16 {
            return; // a page of hundreds of models (an export, a walk) would push out the rest
        }
        if let Ok(mut entries) = self.entries.lock()
            && entries.generation == generation
            && self.generation.load(AtomicOrdering::Acquire) == generation
        {
            if entries.pages.len() >= Self::CAPACITY || entries.bytes + cost > Self::CAPACITY_BYTES {
                entries.clear();
            }
            entries.bytes += cost;
            if let Some(old) = entries.pages.insert(key, page) {
                entries.bytes = entries.bytes.saturating_sub(Self::cost("", &old));
            }
        }
    }

    pub(super) fn invalidate(&self) {
        self.generation.fetch_add(1, AtomicOrdering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page_of(bytes: usize) -> Arc<Page> {
        Arc::new(Page {
            rows: Vec::new(),
            next: None,
            total: 0,
            bytes,
        })
    }

    #[test]
    fn the_page_cache_stays_within_its_byte_budget() {
        let cache = PageCache::default();
        let (generation, _) = cache.get("warm-up");
        let mut peak = 0;
        for n in 0..500 {
            cache.put(generation, format!("query-{n}"), page_of(256 << 10));
            let held = cache.entries.lock().map(|e| e.bytes).unwrap_or(usize::MAX);
            peak = peak.max(held);
        }
        assert!(peak <= PageCache::CAPACITY_BYTES, "held {peak} bytes");
        assert!(
            peak > PageCache::CAPACITY_BYTES / 2,
            "the budget is used, not wasted: {peak}"
        );
        // The latest page is still there; a page too big for the budget is not kept.
        assert!(cache.get("query-499").1.is_some());
        cache.put(generation, "huge".into(), page_of(PageCache::CAPACITY_BYTES));
        assert!(cache.get("huge").1.is_none());
        // A write empties it.
        cache.invalidate();
        assert!(cache.get("query-499").1.is_none());
        assert_eq!(cache.entries.lock().map(|e| e.bytes).unwrap_or(1), 0);
    }
}
