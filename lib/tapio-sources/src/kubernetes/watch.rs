//! The watches and the loop that turns what they report into events. Each watched kind (in
//! each included namespace) is a kube-rs watcher: a paged list (`limit=500` and `continue`,
//! at the most recent `resourceVersion`), then a watch with bookmarks from the list's version,
//! resumed from the last version seen when the server ends it, and relisted when the server
//! says that version is gone (`410 Gone`). Errors back off exponentially with jitter (0.8 s
//! doubling to 30 s). All watches feed one loop that owns the stores, so a pod's owner and an
//! Event's subject are looked up without locks.

use std::fmt::Debug;
use std::sync::Arc;

use futures::future::BoxFuture;
use futures::stream::{self, BoxStream};
use futures::{FutureExt, StreamExt};
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::{Event as CoreEvent, Node, Pod};
use kube::api::{Api, ListParams};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event, ListSemantic};
use kube::{Client, ResourceExt};
use serde::de::DeserializeOwned;
use tapio_event::id::IdGenerator;
use tapio_event::{
    ComponentError, ComponentMetrics, EventBatch, SourceContext, Timestamp, UnifiedEvent,
};

use super::store::{Facts, Listed, Store};
use super::{KubernetesConfig, Resource, connect};

/// Events handed on in one batch at most; an initial list with `emit_initial` is cut into
/// batches of this size.
const MAX_BATCH: usize = 1024;

/// Which watches to run, with their selectors: decided from the options alone, so the start
/// check probes exactly what will be watched.
#[derive(Debug, Clone)]
pub(super) struct Plan {
    resources: Vec<Resource>,
    /// `None` for cluster-wide, else one watch per namespace.
    namespaces: Vec<Option<String>>,
    pod_fields: Option<String>,
    namespaced_fields: Option<String>,
    node_fields: Option<String>,
    labels: Option<String>,
}

/// Joins selector terms with `,` (all must hold); `None` when there are none.
fn selector<'a>(terms: impl IntoIterator<Item = Option<&'a str>>) -> Option<String> {
    let terms: Vec<&str> = terms.into_iter().flatten().collect();
    (!terms.is_empty()).then(|| terms.join(","))
}

impl Plan {
    /// The watches `config` asks for: each kind once, in one namespace after another or
    /// cluster-wide, with the selectors that apply to it.
    pub(super) fn new(config: &KubernetesConfig) -> Self {
        let mut resources = Vec::new();
        for resource in &config.resources {
            if !resources.contains(resource) {
                resources.push(*resource);
            }
        }
        let namespaces = if config.namespaces.include.is_empty() {
            vec![None]
        } else {
            config
                .namespaces
                .include
                .iter()
                .filter(|ns| !config.namespaces.exclude.contains(ns))
                .map(|ns| Some(ns.clone()))
                .collect()
        };
        let exclude: Vec<String> = if config.namespaces.include.is_empty() {
            config
                .namespaces
                .exclude
                .iter()
                .map(|ns| format!("metadata.namespace!={ns}"))
                .collect()
        } else {
            Vec::new()
        };
        let exclude = selector(exclude.iter().map(|t| Some(t.as_str())));
        let node = config
            .node_name_filter
            .as_deref()
            .map(|node| format!("spec.nodeName={node}"));
        Plan {
            resources,
            namespaces,
            pod_fields: selector([
                exclude.as_deref(),
                config.field_selector.as_deref(),
                node.as_deref(),
            ]),
            node_fields: config
                .node_name_filter
                .as_deref()
                .map(|node| format!("metadata.name={node}")),
            namespaced_fields: exclude,
            labels: config.label_selector.clone(),
        }
    }

    /// The list and watch settings of one kind.
    fn settings(&self, resource: Resource) -> watcher::Config {
        let (fields, labels) = match resource {
            Resource::Pods => (&self.pod_fields, &self.labels),
            Resource::Nodes => (&self.node_fields, &None),
            Resource::Events => (&self.namespaced_fields, &None),
            Resource::Deployments | Resource::Replicasets => {
                (&self.namespaced_fields, &self.labels)
            }
        };
        // A consistent, paged list: the most recent state, 500 objects a page, so a large
        // cluster's list never sits in memory whole.
        watcher::Config {
            list_semantic: ListSemantic::MostRecent,
            label_selector: labels.clone(),
            field_selector: fields.clone(),
            ..watcher::Config::default()
        }
    }

    /// The namespaces a kind is watched in (Nodes are cluster-scoped).
    fn scopes(&self, resource: Resource) -> &[Option<String>] {
        const CLUSTER_WIDE: &[Option<String>] = &[None];
        match resource {
            Resource::Nodes => CLUSTER_WIDE,
            _ => &self.namespaces,
        }
    }

    /// One `limit=1` list per watched kind, named for messages: what the start check runs.
    pub(super) fn probes(
        &self,
        client: &Client,
    ) -> Vec<(String, BoxFuture<'static, Result<(), kube::Error>>)> {
        fn probe<K>(
            api: Api<K>,
            settings: &watcher::Config,
        ) -> BoxFuture<'static, Result<(), kube::Error>>
        where
            K: kube::Resource + Clone + DeserializeOwned + Debug + Send + 'static,
        {
            let mut params = ListParams::default().limit(1);
            params.label_selector.clone_from(&settings.label_selector);
            params.field_selector.clone_from(&settings.field_selector);
            async move { api.list(&params).await.map(drop) }.boxed()
        }
        let mut probes = Vec::new();
        for &resource in &self.resources {
            let settings = self.settings(resource);
            let scope = &self.scopes(resource)[0];
            let what = match scope {
                Some(ns) => format!("{} in namespace {ns}", resource.plural()),
                None => resource.plural().to_owned(),
            };
            let future = match resource {
                Resource::Pods => probe(api::<Pod>(client, scope), &settings),
                Resource::Events => probe(api::<CoreEvent>(client, scope), &settings),
                Resource::Nodes => probe(Api::<Node>::all(client.clone()), &settings),
                Resource::Deployments => probe(api::<Deployment>(client, scope), &settings),
                Resource::Replicasets => probe(api::<ReplicaSet>(client, scope), &settings),
            };
            probes.push((what, future));
        }
        probes
    }

    /// Every watch, each tagged with its scope number.
    fn streams(&self, client: &Client) -> Vec<BoxStream<'static, Update>> {
        let mut streams = Vec::new();
        for &resource in &self.resources {
            let settings = self.settings(resource);
            for namespace in self.scopes(resource) {
                let scope = streams.len();
                let stream = match resource {
                    Resource::Pods => {
                        watch(api(client, namespace), settings.clone(), scope, Change::Pod)
                    }
                    Resource::Events => watch(
                        api(client, namespace),
                        settings.clone(),
                        scope,
                        Change::Event,
                    ),
                    Resource::Nodes => watch(
                        Api::all(client.clone()),
                        settings.clone(),
                        scope,
                        Change::Node,
                    ),
                    Resource::Deployments => watch(
                        api(client, namespace),
                        settings.clone(),
                        scope,
                        Change::Deployment,
                    ),
                    Resource::Replicasets => watch(
                        api(client, namespace),
                        settings.clone(),
                        scope,
                        Change::ReplicaSet,
                    ),
                };
                streams.push(stream);
            }
        }
        streams
    }
}

impl Resource {
    /// The API's plural name, as in RBAC rules and messages.
    pub(super) fn plural(self) -> &'static str {
        match self {
            Resource::Pods => "pods",
            Resource::Events => "events",
            Resource::Nodes => "nodes",
            Resource::Deployments => "deployments",
            Resource::Replicasets => "replicasets",
        }
    }
}

/// A namespaced kind's API, in one namespace or across all.
fn api<K>(client: &Client, namespace: &Option<String>) -> Api<K>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>,
    K::DynamicType: Default,
{
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// A watcher with the default backoff (exponential with jitter), its items tagged.
fn watch<K>(
    api: Api<K>,
    settings: watcher::Config,
    scope: usize,
    wrap: fn(watcher::Result<Event<K>>) -> Change,
) -> BoxStream<'static, Update>
where
    K: kube::Resource + Clone + DeserializeOwned + Debug + Send + 'static,
{
    watcher::watcher(api, settings)
        .default_backoff()
        .map(move |item| Update {
            scope,
            change: wrap(item),
        })
        .boxed()
}

/// One item of one watch.
pub(super) struct Update {
    scope: usize,
    change: Change,
}

/// What a watch reported, by kind.
pub(super) enum Change {
    Pod(watcher::Result<Event<Pod>>),
    Event(watcher::Result<Event<CoreEvent>>),
    Node(watcher::Result<Event<Node>>),
    Deployment(watcher::Result<Event<Deployment>>),
    ReplicaSet(watcher::Result<Event<ReplicaSet>>),
}

/// Every store, so that a kind's events can name what other kinds know (a pod's Deployment
/// through its ReplicaSet, an Event's pod and node).
#[derive(Debug, Default)]
pub(super) struct Cluster {
    pub(super) pods: Store<super::pods::PodFacts>,
    pub(super) events: Store<super::core_events::EventFacts>,
    pub(super) nodes: Store<super::nodes::NodeFacts>,
    pub(super) deployments: Store<super::workloads::DeploymentFacts>,
    pub(super) replicasets: Store<super::workloads::ReplicaSetFacts>,
    /// `node_name_filter`: Events are kept only about this node's pods and the node itself.
    pub(super) node_filter: Option<String>,
}

/// What makes events: ids, the batch's time, and the events made so far.
pub(super) struct Emitter {
    ids: IdGenerator,
    pub(super) now: Timestamp,
    pending: Vec<UnifiedEvent>,
}

impl Emitter {
    /// An emitter stamping events with `now`.
    pub(super) fn new(ids: IdGenerator, now: Timestamp) -> Self {
        Emitter {
            ids,
            now,
            pending: Vec::new(),
        }
    }

    /// The events made since the last call.
    pub(super) fn take(&mut self) -> Vec<UnifiedEvent> {
        std::mem::take(&mut self.pending)
    }

    /// A new `kubernetes` event stamped with the time the change was seen: the watch delivers
    /// changes within moments, and one clock keeps the order `correlate` relies on (objects'
    /// own times come from the clocks of whichever component wrote them).
    pub(super) fn event(&mut self) -> UnifiedEvent {
        let mut event =
            UnifiedEvent::new(tapio_event::EventType::Kubernetes, "kubernetes", self.now);
        event.id = self.ids.next_id(self.now);
        event
    }

    /// Queues `event` for the next batch.
    pub(super) fn push(&mut self, event: UnifiedEvent) {
        self.pending.push(event);
    }
}

/// One kind of watched object: how to read its facts and what their changes mean.
pub(super) trait Kind {
    type Object: kube::Resource + ResourceExt;
    type Facts: Facts;
    /// The API's plural, for messages and metrics.
    const PLURAL: &'static str;

    /// The facts kept of `object`.
    fn facts(object: &Self::Object) -> Self::Facts;
    /// This kind's store.
    fn store(cluster: &mut Cluster) -> &mut Store<Self::Facts>;
    /// This kind's store, to read.
    fn store_ref(cluster: &Cluster) -> &Store<Self::Facts>;
    /// Emits what changed from `old` (`None`: a new object) to `new`, if it matters.
    fn changed(cluster: &Cluster, old: Option<&Self::Facts>, new: &Self::Facts, out: &mut Emitter);
    /// Emits the deletion of `gone`, if it matters.
    fn deleted(cluster: &Cluster, gone: &Self::Facts, out: &mut Emitter);
}

/// The key an object is stored and referred to by: `namespace/name`, or the name of a
/// cluster-scoped object.
fn key_of<K: ResourceExt>(object: &K) -> Box<str> {
    match object.namespace() {
        Some(ns) => format!("{ns}/{}", object.name_any()).into(),
        None => object.name_any().into(),
    }
}

/// The loop's state: stores, event making, counters.
struct Watching<'a> {
    cluster: Cluster,
    out: Emitter,
    emit_initial: bool,
    name: &'a str,
    metrics: Arc<ComponentMetrics>,
}

impl Watching<'_> {
    fn apply(&mut self, update: Update) {
        let scope = update.scope;
        match update.change {
            Change::Pod(item) => self.apply_kind::<super::pods::Pods>(scope, item),
            Change::Event(item) => self.apply_kind::<super::core_events::Events>(scope, item),
            Change::Node(item) => self.apply_kind::<super::nodes::Nodes>(scope, item),
            Change::Deployment(item) => {
                self.apply_kind::<super::workloads::Deployments>(scope, item)
            }
            Change::ReplicaSet(item) => {
                self.apply_kind::<super::workloads::ReplicaSets>(scope, item)
            }
        }
    }

    fn apply_kind<K: Kind>(&mut self, scope: usize, item: watcher::Result<Event<K::Object>>) {
        let event = match item {
            Ok(event) => event,
            Err(error) => return self.failed(K::PLURAL, &error),
        };
        match event {
            Event::Init => {
                if K::store(&mut self.cluster).begin_list(scope) {
                    self.metrics.add_warning("relist");
                    tracing::warn!(
                        source = %self.name,
                        "relisting {}: the watch's resourceVersion expired (410 Gone); only changes are emitted",
                        K::PLURAL
                    );
                }
            }
            Event::InitApply(object) => {
                self.metrics.add_events_in(1);
                let key = key_of(&object);
                let facts = K::facts(&object);
                match K::store(&mut self.cluster).listed(scope, &key, &facts) {
                    Listed::Unchanged => {}
                    Listed::Initial => {
                        K::store(&mut self.cluster).insert(scope, key.clone(), facts);
                        if self.emit_initial {
                            self.changed::<K>(&key, None);
                        }
                    }
                    Listed::Changed => self.update::<K>(scope, key, facts),
                }
            }
            Event::InitDone => {
                for gone in K::store(&mut self.cluster).finish_list(scope) {
                    K::deleted(&self.cluster, &gone, &mut self.out);
                }
            }
            Event::Apply(object) => {
                self.metrics.add_events_in(1);
                self.update::<K>(scope, key_of(&object), K::facts(&object));
            }
            Event::Delete(object) => {
                self.metrics.add_events_in(1);
                let key = key_of(&object);
                K::store(&mut self.cluster).remove(&key);
                K::deleted(&self.cluster, &K::facts(&object), &mut self.out);
            }
        }
    }

    /// Stores new facts and emits what changed; a new uid under a known name is the old
    /// object's deletion and a new object.
    fn update<K: Kind>(&mut self, scope: usize, key: Box<str>, facts: K::Facts) {
        let old = K::store(&mut self.cluster).insert(scope, key.clone(), facts);
        let Some(new) = K::store_ref(&self.cluster).get(&key) else {
            return;
        };
        match old {
            Some(old) if old.uid() != new.uid() => {
                K::deleted(&self.cluster, &old, &mut self.out);
                self.changed::<K>(&key, None);
            }
            old => self.changed::<K>(&key, old.as_ref()),
        }
    }

    fn changed<K: Kind>(&mut self, key: &str, old: Option<&K::Facts>) {
        if let Some(new) = K::store_ref(&self.cluster).get(key) {
            K::changed(&self.cluster, old, new, &mut self.out);
        }
    }

    /// A watch error: counted and warned about; the watcher retries after its backoff. An
    /// expired version (`410 Gone`) is not an error but the start of a relist, counted there.
    fn failed(&self, plural: &str, error: &watcher::Error) {
        if let watcher::Error::WatchError(status) = error
            && status.code == 410
        {
            return;
        }
        self.metrics.add_warning("api_error");
        let message = match error {
            watcher::Error::InitialListFailed(e) => connect::explain(e, &format!("list {plural}")),
            watcher::Error::WatchStartFailed(e) | watcher::Error::WatchFailed(e) => {
                connect::explain(e, &format!("watch {plural}"))
            }
            other => format!("watching {plural} failed: {}", connect::describe(other)),
        };
        tracing::warn!(source = %self.name, "{message}; retrying with backoff");
    }

    fn report_sizes(&self) {
        let cluster = &self.cluster;
        for (what, len) in [
            ("pods", cluster.pods.len()),
            ("events", cluster.events.len()),
            ("nodes", cluster.nodes.len()),
            ("deployments", cluster.deployments.len()),
            ("replicasets", cluster.replicasets.len()),
        ] {
            self.metrics.set_state_size(what, len as u64);
        }
    }
}

/// Runs every watch until shutdown (or until nothing reads the source's output).
pub(super) async fn run(
    client: Client,
    plan: Plan,
    config: &KubernetesConfig,
    name: &str,
    cx: SourceContext,
) -> Result<(), ComponentError> {
    let SourceContext {
        mut out,
        mut shutdown,
        metrics,
    } = cx;
    let mut updates = stream::select_all(plan.streams(&client));
    let mut watching = Watching {
        cluster: Cluster {
            node_filter: config.node_name_filter.clone(),
            ..Cluster::default()
        },
        out: Emitter::new(IdGenerator::from_entropy(), Timestamp::now()),
        emit_initial: config.emit_initial,
        name,
        metrics,
    };
    loop {
        let update = tokio::select! {
            biased;
            () = shutdown.triggered() => return Ok(()),
            update = updates.next() => update,
        };
        let Some(update) = update else {
            return Ok(());
        };
        watching.out.now = Timestamp::now();
        watching.apply(update);
        // Whatever else is ready joins the same batch.
        while watching.out.pending.len() < MAX_BATCH {
            match updates.next().now_or_never() {
                Some(Some(update)) => watching.apply(update),
                _ => break,
            }
        }
        watching.report_sizes();
        let events = watching.out.take();
        if !events.is_empty() && out.send(EventBatch::new(events)).await.is_err() {
            return Ok(());
        }
    }
}
