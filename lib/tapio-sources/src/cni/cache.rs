//! The files the CNI machinery leaves on a node: libcni's cached results (one JSON file per
//! network attachment, `kind: cniCacheV1`) and host-local's reservations (one file per IP,
//! naming the container and interface that hold it).

use serde::Deserialize;
use tapio_event::id::IdGenerator;
use tapio_event::{Entity, EventType, NetworkContext, Timestamp, UnifiedEvent};

/// One network attachment as libcni cached it after a successful `ADD`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Attachment {
    pub container_id: String,
    pub if_name: String,
    pub netns: Option<String>,
    pub pod_uid: Option<String>,
    pub pod_namespace: Option<String>,
    pub pod_name: Option<String>,
    /// The first IP of the result, without its `/prefix`.
    pub ip: Option<String>,
}

/// libcni's `cachedInfo` (pkg/libcni/api.go), the fields Tapio reads.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct CachedInfo {
    kind: String,
    container_id: String,
    if_name: String,
    #[serde(default)]
    netns: Option<String>,
    #[serde(default)]
    cni_args: Vec<(String, String)>,
    #[serde(default)]
    result: Option<CachedResult>,
}

#[derive(Deserialize)]
struct CachedResult {
    #[serde(default)]
    ips: Vec<IpConfig>,
}

#[derive(Deserialize)]
struct IpConfig {
    address: String,
}

impl Attachment {
    /// Reads a result file's bytes; `Err` says why it is not one (possibly caught half-written).
    pub fn parse(bytes: &[u8]) -> Result<Self, String> {
        let info: CachedInfo = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
        if info.kind != "cniCacheV1" {
            return Err(format!("kind {:?} is not cniCacheV1", info.kind));
        }
        let arg = |key: &str| {
            info.cni_args
                .iter()
                .find(|(name, value)| name == key && !value.is_empty())
                .map(|(_, value)| value.clone())
        };
        let ip = info
            .result
            .as_ref()
            .and_then(|result| result.ips.first())
            .map(|ip| without_prefix(&ip.address).to_owned());
        Ok(Attachment {
            pod_uid: arg("K8S_POD_UID"),
            pod_namespace: arg("K8S_POD_NAMESPACE"),
            pod_name: arg("K8S_POD_NAME"),
            container_id: info.container_id,
            if_name: info.if_name,
            netns: info.netns.filter(|netns| !netns.is_empty()),
            ip,
        })
    }

    /// The `network` event for `operation` (`ADD` or `DEL`) on this attachment.
    pub fn event(&self, operation: &str, ids: &mut IdGenerator) -> UnifiedEvent {
        let now = Timestamp::now();
        let mut event = UnifiedEvent::new(EventType::Network, "cni", now);
        event.id = ids.next_id(now);
        event.entity = Entity::pod(
            self.pod_uid.as_deref(),
            self.pod_namespace.as_deref(),
            self.pod_name.as_deref(),
        )
        .map(Box::new);
        event.network = Some(Box::new(NetworkContext {
            operation: Some(operation.to_owned()),
            interface_name: Some(self.if_name.clone()),
            ip_address: self.ip.clone(),
            netns: self.netns.clone(),
            container_id: Some(self.container_id.clone()),
            ..NetworkContext::default()
        }));
        event
    }
}

/// An address without its `/prefix`.
fn without_prefix(address: &str) -> &str {
    address.split('/').next().unwrap_or(address)
}

/// A host-local reservation: the file named after the IP holds `<containerId>\r\n<ifName>`
/// (older host-local wrote the container id alone).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Reservation {
    pub container_id: String,
    pub if_name: Option<String>,
}

impl Reservation {
    /// Reads a reservation file's bytes; `None` for host-local's own bookkeeping files or one
    /// caught empty.
    pub fn parse(file_name: &str, bytes: &[u8]) -> Option<Self> {
        if file_name.parse::<std::net::IpAddr>().is_err() {
            return None;
        }
        let text = std::str::from_utf8(bytes).ok()?;
        let mut lines = text.lines().map(str::trim).filter(|line| !line.is_empty());
        Some(Reservation {
            container_id: lines.next()?.to_owned(),
            if_name: lines.next().map(str::to_owned),
        })
    }

    /// Whether this reservation is the address of `attachment`.
    pub fn holds(&self, attachment: &Attachment) -> bool {
        self.container_id == attachment.container_id
            && self
                .if_name
                .as_deref()
                .is_none_or(|name| name == attachment.if_name)
    }
}
