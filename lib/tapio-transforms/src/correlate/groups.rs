//! Correlation groups (DESIGN.md section 5, steps 2, 3 and 6): which events belong to one story.
//! A group is reached through its keys (its entity and that entity's aliases), stays open while
//! events keep arriving within `window` of its latest one (a session window on event time) and
//! for at most `max_group_duration`, and merges with any other open group an event's keys reach.
//!
//! State is bounded and flat over a long run: groups live in a slab whose slots are reused, a key
//! maps to a slot, and one min-heap of deadlines (`last event + window`) serves both expiry and
//! eviction. Deadlines are corrected lazily: a popped entry whose group has seen newer events is
//! pushed back with its real deadline, so the heap holds about one entry per group and its
//! minimum is always the least recently active group.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use tapio_event::{Entity, EntityType, Timestamp};

use super::catalog::Catalog;
use crate::util::fast_map::FastMap;

/// Ids of a group's events, packed into one string: no allocation per id.
#[derive(Debug, Default)]
struct IdList {
    text: String,
    ends: Vec<usize>,
}

impl IdList {
    fn len(&self) -> usize {
        self.ends.len()
    }

    fn push(&mut self, id: &str) {
        self.text.push_str(id);
        self.ends.push(self.text.len());
    }

    /// Drops the newest id; false when there was none.
    fn pop(&mut self) -> bool {
        if self.ends.pop().is_none() {
            return false;
        }
        self.text.truncate(self.ends.last().copied().unwrap_or(0));
        true
    }

    fn iter(&self) -> impl Iterator<Item = &str> {
        let starts = std::iter::once(0).chain(self.ends.iter().copied());
        starts
            .zip(self.ends.iter().copied())
            .map(|(start, end)| &self.text[start..end])
    }
}

/// The ids a summary lists: the events that matched a pattern step first (the evidence), then
/// the others, together at most `cap`, so a capped list still names the evidence. `total`
/// counts every event, so a summary can say how many it left out.
#[derive(Debug, Default)]
pub(crate) struct Related {
    evidence: IdList,
    others: IdList,
    total: u64,
}

impl Related {
    /// Records one more event of the group.
    pub(crate) fn record(&mut self, id: &str, evidence: bool, cap: usize) {
        self.total += 1;
        self.store(id, evidence, cap);
    }

    fn store(&mut self, id: &str, evidence: bool, cap: usize) {
        let full = self.evidence.len() + self.others.len() >= cap;
        if evidence {
            if full && !self.others.pop() {
                return;
            }
            self.evidence.push(id);
        } else if !full {
            self.others.push(id);
        }
    }

    fn absorb(&mut self, other: Related, cap: usize) {
        for id in other.evidence.iter() {
            self.store(id, true, cap);
        }
        for id in other.others.iter() {
            self.store(id, false, cap);
        }
        self.total += other.total;
    }

    /// The listed ids: evidence first, then the others, each in processing order.
    pub(crate) fn ids(&self) -> Vec<String> {
        self.evidence
            .iter()
            .chain(self.others.iter())
            .map(str::to_owned)
            .collect()
    }

    /// How many of the group's events the list leaves out.
    pub(crate) fn omitted(&self) -> u64 {
        self.total - (self.evidence.len() + self.others.len()) as u64
    }
}

/// How far a group (or a lone event) has come through the catalog's patterns.
#[derive(Debug)]
pub(crate) struct Progress {
    /// Matching events per catalog step.
    counts: Vec<u32>,
    /// Patterns already summarised, by catalog index of their family (a variant's firing is
    /// its original's).
    fired: Vec<bool>,
    /// Whether a non-fallback pattern has fired.
    fired_specific: bool,
}

impl Progress {
    /// No step seen yet.
    pub(crate) fn new(catalog: &Catalog) -> Self {
        Progress {
            counts: vec![0; catalog.step_count()],
            fired: vec![false; catalog.patterns().len()],
            fired_specific: false,
        }
    }

    /// Counts one event that matched `steps`.
    pub(crate) fn count(&mut self, steps: &[usize]) {
        for &step in steps {
            self.counts[step] = self.counts[step].saturating_add(1);
        }
    }

    /// Matching events per catalog step.
    pub(crate) fn counts(&self) -> &[u32] {
        &self.counts
    }

    /// Appends to `completed` the patterns completed since the last call, in catalog order,
    /// and marks them fired: one summary per pattern and its variants, and a fallback pattern
    /// only while no specific one has fired.
    pub(crate) fn newly_complete(&mut self, catalog: &Catalog, completed: &mut Vec<usize>) {
        for (index, pattern) in catalog.patterns().iter().enumerate() {
            if self.fired[pattern.family]
                || (pattern.fallback && self.fired_specific)
                || !pattern.is_complete(&self.counts)
            {
                continue;
            }
            self.fired[pattern.family] = true;
            self.fired_specific |= !pattern.fallback;
            completed.push(index);
        }
    }

    fn absorb(&mut self, other: &Progress) {
        for (mine, theirs) in self.counts.iter_mut().zip(&other.counts) {
            *mine = mine.saturating_add(*theirs);
        }
        for (mine, theirs) in self.fired.iter_mut().zip(&other.fired) {
            *mine |= *theirs;
        }
        self.fired_specific |= other.fired_specific;
    }
}

/// One story in the making.
#[derive(Debug)]
pub(crate) struct Group {
    /// The `correlation.correlation_id` of its events.
    pub(crate) id: String,
    first: Timestamp,
    last: Timestamp,
    /// Opening order, which breaks ties between groups opened at the same instant.
    serial: u64,
    /// Keys that pointed here; on removal only those still pointing here are unlinked.
    keys: Vec<Box<str>>,
    /// The entity its summaries are about.
    pub(crate) entity: Box<Entity>,
    pub(crate) related: Related,
    /// Allocated at the first event that matches a step.
    progress: Option<Box<Progress>>,
}

impl Group {
    /// The group's pattern progress, allocated on first use.
    pub(crate) fn progress(&mut self, catalog: &Catalog) -> &mut Progress {
        self.progress
            .get_or_insert_with(|| Box::new(Progress::new(catalog)))
    }

    /// Matching events per catalog step (empty before any step matched).
    pub(crate) fn counts(&self) -> &[u32] {
        self.progress.as_deref().map_or(&[], Progress::counts)
    }

    /// Whether an event at `at` belongs here: within `window` of the group's events and
    /// keeping the group within `max_duration`.
    fn is_joinable(&self, at: Timestamp, window: i64, max_duration: i64) -> bool {
        let first = self.first.0.min(at.0);
        let last = self.last.0.max(at.0);
        at.0 <= self.last.0.saturating_add(window)
            && at.0 >= self.first.0.saturating_sub(window)
            && last.saturating_sub(first) <= max_duration
    }

    /// Whether the group names the pod better than `entity` does: an unresolved `host` or a
    /// pod known only by `namespace/name`, linked to a group that knows the pod (by its uid).
    pub(crate) fn names_better_than(&self, entity: &Entity) -> bool {
        self.entity.kind == EntityType::Pod && knowledge(&self.entity) > knowledge(entity)
    }

    /// Keeps the better-known of the group's entity and `candidate`: a pod known by its uid
    /// replaces the same pod known only by `namespace/name`, and either replaces a `host`
    /// (a group opened by node-local events that were linked through an alias).
    pub(crate) fn offer_entity(&mut self, candidate: &Entity) {
        if candidate.kind == EntityType::Pod && knowledge(candidate) > knowledge(&self.entity) {
            *self.entity = candidate.clone();
        }
    }
}

/// How well an entity names a group's subject: an unresolved host, a pod by name, a pod by uid.
fn knowledge(entity: &Entity) -> u8 {
    match entity.kind {
        EntityType::Host => 0,
        _ if is_named_only(entity) => 1,
        _ => 2,
    }
}

/// A pod entity whose id is its `namespace/name` (its uid was not known).
fn is_named_only(entity: &Entity) -> bool {
    match (entity.kind, &entity.namespace, &entity.name) {
        (EntityType::Pod, Some(namespace), Some(name)) => entity
            .id
            .strip_prefix(namespace.as_str())
            .and_then(|rest| rest.strip_prefix('/'))
            .is_some_and(|rest| rest == name),
        _ => false,
    }
}

struct Slot {
    /// Bumped when the slot's group goes, so heap entries of a former group are recognised.
    generation: u32,
    group: Option<Group>,
}

/// Where an event was placed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Placement {
    pub(crate) slot: usize,
    /// The event's keys reached several open groups, which are now one.
    pub(crate) merged: bool,
}

/// Limits of the group state, in nanoseconds of event time where they are durations.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    pub(crate) window: i64,
    pub(crate) max_duration: i64,
    pub(crate) max_groups: usize,
    /// Keys one group links by at most.
    pub(crate) max_keys: usize,
    pub(crate) max_related: usize,
}

/// Every open group, reachable by key.
pub(crate) struct Groups {
    limits: Limits,
    slots: Vec<Slot>,
    free: Vec<usize>,
    keys: FastMap<Box<str>, usize>,
    /// `(deadline, slot, generation)`; a deadline is never later than its group's real one.
    deadlines: BinaryHeap<Reverse<(Timestamp, usize, u32)>>,
    live: usize,
    opened: u64,
    evicted: u64,
    /// Keys not linked because their group already had `max_keys`.
    refused_keys: u64,
    /// Scratch: the open groups one event's keys reach.
    reached: Vec<usize>,
}

impl Groups {
    /// No group yet.
    pub(crate) fn new(limits: Limits) -> Self {
        Groups {
            limits,
            slots: Vec::new(),
            free: Vec::new(),
            keys: FastMap::default(),
            deadlines: BinaryHeap::new(),
            live: 0,
            opened: 0,
            evicted: 0,
            refused_keys: 0,
            reached: Vec::new(),
        }
    }

    /// Open groups.
    pub(crate) fn len(&self) -> usize {
        self.live
    }

    /// Groups evicted so far to stay within `max_groups`.
    pub(crate) fn evicted(&self) -> u64 {
        self.evicted
    }

    /// Keys not linked so far because their group already had `max_keys`.
    pub(crate) fn refused_keys(&self) -> u64 {
        self.refused_keys
    }

    /// The group in `slot`, which a placement just returned.
    pub(crate) fn get_mut(&mut self, slot: usize) -> &mut Group {
        self.slots[slot]
            .group
            .as_mut()
            .expect("a placement points at a live group")
    }

    /// The open group `key` reaches that an event at `at` may join.
    pub(crate) fn reached_by(&self, key: &str, at: Timestamp) -> Option<&Group> {
        let slot = *self.keys.get(key)?;
        self.slots[slot]
            .group
            .as_ref()
            .filter(|group| group.is_joinable(at, self.limits.window, self.limits.max_duration))
    }

    /// Drops the groups no event at `now` or later can join: the last event was more than
    /// `window` before `now`.
    pub(crate) fn expire(&mut self, now: Timestamp) {
        while let Some(&Reverse((deadline, slot, generation))) = self.deadlines.peek() {
            if deadline >= now {
                break;
            }
            self.deadlines.pop();
            let Some(real) = self.deadline_of(slot, generation) else {
                continue;
            };
            if real >= now {
                self.deadlines.push(Reverse((real, slot, generation)));
            } else {
                self.remove(slot);
            }
        }
    }

    /// Puts an event at `at` with `keys` into the open group they reach (merging several into
    /// the oldest), or into a new group named `new_id()` about `entity`.
    pub(crate) fn place(
        &mut self,
        at: Timestamp,
        keys: &[String],
        entity: &Entity,
        new_id: impl FnOnce() -> String,
    ) -> Placement {
        let Limits {
            window,
            max_duration,
            max_keys,
            ..
        } = self.limits;
        self.reached.clear();
        for key in keys {
            if let Some(&slot) = self.keys.get(key.as_str()) {
                let group = self.slots[slot].group.as_ref();
                if !self.reached.contains(&slot)
                    && group.is_some_and(|g| g.is_joinable(at, window, max_duration))
                {
                    self.reached.push(slot);
                }
            }
        }
        let placement = match self.reached.len() {
            0 => Placement {
                slot: self.open(at, entity, new_id()),
                merged: false,
            },
            1 => Placement {
                slot: self.reached[0],
                merged: false,
            },
            _ => Placement {
                slot: self.merge_reached(),
                merged: true,
            },
        };
        let slot = placement.slot;
        let group = self.slots[slot]
            .group
            .as_mut()
            .expect("a placement points at a live group");
        group.first = group.first.min(at);
        group.last = group.last.max(at);
        for key in keys.iter().map(String::as_str) {
            let room = group.keys.len() < max_keys;
            match self.keys.get_mut(key) {
                Some(owner) if *owner == slot => {}
                Some(owner) if group.keys.iter().any(|k| **k == *key) => *owner = slot,
                Some(owner) if room => {
                    *owner = slot;
                    group.keys.push(key.into());
                }
                None if room => {
                    self.keys.insert(key.into(), slot);
                    group.keys.push(key.into());
                }
                _ => self.refused_keys += 1,
            }
        }
        placement
    }

    fn open(&mut self, at: Timestamp, entity: &Entity, id: String) -> usize {
        if self.live >= self.limits.max_groups {
            self.evict_least_recent();
        }
        self.opened += 1;
        let group = Group {
            id,
            first: at,
            last: at,
            serial: self.opened,
            keys: Vec::new(),
            entity: Box::new(entity.clone()),
            related: Related::default(),
            progress: None,
        };
        let slot = match self.free.pop() {
            Some(slot) => slot,
            None => {
                self.slots.push(Slot {
                    generation: 0,
                    group: None,
                });
                self.slots.len() - 1
            }
        };
        self.slots[slot].group = Some(group);
        self.live += 1;
        let deadline = Timestamp(at.0.saturating_add(self.limits.window));
        self.deadlines
            .push(Reverse((deadline, slot, self.slots[slot].generation)));
        slot
    }

    /// Merges the reached groups into the oldest, whose id survives.
    fn merge_reached(&mut self) -> usize {
        let reached = std::mem::take(&mut self.reached);
        let oldest = reached
            .iter()
            .copied()
            .min_by_key(|&slot| {
                let group = self.slots[slot].group.as_ref();
                group.map(|g| (g.first, g.serial))
            })
            .unwrap_or(reached[0]);
        for &slot in &reached {
            if slot != oldest {
                let other = self.take(slot);
                self.absorb(oldest, slot, other);
            }
        }
        self.reached = reached;
        oldest
    }

    /// Moves `other` (formerly in `from`) into the group in `into`.
    /// The merged group keeps at most `max_keys` keys, its own first; the others are unlinked.
    fn absorb(&mut self, into: usize, from: usize, other: Group) {
        let Limits {
            max_keys,
            max_related,
            ..
        } = self.limits;
        let group = self.slots[into]
            .group
            .as_mut()
            .expect("merging into a live group");
        for key in other.keys {
            match self.keys.get_mut(&key) {
                Some(owner) if *owner == from && group.keys.len() < max_keys => {
                    *owner = into;
                    group.keys.push(key);
                }
                Some(owner) if *owner == from => {
                    self.keys.remove(&key);
                    self.refused_keys += 1;
                }
                _ => {}
            }
        }
        group.first = group.first.min(other.first);
        group.last = group.last.max(other.last);
        group.related.absorb(other.related, max_related);
        if let Some(progress) = other.progress {
            match group.progress.as_deref_mut() {
                Some(mine) => mine.absorb(&progress),
                None => group.progress = Some(progress),
            }
        }
        group.offer_entity(&other.entity);
    }

    /// The real deadline of the group in `slot` if it is still the one of `generation`.
    fn deadline_of(&self, slot: usize, generation: u32) -> Option<Timestamp> {
        let entry = &self.slots[slot];
        let group = entry
            .group
            .as_ref()
            .filter(|_| entry.generation == generation)?;
        Some(Timestamp(group.last.0.saturating_add(self.limits.window)))
    }

    /// Drops the least recently active group (the earliest real deadline).
    fn evict_least_recent(&mut self) {
        while let Some(Reverse((deadline, slot, generation))) = self.deadlines.pop() {
            let Some(real) = self.deadline_of(slot, generation) else {
                continue;
            };
            if real > deadline {
                self.deadlines.push(Reverse((real, slot, generation)));
                continue;
            }
            self.remove(slot);
            self.evicted += 1;
            return;
        }
    }

    /// Drops the group in `slot` and the keys that still point to it.
    fn remove(&mut self, slot: usize) {
        let group = self.take(slot);
        for key in &group.keys {
            if self.keys.get(key) == Some(&slot) {
                self.keys.remove(key);
            }
        }
    }

    /// Empties `slot` for reuse, leaving its keys to the caller. Rebuilds the deadline heap
    /// when entries of merged-away groups dominate it, so it stays proportional to the groups.
    fn take(&mut self, slot: usize) -> Group {
        let entry = &mut self.slots[slot];
        let group = entry.group.take().expect("taking a live group");
        entry.generation = entry.generation.wrapping_add(1);
        self.free.push(slot);
        self.live -= 1;
        if self.deadlines.len() > 2 * self.live + 64 {
            let window = self.limits.window;
            self.deadlines = self
                .slots
                .iter()
                .enumerate()
                .filter_map(|(slot, entry)| {
                    let last = entry.group.as_ref()?.last;
                    let deadline = Timestamp(last.0.saturating_add(window));
                    Some(Reverse((deadline, slot, entry.generation)))
                })
                .collect();
        }
        group
    }
}
