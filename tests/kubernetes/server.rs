//! A fake Kubernetes API server for the `kubernetes` source's tests: no real kube-apiserver can
//! be installed here, so this one reproduces, over real HTTPS (a test CA made with rcgen, the
//! server certificate signed by it, rustls), the behaviours of the real one that the source
//! relies on:
//!
//! - `GET /version`; bearer-token authentication answered with a 401 `Status` when refused;
//! - lists of pods, events, nodes, deployments and replicasets, cluster-wide and per
//!   namespace, with the list's `resourceVersion`, `limit`/`continue` chunking from a snapshot
//!   (as a consistent read does; `resourceVersion=0` is served whole, from the "cache", as
//!   the real server does), and the label and field selectors the source sends
//!   (`spec.nodeName=`, `metadata.name=`, `metadata.namespace!=`, `key=value` labels);
//! - `watch=1` chunked streams of `{"type":"ADDED|MODIFIED|DELETED|BOOKMARK|ERROR","object":…}`
//!   lines from a version on, `BOOKMARK`s every second with `allowWatchBookmarks`, watches
//!   that end (the server's timeout, or [`FakeApiServer::end_watches`]), and the `ERROR` event
//!   with a `Status` of code 410 (reason `Expired`) for a version older than the history it
//!   keeps ([`FakeApiServer::expire_history`]), exactly as the real server answers an expired
//!   `resourceVersion`;
//! - going away and coming back on the same port ([`FakeApiServer::stop`] / `start`) with its
//!   state intact, as an API server restart behind a stable address does.
//!
//! Objects are JSON shaped on the Kubernetes API reference; every request is recorded so that
//! tests can check what the source asked for.
#![allow(dead_code)] // each test uses a different subset

use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio_rustls::rustls::{self, ServerConfig};

/// The kinds served, by plural: (API path prefix, kind, namespaced).
const KINDS: [(&str, &str, &str, bool); 5] = [
    ("pods", "/api/v1", "Pod", true),
    ("events", "/api/v1", "Event", true),
    ("nodes", "/api/v1", "Node", false),
    ("deployments", "/apis/apps/v1", "Deployment", true),
    ("replicasets", "/apis/apps/v1", "ReplicaSet", true),
];

/// What changed, in order: the watch history.
#[derive(Debug, Clone)]
struct Change {
    version: u64,
    plural: &'static str,
    kind: &'static str,
    object: Value,
}

#[derive(Debug, Default)]
struct State {
    version: u64,
    objects: HashMap<&'static str, BTreeMap<String, Value>>,
    history: Vec<Change>,
    /// Versions below this are gone from the history: a watch from one gets 410.
    oldest: u64,
    /// Snapshots of paged lists, by continue token.
    pages: HashMap<String, (u64, Vec<Value>)>,
    requests: Vec<String>,
    token: String,
}

/// A running fake API server; see the module documentation.
pub struct FakeApiServer {
    state: Arc<Mutex<State>>,
    /// Bumped on every change, so watches wake up.
    changed: watch::Sender<u64>,
    /// Bumped to end every open watch.
    ended: watch::Sender<u64>,
    runtime: tokio::runtime::Runtime,
    /// Stops the listener and every connection when set (or dropped).
    serving: Option<watch::Sender<bool>>,
    address: SocketAddr,
    /// `None`: plain HTTP, as a local or proxied API server may be reached.
    tls: Option<TlsAcceptor>,
    dir: tempfile::TempDir,
}

impl FakeApiServer {
    /// Starts a server on a free loopback port accepting `token`, and writes its CA and a
    /// kubeconfig pointing at it into a temporary directory.
    pub fn start_with_token(token: &str) -> FakeApiServer {
        FakeApiServer::start_with(token, true)
    }

    /// A server speaking plain HTTP (`server: http://…` in its kubeconfig, a bearer token).
    pub fn start_plain() -> FakeApiServer {
        FakeApiServer::start_with("tapio-test-token", false)
    }

    fn start_with(token: &str, https: bool) -> FakeApiServer {
        let dir = tempfile::tempdir().unwrap();
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "tapio test cluster CA");
        ca_params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::DigitalSignature,
        ];
        let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key).unwrap();
        std::fs::write(dir.path().join("ca.crt"), ca.pem()).unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let params =
            rcgen::CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
                .unwrap();
        let cert = params.signed_by(&key, &ca).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let tls = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                vec![CertificateDer::from(cert.der().to_vec())],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
            )
            .unwrap();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let listener = runtime.block_on(TcpListener::bind("127.0.0.1:0")).unwrap();
        let address = listener.local_addr().unwrap();
        let state = State {
            version: 100,
            oldest: 0,
            token: token.to_owned(),
            ..State::default()
        };
        let mut server = FakeApiServer {
            state: Arc::new(Mutex::new(state)),
            changed: watch::channel(0).0,
            ended: watch::channel(0).0,
            runtime,
            serving: None,
            address,
            tls: https.then(|| TlsAcceptor::from(Arc::new(tls))),
            dir,
        };
        server.serve(listener);
        server.write_kubeconfig("kubeconfig", token);
        server
    }

    /// [`FakeApiServer::start_with_token`] with the token its kubeconfig carries.
    pub fn start() -> FakeApiServer {
        FakeApiServer::start_with_token("tapio-test-token")
    }

    /// The kubeconfig that reaches this server: its CA, `server: https://127.0.0.1:<port>` and
    /// a bearer token.
    pub fn kubeconfig(&self) -> PathBuf {
        self.dir.path().join("kubeconfig")
    }

    /// Writes a kubeconfig named `name` with `token` as its credentials; returns its path.
    pub fn write_kubeconfig(&self, name: &str, token: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        let cluster = match self.tls {
            Some(_) => format!(
                "server: https://127.0.0.1:{}\n    certificate-authority: {}",
                self.address.port(),
                self.dir.path().join("ca.crt").display()
            ),
            None => format!("server: http://127.0.0.1:{}", self.address.port()),
        };
        let text = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    {cluster}\ncontexts:\n- name: fake\n  context:\n    cluster: fake\n    user: tapio\n    namespace: default\ncurrent-context: fake\nusers:\n- name: tapio\n  user:\n    token: {token}\n",
        );
        std::fs::write(&path, text).unwrap();
        path
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.address.port()
    }

    fn serve(&mut self, listener: TcpListener) {
        let (stop, stopped) = watch::channel(false);
        self.serving = Some(stop);
        let shared = Shared {
            state: Arc::clone(&self.state),
            changed: self.changed.subscribe(),
            ended: self.ended.subscribe(),
        };
        let tls = self.tls.clone();
        self.runtime.spawn(async move {
            let mut stopping = stopped.clone();
            loop {
                let accepted = tokio::select! {
                    _ = stopping.changed() => return,
                    accepted = listener.accept() => accepted,
                };
                let Ok((tcp, _)) = accepted else { continue };
                let tls = tls.clone();
                let shared = shared.clone();
                let mut closing = stopped.clone();
                let service = service_fn(move |request| {
                    let shared = shared.clone();
                    async move { Ok::<_, Infallible>(shared.handle(request)) }
                });
                tokio::spawn(async move {
                    let http = http1::Builder::new();
                    let served = async {
                        match tls {
                            Some(tls) => {
                                if let Ok(stream) = tls.accept(tcp).await {
                                    let _ =
                                        http.serve_connection(TokioIo::new(stream), service).await;
                                }
                            }
                            None => {
                                let _ = http.serve_connection(TokioIo::new(tcp), service).await;
                            }
                        }
                    };
                    tokio::select! {
                        () = served => {}
                        _ = closing.changed() => {}
                    }
                });
            }
        });
    }

    /// Goes away: the port is closed and every open connection dropped (the state is kept).
    pub fn stop(&mut self) {
        if let Some(stop) = self.serving.take() {
            let _ = stop.send(true);
        }
        // Let the tasks see it before the port is reused.
        std::thread::sleep(Duration::from_millis(100));
    }

    /// Comes back on the same port with the same state.
    pub fn resume(&mut self) {
        let address = self.address;
        let listener = self
            .runtime
            .block_on(async { TcpListener::bind(address).await })
            .unwrap();
        self.serve(listener);
    }

    /// Adds or replaces an object of `plural` (`namespace/name` from its metadata), giving it
    /// the next `resourceVersion` (and a uid if it has none); returns that version.
    pub fn put(&self, plural: &'static str, mut object: Value) -> u64 {
        let (_, _, kind, _) = kind_of(plural);
        let mut state = self.state.lock().unwrap();
        state.version += 1;
        let version = state.version;
        let meta = object["metadata"].as_object_mut().unwrap();
        meta.insert("resourceVersion".into(), json!(version.to_string()));
        if !meta.contains_key("uid") {
            meta.insert("uid".into(), json!(format!("uid-{plural}-{version}")));
        }
        meta.entry("creationTimestamp")
            .or_insert(json!("2026-12-01T10:00:00Z"));
        let key = key_of(&object);
        let existed = state
            .objects
            .entry(plural)
            .or_default()
            .insert(key, object.clone())
            .is_some();
        let change = if existed { "MODIFIED" } else { "ADDED" };
        state.history.push(Change {
            version,
            plural,
            kind: change_kind(change),
            object: with_kind(object, kind, plural),
        });
        drop(state);
        self.changed.send_replace(version);
        version
    }

    /// Deletes the object `key` (`namespace/name`, or a node's name) of `plural`.
    pub fn delete(&self, plural: &'static str, key: &str) {
        let (_, _, kind, _) = kind_of(plural);
        let mut state = self.state.lock().unwrap();
        let Some(mut object) = state.objects.entry(plural).or_default().remove(key) else {
            return;
        };
        state.version += 1;
        let version = state.version;
        object["metadata"]["resourceVersion"] = json!(version.to_string());
        state.history.push(Change {
            version,
            plural,
            kind: "DELETED",
            object: with_kind(object, kind, plural),
        });
        drop(state);
        self.changed.send_replace(version);
    }

    /// Forgets the watch history (an etcd compaction): a watch resumed from any version seen
    /// so far gets `410 Gone` and must relist; a list made now is watched from without one.
    pub fn expire_history(&self) {
        let mut state = self.state.lock().unwrap();
        state.version += 1;
        state.oldest = state.version;
        state.history.clear();
    }

    /// Ends every open watch, as the server's watch timeout does.
    pub fn end_watches(&self) {
        self.ended.send_modify(|n| *n += 1);
    }

    /// Every request so far: `METHOD path?query`.
    pub fn requests(&self) -> Vec<String> {
        self.state.lock().unwrap().requests.clone()
    }

    /// The current `resourceVersion`.
    pub fn version(&self) -> u64 {
        self.state.lock().unwrap().version
    }
}

impl Drop for FakeApiServer {
    fn drop(&mut self) {
        if let Some(stop) = self.serving.take() {
            let _ = stop.send(true);
        }
    }
}

fn change_kind(change: &str) -> &'static str {
    if change == "ADDED" {
        "ADDED"
    } else {
        "MODIFIED"
    }
}

fn kind_of(plural: &str) -> (&'static str, &'static str, &'static str, bool) {
    *KINDS
        .iter()
        .find(|(p, ..)| *p == plural)
        .unwrap_or_else(|| panic!("the fake serves no {plural}"))
}

/// `namespace/name`, or the name of a cluster-scoped object.
fn key_of(object: &Value) -> String {
    let name = object["metadata"]["name"].as_str().unwrap();
    match object["metadata"]["namespace"].as_str() {
        Some(ns) => format!("{ns}/{name}"),
        None => name.to_owned(),
    }
}

/// Watch events carry `kind` and `apiVersion`; list items do not.
fn with_kind(mut object: Value, kind: &str, plural: &str) -> Value {
    let (_, prefix, _, _) = kind_of(plural);
    let api_version = prefix
        .trim_start_matches("/api/")
        .trim_start_matches("/apis/");
    object["kind"] = json!(kind);
    object["apiVersion"] = json!(api_version);
    object
}

type Body = UnsyncBoxBody<Bytes, Infallible>;

/// What every connection shares.
#[derive(Clone)]
struct Shared {
    state: Arc<Mutex<State>>,
    changed: watch::Receiver<u64>,
    ended: watch::Receiver<u64>,
}

/// A parsed request path.
struct Target {
    plural: &'static str,
    namespace: Option<String>,
    query: HashMap<String, String>,
}

fn json_response(status: StatusCode, body: &Value) -> Response<Body> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())).boxed_unsync())
        .unwrap()
}

fn status(code: u16, reason: &str, message: &str) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
           "message": message, "reason": reason, "code": code})
}

fn decode(text: &str) -> String {
    let mut out = Vec::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("00");
                out.push(u8::from_str_radix(hex, 16).unwrap_or(b'?'));
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn parse_target(path: &str, query: &str) -> Option<Target> {
    let query = query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            (decode(key), decode(value))
        })
        .collect();
    for (plural, prefix, _, namespaced) in KINDS {
        let Some(rest) = path.strip_prefix(prefix) else {
            continue;
        };
        if rest == format!("/{plural}") {
            return Some(Target {
                plural,
                namespace: None,
                query,
            });
        }
        if namespaced
            && let Some(rest) = rest.strip_prefix("/namespaces/")
            && let Some((namespace, tail)) = rest.split_once('/')
            && tail == plural
        {
            return Some(Target {
                plural,
                namespace: Some(namespace.to_owned()),
                query,
            });
        }
    }
    None
}

/// Whether `object` passes the target's namespace and selectors.
fn selected(object: &Value, target: &Target) -> bool {
    let meta = &object["metadata"];
    if let Some(ns) = &target.namespace
        && meta["namespace"].as_str() != Some(ns)
    {
        return false;
    }
    let fields = target
        .query
        .get("fieldSelector")
        .map(String::as_str)
        .unwrap_or("");
    for term in fields.split(',').filter(|t| !t.is_empty()) {
        let (path, want, equal) = match term.split_once("!=") {
            Some((path, value)) => (path, value, false),
            None => {
                let (path, value) = term.split_once('=').expect("a field selector term");
                (path, value.trim_start_matches('='), true)
            }
        };
        let mut value = object;
        for part in path.split('.') {
            value = &value[part];
        }
        if (value.as_str() == Some(want)) != equal {
            return false;
        }
    }
    let labels = target
        .query
        .get("labelSelector")
        .map(String::as_str)
        .unwrap_or("");
    for term in labels.split(',').filter(|t| !t.is_empty()) {
        let (key, want) = term.split_once('=').expect("an equality label selector");
        if meta["labels"][key].as_str() != Some(want) {
            return false;
        }
    }
    true
}

impl Shared {
    fn handle(&self, request: Request<Incoming>) -> Response<Body> {
        let path = request.uri().path().to_owned();
        let query = request.uri().query().unwrap_or("").to_owned();
        let authorized = {
            let mut state = self.state.lock().unwrap();
            state
                .requests
                .push(format!("{} {path}?{}", request.method(), decode(&query)));
            let expected = format!("Bearer {}", state.token);
            request
                .headers()
                .get("authorization")
                .is_some_and(|value| value.as_bytes() == expected.as_bytes())
        };
        if !authorized {
            return json_response(
                StatusCode::UNAUTHORIZED,
                &status(401, "Unauthorized", "Unauthorized"),
            );
        }
        if path == "/version" {
            return json_response(
                StatusCode::OK,
                &json!({"major": "1", "minor": "35", "emulationMajor": "1", "emulationMinor": "35",
                        "minCompatibilityMajor": "1", "minCompatibilityMinor": "34",
                        "gitVersion": "v1.35.0", "gitCommit": "fake", "gitTreeState": "clean",
                        "buildDate": "2026-11-01T00:00:00Z", "goVersion": "go1.25",
                        "compiler": "gc", "platform": "linux/amd64"}),
            );
        }
        let Some(target) = parse_target(&path, &query) else {
            return json_response(
                StatusCode::NOT_FOUND,
                &status(
                    404,
                    "NotFound",
                    &format!("the server could not find {path}"),
                ),
            );
        };
        if target
            .query
            .get("watch")
            .is_some_and(|w| w == "1" || w == "true")
        {
            self.watch(target)
        } else {
            self.list(&target)
        }
    }

    fn list(&self, target: &Target) -> Response<Body> {
        let (_, _, kind, _) = kind_of(target.plural);
        let mut state = self.state.lock().unwrap();
        let limit: usize = target
            .query
            .get("limit")
            .and_then(|l| l.parse().ok())
            .unwrap_or(0);
        let from_cache = target
            .query
            .get("resourceVersion")
            .is_some_and(|rv| rv == "0");
        let (version, mut items) = match target.query.get("continue").filter(|c| !c.is_empty()) {
            Some(token) => match state.pages.remove(token) {
                Some(page) => page,
                None => {
                    return json_response(
                        StatusCode::GONE,
                        &status(410, "Expired", "the provided continue parameter is too old"),
                    );
                }
            },
            None => {
                let items = state
                    .objects
                    .get(target.plural)
                    .into_iter()
                    .flat_map(|objects| objects.values())
                    .filter(|object| selected(object, target))
                    .cloned()
                    .collect();
                (state.version, items)
            }
        };
        let mut metadata = json!({"resourceVersion": version.to_string()});
        if limit > 0 && !from_cache && items.len() > limit {
            let rest = items.split_off(limit);
            let token = format!(
                "{}-{version}-{}",
                target.plural,
                state.pages.len() + state.requests.len()
            );
            metadata["continue"] = json!(token);
            metadata["remainingItemCount"] = json!(rest.len());
            state.pages.insert(token, (version, rest));
        }
        json_response(
            StatusCode::OK,
            &json!({"kind": format!("{kind}List"), "apiVersion": "v1", "metadata": metadata, "items": items}),
        )
    }

    fn watch(&self, target: Target) -> Response<Body> {
        let from: u64 = target
            .query
            .get("resourceVersion")
            .and_then(|rv| rv.parse().ok())
            .unwrap_or(0);
        let bookmarks = target
            .query
            .get("allowWatchBookmarks")
            .is_some_and(|b| b == "true");
        let timeout = target
            .query
            .get("timeoutSeconds")
            .and_then(|t| t.parse().ok())
            .map_or(Duration::from_secs(290), Duration::from_secs);
        let (tx, rx) = mpsc::channel::<Bytes>(64);
        let state = Arc::clone(&self.state);
        let mut changed = self.changed.clone();
        let mut ended = self.ended.clone();
        ended.borrow_and_update();
        tokio::spawn(async move {
            let line = |value: Value| Bytes::from(format!("{value}\n"));
            let expired = {
                let state = state.lock().unwrap();
                (from < state.oldest).then(|| {
                    status(
                        410,
                        "Expired",
                        &format!("too old resource version: {from} ({})", state.oldest),
                    )
                })
            };
            if let Some(gone) = expired {
                let _ = tx
                    .send(line(json!({"type": "ERROR", "object": gone})))
                    .await;
                return;
            }
            let (_, _, kind, _) = kind_of(target.plural);
            let deadline = tokio::time::sleep(timeout);
            tokio::pin!(deadline);
            let mut cursor = from;
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                let (batch, latest): (Vec<Change>, u64) = {
                    let state = state.lock().unwrap();
                    let start = state.history.partition_point(|c| c.version <= cursor);
                    let batch = state.history[start..]
                        .iter()
                        .filter(|c| c.plural == target.plural)
                        .filter(|c| selected(&c.object, &target))
                        .cloned()
                        .collect();
                    (batch, state.version)
                };
                for change in batch {
                    let event = json!({"type": change.kind, "object": change.object});
                    if tx.send(line(event)).await.is_err() {
                        return;
                    }
                }
                // Everything up to `latest` was looked at: bookmarks may say so.
                cursor = cursor.max(latest);
                tokio::select! {
                    _ = changed.changed() => {}
                    _ = ended.changed() => return,
                    () = &mut deadline => return,
                    _ = tick.tick() => {
                        if bookmarks {
                            let mark = json!({"type": "BOOKMARK", "object": {"kind": kind,
                                "apiVersion": "v1", "metadata": {"resourceVersion": cursor.to_string()}}});
                            if tx.send(line(mark)).await.is_err() {
                                return;
                            }
                        }
                    }
                }
            }
        });
        let body = StreamBody::new(futures::stream::unfold(rx, |mut rx| async move {
            rx.recv()
                .await
                .map(|chunk| (Ok::<_, Infallible>(Frame::data(chunk)), rx))
        }));
        Response::builder()
            .status(StatusCode::OK)
            .header("content-type", "application/json")
            .body(BodyExt::boxed_unsync(body))
            .unwrap()
    }
}

/// A pod as the API reference shapes it: owned by a ReplicaSet of Deployment `app`, scheduled
/// on `node`, with one container `app`. `phase` decides the rest: `Pending` has no address or
/// container status yet; later phases have an address (`10.244.1.x`, from the name) and get
/// their container statuses from [`with_containers`].
pub fn pod(namespace: &str, name: &str, uid: &str, node: &str, phase: &str) -> Value {
    let mut pod = json!({
        "metadata": {
            "name": name, "namespace": namespace, "uid": uid,
            "labels": {"app": "api", "pod-template-hash": "7d9f8b6c5"},
            "annotations": {"kubectl.kubernetes.io/restartedAt": "2026-12-01T09:00:00Z"},
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet",
                "name": "api-7d9f8b6c5", "uid": "uid-rs-api", "controller": true,
                "blockOwnerDeletion": true}],
            "managedFields": [{"manager": "kube-controller-manager", "operation": "Update",
                "apiVersion": "v1", "fieldsType": "FieldsV1", "fieldsV1": {"f:metadata": {}}}]
        },
        "spec": {
            "nodeName": node,
            "containers": [{"name": "app", "image": "registry.example/api:1.4.2",
                "resources": {"limits": {"memory": "128Mi"}}}],
            "restartPolicy": "Always"
        },
        "status": {"phase": phase, "qosClass": "Burstable",
            "conditions": [{"type": "PodScheduled", "status": "True",
                "lastTransitionTime": "2026-12-01T10:00:00Z"}]}
    });
    if phase != "Pending" {
        // An address of its own per name, as the CNI would give it.
        let host = name.bytes().map(u32::from).sum::<u32>() % 250 + 2;
        let ip = format!("10.244.1.{host}");
        pod["status"]["podIP"] = json!(ip);
        pod["status"]["podIPs"] = json!([{ "ip": ip }]);
        pod["status"]["hostIP"] = json!("192.168.49.2");
        pod["status"]["startTime"] = json!("2026-12-01T10:00:01Z");
    }
    pod
}

/// A `containerStatuses` entry for container `app` with `state` (a ContainerState object) and
/// `last_state`, its id `containerd://<id>`.
pub fn container_status(id: &str, restarts: u32, state: Value, last_state: Value) -> Value {
    let running = state.get("running").is_some();
    json!({"name": "app", "containerID": format!("containerd://{id}"),
           "image": "registry.example/api:1.4.2",
           "imageID": "registry.example/api@sha256:5f1c0e7b",
           "ready": running, "started": running, "restartCount": restarts,
           "state": state, "lastState": last_state})
}

/// Sets the pod's container statuses and its Ready/ContainersReady conditions.
pub fn with_containers(mut pod: Value, statuses: Vec<Value>) -> Value {
    let ready = statuses.iter().all(|s| s["ready"] == json!(true));
    let status = if ready { "True" } else { "False" };
    pod["status"]["containerStatuses"] = json!(statuses);
    pod["status"]["conditions"] = json!([
        {"type": "PodScheduled", "status": "True"},
        {"type": "Initialized", "status": "True"},
        {"type": "ContainersReady", "status": status},
        {"type": "Ready", "status": status},
    ]);
    pod
}

/// A core/v1 Event about a pod, as the kubelet writes it.
pub fn pod_event(
    namespace: &str,
    pod: &str,
    pod_uid: &str,
    reason: &str,
    message: &str,
    count: u32,
) -> Value {
    json!({
        "metadata": {"name": format!("{pod}.{}", reason.to_lowercase()), "namespace": namespace},
        "involvedObject": {"kind": "Pod", "namespace": namespace, "name": pod, "uid": pod_uid,
            "apiVersion": "v1", "fieldPath": "spec.containers{app}"},
        "reason": reason, "message": message, "count": count,
        "type": if reason == "Scheduled" || reason == "Pulled" || reason == "Started" { "Normal" } else { "Warning" },
        "source": {"component": "kubelet", "host": "worker-1"},
        "firstTimestamp": "2026-12-01T10:00:05Z", "lastTimestamp": "2026-12-01T10:00:05Z",
        "reportingComponent": "kubelet", "reportingInstance": "worker-1"
    })
}

/// A node with its five conditions; `ready` sets `Ready`, `disk_pressure` `DiskPressure`.
pub fn node(name: &str, ready: bool, disk_pressure: bool) -> Value {
    let status = |value: bool| if value { "True" } else { "False" };
    json!({
        "metadata": {"name": name, "uid": format!("uid-node-{name}"),
            "labels": {"kubernetes.io/hostname": name, "node-role.kubernetes.io/worker": ""}},
        "spec": {"podCIDR": "10.244.1.0/24"},
        "status": {"conditions": [
            {"type": "MemoryPressure", "status": "False", "reason": "KubeletHasSufficientMemory", "message": "kubelet has sufficient memory available"},
            {"type": "DiskPressure", "status": status(disk_pressure), "reason": "KubeletHasDiskPressure", "message": "kubelet has disk pressure"},
            {"type": "PIDPressure", "status": "False", "reason": "KubeletHasSufficientPID", "message": "kubelet has sufficient PID available"},
            {"type": "Ready", "status": status(ready), "reason": if ready { "KubeletReady" } else { "KubeletNotReady" }, "message": if ready { "kubelet is posting ready status" } else { "container runtime is down" }},
            {"type": "NetworkUnavailable", "status": "False", "reason": "RouteCreated", "message": "RouteController created a route"}
        ]}
    })
}

/// The ReplicaSet `api-7d9f8b6c5` of Deployment `api` in `namespace`.
pub fn replicaset(namespace: &str) -> Value {
    json!({
        "metadata": {"name": "api-7d9f8b6c5", "namespace": namespace, "uid": "uid-rs-api",
            "labels": {"app": "api", "pod-template-hash": "7d9f8b6c5"},
            "annotations": {"deployment.kubernetes.io/revision": "3"},
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": "api",
                "uid": "uid-deploy-api", "controller": true, "blockOwnerDeletion": true}]},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "api"}}},
        "status": {"replicas": 1, "readyReplicas": 1, "availableReplicas": 1}
    })
}
