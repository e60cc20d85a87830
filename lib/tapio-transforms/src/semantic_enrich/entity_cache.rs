//! The entity cache behind `semantic_enrich`: the pods it has learned about, under every key an
//! event may name a pod by (uid, `namespace/name`, IP, sandbox or app container id), and which
//! container each cgroup belongs to.
//!
//! It is bounded by a number of keys (`max_entities`): every key is an entry in a slab threaded
//! on an index-linked LRU list, so a lookup, a touch and an eviction are O(1) and a replay evicts
//! exactly the same keys. A pod record lives as long as one of its keys does. Keys are evicted
//! by [`EntityCache::trim`] once an event has been handled, never in the middle of one, so the
//! pod references a caller holds while handling an event stay valid.

use std::sync::Arc;

use crate::util::fast_map::FastMap;

/// The end of the LRU list, and "no slot".
const NIL: u32 = u32::MAX;
/// Most keys a cache may be configured to hold: entries are indexed by `u32` below [`NIL`],
/// with room for the one inserted before the least recently used is evicted.
pub(super) const MAX_ENTRIES: usize = NIL as usize - 1;

/// The kinds of key a pod is known by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum KeyKind {
    Uid,
    /// `namespace/name`.
    Name,
    Ip,
    /// A sandbox or app container id (runtimes make them unique, so one map serves both).
    Container,
}

impl KeyKind {
    fn index(self) -> usize {
        self as usize
    }
}

/// A pod's slot in the cache; valid until the next [`EntityCache::trim`].
pub(super) type PodRef = u32;

/// What the cache knows about one pod.
#[derive(Debug, Default)]
pub(super) struct Pod {
    pub(super) uid: Option<Box<str>>,
    pub(super) namespace: Option<Box<str>>,
    pub(super) name: Option<Box<str>>,
    pub(super) node: Option<Box<str>>,
    /// The workload that owns the pod (`Deployment`, `api`), as the kubernetes source names
    /// it in `entity.attributes.workload_kind`/`workload`.
    pub(super) workload: Option<(Box<str>, Box<str>)>,
    /// The entries naming this pod; it is forgotten with the last one.
    entries: Vec<u32>,
}

impl Pod {
    /// Fills what this record does not know yet from `other`'s facts.
    fn absorb(&mut self, other: &mut Pod) {
        for (mine, theirs) in [
            (&mut self.uid, &mut other.uid),
            (&mut self.namespace, &mut other.namespace),
            (&mut self.name, &mut other.name),
            (&mut self.node, &mut other.node),
        ] {
            if mine.is_none() {
                *mine = theirs.take();
            }
        }
        if self.workload.is_none() {
            self.workload = other.workload.take();
        }
    }
}

#[derive(Debug)]
enum Key {
    Pod(KeyKind, Arc<str>),
    Cgroup(u64),
}

#[derive(Debug)]
enum Target {
    Pod(PodRef),
    /// A cgroup's container id, resolved to a pod when the container is looked up.
    Container(Arc<str>),
}

#[derive(Debug)]
struct CacheNode {
    key: Key,
    target: Target,
    prev: u32,
    next: u32,
}

/// The bounded cache; see the module documentation.
#[derive(Debug)]
pub(super) struct EntityCache {
    max_entries: usize,
    entries: Vec<CacheNode>,
    free_entries: Vec<u32>,
    live_entries: usize,
    /// Most recently used entry.
    head: u32,
    /// Least recently used entry, the next to be evicted.
    tail: u32,
    pods: Vec<Pod>,
    free_pods: Vec<PodRef>,
    /// One map per [`KeyKind`], from key to entry.
    keys: [FastMap<Arc<str>, u32>; 4],
    cgroups: FastMap<u64, u32>,
    evictions: u64,
}

impl EntityCache {
    /// An empty cache that keeps at most `max_entries` keys (at least one).
    pub(super) fn new(max_entries: usize) -> Self {
        EntityCache {
            max_entries: max_entries.max(1),
            entries: Vec::new(),
            free_entries: Vec::new(),
            live_entries: 0,
            head: NIL,
            tail: NIL,
            pods: Vec::new(),
            free_pods: Vec::new(),
            keys: Default::default(),
            cgroups: FastMap::default(),
            evictions: 0,
        }
    }

    /// Keys currently held.
    pub(super) fn len(&self) -> usize {
        self.live_entries
    }

    /// Keys evicted to stay within the bound, since the cache was made.
    pub(super) fn evictions(&self) -> u64 {
        self.evictions
    }

    /// The facts about `pod`.
    pub(super) fn pod(&self, pod: PodRef) -> &Pod {
        &self.pods[pod as usize]
    }

    /// The facts about `pod`, to fill in what an event teaches.
    pub(super) fn pod_mut(&mut self, pod: PodRef) -> &mut Pod {
        &mut self.pods[pod as usize]
    }

    /// The pod known by `key`, marking the key as recently used.
    pub(super) fn find(&mut self, kind: KeyKind, key: &str) -> Option<PodRef> {
        let entry = *self.keys[kind.index()].get(key)?;
        self.touch(entry);
        match self.entries[entry as usize].target {
            Target::Pod(pod) => Some(pod),
            Target::Container(_) => None,
        }
    }

    /// The pod of the container that `cgroup` belongs to, if both links are known.
    pub(super) fn find_by_cgroup(&mut self, cgroup: u64) -> Option<PodRef> {
        let entry = *self.cgroups.get(&cgroup)?;
        self.touch(entry);
        let Target::Container(container) = &self.entries[entry as usize].target else {
            return None;
        };
        let container = Arc::clone(container);
        self.find(KeyKind::Container, &container)
    }

    /// A new pod record; the caller links at least one key to it before the next `trim`.
    pub(super) fn new_pod(&mut self) -> PodRef {
        match self.free_pods.pop() {
            Some(pod) => pod,
            None => {
                self.pods.push(Pod::default());
                (self.pods.len() - 1) as PodRef
            }
        }
    }

    /// Makes `key` name `pod` (moving it from the pod it named before, if any). An empty key
    /// names nothing.
    pub(super) fn link(&mut self, kind: KeyKind, key: &str, pod: PodRef) {
        if key.is_empty() {
            return;
        }
        if let Some(&entry) = self.keys[kind.index()].get(key) {
            self.touch(entry);
            if let Target::Pod(old) = self.entries[entry as usize].target
                && old != pod
            {
                self.detach(entry, old);
                self.entries[entry as usize].target = Target::Pod(pod);
                self.pods[pod as usize].entries.push(entry);
            }
            return;
        }
        let key: Arc<str> = Arc::from(key);
        let entry = self.insert(Key::Pod(kind, Arc::clone(&key)), Target::Pod(pod));
        self.keys[kind.index()].insert(key, entry);
        self.pods[pod as usize].entries.push(entry);
    }

    /// Records that `cgroup` is the cgroup of `container`.
    pub(super) fn link_cgroup(&mut self, cgroup: u64, container: &str) {
        if let Some(&entry) = self.cgroups.get(&cgroup) {
            self.touch(entry);
            let target = &mut self.entries[entry as usize].target;
            if !matches!(target, Target::Container(known) if **known == *container) {
                *target = Target::Container(Arc::from(container));
            }
            return;
        }
        let entry = self.insert(Key::Cgroup(cgroup), Target::Container(Arc::from(container)));
        self.cgroups.insert(cgroup, entry);
    }

    /// Forgets every key of `kind` that names `pod` (its addresses once the pod is gone).
    pub(super) fn unlink_all(&mut self, pod: PodRef, kind: KeyKind) {
        let mut i = 0;
        while let Some(&entry) = self.pods[pod as usize].entries.get(i) {
            match &self.entries[entry as usize].key {
                Key::Pod(k, _) if *k == kind => self.remove(entry),
                _ => i += 1,
            }
        }
    }

    /// Forgets `key` if it names `pod`.
    pub(super) fn unlink(&mut self, kind: KeyKind, key: &str, pod: PodRef) {
        if let Some(&entry) = self.keys[kind.index()].get(key)
            && matches!(self.entries[entry as usize].target, Target::Pod(p) if p == pod)
        {
            self.remove(entry);
        }
    }

    /// Makes `from` and `into` one pod: `from`'s keys and the facts `into` lacks move to `into`.
    pub(super) fn merge(&mut self, into: PodRef, from: PodRef) {
        if into == from {
            return;
        }
        let mut moved = std::mem::take(&mut self.pods[from as usize]);
        for &entry in &moved.entries {
            self.entries[entry as usize].target = Target::Pod(into);
        }
        let target = &mut self.pods[into as usize];
        target.entries.append(&mut moved.entries);
        target.absorb(&mut moved);
        self.free_pods.push(from);
    }

    /// Evicts least recently used keys until the bound holds; returns how many it evicted.
    pub(super) fn trim(&mut self) -> usize {
        let mut evicted = 0;
        while self.live_entries > self.max_entries {
            self.remove(self.tail);
            evicted += 1;
        }
        self.evictions += evicted as u64;
        evicted
    }

    fn insert(&mut self, key: Key, target: Target) -> u32 {
        let entry = CacheNode {
            key,
            target,
            prev: NIL,
            next: NIL,
        };
        let index = match self.free_entries.pop() {
            Some(index) => {
                self.entries[index as usize] = entry;
                index
            }
            None => {
                self.entries.push(entry);
                (self.entries.len() - 1) as u32
            }
        };
        self.live_entries += 1;
        self.push_front(index);
        index
    }

    /// Drops `entry` from its map, the LRU list and its pod (forgetting a pod left without keys).
    fn remove(&mut self, entry: u32) {
        self.unlink_lru(entry);
        let slot = &mut self.entries[entry as usize];
        let key = std::mem::replace(&mut slot.key, Key::Cgroup(0));
        let target = std::mem::replace(&mut slot.target, Target::Pod(NIL));
        match key {
            Key::Pod(kind, key) => {
                self.keys[kind.index()].remove(&key);
            }
            Key::Cgroup(cgroup) => {
                self.cgroups.remove(&cgroup);
            }
        }
        if let Target::Pod(pod) = target {
            self.detach(entry, pod);
        }
        self.free_entries.push(entry);
        self.live_entries -= 1;
    }

    /// Takes `entry` off `pod`'s keys, forgetting the pod if it was its last.
    fn detach(&mut self, entry: u32, pod: PodRef) {
        let entries = &mut self.pods[pod as usize].entries;
        if let Some(at) = entries.iter().position(|&e| e == entry) {
            entries.swap_remove(at);
        }
        if entries.is_empty() {
            self.pods[pod as usize] = Pod::default();
            self.free_pods.push(pod);
        }
    }

    fn touch(&mut self, entry: u32) {
        if self.head != entry {
            self.unlink_lru(entry);
            self.push_front(entry);
        }
    }

    fn push_front(&mut self, entry: u32) {
        let old_head = self.head;
        {
            let slot = &mut self.entries[entry as usize];
            slot.prev = NIL;
            slot.next = old_head;
        }
        match old_head {
            NIL => self.tail = entry,
            head => self.entries[head as usize].prev = entry,
        }
        self.head = entry;
    }

    fn unlink_lru(&mut self, entry: u32) {
        let (prev, next) = {
            let slot = &self.entries[entry as usize];
            (slot.prev, slot.next)
        };
        match prev {
            NIL => self.head = next,
            prev => self.entries[prev as usize].next = next,
        }
        match next {
            NIL => self.tail = prev,
            next => self.entries[next as usize].prev = prev,
        }
    }
}
