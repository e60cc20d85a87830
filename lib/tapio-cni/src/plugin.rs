//! The CNI contract: one call (`CNI_*` variables and the network config on stdin), what to print
//! for it, and the event the agent is told about.

use std::io::Write;
use std::os::unix::net::UnixStream;
use std::time::Duration;

use serde_json::{Value, json};
use tapio_event::id::IdGenerator;
use tapio_event::{Entity, EventType, NetworkContext, Timestamp, UnifiedEvent};

/// Where the agent listens when the netconf names no `socket_path`.
pub const DEFAULT_SOCKET: &str = "/run/tapio/cni.sock";

/// The CNI versions whose config and result shapes this plugin reads (it only passes results
/// through, so every version with `prevResult` chaining works).
const SUPPORTED_VERSIONS: &[&str] = &["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"];

/// How long the agent gets to take the event: a runtime waits on the whole chain, so a stalled
/// agent must cost a pod start almost nothing.
const SEND_TIMEOUT: Duration = Duration::from_millis(200);

/// Spec error codes used here (CNI spec 1.0, "Error").
const INCOMPATIBLE_VERSION: u32 = 1;
const INVALID_ENV: u32 = 4;
const DECODE_FAILURE: u32 = 6;
const INVALID_CONFIG: u32 = 7;
/// Plugin-specific (>= 100): CHECK found the container not as `prevResult` says.
const CHECK_MISMATCH: u32 = 100;

/// One invocation, as the runtime describes it in the environment.
#[derive(Debug, Default, Clone)]
pub struct Call {
    pub command: String,
    pub container_id: Option<String>,
    pub netns: Option<String>,
    pub if_name: Option<String>,
    pub args: Option<String>,
}

impl Call {
    /// Reads `CNI_COMMAND`, `CNI_CONTAINERID`, `CNI_NETNS`, `CNI_IFNAME` and `CNI_ARGS` through
    /// `var` (the process environment in `main`, a map in tests).
    pub fn from_env(var: impl Fn(&str) -> Option<String>) -> Self {
        let set = |name: &str| var(name).filter(|value| !value.is_empty());
        Call {
            command: set("CNI_COMMAND").unwrap_or_default(),
            container_id: set("CNI_CONTAINERID"),
            netns: set("CNI_NETNS"),
            if_name: set("CNI_IFNAME"),
            args: set("CNI_ARGS"),
        }
    }

    /// `K8S_POD_NAMESPACE`, `K8S_POD_NAME` and `K8S_POD_UID` from `CNI_ARGS` (`K=V;K=V`).
    fn pod_arg(&self, key: &str) -> Option<&str> {
        self.args
            .as_deref()?
            .split(';')
            .filter_map(|pair| pair.split_once('='))
            .find(|(name, _)| *name == key)
            .map(|(_, value)| value)
            .filter(|value| !value.is_empty())
    }
}

/// A failure reported to the runtime as the spec's error object.
#[derive(Debug, Clone, PartialEq)]
pub struct PluginError {
    pub code: u32,
    pub msg: String,
    pub cni_version: String,
}

impl PluginError {
    fn new(code: u32, msg: impl Into<String>, cni_version: &str) -> Self {
        PluginError {
            code,
            msg: msg.into(),
            cni_version: cni_version.to_owned(),
        }
    }

    /// The error object printed on stdout.
    pub fn to_json(&self) -> String {
        json!({ "cniVersion": self.cni_version, "code": self.code, "msg": self.msg }).to_string()
    }
}

/// Runs one call: prints the result (`Some`) or nothing, and tells the agent about ADD, DEL
/// and CHECK, including their failures (as `network.error`).
pub fn run(call: &Call, stdin: &[u8]) -> Result<Option<String>, PluginError> {
    if call.command == "VERSION" {
        return Ok(Some(version_answer()));
    }
    let config: Value = match serde_json::from_slice(stdin) {
        Ok(Value::Object(map)) => Value::Object(map),
        Ok(_) => {
            return Err(fail(
                call,
                None,
                DECODE_FAILURE,
                "the network config is not a JSON object",
            ));
        }
        Err(error) => {
            return Err(fail(
                call,
                None,
                DECODE_FAILURE,
                format!("the network config is not JSON: {error}"),
            ));
        }
    };
    let socket = config
        .get("socket_path")
        .and_then(Value::as_str)
        .unwrap_or(DEFAULT_SOCKET)
        .to_owned();
    let version = config
        .get("cniVersion")
        .and_then(Value::as_str)
        .unwrap_or("");
    if !SUPPORTED_VERSIONS.contains(&version) {
        let msg = format!("cniVersion {version:?} is not one of {SUPPORTED_VERSIONS:?}");
        return Err(fail(call, Some(&socket), INCOMPATIBLE_VERSION, msg));
    }
    let prev = config.get("prevResult");
    let operation = match call.command.as_str() {
        "ADD" => "ADD",
        "DEL" => "DEL",
        "CHECK" => "CHECK",
        other => {
            let msg = format!("CNI_COMMAND {other:?} is not ADD, DEL, CHECK or VERSION");
            return Err(fail(call, Some(&socket), INVALID_ENV, msg));
        }
    };
    let missing = required_env(call, operation);
    if !missing.is_empty() {
        let msg = format!(
            "{operation} needs {} in the environment",
            missing.join(", ")
        );
        return Err(fail(call, Some(&socket), INVALID_ENV, msg));
    }
    let mut event = network_event(call, operation, prev);
    let result = match operation {
        "ADD" => Ok(Some(match prev {
            Some(prev) => prev.to_string(),
            None => json!({ "cniVersion": version }).to_string(),
        })),
        "CHECK" => match check(call, prev) {
            Ok(()) => Ok(None),
            Err(problem) => {
                set_error(&mut event, &problem);
                Err(PluginError::new(CHECK_MISMATCH, problem, version))
            }
        },
        _ => Ok(None),
    };
    if prev.is_some_and(|prev| !prev.is_object()) {
        set_error(&mut event, "prevResult is not a JSON object");
        tell_agent(&socket, &event);
        return Err(PluginError::new(
            INVALID_CONFIG,
            "prevResult is not a JSON object",
            version,
        ));
    }
    tell_agent(&socket, &event);
    result
}

/// The answer to VERSION.
fn version_answer() -> String {
    json!({ "cniVersion": "1.0.0", "supportedVersions": SUPPORTED_VERSIONS }).to_string()
}

/// The `CNI_*` variables the spec requires for `operation` that the call lacks.
fn required_env(call: &Call, operation: &str) -> Vec<&'static str> {
    let mut missing = Vec::new();
    if call.container_id.is_none() {
        missing.push("CNI_CONTAINERID");
    }
    if call.if_name.is_none() {
        missing.push("CNI_IFNAME");
    }
    if operation != "DEL" && call.netns.is_none() {
        missing.push("CNI_NETNS");
    }
    missing
}

/// A failure before the call could be understood: still an event (when the agent's socket is
/// known), so a broken chain shows up next to the pod it broke.
fn fail(call: &Call, socket: Option<&str>, code: u32, msg: impl Into<String>) -> PluginError {
    let msg = msg.into();
    let operation = match call.command.as_str() {
        op @ ("ADD" | "DEL" | "CHECK") => op,
        _ => "error",
    };
    let mut event = network_event(call, operation, None);
    set_error(&mut event, &msg);
    tell_agent(socket.unwrap_or(DEFAULT_SOCKET), &event);
    PluginError::new(code, msg, "1.0.0")
}

fn set_error(event: &mut UnifiedEvent, problem: &str) {
    if let Some(network) = event.network.as_deref_mut() {
        network.error = Some(problem.to_owned());
    }
}

/// The event for this call: the sandbox, interface, netns and first IP of `prevResult`, about
/// the pod named by the Kubernetes CNI args (by uid when given, else `namespace/name`).
fn network_event(call: &Call, operation: &str, prev: Option<&Value>) -> UnifiedEvent {
    let now = Timestamp::now();
    let mut event = UnifiedEvent::new(EventType::Network, "cni", now);
    event.id = IdGenerator::from_entropy().next_id(now);
    event.network = Some(Box::new(NetworkContext {
        operation: Some(operation.to_owned()),
        interface_name: call.if_name.clone(),
        ip_address: prev.and_then(first_ip),
        netns: call.netns.clone(),
        container_id: call.container_id.clone(),
        ..NetworkContext::default()
    }));
    let (uid, namespace, name) = (
        call.pod_arg("K8S_POD_UID"),
        call.pod_arg("K8S_POD_NAMESPACE"),
        call.pod_arg("K8S_POD_NAME"),
    );
    event.entity = Entity::pod(uid, namespace, name).map(Box::new);
    event
}

/// The first address of a result's `ips`, without its `/prefix`.
fn first_ip(result: &Value) -> Option<String> {
    let address = result.get("ips")?.get(0)?.get("address")?.as_str()?;
    Some(address.split('/').next().unwrap_or(address).to_owned())
}

/// CHECK: every address of `prevResult` is on its interface inside the container's netns.
fn check(call: &Call, prev: Option<&Value>) -> Result<(), String> {
    let prev = prev.ok_or("CHECK needs prevResult")?;
    let netns = call.netns.as_deref().unwrap_or_default();
    let present = crate::netns::addresses(netns)
        .map_err(|error| format!("cannot read the addresses in {netns}: {error}"))?;
    let interfaces = prev.get("interfaces").and_then(Value::as_array);
    for ip in prev
        .get("ips")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let Some(address) = ip.get("address").and_then(Value::as_str) else {
            continue;
        };
        let bare = address.split('/').next().unwrap_or(address);
        let interface = ip
            .get("interface")
            .and_then(Value::as_u64)
            .and_then(|index| interfaces?.get(usize::try_from(index).ok()?))
            .and_then(|interface| interface.get("name")?.as_str())
            .or(call.if_name.as_deref())
            .unwrap_or_default();
        if !present
            .iter()
            .any(|(name, ip)| name == interface && ip == bare)
        {
            return Err(format!("{bare} is not on {interface} in {netns}"));
        }
    }
    Ok(())
}

/// Sends the event as one JSON line; the agent being away or slow is not the chain's problem.
fn tell_agent(socket: &str, event: &UnifiedEvent) {
    let mut line = Vec::with_capacity(512);
    tapio_event::codec::encode_json(event, &mut line);
    line.push(b'\n');
    let Ok(mut stream) = UnixStream::connect(socket) else {
        return;
    };
    let _ = stream.set_write_timeout(Some(SEND_TIMEOUT));
    let _ = stream.write_all(&line);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(command: &str) -> Call {
        Call {
            command: command.into(),
            container_id: Some("abc".into()),
            netns: Some("/var/run/netns/x".into()),
            if_name: Some("eth0".into()),
            args: Some(
                "IgnoreUnknown=1;K8S_POD_NAMESPACE=shop;K8S_POD_NAME=api;K8S_POD_UID=u-1".into(),
            ),
        }
    }

    fn config(prev: Value) -> Vec<u8> {
        json!({ "cniVersion": "1.0.0", "name": "n", "type": "tapio-cni",
                "socket_path": "/nonexistent/tapio.sock", "unknown_key": [1, 2], "prevResult": prev })
        .to_string()
        .into_bytes()
    }

    #[test]
    fn version_needs_no_stdin() {
        let out = run(
            &Call::from_env(|n| (n == "CNI_COMMAND").then(|| "VERSION".into())),
            b"",
        )
        .unwrap()
        .unwrap();
        let out: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(out["cniVersion"], "1.0.0");
        assert!(
            out["supportedVersions"]
                .as_array()
                .unwrap()
                .contains(&json!("0.4.0"))
        );
    }

    #[test]
    fn add_passes_prev_result_through_with_no_agent() {
        let prev = json!({ "cniVersion": "1.0.0", "ips": [{ "address": "10.9.0.5/24", "interface": 0 }],
                           "interfaces": [{ "name": "eth0", "sandbox": "/x" }], "dns": {} });
        let out = run(&call("ADD"), &config(prev.clone())).unwrap().unwrap();
        assert_eq!(serde_json::from_str::<Value>(&out).unwrap(), prev);
    }

    #[test]
    fn event_names_the_pod_and_first_ip() {
        let prev = json!({ "ips": [{ "address": "10.9.0.5/24" }, { "address": "fd00::5/64" }] });
        let event = network_event(&call("ADD"), "ADD", Some(&prev));
        let network = event.network.unwrap();
        assert_eq!(network.ip_address.as_deref(), Some("10.9.0.5"));
        assert_eq!(network.container_id.as_deref(), Some("abc"));
        let entity = event.entity.unwrap();
        assert_eq!(
            (entity.id.as_str(), entity.name.as_deref()),
            ("u-1", Some("api"))
        );
        let mut no_uid = call("DEL");
        no_uid.args = Some("K8S_POD_NAMESPACE=shop;K8S_POD_NAME=api".into());
        assert_eq!(
            network_event(&no_uid, "DEL", None).entity.unwrap().id,
            "shop/api"
        );
    }

    #[test]
    fn bad_calls_are_spec_errors() {
        let err = run(&call("ADD"), b"{not json").unwrap_err();
        assert_eq!(err.code, DECODE_FAILURE);
        let mut old = config(json!({}));
        old = String::from_utf8(old)
            .unwrap()
            .replace("1.0.0", "0.1.0")
            .into_bytes();
        assert_eq!(
            run(&call("ADD"), &old).unwrap_err().code,
            INCOMPATIBLE_VERSION
        );
        let mut no_netns = call("ADD");
        no_netns.netns = None;
        let err = run(&no_netns, &config(json!({}))).unwrap_err();
        assert_eq!(
            (err.code, err.msg.contains("CNI_NETNS")),
            (INVALID_ENV, true)
        );
        assert_eq!(
            run(&call("FOO"), &config(json!({}))).unwrap_err().code,
            INVALID_ENV
        );
        let mut del = call("DEL");
        del.netns = None;
        assert_eq!(run(&del, &config(json!({}))), Ok(None));
    }
}
