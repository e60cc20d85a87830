//! A container runtime's CNI side, the way containerd's go-cni/libcni drive it: network
//! namespaces made with `ip netns`, the conflist's plugins (Debian's real `bridge`, `host-local`
//! and `loopback`, then `tapio-cni`) executed one after another with the `CNI_*` variables and
//! each plugin's result as the next one's `prevResult`, and the result cached exactly as libcni's
//! `cacheAdd` writes it. Everything lives in namespaces and a temp dir the test owns: the
//! "node" is a network namespace of its own, so the bridge never touches the machine's network.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// Why this machine cannot run the real plugins, if it cannot.
pub fn unavailable() -> Option<String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Some("CNI plugins and network namespaces need root".into());
    }
    for tool in [
        "/usr/lib/cni/bridge",
        "/usr/lib/cni/host-local",
        "/usr/lib/cni/loopback",
    ] {
        if !Path::new(tool).exists() {
            return Some(format!(
                "{tool} is missing (Debian's containernetworking-plugins)"
            ));
        }
    }
    if Command::new("ip").arg("-V").output().is_err() {
        return Some("`ip` (iproute2) is missing".into());
    }
    None
}

/// The `tapio-cni` binary of this build, built once (it is another package of the workspace,
/// so cargo does not build it for this package's tests by itself).
pub fn tapio_cni_binary() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let tapio = Path::new(env!("CARGO_BIN_EXE_tapio"));
            let release = tapio.parent().is_some_and(|dir| dir.ends_with("release"));
            let mut build = Command::new(env!("CARGO"));
            build.args(["build", "-q", "-p", "tapio-cni"]);
            if release {
                build.arg("--release");
            }
            let status = build.status().expect("cargo runs");
            assert!(status.success(), "building tapio-cni failed");
            tapio.with_file_name("tapio-cni")
        })
        .clone()
}

/// A network namespace, deleted (with its interfaces) when dropped.
pub struct Netns {
    pub name: String,
}

impl Netns {
    pub fn new(name: String) -> Self {
        let _ = Command::new("ip").args(["netns", "del", &name]).output();
        run_ok(Command::new("ip").args(["netns", "add", &name]));
        run_ok(Command::new("ip").args(["-n", &name, "link", "set", "lo", "up"]));
        Netns { name }
    }

    /// The path a runtime passes as `CNI_NETNS`.
    pub fn path(&self) -> String {
        format!("/var/run/netns/{}", self.name)
    }

    /// The IPv4 addresses (`a.b.c.d`) on `interface` inside, read back with `ip -n`.
    pub fn ipv4_of(&self, interface: &str) -> Vec<String> {
        let out = run_ok(Command::new("ip").args([
            "-n", &self.name, "-4", "-o", "addr", "show", "dev", interface,
        ]));
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|line| {
                let mut words = line.split_whitespace();
                words.find(|w| *w == "inet")?;
                Some(words.next()?.split('/').next()?.to_owned())
            })
            .collect()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

fn run_ok(command: &mut Command) -> Output {
    let out = command.output().expect("command runs");
    assert!(
        out.status.success(),
        "{command:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// A pod as the runtime knows it when it calls CNI.
pub struct Pod<'a> {
    pub container_id: &'a str,
    pub netns: &'a Netns,
    pub namespace: &'a str,
    pub name: &'a str,
    pub uid: &'a str,
}

impl Pod<'_> {
    fn cni_args(&self) -> String {
        format!(
            "IgnoreUnknown=1;K8S_POD_NAMESPACE={};K8S_POD_NAME={};K8S_POD_INFRA_CONTAINER_ID={};K8S_POD_UID={}",
            self.namespace, self.name, self.container_id, self.uid
        )
    }
}

/// One plugin execution: its output, and how long it took.
pub struct PluginRun {
    pub output: Output,
    pub took: Duration,
}

/// A runtime with one conflist: bridge + host-local (a unique bridge and /24), then
/// `tapio-cni` telling the agent at `socket`.
pub struct Runtime {
    pub node: Netns,
    pub network: String,
    pub subnet_prefix: String,
    pub cache_dir: PathBuf,
    pub ipam_dir: PathBuf,
    bin_dir: PathBuf,
    conflist: Value,
}

impl Runtime {
    /// Lays out `CNI_PATH` (Debian's plugins and `tapio-cni`), the conflist and the cache
    /// directories under `dir`; `id` makes bridge, network and subnet unique to this test.
    pub fn new(dir: &Path, id: u32, socket: &Path) -> Self {
        let bin_dir = dir.join("cni-bin");
        std::fs::create_dir_all(&bin_dir).unwrap();
        for plugin in ["bridge", "host-local", "loopback"] {
            let _ = std::fs::remove_file(bin_dir.join(plugin));
            std::os::unix::fs::symlink(
                Path::new("/usr/lib/cni").join(plugin),
                bin_dir.join(plugin),
            )
            .unwrap();
        }
        let _ = std::fs::remove_file(bin_dir.join("tapio-cni"));
        std::os::unix::fs::symlink(tapio_cni_binary(), bin_dir.join("tapio-cni")).unwrap();
        let cache_dir = dir.join("cni/results");
        let ipam_dir = dir.join("cni/networks");
        std::fs::create_dir_all(&cache_dir).unwrap();
        let network = format!("tapio-it-{id}");
        // 10.X.Y.0/24 inside the test's own namespaces only; id spreads tests apart.
        let subnet_prefix = format!("10.{}.{}", 200 + (id % 50), (id / 50) % 250);
        let conflist = json!({
            "cniVersion": "1.0.0",
            "name": network,
            "plugins": [
                { "type": "bridge", "bridge": format!("tpb{}", id % 100_000), "isGateway": true,
                  "ipMasq": false,
                  "ipam": { "type": "host-local", "dataDir": ipam_dir,
                            "ranges": [[{ "subnet": format!("{subnet_prefix}.0/24") }]] } },
                { "type": "tapio-cni", "socket_path": socket, "some_future_key": true }
            ]
        });
        Runtime {
            node: Netns::new(format!("tapio-node-{id}")),
            network,
            subnet_prefix,
            cache_dir,
            ipam_dir,
            bin_dir,
            conflist,
        }
    }

    /// Executes one plugin of the chain in the node namespace, as libcni's `invoke` does.
    pub fn exec(
        &self,
        plugin: &Value,
        command: &str,
        pod: &Pod,
        ifname: &str,
        prev: Option<&Value>,
    ) -> PluginRun {
        let mut config = plugin.clone();
        config["cniVersion"] = self.conflist["cniVersion"].clone();
        config["name"] = self.conflist["name"].clone();
        if let Some(prev) = prev {
            config["prevResult"] = prev.clone();
        }
        let kind = plugin["type"].as_str().unwrap();
        let started = Instant::now();
        let mut child = Command::new("ip")
            .args(["netns", "exec", &self.node.name])
            .arg(self.bin_dir.join(kind))
            .env("CNI_COMMAND", command)
            .env("CNI_CONTAINERID", pod.container_id)
            .env("CNI_NETNS", pod.netns.path())
            .env("CNI_IFNAME", ifname)
            .env("CNI_ARGS", pod.cni_args())
            .env("CNI_PATH", &self.bin_dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(config.to_string().as_bytes())
            .unwrap();
        let output = child.wait_with_output().unwrap();
        PluginRun {
            output,
            took: started.elapsed(),
        }
    }

    /// The chain's plugins, in conflist order.
    pub fn plugins(&self) -> Vec<Value> {
        self.conflist["plugins"].as_array().unwrap().clone()
    }

    /// ADD through the whole chain (after `lo` up with the loopback plugin, as runtimes do);
    /// returns the final result and the `tapio-cni` run, and caches the result like libcni.
    pub fn add(&self, pod: &Pod) -> (Value, PluginRun) {
        let lo = json!({ "type": "loopback" });
        let run = self.exec(&lo, "ADD", pod, "lo", None);
        assert!(
            run.output.status.success(),
            "loopback: {}",
            String::from_utf8_lossy(&run.output.stdout)
        );
        let mut prev: Option<Value> = None;
        let mut last = None;
        for plugin in self.plugins() {
            let run = self.exec(&plugin, "ADD", pod, "eth0", prev.as_ref());
            assert!(
                run.output.status.success(),
                "{} ADD failed: {} {}",
                plugin["type"],
                String::from_utf8_lossy(&run.output.stdout),
                String::from_utf8_lossy(&run.output.stderr)
            );
            prev = Some(serde_json::from_slice(&run.output.stdout).unwrap());
            last = Some(run);
        }
        let result = prev.unwrap();
        self.cache(pod, &result);
        (result, last.unwrap())
    }

    /// DEL through the chain in reverse order with the cached result as `prevResult`, then the
    /// cache entry removed, as libcni's `DelNetworkList` does.
    pub fn del(&self, pod: &Pod, result: &Value) {
        for plugin in self.plugins().iter().rev() {
            let run = self.exec(plugin, "DEL", pod, "eth0", Some(result));
            assert!(
                run.output.status.success(),
                "{} DEL failed: {}",
                plugin["type"],
                String::from_utf8_lossy(&run.output.stdout)
            );
        }
        std::fs::remove_file(self.cache_path(pod)).unwrap();
    }

    fn cache_path(&self, pod: &Pod) -> PathBuf {
        self.cache_dir
            .join(format!("{}-{}-eth0", self.network, pod.container_id))
    }

    /// libcni's `cacheAdd`: `cachedInfo` as JSON, written in place (`os.WriteFile`, 0600).
    fn cache(&self, pod: &Pod, result: &Value) {
        use base64::Engine as _;
        let args: Vec<[String; 2]> = pod
            .cni_args()
            .split(';')
            .filter_map(|kv| {
                kv.split_once('=')
                    .map(|(k, v)| [k.to_owned(), v.to_owned()])
            })
            .collect();
        let info = json!({
            "kind": "cniCacheV1",
            "containerId": pod.container_id,
            "config": base64::engine::general_purpose::STANDARD.encode(self.conflist.to_string()),
            "ifName": "eth0",
            "networkName": self.network,
            "netns": pod.netns.path(),
            "cniArgs": args,
            "result": result,
        });
        std::fs::write(self.cache_path(pod), info.to_string()).unwrap();
    }
}
