//! The correlator proper, free of async and channels so it can be driven and tested event by
//! event: the reorder buffer feeds events in event-time order to the groups, each event leaves
//! tagged with its group's `correlation_id`, and the summaries of the patterns it completes
//! follow it. The result depends only on the sequence of input events, not on how they were
//! split into batches (except for idle flushes, which the wall clock triggers).

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Instant;

use tapio_event::{
    AckToken, CorrelationContext, Entity, EntityType, EventBatch, Timestamp, UnifiedEvent,
};

use super::catalog::Catalog;
use super::groups::{Groups, Limits, Progress, Related};
use super::recurrence::Recurrences;
use super::reorder::{Held, Reorder, Tickets};
use super::summary::{self, Story};

/// What the correlator has done so far, for logs, metrics and tests. Late events and
/// evictions are not drops or errors (every event still leaves); evictions and early releases
/// are the component's `evicted` counters, so a bound too small for the traffic shows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Stats {
    /// Events that arrived after events later than them had been processed; processed at once.
    pub(crate) late_events: u64,
    /// Groups dropped, least recently active first, to stay within `max_groups`.
    pub(crate) evicted_groups: u64,
    /// Keys not linked to a group because it already had `max_group_keys`.
    pub(crate) refused_keys: u64,
    /// Events released before the watermark passed them because `max_buffered_events` were
    /// already held.
    pub(crate) released_early: u64,
    /// Recurrence series dropped, least recently seen first, to stay within `max_groups`.
    pub(crate) evicted_recurrences: u64,
    pub(crate) summaries: u64,
    pub(crate) open_groups: usize,
    pub(crate) held_events: usize,
}

/// What one call released: events and summaries in processing order, and the tokens of the
/// input batches whose last held event is among them.
#[derive(Debug, Default)]
pub(crate) struct Output {
    pub(crate) events: Vec<UnifiedEvent>,
    pub(crate) acks: Vec<AckToken>,
    /// When the earliest input batch of these events entered the transform's buffer.
    pub(crate) entered: Option<Instant>,
}

impl Output {
    /// Nothing to send.
    pub(crate) fn is_empty(&self) -> bool {
        self.events.is_empty() && self.acks.is_empty()
    }

    /// The batch that carries this output downstream.
    pub(crate) fn into_batch(self) -> EventBatch {
        EventBatch::with_acks(self.events, self.acks).entered_at(self.entered)
    }
}

/// Reorder buffer, groups and catalog of one `correlate` transform.
pub(crate) struct Correlator {
    catalog: Catalog,
    groups: Groups,
    recurrences: Recurrences,
    reorder: Reorder,
    tickets: Tickets,
    max_related: usize,
    /// The latest event time processed: events older than this are late.
    clock: Option<Timestamp>,
    processed: u64,
    late: u64,
    released_early: u64,
    summaries: u64,
    /// Scratch, reused for every event: matched steps, completed patterns, linking keys.
    matched: Vec<usize>,
    completed: Vec<usize>,
    /// Scratch: the recurrences an event is a fact of, and the summaries of those it fires.
    recurring: Vec<usize>,
    recurred: Vec<UnifiedEvent>,
    keys: Keys,
    /// Scratch: a socket event's destination key.
    destination: String,
}

impl Correlator {
    /// A correlator with no state, holding events `lateness` nanoseconds behind the newest
    /// and at most `max_buffered` of them.
    pub(crate) fn new(
        catalog: Catalog,
        limits: Limits,
        lateness: i64,
        max_buffered: usize,
    ) -> Self {
        Correlator {
            catalog,
            groups: Groups::new(limits),
            recurrences: Recurrences::new(limits.max_groups),
            reorder: Reorder::new(lateness, max_buffered),
            tickets: Tickets::default(),
            max_related: limits.max_related,
            clock: None,
            processed: 0,
            late: 0,
            released_early: 0,
            summaries: 0,
            matched: Vec::new(),
            completed: Vec::new(),
            recurring: Vec::new(),
            recurred: Vec::new(),
            keys: Keys::default(),
            destination: String::new(),
        }
    }

    /// Counters so far.
    pub(crate) fn stats(&self) -> Stats {
        Stats {
            late_events: self.late,
            evicted_groups: self.groups.evicted(),
            refused_keys: self.groups.refused_keys(),
            released_early: self.released_early,
            evicted_recurrences: self.recurrences.evicted(),
            summaries: self.summaries,
            open_groups: self.groups.len(),
            held_events: self.reorder.len(),
        }
    }

    /// Whether events wait in the reorder buffer (so an idle flush has work).
    pub(crate) fn is_holding(&self) -> bool {
        self.reorder.len() > 0
    }

    /// Takes in one input batch; what the watermark releases goes to `out`.
    pub(crate) fn push_batch(&mut self, batch: EventBatch, out: &mut Output) {
        let entered = batch.entered();
        let (events, acks) = batch.into_parts();
        let events = Arc::try_unwrap(events).unwrap_or_else(|shared| shared.as_ref().clone());
        let ticket = self.tickets.open(events.len(), acks, &mut out.acks);
        for event in events {
            self.push(
                Held {
                    event,
                    ticket,
                    entered,
                },
                out,
            );
        }
    }

    /// Processes every held event (idle or end of input).
    pub(crate) fn flush(&mut self, out: &mut Output) {
        while let Some(held) = self.reorder.pop_oldest() {
            self.release(held, out);
        }
    }

    fn push(&mut self, held: Held, out: &mut Output) {
        if self.clock.is_some_and(|clock| held.event.timestamp < clock) {
            self.late += 1;
            return self.release(held, out);
        }
        if let Some(held) = self.reorder.push(held) {
            self.released_early += 1;
            self.release(held, out);
        }
        while let Some(held) = self.reorder.pop_ready() {
            self.release(held, out);
        }
    }

    /// Processes one event that leaves the reorder buffer (or never entered it) and settles
    /// its share of its batch's acknowledgements.
    fn release(&mut self, held: Held, out: &mut Output) {
        out.entered = match (out.entered, held.entered) {
            (Some(earlier), Some(entered)) => Some(earlier.min(entered)),
            (earlier, entered) => earlier.or(entered),
        };
        self.process(held.event, &mut out.events);
        self.tickets.settle(held.ticket, &mut out.acks);
    }

    /// Places one event in its group and emits it, followed by the summaries it completes.
    fn process(&mut self, mut event: UnifiedEvent, out: &mut Vec<UnifiedEvent>) {
        let at = event.timestamp;
        let clock = self.clock.map_or(at, |clock| clock.max(at));
        self.clock = Some(clock);
        self.groups.expire(clock);
        self.processed += 1;
        self.matched.clear();
        self.catalog.match_steps(&event, &mut self.matched);
        self.recurring.clear();
        self.catalog.match_recurrences(&event, &mut self.recurring);
        self.keys.collect(&event);
        let retargeted = self.prefer_destination(&event, at);
        let Some(entity) = event.entity.as_deref().filter(|_| !self.keys.is_empty()) else {
            return self.process_unlinked(event, out);
        };
        let serial = self.processed;
        let placement = self.groups.place(at, self.keys.as_slice(), entity, || {
            summary::correlation_id(&event.id, at, serial)
        });
        let group = self.groups.get_mut(placement.slot);
        let adopt = retargeted || group.names_better_than(entity);
        group.offer_entity(entity);
        if adopt {
            adopt_pod(&mut event, &group.entity);
        }
        let evidence = !self.matched.is_empty();
        group.related.record(&event.id, evidence, self.max_related);
        if evidence {
            group.progress(&self.catalog).count(&self.matched);
        }
        tag(&mut event, group.id.clone());
        out.push(event);
        self.summaries += recur(
            &mut self.recurrences,
            &self.catalog,
            &self.recurring,
            &mut self.recurred,
            out,
        );
        if !evidence && !placement.merged {
            return;
        }
        self.completed.clear();
        group
            .progress(&self.catalog)
            .newly_complete(&self.catalog, &mut self.completed);
        let story = Story {
            correlation_id: &group.id,
            entity: Some(&group.entity),
            counts: group.counts(),
            related: &group.related,
            at,
        };
        self.summaries += summarise(&self.catalog, &self.completed, &story, out);
    }

    /// Narrows a socket event's keys to its destination address when that address reaches an
    /// open group about another pod than the event's entity; returns whether it did. A socket
    /// event is about the pod at its destination, else at its source (DESIGN.md section 5): the
    /// enricher falls back to the source when it does not know the destination address yet,
    /// which happens when the event arrives before the CNI `ADD` or pod update that gives the
    /// destination pod its address, although that came first in event time. Here the groups
    /// already know the address, so the destination decides, as it would have in the enricher.
    fn prefer_destination(&mut self, event: &UnifiedEvent, at: Timestamp) -> bool {
        let Some(destination) = event
            .network
            .as_deref()
            .filter(|_| event.source != "cni")
            .and_then(|network| network.dst_ip.as_deref())
        else {
            return false;
        };
        let Some(entity) = event
            .entity
            .as_deref()
            .filter(|entity| entity.kind == EntityType::Pod)
        else {
            return false;
        };
        self.destination.clear();
        self.destination.push_str("ip/");
        self.destination.push_str(destination);
        let elsewhere = self
            .groups
            .reached_by(&self.destination, at)
            .is_some_and(|group| {
                group.entity.kind == EntityType::Pod && group.entity.id != entity.id
            });
        if elsewhere {
            self.keys.replace_with(&self.destination);
        }
        elsewhere
    }

    /// An event with nothing to link by (no entity, or a `host` entity whose subject was not
    /// resolved) is a group of its own: it gets an id derived from its own and no state is
    /// kept. Keying such events by host would link unrelated events on one node.
    fn process_unlinked(&mut self, mut event: UnifiedEvent, out: &mut Vec<UnifiedEvent>) {
        let correlation_id = summary::correlation_id(&event.id, event.timestamp, self.processed);
        let mut summaries = Vec::new();
        if !self.matched.is_empty() {
            let mut progress = Progress::new(&self.catalog);
            progress.count(&self.matched);
            self.completed.clear();
            progress.newly_complete(&self.catalog, &mut self.completed);
            let mut related = Related::default();
            related.record(&event.id, true, self.max_related);
            let story = Story {
                correlation_id: &correlation_id,
                entity: event.entity.as_deref(),
                counts: progress.counts(),
                related: &related,
                at: event.timestamp,
            };
            self.summaries += summarise(&self.catalog, &self.completed, &story, &mut summaries);
        }
        tag(&mut event, correlation_id);
        out.push(event);
        self.summaries += recur(
            &mut self.recurrences,
            &self.catalog,
            &self.recurring,
            &mut self.recurred,
            out,
        );
        out.append(&mut summaries);
    }
}

/// Counts the event just emitted (the last of `out`) towards the `recurring` recurrences it
/// is a fact of (found before it was placed); the summaries of those that fire follow it,
/// through `scratch`. Returns how many fired.
fn recur(
    recurrences: &mut Recurrences,
    catalog: &Catalog,
    recurring: &[usize],
    scratch: &mut Vec<UnifiedEvent>,
    out: &mut Vec<UnifiedEvent>,
) -> u64 {
    let Some(event) = out.last().filter(|_| !recurring.is_empty()) else {
        return 0;
    };
    let fired = recurrences.observe(catalog, recurring, event, scratch);
    out.append(scratch);
    fired
}

/// Appends the summaries of the `completed` patterns of `story`; returns how many.
fn summarise(
    catalog: &Catalog,
    completed: &[usize],
    story: &Story<'_>,
    out: &mut Vec<UnifiedEvent>,
) -> u64 {
    for &index in completed {
        out.push(summary::summary(&catalog.patterns()[index], story));
    }
    completed.len() as u64
}

/// Makes the pod of an event's group its entity, as `semantic_enrich` would have had it known,
/// when it saw the event, what the groups know now: the event arrived before the one that ties
/// its container, cgroup, address or name to the pod, and correlate, which sees both in
/// event-time order, is the first to know. That is an unresolved (`host`) event linked through
/// an alias, a pod known only by `namespace/name` in a group that knows its uid, or a socket
/// event moved to its destination's group. The rest of the event (its narrative included)
/// stays as the enricher wrote it. As in enrichment, the node it was observed on is kept in the
/// entity's `node` attribute when it is not the pod's node (a socket's peer on another node).
fn adopt_pod(event: &mut UnifiedEvent, pod: &Entity) {
    let Some(entity) = event.entity.as_deref_mut() else {
        return;
    };
    let host = (entity.kind == EntityType::Host).then(|| entity.id.clone());
    let observed_on = entity
        .node
        .take()
        .or_else(|| host.filter(|node| !node.is_empty()));
    entity.kind = EntityType::Pod;
    entity.id.clone_from(&pod.id);
    entity.name.clone_from(&pod.name);
    entity.namespace.clone_from(&pod.namespace);
    entity.node = match (&pod.node, observed_on) {
        (Some(node), Some(observed)) if *node != observed => {
            entity.attributes.insert("node".to_owned(), observed);
            Some(node.clone())
        }
        (Some(node), _) => Some(node.clone()),
        (None, observed) => observed,
    };
}

/// Sets the event's `correlation.correlation_id`, keeping any other correlation fields.
fn tag(event: &mut UnifiedEvent, correlation_id: String) {
    match event.correlation.as_deref_mut() {
        Some(correlation) => correlation.correlation_id = Some(correlation_id),
        None => {
            event.correlation = Some(Box::new(CorrelationContext {
                correlation_id: Some(correlation_id),
                ..CorrelationContext::default()
            }));
        }
    }
}

/// The keys that link an event to a group, rebuilt for every event in reused buffers: its
/// entity and that entity's aliases. A pod is reached by its id and by `namespace/name`, so
/// events that knew only its name (CNI) and those that knew its uid join one group; also by its
/// container ids, its cgroups and its IP, which the events about it carry (a pod update's
/// `container_id` and `pod_ip`, a CNI call's address and sandbox, a container scope's unit and
/// pod slice, a process's container and cgroup). A cgroup id is a node's own (an inode number),
/// so its key names the node: `cgroup/<node>/<id>`.
///
/// These raw aliases are how an event links through a fact that became known *later in arrival
/// order* but no later in event time: a container's first `exec` that arrives before the scope
/// unit naming its pod, a socket event before the CNI `ADD` giving the pod its address, a
/// process known only by its cgroup before the exec that ties the cgroup to the container.
/// `semantic_enrich` sees such an event first, cannot resolve it and leaves its `host` entity;
/// the correlator sees the events in event-time order after its reorder buffer, so by the time
/// the unresolved event is placed, the earlier event has registered the alias with the pod's
/// group and the event joins it (at the same instant the reorder buffer puts resolved events
/// first), taking the pod as its entity ([`adopt_pod`]). Doing it here rather than
/// re-resolving in the enricher keeps the enricher a one-pass, unbuffered transform: only the
/// correlator already holds events for `allowed_lateness`. A node's key reaches only events
/// about the node itself. A socket's owner (`process` on a network event) never links: a
/// network event is about the peer pod, reached through the resolved entity or, while
/// unresolved, the destination address.
#[derive(Debug, Default)]
struct Keys {
    buffers: Vec<String>,
    len: usize,
}

impl Keys {
    fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The keys of the current event, borrowed from the reused buffers.
    fn as_slice(&self) -> &[String] {
        &self.buffers[..self.len]
    }

    /// Makes `key` the only key.
    fn replace_with(&mut self, key: &str) {
        self.len = 0;
        self.push_with(|buffer| buffer.push_str(key));
    }

    /// Adds `<kind>/<parts>` unless already present.
    fn push(&mut self, kind: &str, parts: &[&str]) {
        self.push_with(|key| {
            key.push_str(kind);
            key.push('/');
            for part in parts {
                key.push_str(part);
            }
        });
    }

    /// Adds the key `write` writes into an empty string, unless already present.
    fn push_with(&mut self, write: impl FnOnce(&mut String)) {
        if self.buffers.len() == self.len {
            self.buffers.push(String::new());
        }
        let key = &mut self.buffers[self.len];
        key.clear();
        write(key);
        let (added, earlier) = self.buffers[..=self.len].split_last().expect("just pushed");
        if !earlier.contains(added) {
            self.len += 1;
        }
    }

    fn collect(&mut self, event: &UnifiedEvent) {
        self.len = 0;
        let Some(entity) = event.entity.as_deref() else {
            return;
        };
        let resolved = entity.kind != EntityType::Host;
        if resolved && !entity.id.is_empty() {
            self.push(entity.kind.as_str(), &[&entity.id]);
        }
        if let (EntityType::Pod, Some(namespace), Some(name)) =
            (entity.kind, &entity.namespace, &entity.name)
        {
            self.push("pod", &[namespace, "/", name]);
        }
        if entity.kind == EntityType::Node {
            return;
        }
        if let Some(kubernetes) = event.kubernetes.as_deref() {
            if let Some(id) = kubernetes.container_id.as_deref().map(strip_runtime) {
                self.push("container", &[id]);
            }
            if let Some(ip) = kubernetes.pod_ip.as_deref() {
                self.push("ip", &[ip]);
            }
        }
        if let Some(systemd) = event.systemd.as_deref() {
            if let Some(id) = systemd.unit.as_deref().and_then(scope_container) {
                self.push("container", &[id]);
            }
            if let Some(uid) = systemd.slice.as_deref().and_then(slice_pod_uid) {
                self.push("pod", &[&uid]);
            }
        }
        match event.network.as_deref() {
            Some(network) => {
                if let Some(ip) = network.ip_address.as_deref() {
                    self.push("ip", &[ip]);
                }
                if event.source == "cni"
                    && let Some(sandbox) = network.container_id.as_deref()
                {
                    self.push("container", &[sandbox]);
                }
                if !resolved && let Some(ip) = network.dst_ip.as_deref() {
                    self.push("ip", &[ip]);
                }
            }
            None => {
                let Some(process) = event.process.as_deref() else {
                    return;
                };
                if let Some(id) = process.container_id.as_deref() {
                    self.push("container", &[id]);
                }
                let node = entity.node.as_deref().or(match entity.kind {
                    EntityType::Host => Some(entity.id.as_str()),
                    _ => None,
                });
                if let (Some(cgroup), Some(node)) = (process.cgroup_id, node) {
                    self.push_with(|key| {
                        // Writing into a String cannot fail.
                        let _ = write!(key, "cgroup/{node}/{cgroup}");
                    });
                }
            }
        }
    }
}

/// A container id without its runtime scheme (`containerd://<id>` → `<id>`).
fn strip_runtime(id: &str) -> &str {
    id.split_once("://").map_or(id, |(_, bare)| bare)
}

/// The container id of a container scope unit (`cri-containerd-<id>.scope`, `docker-<id>.scope`,
/// `crio-<id>.scope`).
fn scope_container(unit: &str) -> Option<&str> {
    let name = unit.strip_suffix(".scope")?;
    ["cri-containerd-", "docker-", "crio-"]
        .iter()
        .find_map(|prefix| name.strip_prefix(prefix))
}

/// The pod uid of a kubepods slice (`kubepods-burstable-pod<uid with _>.slice`).
fn slice_pod_uid(slice: &str) -> Option<String> {
    let name = slice.strip_suffix(".slice")?;
    let (_, uid) = name.rsplit_once("-pod")?;
    Some(uid.replace('_', "-"))
}
