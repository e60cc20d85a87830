//! Kernel records to `UnifiedEvent`s. A record is a fixed-layout struct written by
//! `ebpf/tapio.bpf.c`; the offsets here mirror the ones documented there. Each event gets the
//! process or socket facts the kernel saw, the container and pod its cgroup names, the source's
//! reading of what it means (`semantic`), and a wall-clock timestamp.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use tapio_event::id::IdGenerator;
use tapio_event::{
    Entity, EntityType, EventType, NetworkContext, ProcessContext, SemanticContext, Timestamp,
    UnifiedEvent,
};

use super::cgroup::{Attribution, CgroupResolver};

const RECORD_EXEC: u32 = 1;
const RECORD_EXIT: u32 = 2;
const RECORD_OOM_KILL: u32 = 3;
const RECORD_OPEN: u32 = 4;
const RECORD_TCP: u32 = 5;

const TCP_OP_CONNECT: u32 = 1;
const TCP_OP_CLOSE: u32 = 2;
const TCP_OP_RETRANSMIT: u32 = 3;
const TCP_OP_ERROR: u32 = 4;
const TCP_OP_TIMEOUT: u32 = 5;

const AF_INET6: u16 = 10;

/// `struct task_header`: every record starts with it.
const HEADER_LEN: usize = 48;
const COMM: std::ops::Range<usize> = 32..48;
/// `struct path_record` (exec, open).
const PATH_RECORD_LEN: usize = 312;
const PATH: std::ops::Range<usize> = 56..312;
/// `struct exit_record`.
const EXIT_RECORD_LEN: usize = 56;
/// `struct tcp_record`.
const TCP_RECORD_LEN: usize = 96;

/// Turns records into events; one per running source.
pub(super) struct Decoder {
    ids: IdGenerator,
    node_name: String,
    cgroups: CgroupResolver,
    /// CLOCK_REALTIME minus CLOCK_MONOTONIC, in nanoseconds: what turns the kernel's
    /// `bpf_ktime_get_ns()` into wall time.
    clock_offset: i64,
}

/// A record too short for its kind, of a kind this build does not know, or whose time is not
/// representable.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct BadRecord;

impl Decoder {
    /// A decoder whose events name `node_name` as their node.
    pub(super) fn new(node_name: String, cgroups: CgroupResolver) -> Self {
        Decoder {
            ids: IdGenerator::from_entropy(),
            node_name,
            cgroups,
            clock_offset: clock_offset(),
        }
    }

    /// Re-reads the clocks; called before each drain so that a step of the wall clock (NTP,
    /// an operator) shows in the next events.
    pub(super) fn sync_clock(&mut self) {
        self.clock_offset = clock_offset();
    }

    /// The event a record describes.
    pub(super) fn decode(&mut self, record: &[u8]) -> Result<UnifiedEvent, BadRecord> {
        if record.len() < HEADER_LEN {
            return Err(BadRecord);
        }
        // `bpf_ktime_get_ns()` plus the clock offset, checked: a record whose time is not
        // representable is a bad record, never an event at another time.
        let timestamp = i64::try_from(u64_at(record, 0))
            .ok()
            .and_then(|monotonic| monotonic.checked_add(self.clock_offset))
            .map(Timestamp)
            .ok_or(BadRecord)?;
        let cgroup_id = u64_at(record, 8);
        let kind = u32_at(record, 16);
        let attribution = self.cgroups.resolve(cgroup_id);
        // A network event's entity is the peer, which enrichment finds by IP; the pod that
        // owns the socket stays in its process context.
        let pod_uid = match (kind, &attribution) {
            (RECORD_TCP, _) | (_, None) => None,
            (_, Some(attribution)) => attribution.pod_uid.clone(),
        };
        let task = Task {
            pid: u32_at(record, 20),
            uid: u32_at(record, 28),
            comm: c_string(&record[COMM]),
            cgroup_id,
            attribution,
        };
        let mut event = match kind {
            RECORD_EXEC | RECORD_OPEN => {
                if record.len() < PATH_RECORD_LEN {
                    return Err(BadRecord);
                }
                let path = c_string(&record[PATH]);
                if kind == RECORD_EXEC {
                    let ppid = u32_at(record, 48);
                    exec(task, ppid, path, timestamp)
                } else {
                    open(task, path, timestamp)
                }
            }
            RECORD_EXIT => {
                if record.len() < EXIT_RECORD_LEN {
                    return Err(BadRecord);
                }
                exit(
                    task,
                    u32_at(record, 48),
                    u32_at(record, 52) as i32,
                    timestamp,
                )
            }
            RECORD_OOM_KILL => oom_kill(task, timestamp),
            RECORD_TCP => {
                if record.len() < TCP_RECORD_LEN {
                    return Err(BadRecord);
                }
                tcp(task, record, timestamp).ok_or(BadRecord)?
            }
            _ => return Err(BadRecord),
        };
        event.id = self.ids.next_id(timestamp);
        event.entity = Some(self.entity(pod_uid));
        Ok(event)
    }

    /// The pod whose container the process runs in, else this node (DESIGN.md section 2).
    fn entity(&self, pod_uid: Option<String>) -> Box<Entity> {
        let entity = match pod_uid {
            Some(uid) => Entity::new(EntityType::Pod, uid),
            None => Entity::new(EntityType::Host, self.node_name.clone()),
        };
        Box::new(Entity {
            node: Some(self.node_name.clone()),
            ..entity
        })
    }
}

/// The task a record is about, as the header reports it.
struct Task {
    pid: u32,
    uid: u32,
    comm: String,
    cgroup_id: u64,
    attribution: Option<Arc<Attribution>>,
}

impl Task {
    /// The process context every kind of record shares; a socket owner has no operation.
    fn process(self, operation: Option<&str>) -> ProcessContext {
        ProcessContext {
            operation: operation.map(str::to_owned),
            pid: Some(self.pid),
            comm: (!self.comm.is_empty()).then_some(self.comm),
            uid: Some(self.uid),
            cgroup_id: (self.cgroup_id != 0).then_some(self.cgroup_id),
            container_id: self
                .attribution
                .and_then(|attribution| attribution.container_id.clone()),
            ..ProcessContext::default()
        }
    }
}

fn exec(task: Task, ppid: u32, filename: String, at: Timestamp) -> UnifiedEvent {
    let mut process = task.process(Some("exec"));
    process.ppid = Some(ppid);
    process.filename = (!filename.is_empty()).then_some(filename);
    process_event(process, ("process-start", "process-lifecycle", 1.0), at)
}

/// `task->exit_code` is `(status << 8) | signal`; a process killed by a signal reports
/// `128 + signal` as its exit code, as shells and Kubernetes do, plus the signal.
fn exit(task: Task, ppid: u32, raw_code: i32, at: Timestamp) -> UnifiedEvent {
    let mut process = task.process(Some("exit"));
    process.ppid = Some(ppid);
    let signal = raw_code & 0x7f;
    let status = (raw_code >> 8) & 0xff;
    let meaning = if signal != 0 {
        process.exit_code = Some(128 + signal);
        process.signal = Some(signal);
        ("process-killed", 0.9)
    } else {
        process.exit_code = Some(status);
        if status == 0 {
            ("process-exit", 1.0)
        } else {
            ("process-failure", 0.8)
        }
    };
    process_event(process, (meaning.0, "process-lifecycle", meaning.1), at)
}

fn oom_kill(task: Task, at: Timestamp) -> UnifiedEvent {
    let mut process = task.process(Some("oom_kill"));
    process.signal = Some(libc::SIGKILL);
    process_event(process, ("oom-kill", "resource-exhaustion", 1.0), at)
}

fn open(task: Task, filename: String, at: Timestamp) -> UnifiedEvent {
    let mut process = task.process(Some("open"));
    process.filename = Some(filename);
    process_event(process, ("file-access", "filesystem", 1.0), at)
}

fn process_event(
    process: ProcessContext,
    meaning: (&str, &str, f64),
    at: Timestamp,
) -> UnifiedEvent {
    let mut event = UnifiedEvent::new(EventType::Process, "ebpf", at);
    event.semantic = semantic(meaning);
    event.process = Some(Box::new(process));
    event
}

fn tcp(owner: Task, record: &[u8], at: Timestamp) -> Option<UnifiedEvent> {
    let op = u32_at(record, 48);
    let errno = u32_at(record, 52) as i32;
    let family = u16_at(record, 56);
    let (operation, meaning, error) = match op {
        TCP_OP_CONNECT => ("connect", ("connection-open", "network", 1.0), None),
        TCP_OP_CLOSE => ("close", ("connection-close", "network", 1.0), None),
        TCP_OP_RETRANSMIT => ("retransmit", ("packet-loss", "network", 0.6), None),
        TCP_OP_ERROR => (
            "error",
            ("connection-failure", "network", 0.9),
            Some(errno_text(errno)),
        ),
        TCP_OP_TIMEOUT => (
            "timeout",
            ("connection-timeout", "network", 0.9),
            Some(errno_text(errno)),
        ),
        _ => return None,
    };
    let mut event = UnifiedEvent::new(EventType::Network, "ebpf", at);
    event.semantic = semantic(meaning);
    event.network = Some(Box::new(NetworkContext {
        operation: Some(operation.to_owned()),
        protocol: Some("tcp".to_owned()),
        src_ip: Some(address(family, &record[64..80])),
        src_port: Some(u16_at(record, 58)),
        dst_ip: Some(address(family, &record[80..96])),
        dst_port: Some(u16_at(record, 60)),
        error,
        ..NetworkContext::default()
    }));
    // The kernel knows the owner of sockets it saw connect; pid 0 means it did not.
    if owner.pid != 0 {
        event.process = Some(Box::new(owner.process(None)));
    }
    Some(event)
}

fn semantic((intent, category, confidence): (&str, &str, f64)) -> Option<Box<SemanticContext>> {
    Some(Box::new(SemanticContext {
        intent: Some(intent.to_owned()),
        category: Some(category.to_owned()),
        confidence: Some(confidence),
        ..SemanticContext::default()
    }))
}

fn address(family: u16, bytes: &[u8]) -> String {
    if family == AF_INET6 {
        let octets: [u8; 16] = bytes.try_into().expect("16-byte address field");
        Ipv6Addr::from(octets).to_string()
    } else {
        Ipv4Addr::new(bytes[0], bytes[1], bytes[2], bytes[3]).to_string()
    }
}

/// The socket error as people say it (`connection refused`), from the kernel's errno.
fn errno_text(errno: i32) -> String {
    match errno {
        libc::ECONNREFUSED => "connection refused".to_owned(),
        libc::ECONNRESET => "connection reset".to_owned(),
        libc::ETIMEDOUT => "connection timed out".to_owned(),
        libc::EHOSTUNREACH => "host unreachable".to_owned(),
        libc::ENETUNREACH => "network unreachable".to_owned(),
        libc::EPIPE => "broken pipe".to_owned(),
        other => format!("errno {other}"),
    }
}

fn c_string(bytes: &[u8]) -> String {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    String::from_utf8_lossy(&bytes[..end]).into_owned()
}

fn u16_at(record: &[u8], offset: usize) -> u16 {
    u16::from_ne_bytes(record[offset..offset + 2].try_into().expect("2 bytes"))
}

fn u32_at(record: &[u8], offset: usize) -> u32 {
    u32::from_ne_bytes(record[offset..offset + 4].try_into().expect("4 bytes"))
}

fn u64_at(record: &[u8], offset: usize) -> u64 {
    u64::from_ne_bytes(record[offset..offset + 8].try_into().expect("8 bytes"))
}

/// CLOCK_REALTIME − CLOCK_MONOTONIC, read as the middle of two monotonic reads around one
/// realtime read so the gap between the calls does not skew it.
fn clock_offset() -> i64 {
    let before = clock_ns(libc::CLOCK_MONOTONIC);
    let wall = clock_ns(libc::CLOCK_REALTIME);
    let after = clock_ns(libc::CLOCK_MONOTONIC);
    wall.saturating_sub(before + (after - before) / 2)
}

fn clock_ns(clock: libc::clockid_t) -> i64 {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `now` is a valid timespec for clock_gettime to write; both clocks always exist.
    unsafe {
        libc::clock_gettime(clock, &mut now);
    }
    timespec_nanos(&now)
}

/// A clock reading in nanoseconds, saturated: a wall clock set beyond 2262 (or before 1677)
/// gives an offset at the bound, so records then fail the decoder's checked addition instead
/// of panicking here.
fn timespec_nanos(time: &libc::timespec) -> i64 {
    time.tv_sec
        .saturating_mul(1_000_000_000)
        .saturating_add(time.tv_nsec)
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONTAINER: &str = "4f0b2c9e6d1a8b7c3e5f9a0d2c4b6e8f1a3c5e7b9d0f2a4c6e8b0d2f4a6c8e0b";

    fn header(kind: u32, len: usize, pid: u32, cgroup_id: u64, comm: &str) -> Vec<u8> {
        let mut record = vec![0u8; len];
        record[0..8].copy_from_slice(&5_000_000_000u64.to_ne_bytes());
        record[8..16].copy_from_slice(&cgroup_id.to_ne_bytes());
        record[16..20].copy_from_slice(&kind.to_ne_bytes());
        record[20..24].copy_from_slice(&pid.to_ne_bytes());
        record[28..32].copy_from_slice(&1000u32.to_ne_bytes());
        record[32..32 + comm.len()].copy_from_slice(comm.as_bytes());
        record
    }

    fn decoder() -> Decoder {
        let mut cgroups = CgroupResolver::new();
        cgroups.remember(
            77,
            &format!(
                "/kubepods.slice/kubepods-pod1b4e28ba_2fa1_11d2_883f_0016d3cca427.slice/cri-containerd-{CONTAINER}.scope"
            ),
        );
        let mut decoder = Decoder::new("node-a".into(), cgroups);
        decoder.clock_offset = 1_700_000_000_000_000_000;
        decoder
    }

    #[test]
    fn exec_in_a_pod_container() {
        let mut record = header(RECORD_EXEC, PATH_RECORD_LEN, 42, 77, "sh");
        record[48..52].copy_from_slice(&7u32.to_ne_bytes());
        record[56..63].copy_from_slice(b"/bin/sh");
        let event = decoder().decode(&record).unwrap();
        assert_eq!(event.kind, EventType::Process);
        assert_eq!(event.source, "ebpf");
        assert_eq!(event.timestamp, Timestamp(1_700_000_005_000_000_000));
        assert!(event.id.starts_with("evt_"));
        let process = event.process.unwrap();
        assert_eq!(process.operation.as_deref(), Some("exec"));
        assert_eq!((process.pid, process.ppid), (Some(42), Some(7)));
        assert_eq!(process.filename.as_deref(), Some("/bin/sh"));
        assert_eq!(process.comm.as_deref(), Some("sh"));
        assert_eq!(process.container_id.as_deref(), Some(CONTAINER));
        let entity = event.entity.unwrap();
        assert_eq!(entity.kind, EntityType::Pod);
        assert_eq!(entity.id, "1b4e28ba-2fa1-11d2-883f-0016d3cca427");
        assert_eq!(entity.node.as_deref(), Some("node-a"));
        assert_eq!(
            event.semantic.unwrap().intent.as_deref(),
            Some("process-start")
        );
    }

    #[test]
    fn exit_codes_and_signals() {
        let mut decoder = decoder();
        let mut exit = |raw: i32| {
            let mut record = header(RECORD_EXIT, EXIT_RECORD_LEN, 42, 0, "sh");
            record[52..56].copy_from_slice(&raw.to_ne_bytes());
            let event = decoder.decode(&record).unwrap();
            let entity = event.entity.unwrap();
            assert_eq!(
                (entity.kind, entity.id.as_str()),
                (EntityType::Host, "node-a")
            );
            let process = event.process.unwrap();
            (process.exit_code, process.signal, process.cgroup_id)
        };
        assert_eq!(exit(7 << 8), (Some(7), None, None));
        assert_eq!(exit(0), (Some(0), None, None));
        assert_eq!(exit(libc::SIGKILL), (Some(137), Some(9), None));
    }

    #[test]
    fn tcp_records_carry_addresses_owner_and_error() {
        let mut record = header(RECORD_TCP, TCP_RECORD_LEN, 42, 0, "curl");
        record[48..52].copy_from_slice(&TCP_OP_ERROR.to_ne_bytes());
        record[52..56].copy_from_slice(&libc::ECONNREFUSED.to_ne_bytes());
        record[56..58].copy_from_slice(&2u16.to_ne_bytes());
        record[58..60].copy_from_slice(&40000u16.to_ne_bytes());
        record[60..62].copy_from_slice(&8080u16.to_ne_bytes());
        record[64..68].copy_from_slice(&[127, 0, 0, 1]);
        record[80..84].copy_from_slice(&[10, 244, 1, 15]);
        let event = decoder().decode(&record).unwrap();
        assert_eq!(event.kind, EventType::Network);
        let network = event.network.unwrap();
        assert_eq!(network.operation.as_deref(), Some("error"));
        assert_eq!(network.error.as_deref(), Some("connection refused"));
        assert_eq!(network.src_ip.as_deref(), Some("127.0.0.1"));
        assert_eq!(network.dst_ip.as_deref(), Some("10.244.1.15"));
        assert_eq!(
            (network.src_port, network.dst_port),
            (Some(40000), Some(8080))
        );
        let owner = event.process.unwrap();
        assert_eq!((owner.pid, owner.operation), (Some(42), None));
        assert_eq!(event.entity.unwrap().kind, EntityType::Host);
    }

    #[test]
    fn tcp_without_owner_and_ipv6() {
        let mut record = header(RECORD_TCP, TCP_RECORD_LEN, 0, 0, "");
        record[48..52].copy_from_slice(&TCP_OP_CLOSE.to_ne_bytes());
        record[56..58].copy_from_slice(&AF_INET6.to_ne_bytes());
        record[79] = 1;
        record[95] = 1;
        let event = decoder().decode(&record).unwrap();
        assert!(event.process.is_none());
        assert_eq!(event.network.unwrap().dst_ip.as_deref(), Some("::1"));
    }

    #[test]
    fn rejects_short_and_unknown_records() {
        let mut decoder = decoder();
        assert_eq!(decoder.decode(&[0; 10]), Err(BadRecord));
        assert_eq!(
            decoder.decode(&header(RECORD_EXEC, HEADER_LEN, 1, 0, "x")),
            Err(BadRecord)
        );
        assert_eq!(
            decoder.decode(&header(99, HEADER_LEN, 1, 0, "x")),
            Err(BadRecord)
        );
    }

    #[test]
    fn records_whose_time_is_not_representable_are_bad_records() {
        let mut decoder = decoder();
        let mut record = header(RECORD_OOM_KILL, HEADER_LEN, 1, 0, "x");
        for monotonic in [u64::MAX, 1 << 63, i64::MAX as u64 - 1] {
            record[0..8].copy_from_slice(&monotonic.to_ne_bytes());
            assert_eq!(decoder.decode(&record), Err(BadRecord), "{monotonic}");
        }
        decoder.clock_offset = 0;
        record[0..8].copy_from_slice(&(i64::MAX as u64).to_ne_bytes());
        assert_eq!(decoder.decode(&record).unwrap().timestamp, Timestamp::MAX);
    }

    #[test]
    fn clock_readings_beyond_the_range_saturate() {
        let reading = |tv_sec, tv_nsec| timespec_nanos(&libc::timespec { tv_sec, tv_nsec });
        assert_eq!(reading(1, 5), 1_000_000_005);
        assert_eq!(reading(i64::MAX / 1_000_000_000, 999_999_999), i64::MAX);
        assert_eq!(reading(i64::MAX, 0), i64::MAX);
        assert_eq!(reading(i64::MIN, 0), i64::MIN);
    }

    #[test]
    fn clock_offset_is_realtime_minus_monotonic() {
        let offset = clock_offset();
        let wall = Timestamp(clock_ns(libc::CLOCK_MONOTONIC) + offset);
        let drift = (wall.as_nanos() - Timestamp::now().as_nanos()).abs();
        assert!(drift < 50_000_000, "drift {drift} ns");
    }
}
