//! `type = "ebpf"`: the node's kernel, watched by tracepoint programs. Processes starting and
//! exiting, TCP connections opening, closing, failing and retransmitting, OOM kills and
//! (optionally) file opens become `process` and `network` events with the container and pod the
//! task's cgroup names.
//!
//! ```toml
//! [sources.node]
//! type = "ebpf"
//! programs = ["exec", "exit", "tcp_connect", "tcp_state", "oom_kill"]   # the default
//! containers_only = true        # filters run in the kernel
//! ports = [80, 443]
//! ring_buffer_size = "8MiB"
//! required = true               # false: a node that cannot load them warns and goes on
//! ```
//!
//! The kernel side is `ebpf/tapio.bpf.c` (see `ebpf/README.md`); its compiled object is embedded.
//! Loading happens in `build`, so a required source that cannot load stops `tapio run` before
//! it starts (exit 69) with one line saying what is missing and which program needs it.

mod cgroup;
mod events;
mod maps;
mod programs;
#[cfg(test)]
mod tests;

use std::collections::BTreeSet;
use std::time::Duration;

use aya::Ebpf;
use aya::maps::{MapData, RingBuf};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use tapio_event::{
    BuildContext, ByteSize, ComponentConfig, ComponentError, ComponentFuture, EventBatch, Source,
    SourceContext, UnifiedEvent,
};
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;
use tokio::time::{Instant, MissedTickBehavior};

use self::cgroup::CgroupResolver;
use self::events::Decoder;
use self::maps::{Filters, LostCounter};
use self::programs::LoadSettings;
pub use self::programs::Preflight;

/// Events per batch sent downstream; a drain of the ring buffer sends as many as it holds.
const MAX_BATCH: usize = 1024;
/// How often the ring buffer is read when the kernel has not woken the source (it wakes it only
/// once an eighth of the buffer is waiting): the most an event waits in the kernel.
const POLL_INTERVAL: Duration = Duration::from_millis(50);
/// How often the lost-record counter is read.
const LOST_CHECK: Duration = Duration::from_secs(1);
/// Lost records are warned about at most this often (every loss is counted as a metric).
const LOST_WARNING_INTERVAL: Duration = Duration::from_secs(10);
const MIN_RING_BUFFER: u64 = 4096;
const MAX_RING_BUFFER: u64 = 1 << 30;

/// A kernel program the source can attach, as named in `programs`.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Program {
    /// `sched/sched_process_exec`: a process started a program (`process.operation = exec`).
    Exec,
    /// `sched/sched_process_exit`: a process ended, with its exit code or signal.
    Exit,
    /// `sock/inet_sock_set_state` CLOSE→SYN_SENT: an outgoing TCP connection (`connect`).
    TcpConnect,
    /// `sock/inet_sock_set_state` to CLOSE and `tcp/tcp_retransmit_skb`: `close`, `error`
    /// (refused, reset, unreachable), `timeout` and `retransmit`.
    TcpState,
    /// `oom/mark_victim`: the OOM killer chose a victim (`oom_kill`).
    OomKill,
    /// `syscalls/sys_enter_openat`: a file open (`open`); busy, so off by default.
    FileOpen,
}

impl Program {
    /// The name used in `programs` and in messages.
    pub fn name(self) -> &'static str {
        match self {
            Program::Exec => "exec",
            Program::Exit => "exit",
            Program::TcpConnect => "tcp_connect",
            Program::TcpState => "tcp_state",
            Program::OomKill => "oom_kill",
            Program::FileOpen => "file_open",
        }
    }
}

/// Options of the `ebpf` source.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EbpfConfig {
    /// Kernel programs to attach. The default is every program but `file_open`, which sees
    /// every `openat` on the node and is busy. An unknown name is a config error.
    #[serde(default = "default_programs")]
    pub programs: Vec<Program>,
    /// Only processes whose command name (`comm`, at most 15 bytes) is one of these; network
    /// events match on the socket's owner. Filtered in the kernel, at most 64. Empty: all.
    #[serde(default)]
    pub comms: Vec<String>,
    /// Only processes in these cgroup v2 groups or below them, as paths below the cgroup2 mount
    /// (`"/kubepods.slice"`) or absolute; they must exist at start. Filtered in the kernel, at
    /// most 64. Empty: all.
    #[serde(default)]
    pub cgroups: Vec<String>,
    /// Only processes running in a container: a cgroup named after a 64-hex-digit container id
    /// (`cri-containerd-<id>.scope`, `docker-…`, `crio-…`, `libpod-…`, or the bare id).
    /// Filtered in the kernel.
    #[serde(default)]
    pub containers_only: bool,
    /// Only TCP events whose local or remote port is one of these. Filtered in the kernel, at
    /// most 64. Empty: all ports.
    #[serde(default)]
    pub ports: Vec<u16>,
    /// `file_open` only: report paths starting with one of these (at most 8, 1 to 64 bytes
    /// each). Filtered in the kernel. Empty: every path.
    #[serde(default)]
    pub file_prefixes: Vec<String>,
    /// Size of the kernel ring buffer the programs write to, rounded up to a power of two
    /// (4 KiB to 1 GiB). When the source falls behind and it fills, records are lost: counted
    /// as `ring_buffer_full` drops and warned about.
    #[serde(default = "default_ring_buffer_size")]
    pub ring_buffer_size: ByteSize,
    /// Whether `tapio run` fails (exit 69) when the programs cannot load here (not root, no
    /// BTF, a missing tracepoint). With `false` the source logs a warning, produces nothing,
    /// and the rest of the pipeline runs.
    #[serde(default = "default_required")]
    pub required: bool,
}

fn default_programs() -> Vec<Program> {
    vec![
        Program::Exec,
        Program::Exit,
        Program::TcpConnect,
        Program::TcpState,
        Program::OomKill,
    ]
}

fn default_ring_buffer_size() -> ByteSize {
    ByteSize(8 << 20)
}

fn default_required() -> bool {
    true
}

/// Whether the `ebpf` source with its default programs can load on this node, and if not the
/// one-line reason; lets the built-in pipeline choose its source. Mounts tracefs when it is
/// missing, as the source itself would, and leaves logging that to the caller (see
/// [`Preflight`]).
pub fn probe() -> Preflight {
    programs::preflight(&default_programs().into_iter().collect())
}

impl ComponentConfig for EbpfConfig {
    type Component = dyn Source;

    /// Checks the options, then loads and attaches the programs. A node that cannot run them
    /// is an error, or with `required = false` a warning and a source that ends at once.
    fn build(&self, cx: &BuildContext) -> Result<Box<dyn Source>, ComponentError> {
        let error = |message: String| ComponentError::config(message);
        let programs: BTreeSet<Program> = self.programs.iter().copied().collect();
        if programs.is_empty() {
            return Err(error("`programs` is empty; name at least one".into()));
        }
        if !self.file_prefixes.is_empty() && !programs.contains(&Program::FileOpen) {
            return Err(error(
                "`file_prefixes` filters `file_open`, which is not in `programs`".into(),
            ));
        }
        let ByteSize(size) = self.ring_buffer_size;
        if !(1..=MAX_RING_BUFFER).contains(&size) {
            return Err(error(format!(
                "`ring_buffer_size` must be more than 0 and at most 1GiB, got {size} bytes"
            )));
        }
        let ring_buffer_size = size.next_power_of_two().max(MIN_RING_BUFFER) as u32;
        let filters = Filters::from_config(self).map_err(error)?;
        let preflight = programs::preflight(&programs);
        if let Some(change) = preflight.side_effect() {
            tracing::info!(source = %cx.name, "{change}");
        }
        let loaded = preflight.verdict.and_then(|()| {
            programs::load(&LoadSettings {
                programs: &programs,
                filters: &filters,
                ring_buffer_size,
            })
        });
        let attached = loaded.and_then(|mut bpf| {
            let ring = bpf
                .take_map("events")
                .ok_or("the BPF object has no map events")?;
            let ring = RingBuf::try_from(ring).map_err(|e| format!("map events: {e}"))?;
            let lost = LostCounter::take(&mut bpf)?;
            Ok((bpf, ring, lost))
        });
        match attached {
            Ok((bpf, ring, lost)) => {
                tracing::info!(
                    source = %cx.name,
                    programs = %programs.iter().map(|p| p.name()).collect::<Vec<_>>().join(","),
                    ring_buffer_size,
                    "eBPF programs attached"
                );
                Ok(Box::new(EbpfSource {
                    bpf,
                    ring,
                    lost,
                    decoder: Decoder::new(cx.node_name.clone(), CgroupResolver::new()),
                    name: cx.name.clone(),
                    ring_buffer_size,
                }))
            }
            Err(message) if self.required => Err(ComponentError::unavailable(message)),
            Err(message) => {
                tracing::warn!(
                    source = %cx.name,
                    "ebpf source disabled (required = false): {message}"
                );
                Ok(Box::new(DisabledSource))
            }
        }
    }
}

/// A source whose programs could not load and that was allowed not to: it ends at once.
struct DisabledSource;

impl Source for DisabledSource {
    fn run(self: Box<Self>, _cx: SourceContext) -> ComponentFuture {
        Box::pin(async { Ok(()) })
    }
}

/// The attached programs and the maps the source reads.
struct EbpfSource {
    /// Owns the programs and their links: dropping it detaches them.
    bpf: Ebpf,
    ring: RingBuf<MapData>,
    lost: LostCounter,
    decoder: Decoder,
    name: String,
    ring_buffer_size: u32,
}

impl Source for EbpfSource {
    fn run(self: Box<Self>, cx: SourceContext) -> ComponentFuture {
        Box::pin(self.read(cx))
    }
}

impl EbpfSource {
    /// Reads the ring buffer whenever the kernel says it has data, until shutdown; then sends
    /// what is still in it.
    async fn read(self: Box<Self>, mut cx: SourceContext) -> Result<(), ComponentError> {
        let EbpfSource {
            bpf,
            ring,
            lost,
            mut decoder,
            name,
            ring_buffer_size,
        } = *self;
        // SAFETY: the ring buffer map owns its descriptor and keeps it open, unchanged, until
        // it is dropped, which happens only with the `AsyncFd`.
        let registered = unsafe { AsyncFd::register_with_interest(ring, Interest::READABLE) };
        let mut ring = registered
            .map_err(|e| ComponentError::runtime(format!("polling the ring buffer failed: {e}")))?;
        let mut losses = LossReport::new(lost, name, ring_buffer_size);
        let mut checks = tokio::time::interval(LOST_CHECK);
        checks.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut polls = tokio::time::interval(POLL_INTERVAL);
        polls.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = cx.shutdown.triggered() => break,
                _ = checks.tick() => {
                    losses.check(&cx);
                    continue;
                }
                _ = polls.tick() => {}
                ready = ring.readable_mut() => {
                    // Readiness is edge-triggered: what arrives while draining wakes it again
                    // (or the next poll finds it).
                    ready.map_err(|e| {
                        ComponentError::runtime(format!("polling the ring buffer failed: {e}"))
                    })?
                    .clear_ready();
                }
            }
            if !send_all(ring.get_mut(), &mut decoder, &mut cx, false).await {
                return Ok(());
            }
        }
        // Detached, the programs add nothing more: take what is left.
        drop(bpf);
        send_all(ring.get_mut(), &mut decoder, &mut cx, true).await;
        losses.check(&cx);
        Ok(())
    }
}

/// Sends everything in the ring buffer, batch by batch; false once nothing reads the output.
/// Unless `until_empty`, stops early when shutdown fires, so a flood cannot hold the source.
async fn send_all(
    ring: &mut RingBuf<MapData>,
    decoder: &mut Decoder,
    cx: &mut SourceContext,
    until_empty: bool,
) -> bool {
    loop {
        let (events, drained) = drain(ring, decoder, cx);
        if !events.is_empty() && cx.out.send(EventBatch::new(events)).await.is_err() {
            return false;
        }
        if drained || (!until_empty && cx.shutdown.is_triggered()) {
            return true;
        }
    }
}

/// Decodes up to a batch of records; true when the ring buffer is empty.
fn drain(
    ring: &mut RingBuf<MapData>,
    decoder: &mut Decoder,
    cx: &SourceContext,
) -> (Vec<UnifiedEvent>, bool) {
    decoder.sync_clock();
    let mut events = Vec::new();
    let mut bad = 0;
    let mut drained = true;
    while let Some(record) = ring.next() {
        match decoder.decode(&record) {
            Ok(event) => events.push(event),
            Err(_) => bad += 1,
        }
        if events.len() == MAX_BATCH {
            drained = false;
            break;
        }
    }
    cx.metrics.add_events_in(events.len() + bad);
    cx.metrics.add_errors("decode", bad);
    (events, drained)
}

/// Counts records lost to a full ring buffer and warns about them, at most every
/// [`LOST_WARNING_INTERVAL`].
struct LossReport {
    counter: LostCounter,
    name: String,
    ring_buffer_size: u32,
    unwarned: u64,
    last_warning: Option<Instant>,
}

impl LossReport {
    fn new(counter: LostCounter, name: String, ring_buffer_size: u32) -> Self {
        LossReport {
            counter,
            name,
            ring_buffer_size,
            unwarned: 0,
            last_warning: None,
        }
    }

    fn check(&mut self, cx: &SourceContext) {
        let new = self.counter.new_losses();
        cx.metrics.add_dropped("ring_buffer_full", new as usize);
        self.unwarned += new;
        let due = self
            .last_warning
            .is_none_or(|at| at.elapsed() >= LOST_WARNING_INTERVAL);
        if self.unwarned > 0 && due {
            tracing::warn!(
                source = %self.name,
                lost = self.unwarned,
                "kernel events lost: the {} KiB ring buffer was full; raise `ring_buffer_size` or filter in the kernel",
                self.ring_buffer_size / 1024
            );
            self.unwarned = 0;
            self.last_warning = Some(Instant::now());
        }
    }
}
