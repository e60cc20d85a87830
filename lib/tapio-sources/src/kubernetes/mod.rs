//! The `kubernetes` source: the cluster's half of every incident. It watches Pods, core/v1
//! Events, Nodes, Deployments and ReplicaSets through the API server (kube-rs watchers: a list
//! with `resourceVersion`, then a watch with bookmarks, resumed from the last version when it
//! ends and relisted on `410 Gone`), keeps a small store of the facts that matter per object,
//! and emits an event only when one of those facts changes (DESIGN.md section 2).
//!
//! - [`connect`]: the client from `kubeconfig`/`context` or the in-cluster config, and the
//!   check made at start;
//! - [`watch`]: the watch streams, the relist bookkeeping that keeps a `410 Gone` from repeating
//!   `added` events, backoff, counters and warnings;
//! - [`store`]: the per-kind stores of trimmed facts;
//! - [`pods`], [`nodes`], [`workloads`], [`core_events`]: what each kind's changes mean.

mod connect;
mod core_events;
mod nodes;
mod pods;
mod store;
mod watch;
mod workloads;

#[cfg(test)]
mod tests;

use std::path::PathBuf;

use schemars::JsonSchema;
use serde::Deserialize;
use tapio_event::{
    BuildContext, ComponentConfig, ComponentError, ComponentFuture, Source, SourceContext,
};

/// Watches the Kubernetes API: pods, events, nodes and workloads as `kubernetes` events.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct KubernetesConfig {
    /// Which kinds of object to watch: any of `"pods"`, `"events"` (core/v1 Events), `"nodes"`,
    /// `"deployments"` and `"replicasets"`. ReplicaSets name the Deployment that owns a pod;
    /// without them the owner is read from the pod's `pod-template-hash` label.
    #[serde(default = "all_resources")]
    pub resources: Vec<Resource>,
    /// Which namespaces' objects to watch: `{ include = ["shop"] }` watches only those (one
    /// watch per namespace), `{ exclude = ["kube-system"] }` everything else (as a
    /// `metadata.namespace!=` field selector). Nodes have no namespace and are not filtered.
    #[serde(default)]
    pub namespaces: Namespaces,
    /// A label selector (`app=shop,tier!=cache`) for pods, Deployments and ReplicaSets.
    #[serde(default)]
    pub label_selector: Option<String>,
    /// A field selector (`status.phase!=Succeeded`) for pods, added to the ones this source
    /// makes itself.
    #[serde(default)]
    pub field_selector: Option<String>,
    /// Watch only the pods scheduled on this node (the field selector `spec.nodeName=<value>`)
    /// and only this Node; Events are kept only when they are about one of those pods or this
    /// node. A node agent sets it to `"${NODE_NAME}"` (from the downward API). Unset: the whole
    /// cluster.
    #[serde(default)]
    pub node_name_filter: Option<String>,
    /// A kubeconfig file to connect with. Unset: the in-cluster service account when running in
    /// a pod, else `$KUBECONFIG`, else `~/.kube/config`. A cluster whose server is plain
    /// `http://` with a bearer token works too, as with kubectl.
    #[serde(default)]
    pub kubeconfig: Option<PathBuf>,
    /// The kubeconfig context to use. Unset: its `current-context`.
    #[serde(default)]
    pub context: Option<String>,
    /// Emit an `added` event for every object of the initial list. By default the initial list
    /// only fills the source's state, and events start with the first change.
    #[serde(default)]
    pub emit_initial: bool,
    /// Stop the pipeline at start (exit 69, one line saying why) when the API server cannot be
    /// reached, refuses the credentials or forbids a list. With `false` the source warns and
    /// keeps retrying with backoff.
    #[serde(default = "yes")]
    pub required: bool,
}

/// A kind of object the source can watch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Resource {
    Pods,
    Events,
    Nodes,
    Deployments,
    Replicasets,
}

/// Namespaces to include or leave out.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Namespaces {
    /// Only these namespaces. Empty: all of them.
    #[serde(default)]
    pub include: Vec<String>,
    /// Never these namespaces.
    #[serde(default)]
    pub exclude: Vec<String>,
}

fn all_resources() -> Vec<Resource> {
    vec![
        Resource::Pods,
        Resource::Events,
        Resource::Nodes,
        Resource::Deployments,
        Resource::Replicasets,
    ]
}

fn yes() -> bool {
    true
}

impl ComponentConfig for KubernetesConfig {
    type Component = dyn Source;

    /// Checks the options only: nothing connects before the source runs, so `tapio validate`
    /// never reaches for the API server.
    fn build(&self, cx: &BuildContext) -> Result<Box<dyn Source>, ComponentError> {
        if self.resources.is_empty() {
            return Err(ComponentError::config(
                "`resources` is empty: list at least one of pods, events, nodes, deployments, replicasets",
            ));
        }
        let blank = |value: &Option<String>| value.as_deref().is_some_and(|v| v.trim().is_empty());
        for (option, value) in [
            ("label_selector", &self.label_selector),
            ("field_selector", &self.field_selector),
            ("node_name_filter", &self.node_name_filter),
            ("context", &self.context),
        ] {
            if blank(value) {
                return Err(ComponentError::config(format!(
                    "`{option}` is empty: remove it or give it a value"
                )));
            }
        }
        if let Some(name) = self
            .namespaces
            .include
            .iter()
            .chain(&self.namespaces.exclude)
            .find(|name| !valid_namespace(name))
        {
            return Err(ComponentError::config(format!(
                "`namespaces` lists `{name}`, which is not a namespace name (lowercase letters, digits and `-`)"
            )));
        }
        let namespaces = &self.namespaces;
        if !namespaces.include.is_empty()
            && namespaces
                .include
                .iter()
                .all(|ns| namespaces.exclude.contains(ns))
        {
            return Err(ComponentError::config(
                "`namespaces.exclude` leaves out every namespace of `namespaces.include`: nothing would be watched",
            ));
        }
        Ok(Box::new(KubernetesSource {
            config: self.clone(),
            name: cx.name.clone(),
        }))
    }
}

/// A namespace name is a DNS label; checking it here keeps a typo from becoming a selector the
/// API server rejects on every retry.
fn valid_namespace(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-')
}

/// The built source: connects when it runs.
struct KubernetesSource {
    config: KubernetesConfig,
    name: String,
}

impl Source for KubernetesSource {
    fn run(self: Box<Self>, cx: SourceContext) -> ComponentFuture {
        Box::pin(async move {
            let required = self.config.required;
            let (client, server) = match connect::client(&self.config).await {
                Ok(connected) => connected,
                Err(error) if required => return Err(error),
                Err(error) => {
                    // Without a client there is nothing to retry: the rest of the pipeline runs.
                    tracing::warn!(
                        source = %self.name,
                        "kubernetes source disabled (required = false): {error}"
                    );
                    return Ok(());
                }
            };
            let plan = watch::Plan::new(&self.config);
            if let Err(message) = connect::check(&client, &server, &plan).await {
                if required {
                    return Err(ComponentError::unavailable(message));
                }
                tracing::warn!(
                    source = %self.name,
                    "{message}; retrying with backoff (required = false)"
                );
            }
            watch::run(client, plan, &self.config, &self.name, cx).await
        })
    }
}
