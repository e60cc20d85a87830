//! The source's reflector: per kind, the trimmed facts of every object it watches, keyed by
//! `namespace/name` (what other objects refer to them by). Only what the source compares or
//! reports is kept (no `managedFields`, no annotations beyond the allow-list, no spec beyond
//! the node name), so a large cluster costs a few hundred bytes per object. The store also
//! tracks each watch's lists, which is what lets a relist after `410 Gone` emit only what
//! really changed.

use std::collections::{HashMap, HashSet};

/// What every kind's facts tell the store.
pub(super) trait Facts {
    /// The object's `metadata.uid`: a new uid under a known name is a new object.
    fn uid(&self) -> &str;
    /// The object's `metadata.resourceVersion`: equal versions are equal objects.
    fn resource_version(&self) -> &str;
}

/// One object's facts, and which watch (a kind in one namespace, or cluster-wide) reported it.
#[derive(Debug)]
struct Entry<F> {
    scope: usize,
    facts: F,
}

/// The objects of one kind.
#[derive(Debug)]
pub(super) struct Store<F> {
    objects: HashMap<Box<str>, Entry<F>>,
    /// Per watch with a list under way: the keys listed so far.
    listing: HashMap<usize, HashSet<Box<str>>>,
    /// Watches whose first list completed; a list after that is a relist.
    synced: HashSet<usize>,
}

impl<F> Default for Store<F> {
    fn default() -> Self {
        Store {
            objects: HashMap::new(),
            listing: HashMap::new(),
            synced: HashSet::new(),
        }
    }
}

/// Where a listed object stands against what the store knew.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Listed {
    /// The first list of its watch: state only (or `added` with `emit_initial`).
    Initial,
    /// A relist found it unchanged: nothing to emit.
    Unchanged,
    /// New or changed since the store last saw it: compare and emit.
    Changed,
}

impl<F: Facts> Store<F> {
    /// How many objects the store holds.
    pub(super) fn len(&self) -> usize {
        self.objects.len()
    }

    /// The facts of the object named `key`.
    pub(super) fn get(&self, key: &str) -> Option<&F> {
        self.objects.get(key).map(|entry| &entry.facts)
    }

    /// A list of `scope` begins (a new `Init`, which restarts any list under way); returns
    /// whether it is a relist.
    pub(super) fn begin_list(&mut self, scope: usize) -> bool {
        self.listing.insert(scope, HashSet::new());
        self.synced.contains(&scope)
    }

    /// Notes that the list of `scope` holds `key`, and how it compares with the store.
    pub(super) fn listed(&mut self, scope: usize, key: &str, facts: &F) -> Listed {
        if let Some(seen) = self.listing.get_mut(&scope) {
            seen.insert(key.into());
        }
        if !self.synced.contains(&scope) {
            return Listed::Initial;
        }
        match self.objects.get(key) {
            Some(known)
                if known.facts.uid() == facts.uid()
                    && known.facts.resource_version() == facts.resource_version() =>
            {
                Listed::Unchanged
            }
            _ => Listed::Changed,
        }
    }

    /// The list of `scope` is complete: the objects of that watch it did not list were deleted
    /// while nobody watched, and are removed and returned (none after a first list, which
    /// starts from an empty store for its scope).
    pub(super) fn finish_list(&mut self, scope: usize) -> Vec<F> {
        let seen = self.listing.remove(&scope).unwrap_or_default();
        let first = self.synced.insert(scope);
        let gone: Vec<Box<str>> = self
            .objects
            .iter()
            .filter(|(key, entry)| entry.scope == scope && !seen.contains(*key))
            .map(|(key, _)| key.clone())
            .collect();
        let removed: Vec<F> = gone
            .iter()
            .filter_map(|key| self.objects.remove(key))
            .map(|entry| entry.facts)
            .collect();
        if first { Vec::new() } else { removed }
    }

    /// Stores `facts` under `key`, returning what was known before.
    pub(super) fn insert(&mut self, scope: usize, key: Box<str>, facts: F) -> Option<F> {
        self.objects
            .insert(key, Entry { scope, facts })
            .map(|entry| entry.facts)
    }

    /// Forgets the object named `key`, returning what was known.
    pub(super) fn remove(&mut self, key: &str) -> Option<F> {
        self.objects.remove(key).map(|entry| entry.facts)
    }
}
