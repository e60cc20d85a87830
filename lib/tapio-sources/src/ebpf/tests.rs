//! Tests on the real kernel with the real programs: they spawn processes, open loopback
//! connections and create their own cgroups, then look for the events among everything else
//! the node does (other processes' events arrive too, so they match on pid or port). They need
//! root and skip with a message without it. Every cgroup and process they create is removed by
//! a guard, even when an assertion fails.

use std::ffi::CString;
use std::io;
use std::net::{TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tapio_event::ComponentConfig;

use serde_json::json;
use tapio_event::{
    BufferReceiver, ComponentError, ComponentMetrics, EntityType, EventType, ShutdownTrigger,
    UnifiedEvent,
};
use tokio::task::JoinHandle;

use super::cgroup::cgroup2_mount;
use super::{EbpfConfig, Program};
use crate::util::testing;

const WAIT: Duration = Duration::from_secs(20);
const CONTAINER: &str = "7ac0ffee2b4e28ba2fa111d2883f0016d3cca4271b4e28ba2fa111d2883f0016";
const POD_UID: &str = "1b4e28ba-2fa1-11d2-883f-0016d3cca427";

fn config(options: serde_json::Value) -> EbpfConfig {
    serde_json::from_value(options).expect("valid ebpf options")
}

/// False, after saying why, when the test cannot load BPF programs.
fn can_load() -> bool {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    if !root {
        eprintln!("skipping: eBPF tests need root");
    }
    root
}

/// A running source and what it sends.
struct Running {
    task: JoinHandle<Result<(), ComponentError>>,
    output: BufferReceiver,
    trigger: ShutdownTrigger,
    metrics: Arc<ComponentMetrics>,
    seen: Vec<UnifiedEvent>,
}

fn start(options: serde_json::Value) -> Result<Running, ComponentError> {
    start_with_buffer(options, 100_000)
}

/// A source whose output buffer holds `max_events` (a small one stalls the source).
fn start_with_buffer(
    options: serde_json::Value,
    max_events: usize,
) -> Result<Running, ComponentError> {
    let source = config(options).build(&testing::build_context("node"))?;
    let (task, taps) = testing::spawn(source, "ebpf", max_events);
    let (output, trigger, metrics) = (taps.events, taps.trigger, taps.metrics);
    Ok(Running {
        task,
        output,
        trigger,
        metrics,
        seen: Vec::new(),
    })
}

impl Running {
    /// Waits until an event matches `wanted`, keeping every event seen meanwhile.
    async fn find(&mut self, what: &str, wanted: impl Fn(&UnifiedEvent) -> bool) -> UnifiedEvent {
        if let Some(found) = self.seen.iter().find(|e| wanted(e)) {
            return found.clone();
        }
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let batch = tokio::time::timeout_at(deadline, self.output.recv())
                .await
                .unwrap_or_else(|_| panic!("no {what} within {WAIT:?}"))
                .expect("the source ended early");
            let start = self.seen.len();
            self.seen.extend_from_slice(batch.events());
            if let Some(found) = self.seen[start..].iter().find(|e| wanted(e)) {
                return found.clone();
            }
        }
    }

    /// Stops the source and checks it ended cleanly.
    async fn stop(self) -> Arc<ComponentMetrics> {
        self.trigger.trigger();
        drop(self.output);
        self.task
            .await
            .expect("source task")
            .expect("source ends cleanly");
        self.metrics
    }
}

fn process(event: &UnifiedEvent, operation: &str, pid: u32) -> bool {
    event.kind == EventType::Process
        && event
            .process
            .as_ref()
            .is_some_and(|p| p.operation.as_deref() == Some(operation) && p.pid == Some(pid))
}

fn network(event: &UnifiedEvent, operation: &str, dst_port: u16) -> bool {
    event.kind == EventType::Network
        && event.network.as_ref().is_some_and(|n| {
            n.operation.as_deref() == Some(operation) && n.dst_port == Some(dst_port)
        })
}

/// A child process, killed and reaped on drop.
struct ChildGuard(Child);

impl ChildGuard {
    fn spawn(command: &mut Command) -> Self {
        ChildGuard(
            command
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("spawn"),
        )
    }

    fn pid(&self) -> u32 {
        self.0.id()
    }

    /// Waits for the child to end, killing it after `limit`.
    fn wait(&mut self, limit: Duration) -> std::process::ExitStatus {
        let start = Instant::now();
        loop {
            if let Some(status) = self.0.try_wait().expect("wait") {
                return status;
            }
            if start.elapsed() > limit {
                let _ = self.0.kill();
                panic!("child {} still running after {limit:?}", self.0.id());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Cgroup directories this test created, removed innermost first on drop after killing
/// anything left in them.
struct CgroupGuard(Vec<PathBuf>);

impl CgroupGuard {
    /// Creates `relative` (nested components allowed) below `root`.
    fn create(root: &Path, relative: &str) -> Self {
        let mut guard = CgroupGuard(Vec::new());
        let mut path = root.to_path_buf();
        for component in relative.split('/') {
            path.push(component);
            std::fs::create_dir(&path)
                .unwrap_or_else(|e| panic!("creating cgroup {}: {e}", path.display()));
            guard.0.push(path.clone());
        }
        guard
    }

    fn leaf(&self) -> &Path {
        self.0.last().expect("at least one cgroup")
    }

    fn top(&self) -> &Path {
        &self.0[0]
    }
}

impl Drop for CgroupGuard {
    fn drop(&mut self) {
        for path in self.0.iter().rev() {
            let procs = std::fs::read_to_string(path.join("cgroup.procs")).unwrap_or_default();
            for pid in procs
                .lines()
                .filter_map(|line| line.trim().parse::<i32>().ok())
            {
                // SAFETY: kill(2) has no memory-safety preconditions.
                unsafe {
                    libc::kill(pid, libc::SIGKILL);
                }
            }
            for _ in 0..100 {
                match std::fs::remove_dir(path) {
                    Err(e) if e.kind() != io::ErrorKind::NotFound => {
                        std::thread::sleep(Duration::from_millis(20));
                    }
                    _ => break,
                }
            }
        }
    }
}

/// Makes `command`'s process move itself into `cgroup` before it executes.
fn in_cgroup(command: &mut Command, cgroup: &Path) {
    let procs = CString::new(
        cgroup
            .join("cgroup.procs")
            .into_os_string()
            .into_encoded_bytes(),
    )
    .expect("no NUL in a cgroup path");
    // SAFETY: the closure only calls open, write and close, which are async-signal-safe, on
    // memory allocated before the fork.
    unsafe {
        command.pre_exec(move || {
            let fd = libc::open(procs.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
            if fd < 0 {
                return Err(io::Error::last_os_error());
            }
            let written = libc::write(fd, b"0".as_ptr().cast(), 1);
            libc::close(fd);
            if written != 1 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// A fresh cgroup v2 group shaped like a Kubernetes container's:
/// `tapio-test-<pid>-<tag>/kubepods-besteffort-pod<uid>.slice/cri-containerd-<id>.scope`.
fn container_cgroup(tag: &str) -> CgroupGuard {
    let mount = cgroup2_mount().expect("a cgroup v2 hierarchy");
    CgroupGuard::create(
        &mount,
        &format!(
            "tapio-test-{}-{tag}/kubepods-besteffort-pod{}.slice/cri-containerd-{CONTAINER}.scope",
            std::process::id(),
            POD_UID.replace('-', "_")
        ),
    )
}

#[test]
fn options_default_as_documented() {
    let options = config(json!({}));
    assert_eq!(
        options.programs,
        [
            Program::Exec,
            Program::Exit,
            Program::TcpConnect,
            Program::TcpState,
            Program::OomKill
        ]
    );
    assert!(options.comms.is_empty() && options.cgroups.is_empty() && options.ports.is_empty());
    assert!(!options.containers_only);
    assert!(options.file_prefixes.is_empty());
    assert_eq!(options.ring_buffer_size.0, 8 << 20);
    assert!(options.required);
}

#[test]
fn unknown_programs_are_config_errors() {
    let error = serde_json::from_value::<EbpfConfig>(json!({ "programs": ["exec", "kprobe"] }))
        .unwrap_err()
        .to_string();
    assert!(error.contains("unknown variant `kprobe`"), "{error}");
    assert!(error.contains("file_open"), "{error}");
    let source: crate::SourceConfig =
        serde_json::from_value(json!({ "ebpf": { "programs": ["file_open"] } })).unwrap();
    assert_eq!(source.type_name(), "ebpf");
}

#[test]
fn option_mistakes_fail_the_build() {
    let error = |options| match config(options).build(&testing::build_context("node")) {
        Err(error) => error.message().to_owned(),
        Ok(_) => panic!("built"),
    };
    assert!(error(json!({ "programs": [] })).contains("`programs` is empty"));
    assert!(error(json!({ "file_prefixes": ["/etc"] })).contains("file_open"));
    assert!(error(json!({ "ring_buffer_size": "2GiB" })).contains("ring_buffer_size"));
    assert!(
        error(json!({ "required": false, "comms": ["far-too-long-a-name"] })).contains("comms")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_and_exit_of_a_shell() {
    if !can_load() {
        return;
    }
    let mut running = start(json!({ "programs": ["exec", "exit"] })).expect("programs load");
    let mut child = ChildGuard::spawn(Command::new("/bin/sh").args(["-c", "exit 7"]));
    let pid = child.pid();
    assert_eq!(child.wait(WAIT).code(), Some(7));
    let exec = running
        .find("exec event", |e| process(e, "exec", pid))
        .await;
    let exit = running
        .find("exit event", |e| process(e, "exit", pid))
        .await;
    let started = exec.process.as_deref().unwrap();
    assert_eq!(started.filename.as_deref(), Some("/bin/sh"));
    assert_eq!(started.comm.as_deref(), Some("sh"));
    assert_eq!(started.ppid, Some(std::process::id()));
    assert!(started.cgroup_id.is_some());
    let ended = exit.process.as_deref().unwrap();
    assert_eq!((ended.exit_code, ended.signal), (Some(7), None));
    assert_eq!(exec.source, "ebpf");
    let entity = exec.entity.as_deref().unwrap();
    assert_eq!(
        (entity.kind, entity.id.as_str(), entity.node.as_deref()),
        (EntityType::Host, "test-node", Some("test-node"))
    );
    assert_eq!(
        exec.semantic.as_deref().unwrap().intent.as_deref(),
        Some("process-start")
    );
    // Kernel time converted to wall time: within a few seconds of now, exec before exit.
    let age = tapio_event::Timestamp::now().as_nanos() - exec.timestamp.as_nanos();
    assert!((0..10_000_000_000).contains(&age), "exec is {age} ns old");
    assert!(exec.timestamp <= exit.timestamp);
    assert_ne!(exec.id, exit.id);
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_connect_close_and_refused() {
    if !can_load() {
        return;
    }
    let mut running =
        start(json!({ "programs": ["tcp_connect", "tcp_state"] })).expect("programs load");
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let client = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let (server, _) = listener.accept().unwrap();
    drop(client);
    drop(server);
    let closed_port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let refused = TcpStream::connect(("127.0.0.1", closed_port)).unwrap_err();
    assert_eq!(refused.kind(), io::ErrorKind::ConnectionRefused);

    let connect = running
        .find("connect event", |e| network(e, "connect", port))
        .await;
    let net = connect.network.as_deref().unwrap();
    assert_eq!(net.dst_ip.as_deref(), Some("127.0.0.1"));
    assert_eq!(net.protocol.as_deref(), Some("tcp"));
    assert!(net.src_port.is_some_and(|p| p != 0));
    let owner = connect.process.as_deref().expect("the socket owner");
    assert_eq!(owner.pid, Some(std::process::id()));
    assert_eq!(connect.entity.as_deref().unwrap().kind, EntityType::Host);
    let close = running
        .find("close event", |e| network(e, "close", port))
        .await;
    assert_eq!(
        close.process.as_deref().unwrap().pid,
        Some(std::process::id())
    );
    let error = running
        .find("refused event", |e| network(e, "error", closed_port))
        .await;
    assert_eq!(
        error.network.as_deref().unwrap().error.as_deref(),
        Some("connection refused")
    );
    assert_eq!(
        error.process.as_deref().unwrap().pid,
        Some(std::process::id())
    );
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ports_filter_runs_in_the_kernel() {
    if !can_load() {
        return;
    }
    let wanted = TcpListener::bind("127.0.0.1:0").unwrap();
    let other = TcpListener::bind("127.0.0.1:0").unwrap();
    let (wanted_port, other_port) = (
        wanted.local_addr().unwrap().port(),
        other.local_addr().unwrap().port(),
    );
    let mut running = start(json!({ "programs": ["tcp_connect"], "ports": [wanted_port] }))
        .expect("programs load");
    drop(TcpStream::connect(("127.0.0.1", other_port)).unwrap());
    drop(TcpStream::connect(("127.0.0.1", wanted_port)).unwrap());
    running
        .find("connect to the filtered port", |e| {
            network(e, "connect", wanted_port)
        })
        .await;
    assert!(
        running.seen.iter().all(|e| {
            let net = e.network.as_deref().unwrap();
            net.dst_port == Some(wanted_port) || net.src_port == Some(wanted_port)
        }),
        "an event for another port passed the filter"
    );
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn container_processes_carry_their_container_and_pod() {
    if !can_load() {
        return;
    }
    let cgroup = container_cgroup("attribution");
    let mut running = start(json!({ "programs": ["exec", "exit"] })).expect("programs load");
    let mut command = Command::new("/bin/sh");
    command.args(["-c", "exit 3"]);
    in_cgroup(&mut command, cgroup.leaf());
    let mut child = ChildGuard::spawn(&mut command);
    let pid = child.pid();
    assert_eq!(child.wait(WAIT).code(), Some(3));
    for operation in ["exec", "exit"] {
        let event = running
            .find(operation, |e| process(e, operation, pid))
            .await;
        let process = event.process.as_deref().unwrap();
        assert_eq!(
            process.container_id.as_deref(),
            Some(CONTAINER),
            "{operation}"
        );
        let entity = event.entity.as_deref().unwrap();
        assert_eq!(entity.kind, EntityType::Pod, "{operation}");
        assert_eq!(entity.id, POD_UID);
        assert_eq!(entity.node.as_deref(), Some("test-node"));
    }
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn process_filters_run_in_the_kernel() {
    if !can_load() {
        return;
    }
    let cgroup = container_cgroup("filters");
    let link_dir = tempfile::tempdir().unwrap();
    let renamed = link_dir.path().join("tapiofilt");
    std::os::unix::fs::symlink("/bin/sh", &renamed).unwrap();
    let sources = [
        json!({ "programs": ["exec"], "containers_only": true }),
        json!({ "programs": ["exec"], "cgroups": [cgroup.top().to_str().unwrap()] }),
        json!({ "programs": ["exec"], "comms": ["tapiofilt"] }),
    ];
    let mut running: Vec<Running> = sources
        .into_iter()
        .map(|options| start(options).expect("programs load"))
        .collect();
    let mut host = ChildGuard::spawn(Command::new("/bin/sh").args(["-c", "exit 0"]));
    let host_pid = host.pid();
    host.wait(WAIT);
    let mut command = Command::new(&renamed);
    command.args(["-c", "exit 0"]);
    in_cgroup(&mut command, cgroup.leaf());
    let mut contained = ChildGuard::spawn(&mut command);
    let pid = contained.pid();
    contained.wait(WAIT);
    for (index, source) in running.iter_mut().enumerate() {
        source
            .find("the container's exec", |e| process(e, "exec", pid))
            .await;
        assert!(
            !source.seen.iter().any(|e| process(e, "exec", host_pid)),
            "filter {index} let the host process through"
        );
    }
    for source in running {
        source.stop().await;
    }
}

/// Where a memory-limited group can be made: cgroup v2 with the memory controller, else the
/// cgroup v1 memory hierarchy (hybrid nodes). Returns the parent and the limit file's name.
fn memory_cgroup_parent() -> Option<(PathBuf, &'static str)> {
    if let Some(mount) = cgroup2_mount() {
        let enabled =
            std::fs::read_to_string(mount.join("cgroup.subtree_control")).unwrap_or_default();
        if enabled.split_whitespace().any(|c| c == "memory") {
            return Some((mount, "memory.max"));
        }
    }
    let own = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    let path = own.lines().find_map(|line| {
        let mut fields = line.splitn(3, ':');
        let (_, controllers, path) = (fields.next()?, fields.next()?, fields.next()?);
        controllers
            .split(',')
            .any(|c| c == "memory")
            .then(|| path.trim_start_matches('/').to_owned())
    })?;
    let parent = Path::new("/sys/fs/cgroup/memory").join(path);
    parent
        .join("memory.limit_in_bytes")
        .exists()
        .then_some((parent, "memory.limit_in_bytes"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oom_kill_reports_the_victim() {
    if !can_load() {
        return;
    }
    let Some((parent, limit_file)) = memory_cgroup_parent() else {
        eprintln!("skipping: no memory cgroup controller to make an OOM kill in");
        return;
    };
    let mut running = match start(json!({ "programs": ["oom_kill", "exit"] })) {
        Err(error) if error.message().contains("no tracepoint oom/mark_victim") => {
            eprintln!("skipping: {error}");
            return;
        }
        started => started.expect("programs load"),
    };
    let cgroup = CgroupGuard::create(&parent, &format!("tapio-oom-{}", std::process::id()));
    std::fs::write(cgroup.leaf().join(limit_file), "33554432").unwrap();
    let swap = cgroup.leaf().join("memory.swap.max");
    if swap.exists() {
        std::fs::write(swap, "0").unwrap();
    }
    // `tail` keeps everything it reads while it looks for a newline; /dev/zero has none.
    let mut command = Command::new("tail");
    command.arg("/dev/zero");
    in_cgroup(&mut command, cgroup.leaf());
    let mut child = ChildGuard::spawn(&mut command);
    let pid = child.pid();
    let status = child.wait(Duration::from_secs(60));
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(libc::SIGKILL)
    );
    let oom = running
        .find("oom_kill event", |e| process(e, "oom_kill", pid))
        .await;
    let victim = oom.process.as_deref().unwrap();
    assert_eq!(victim.comm.as_deref(), Some("tail"));
    assert_eq!(victim.signal, Some(libc::SIGKILL));
    assert_eq!(
        oom.semantic.as_deref().unwrap().category.as_deref(),
        Some("resource-exhaustion")
    );
    let exit = running
        .find("the victim's exit", |e| process(e, "exit", pid))
        .await;
    let ended = exit.process.as_deref().unwrap();
    assert_eq!((ended.exit_code, ended.signal), (Some(137), Some(9)));
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_open_reports_paths_under_its_prefixes() {
    if !can_load() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let wanted = dir.path().join("wanted.txt");
    std::fs::write(&wanted, "x").unwrap();
    let prefix = dir.path().to_str().unwrap().to_owned();
    let mut running = start(json!({ "programs": ["file_open"], "file_prefixes": [prefix] }))
        .expect("programs load");
    let mut child = ChildGuard::spawn(Command::new("cat").arg(&wanted));
    let pid = child.pid();
    child.wait(WAIT);
    let open = running
        .find("open event", |e| process(e, "open", pid))
        .await;
    assert_eq!(
        open.process.as_deref().unwrap().filename.as_deref(),
        wanted.to_str()
    );
    assert!(
        running.seen.iter().all(|e| {
            let filename = e.process.as_deref().and_then(|p| p.filename.as_deref());
            filename.is_some_and(|f| f.starts_with(&prefix))
        }),
        "a path outside the prefix passed the filter"
    );
    let metrics = running.stop().await.snapshot();
    assert_eq!(metrics.dropped_total(), 0);
    assert_eq!(metrics.errors_total(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_lost_to_a_full_ring_buffer_are_counted() {
    if !can_load() {
        return;
    }
    // A 4 KiB ring holds about a dozen exec records; with the output stalled, the source stops
    // reading it and the kernel has to drop what does not fit.
    let mut running = start_with_buffer(
        json!({ "programs": ["exec"], "ring_buffer_size": "4KiB" }),
        1,
    )
    .expect("programs load");
    for _ in 0..100 {
        ChildGuard::spawn(&mut Command::new("/bin/true")).wait(WAIT);
    }
    running.trigger.trigger();
    while running.output.recv().await.is_some() {}
    running
        .task
        .await
        .expect("source task")
        .expect("source ends cleanly");
    let snapshot = running.metrics.snapshot();
    let lost = snapshot
        .dropped
        .get("ring_buffer_full")
        .copied()
        .unwrap_or(0);
    assert!(lost > 0, "nothing counted as lost: {snapshot:?}");
}

#[test]
fn probe_agrees_with_the_privileges() {
    if !can_load() {
        return;
    }
    assert_eq!(super::probe().verdict, Ok(()));
}
