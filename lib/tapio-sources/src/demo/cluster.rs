//! The simulated cluster: nodes, pods and their containers. Every string an event needs is built
//! once, when a pod or container is created, so making an event only clones.

use std::sync::Arc;

use tapio_event::StringMap;
use tapio_event::id::IdGenerator;

/// Most nodes the cluster may have: each gets the pod CIDR `10.244.<n>.0/24`, `n` from 1.
pub(super) const MAX_NODES: usize = 254;
/// Most pods per node, leaving addresses of the /24 free so replacements always find one.
pub(super) const MAX_PODS_PER_NODE: usize = 200;

const HEX: &[u8; 16] = b"0123456789abcdef";
/// The alphabet Kubernetes uses for generated name suffixes (no vowels, no look-alikes).
const NAME_ALPHABET: &[u8; 27] = b"bcdfghjklmnpqrstvwxz2456789";
const ZONES: [&str; 3] = ["zone-a", "zone-b", "zone-c"];

/// The PRNG behind every choice; seeded, so a seeded run repeats exactly.
pub(super) struct Rng(IdGenerator);

impl Rng {
    pub(super) fn new(seed: u64) -> Self {
        Rng(IdGenerator::seeded(seed))
    }

    /// Uniform in `0..n` (`n > 0`); modulo bias does not matter to a simulation.
    pub(super) fn below(&mut self, n: u64) -> u64 {
        self.0.next_u64() % n
    }

    /// Uniform in `low..high`.
    pub(super) fn range(&mut self, low: u64, high: u64) -> u64 {
        low + self.below(high - low)
    }

    /// An index into a collection of `len` items.
    pub(super) fn index(&mut self, len: usize) -> usize {
        self.below(len as u64) as usize
    }

    /// One of `items`.
    pub(super) fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.index(items.len())]
    }

    /// A process id on a busy node.
    pub(super) fn pid(&mut self) -> u32 {
        self.range(1_000, 400_000) as u32
    }

    fn push_from(&mut self, out: &mut String, alphabet: &[u8], len: usize) {
        for _ in 0..len {
            out.push(char::from(alphabet[self.index(alphabet.len())]));
        }
    }

    /// A 64-hex-digit container or sandbox id, as containerd makes them.
    fn container_id(&mut self) -> String {
        let mut id = String::with_capacity(64);
        self.push_from(&mut id, HEX, 64);
        id
    }

    /// An RFC 4122 version 4 UUID, the shape of Kubernetes uids.
    pub(super) fn uuid(&mut self) -> String {
        let mut id = String::with_capacity(36);
        self.push_from(&mut id, HEX, 8);
        id.push('-');
        self.push_from(&mut id, HEX, 4);
        id.push_str("-4");
        self.push_from(&mut id, HEX, 3);
        id.push('-');
        self.push_from(&mut id, &HEX[8..12], 1);
        self.push_from(&mut id, HEX, 3);
        id.push('-');
        self.push_from(&mut id, HEX, 12);
        id
    }
}

/// A workload of the simulated cluster; pods are its replicas.
#[derive(Debug)]
pub(super) struct Deployment {
    pub(super) namespace: &'static str,
    pub(super) name: &'static str,
    pub(super) image: &'static str,
    pub(super) port: u16,
    /// The main process as the kernel names it (at most 15 bytes, like `task->comm`).
    pub(super) comm: &'static str,
    pub(super) filename: &'static str,
    pub(super) uid: u32,
}

const DEPLOYMENTS: &[Deployment] = &[
    Deployment {
        namespace: "shop",
        name: "api",
        image: "registry.example.com/shop/api:1.14.2",
        port: 8080,
        comm: "api",
        filename: "/app/api",
        uid: 1000,
    },
    Deployment {
        namespace: "shop",
        name: "web",
        image: "docker.io/library/nginx:1.27-alpine",
        port: 80,
        comm: "nginx",
        filename: "/usr/sbin/nginx",
        uid: 101,
    },
    Deployment {
        namespace: "shop",
        name: "cart",
        image: "registry.example.com/shop/cart:2.3.0",
        port: 8080,
        comm: "java",
        filename: "/opt/java/openjdk/bin/java",
        uid: 1000,
    },
    Deployment {
        namespace: "payments",
        name: "checkout",
        image: "registry.example.com/payments/checkout:3.1.4",
        port: 8443,
        comm: "checkout",
        filename: "/app/checkout",
        uid: 65532,
    },
    Deployment {
        namespace: "payments",
        name: "worker",
        image: "registry.example.com/payments/worker:3.1.4",
        port: 9000,
        comm: "python3",
        filename: "/usr/local/bin/python3.12",
        uid: 1000,
    },
    Deployment {
        namespace: "default",
        name: "frontend",
        image: "registry.example.com/frontend:0.9.1",
        port: 3000,
        comm: "node",
        filename: "/usr/local/bin/node",
        uid: 1000,
    },
    Deployment {
        namespace: "kube-system",
        name: "coredns",
        image: "registry.k8s.io/coredns/coredns:v1.11.3",
        port: 53,
        comm: "coredns",
        filename: "/coredns",
        uid: 65532,
    },
    Deployment {
        namespace: "kube-system",
        name: "metrics-server",
        image: "registry.k8s.io/metrics-server/metrics-server:v0.7.2",
        port: 10250,
        comm: "metrics-server",
        filename: "/metrics-server",
        uid: 65534,
    },
];

/// One running container of a pod; a restart replaces it (containerd gives it a new id).
#[derive(Debug, Clone)]
pub(super) struct Container {
    pub(super) id: String,
    /// `cri-containerd-<id>.scope`, the systemd unit of its cgroup.
    pub(super) scope: String,
    pub(super) cgroup_id: u64,
    pub(super) main_pid: u32,
}

impl Container {
    fn new(rng: &mut Rng) -> Self {
        let id = rng.container_id();
        let mut scope = String::with_capacity(86);
        scope.push_str("cri-containerd-");
        scope.push_str(&id);
        scope.push_str(".scope");
        Container {
            id,
            scope,
            cgroup_id: rng.range(4_096, 1 << 20),
            main_pid: rng.pid(),
        }
    }
}

/// A pod with everything its events say about it.
#[derive(Debug, Clone)]
pub(super) struct Pod {
    pub(super) app: &'static Deployment,
    pub(super) uid: String,
    pub(super) name: String,
    pub(super) namespace: String,
    /// `namespace/name`, the key CNI knows the pod by (CNI args carry no uid).
    pub(super) key: String,
    pub(super) node: usize,
    pub(super) node_name: String,
    pub(super) ip: String,
    ip_host: usize,
    pub(super) netns: String,
    pub(super) sandbox_id: String,
    /// `kubepods-burstable-pod<uid with _>.slice`, the parent of its container scopes.
    pub(super) slice: String,
    pub(super) labels: StringMap,
    /// The `containerd-shim` that parents the container's main process.
    pub(super) shim_pid: u32,
    pub(super) container: Container,
}

/// A simulated node and the pod addresses it has handed out.
#[derive(Debug)]
pub(super) struct Node {
    pub(super) name: String,
    pub(super) uid: String,
    pub(super) labels: StringMap,
    /// Taken by a node incident, so two incidents never tell overlapping stories.
    pub(super) busy: bool,
    subnet: usize,
    used: Vec<bool>,
    cursor: usize,
    pods: usize,
}

impl Node {
    fn new(index: usize, rng: &mut Rng) -> Self {
        let name = format!("worker-{}", index + 1);
        let labels = StringMap::from([
            ("kubernetes.io/hostname".to_owned(), name.clone()),
            ("kubernetes.io/os".to_owned(), "linux".to_owned()),
            (
                "topology.kubernetes.io/zone".to_owned(),
                ZONES[index % ZONES.len()].to_owned(),
            ),
        ]);
        Node {
            name,
            uid: rng.uuid(),
            labels,
            busy: false,
            subnet: index + 1,
            used: vec![false; 256],
            cursor: 1,
            pods: 0,
        }
    }

    /// The next free host number of the node's /24 (2..=254; .1 is the bridge), round robin so a
    /// freed address is not handed out again at once.
    fn allocate(&mut self) -> usize {
        loop {
            self.cursor = self.cursor % 253 + 2;
            if !self.used[self.cursor] {
                self.used[self.cursor] = true;
                self.pods += 1;
                return self.cursor;
            }
        }
    }

    fn release(&mut self, host: usize) {
        self.used[host] = false;
        self.pods -= 1;
    }
}

/// A place for one replica; the pod in it changes on rollouts, its container on restarts.
#[derive(Debug)]
pub(super) struct Slot {
    /// Shared with open connections and running processes that still refer to it.
    pub(super) pod: Arc<Pod>,
    /// Taken by an incident, so two incidents never tell overlapping stories.
    pub(super) busy: bool,
    template_hash: Arc<str>,
}

/// The whole simulated cluster.
#[derive(Debug)]
pub(super) struct Cluster {
    pub(super) nodes: Vec<Node>,
    pub(super) slots: Vec<Slot>,
}

impl Cluster {
    /// `pods` replicas spread over the deployments and, round robin, over `nodes` nodes.
    pub(super) fn new(pods: usize, nodes: usize, rng: &mut Rng) -> Self {
        let mut nodes: Vec<Node> = (0..nodes).map(|index| Node::new(index, rng)).collect();
        let hashes: Vec<Arc<str>> = DEPLOYMENTS
            .iter()
            .map(|_| {
                let mut hash = String::with_capacity(10);
                let len = 9 + rng.index(2);
                rng.push_from(&mut hash, NAME_ALPHABET, len);
                Arc::from(hash)
            })
            .collect();
        let node_count = nodes.len();
        let slots = (0..pods)
            .map(|index| {
                let app = index % DEPLOYMENTS.len();
                let node = &mut nodes[index % node_count];
                Slot {
                    pod: Arc::new(new_pod(
                        &DEPLOYMENTS[app],
                        &hashes[app],
                        node,
                        index % node_count,
                        rng,
                    )),
                    busy: false,
                    template_hash: Arc::clone(&hashes[app]),
                }
            })
            .collect();
        Cluster { nodes, slots }
    }

    /// The pod of `slot` goes away and a new replica (new uid, name, address, sandbox and
    /// container) takes its place, scheduled on a node with room.
    pub(super) fn replace(&mut self, slot: usize, rng: &mut Rng) {
        let old = Arc::clone(&self.slots[slot].pod);
        self.nodes[old.node].release(old.ip_host);
        let mut node = rng.index(self.nodes.len());
        while self.nodes[node].pods >= MAX_PODS_PER_NODE {
            node = (node + 1) % self.nodes.len();
        }
        let template_hash = Arc::clone(&self.slots[slot].template_hash);
        self.slots[slot].pod = Arc::new(new_pod(
            old.app,
            &template_hash,
            &mut self.nodes[node],
            node,
            rng,
        ));
    }

    /// The container of `slot` is replaced by a new one, as the kubelet does on a restart.
    pub(super) fn restart_container(&mut self, slot: usize, rng: &mut Rng) {
        Arc::make_mut(&mut self.slots[slot].pod).container = Container::new(rng);
    }
}

fn new_pod(
    app: &'static Deployment,
    template_hash: &str,
    node: &mut Node,
    node_index: usize,
    rng: &mut Rng,
) -> Pod {
    let uid = rng.uuid();
    let mut name = format!("{}-{template_hash}-", app.name);
    rng.push_from(&mut name, NAME_ALPHABET, 5);
    let ip_host = node.allocate();
    let labels = StringMap::from([
        ("app".to_owned(), app.name.to_owned()),
        ("pod-template-hash".to_owned(), template_hash.to_owned()),
    ]);
    Pod {
        app,
        key: format!("{}/{name}", app.namespace),
        ip: format!("10.244.{}.{ip_host}", node.subnet),
        ip_host,
        netns: format!("/var/run/netns/cni-{}", rng.uuid()),
        sandbox_id: rng.container_id(),
        slice: format!("kubepods-burstable-pod{}.slice", uid.replace('-', "_")),
        labels,
        shim_pid: rng.pid(),
        container: Container::new(rng),
        uid,
        name,
        namespace: app.namespace.to_owned(),
        node: node_index,
        node_name: node.name.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_ids_have_kubernetes_shapes() {
        let mut rng = Rng::new(3);
        let uid = rng.uuid();
        assert_eq!(uid.len(), 36);
        assert_eq!(&uid[14..15], "4");
        assert!(matches!(&uid[19..20], "8" | "9" | "a" | "b"));
        let mut cluster = Cluster::new(20, 2, &mut rng);
        let pod = Arc::clone(&cluster.slots[0].pod);
        assert!(pod.name.starts_with("api-"));
        assert_eq!(
            pod.name.len(),
            "api-".len() + pod.name[4..].find('-').unwrap() + 6
        );
        assert!(pod.ip.starts_with("10.244.1."));
        assert_eq!(
            pod.container.scope.len(),
            "cri-containerd-.scope".len() + 64
        );
        assert!(pod.slice.contains(&pod.uid.replace('-', "_")));
        cluster.replace(0, &mut rng);
        let new = &cluster.slots[0].pod;
        assert_ne!(new.uid, pod.uid);
        assert_ne!(new.ip, pod.ip, "a freed address is not reused at once");
        assert_eq!(
            new.name[..new.name.len() - 5],
            pod.name[..pod.name.len() - 5],
            "replicas share the template hash"
        );
    }
}
