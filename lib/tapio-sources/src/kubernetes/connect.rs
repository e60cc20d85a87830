//! How the source reaches the API server: the client config from the options (a kubeconfig
//! file, else the in-cluster service account, else `$KUBECONFIG` or `~/.kube/config`), and the
//! check made once at start that turns "unreachable", "bad credentials" and "forbidden" into
//! one line the user can act on.

use kube::Client;
use kube::config::{Config, KubeConfigOptions, Kubeconfig};
use tapio_event::ComponentError;

use super::KubernetesConfig;
use super::watch::Plan;

/// The client the options describe, and the server's URL for messages. A kubeconfig that cannot
/// be read or a context it lacks is something to fix where Tapio runs, so it is an
/// `unavailable` error.
pub(super) async fn client(config: &KubernetesConfig) -> Result<(Client, String), ComponentError> {
    let options = KubeConfigOptions {
        context: config.context.clone(),
        ..KubeConfigOptions::default()
    };
    let loaded = match &config.kubeconfig {
        Some(path) => match Kubeconfig::read_from(path) {
            Ok(file) => Config::from_custom_kubeconfig(file, &options)
                .await
                .map_err(|e| format!("kubeconfig {}: {}", path.display(), describe(&e))),
            Err(e) => Err(format!("cannot read kubeconfig {}: {}", path.display(), describe(&e))),
        },
        None if config.context.is_none() && in_cluster() => Config::incluster()
            .map_err(|e| format!("the in-cluster config is incomplete: {}", describe(&e))),
        None => Config::from_kubeconfig(&options).await.map_err(|e| {
            format!(
                "no kubeconfig to connect with (not in a cluster, and $KUBECONFIG or ~/.kube/config did not load): {}",
                describe(&e)
            )
        }),
    };
    let config = loaded.map_err(ComponentError::unavailable)?;
    // rustls picks its crypto from the features built in; should another crate of the binary
    // also build aws-lc-rs in, it could not choose and the client would panic. Installing ring
    // first decides it (a provider installed earlier wins, which is as good).
    let _ = rustls::crypto::ring::default_provider().install_default();
    let server = config.cluster_url.to_string();
    let client = Client::try_from(config).map_err(|e| {
        ComponentError::unavailable(format!(
            "cannot build the Kubernetes client for {server}: {}",
            describe(&e)
        ))
    })?;
    Ok((client, server))
}

/// Whether Tapio runs in a pod, where the service account is the natural identity.
fn in_cluster() -> bool {
    std::env::var_os("KUBERNETES_SERVICE_HOST").is_some()
}

/// Proves that the API server answers, accepts the credentials and allows every list the plan
/// makes, with one request per watched kind (`limit=1`). The error says which of those failed.
pub(super) async fn check(client: &Client, server: &str, plan: &Plan) -> Result<(), String> {
    client
        .apiserver_version()
        .await
        .map_err(|e| explain(&e, &format!("reach the Kubernetes API server at {server}")))?;
    for (what, probe) in plan.probes(client) {
        probe
            .await
            .map_err(|e| explain(&e, &format!("list {what} at {server}")))?;
    }
    Ok(())
}

/// One line for an API error: what could not be done and why, with the fix for the two
/// answers a user can fix (credentials, RBAC).
pub(super) fn explain(error: &kube::Error, what: &str) -> String {
    match error {
        kube::Error::Api(status) if status.code == 401 => format!(
            "cannot {what}: the API server refused the credentials (401 Unauthorized: {}); check the token or certificate of the kubeconfig or service account",
            status.message
        ),
        kube::Error::Api(status) if status.code == 403 => format!(
            "cannot {what}: forbidden (403: {}); grant the role in distribution/kubernetes/rbac.yaml",
            status.message
        ),
        kube::Error::Api(status) => format!(
            "cannot {what}: the API server answered {} {}",
            status.code, status.message
        ),
        other => format!("cannot {what}: {}", describe(other)),
    }
}

/// An error with its causes, innermost last (`client error (Connect): Connection refused`):
/// the outer layers of a failed connection say little on their own.
pub(super) fn describe(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}
