//! A bounded, least-recently-used cache of case states for the command path.
//!
//! It saves replaying a stream on every command. It is safe because it is never trusted for
//! what is stored: a command decided on a stale state appends at a sequence number the stream
//! already has, the primary key refuses it, the entry is dropped and the command is retried on a
//! full replay; a command refused on a state that is no longer the stream's newest is decided
//! again on a full replay (`Store::is_current`). Reads never use it. Tests compare its states with
//! full replays.

use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};

use aggregates::Case;
use lru::LruCache;
use schemas::CaseId;

pub struct CaseCache {
    entries: Mutex<LruCache<CaseId, (Case, usize)>>,
    /// Turns: a command holds its case's for its whole run (`turn`), so that commands on one
    /// case in this process run one after another, each on the state the one before cached.
    turns: Box<[Arc<tokio::sync::Mutex<()>>]>,
}

/// Turns are striped: cases share `TURNS` locks by hash. Two cases on one stripe only wait for
/// each other's commands (a few milliseconds), never deadlock: a command takes one turn.
const TURNS: usize = 1024;

impl CaseCache {
    pub fn new(capacity: usize) -> Self {
        let capacity = NonZeroUsize::new(capacity).unwrap_or(NonZeroUsize::MIN);
        Self {
            entries: Mutex::new(LruCache::new(capacity)),
            turns: (0..TURNS).map(|_| Default::default()).collect(),
        }
    }

    /// Waits for the case's turn, first come first served, and holds it until the guard drops.
    ///
    /// Without turns, a second command on a case whose state the first had checked out replayed
    /// the whole stream, and lost the race to append, and replayed again: with commands asked at
    /// half the machine's capacity on 512 cases (`linkage-bench projections`, 1,000,000 events
    /// stored) the replays of ever-longer streams took the CPU, commands waited seconds for
    /// connections, and 6-12% of the rate asked was achieved. Replicas can still race each
    /// other; the stream's primary key settles that, as before.
    pub async fn turn(&self, id: CaseId) -> tokio::sync::OwnedMutexGuard<()> {
        let mut hasher = std::hash::DefaultHasher::new();
        std::hash::Hash::hash(&id, &mut hasher);
        let stripe = std::hash::Hasher::finish(&hasher) as usize % TURNS;
        self.turns[stripe].clone().lock_owned().await
    }

    /// A copy of the cached state and its version (tests only: the command path takes the
    /// state out instead of copying it).
    #[cfg(test)]
    pub fn get(&self, id: CaseId) -> Option<(Case, usize)> {
        self.lock().get(&id).cloned()
    }

    /// Takes the state out (no copy): a command checks it out and, committed or not, puts the
    /// resulting state back. It holds the case's turn meanwhile, so no other command of this
    /// process finds the entry missing and replays.
    pub fn take(&self, id: CaseId) -> Option<(Case, usize)> {
        self.lock().pop(&id)
    }

    /// Records `state` at `version`, unless a newer version is already cached.
    pub fn put(&self, id: CaseId, state: Case, version: usize) {
        let mut entries = self.lock();
        if entries.peek(&id).is_some_and(|(_, v)| *v > version) {
            return;
        }
        entries.put(id, (state, version));
    }

    pub fn forget(&self, id: CaseId) {
        self.lock().pop(&id);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, LruCache<CaseId, (Case, usize)>> {
        // A panic while holding the lock cannot leave an entry half-written: recover the map.
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_newer_version_is_never_replaced_by_an_older_one() {
        let cache = CaseCache::new(2);
        let id = CaseId::generate();
        let newer = Case {
            version: 5,
            ..Case::default()
        };
        cache.put(id, newer.clone(), 5);
        cache.put(id, Case::default(), 3);
        assert_eq!(cache.get(id), Some((newer.clone(), 5)));
        assert_eq!(cache.take(id), Some((newer, 5)));
        assert_eq!(cache.get(id), None, "taken out, not copied");
        cache.forget(id);
        assert_eq!(cache.get(id), None);
    }

    #[test]
    fn it_is_bounded() {
        let cache = CaseCache::new(2);
        let ids: Vec<_> = (0..3).map(|_| CaseId::generate()).collect();
        for id in &ids {
            cache.put(*id, Case::default(), 1);
        }
        assert!(
            cache.get(ids[0]).is_none(),
            "the least recently used is evicted"
        );
        assert!(cache.get(ids[2]).is_some());
    }
}
