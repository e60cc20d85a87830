//! The BPF object, which function hooks which tracepoint for which configured program, and
//! loading them. The checks run first, so that a node that cannot run a program says so in one
//! line naming what is missing and which program needs it.

use std::collections::BTreeSet;
use std::error::Error;
use std::path::Path;

use aya::programs::{BtfTracePoint, TracePoint};
use aya::{Btf, Ebpf, EbpfLoader};

use super::Program;
use super::maps::Filters;

/// The compiled programs (`ebpf/tapio.bpf.c`, built by `ebpf/build.sh`), 8-byte aligned as the
/// ELF reader requires.
static OBJECT: &Aligned<[u8]> = &Aligned(*include_bytes!("../../../../ebpf/tapio.bpf.o"));

#[repr(C, align(8))]
struct Aligned<T: ?Sized>(T);

/// Where tracefs is mounted on current kernels; classic tracepoints are attached through it.
const TRACEFS: &str = "/sys/kernel/tracing";
/// Where older systems mount it (under debugfs).
const DEBUGFS_TRACEFS: &str = "/sys/kernel/debug/tracing";
const KERNEL_BTF: &str = "/sys/kernel/btf/vmlinux";

/// The kernel wakes the reader once this fraction of the ring buffer waits; the reader's timer
/// collects smaller amounts, so a busy node does not pay a wakeup per record.
const WAKEUP_FRACTION: u32 = 8;

const CAP_SYS_ADMIN: u32 = 21;
const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;

/// One BPF function and the tracepoint it attaches to.
struct Hook {
    function: &'static str,
    category: &'static str,
    tracepoint: &'static str,
    /// A `tp_btf` program (typed arguments, attached by BTF id) instead of a classic one.
    btf: bool,
    /// The configured programs that need it; it is attached when any of them is on.
    programs: &'static [Program],
}

const HOOKS: &[Hook] = &[
    Hook {
        function: "handle_exec",
        category: "sched",
        tracepoint: "sched_process_exec",
        btf: false,
        programs: &[Program::Exec],
    },
    Hook {
        function: "handle_exit",
        category: "sched",
        tracepoint: "sched_process_exit",
        btf: false,
        programs: &[Program::Exit],
    },
    Hook {
        function: "handle_set_state",
        category: "sock",
        tracepoint: "inet_sock_set_state",
        btf: false,
        programs: &[Program::TcpConnect, Program::TcpState],
    },
    Hook {
        function: "handle_retransmit",
        category: "tcp",
        tracepoint: "tcp_retransmit_skb",
        btf: false,
        programs: &[Program::TcpState],
    },
    Hook {
        function: "handle_oom_kill",
        category: "oom",
        tracepoint: "mark_victim",
        btf: true,
        programs: &[Program::OomKill],
    },
    Hook {
        function: "handle_openat",
        category: "syscalls",
        tracepoint: "sys_enter_openat",
        btf: false,
        programs: &[Program::FileOpen],
    },
];

impl Hook {
    fn wanted(&self, programs: &BTreeSet<Program>) -> bool {
        self.programs.iter().any(|p| programs.contains(p))
    }

    /// The programs among `programs` that need this hook, for messages.
    fn needed_by(&self, programs: &BTreeSet<Program>) -> String {
        let names: Vec<_> = self
            .programs
            .iter()
            .filter(|p| programs.contains(p))
            .map(|p| format!("`{}`", p.name()))
            .collect();
        names.join(" and ")
    }
}

/// What checking the node found, and what the check changed on it. The check logs nothing
/// itself: the built-in pipeline probes before it has said which pipeline runs, and that line
/// must come first, so whoever checks reports the change when it fits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Preflight {
    /// `Ok` when the programs can load here, else the one-line reason naming what is missing.
    pub verdict: Result<(), String>,
    /// Where the check mounted tracefs because no place had it; `None` when nothing changed.
    pub mounted_tracefs: Option<&'static str>,
}

impl Preflight {
    /// The log line for what the check changed on the node, if it changed anything.
    pub fn side_effect(&self) -> Option<String> {
        self.mounted_tracefs.map(|path| {
            format!("mounted tracefs at {path} (tracepoint programs attach through it)")
        })
    }
}

/// Checks what loading `programs` needs from the node, mounting tracefs when it is missing:
/// privileges, kernel BTF, and each tracepoint.
pub(super) fn preflight(programs: &BTreeSet<Program>) -> Preflight {
    let unchanged = |verdict| Preflight {
        verdict,
        mounted_tracefs: None,
    };
    if let Err(why) = check_privileges_and_btf(programs) {
        return unchanged(Err(why));
    }
    match mounted_tracefs_path() {
        Some(tracefs) => unchanged(check_tracepoints(programs, tracefs)),
        None => match mount_tracefs() {
            Ok(()) => Preflight {
                verdict: check_tracepoints(programs, TRACEFS),
                mounted_tracefs: Some(TRACEFS),
            },
            Err(why) => unchanged(Err(why)),
        },
    }
}

fn check_privileges_and_btf(programs: &BTreeSet<Program>) -> Result<(), String> {
    let all = list(programs);
    if !has_bpf_privileges() {
        return Err(format!(
            "loading BPF programs needs root (CAP_BPF and CAP_PERFMON, or CAP_SYS_ADMIN), which \
             this process lacks; programs {all} cannot run"
        ));
    }
    if !Path::new(KERNEL_BTF).exists() {
        return Err(format!(
            "the kernel has no BTF ({KERNEL_BTF} is missing; build it with \
             CONFIG_DEBUG_INFO_BTF=y), which programs {all} need"
        ));
    }
    Ok(())
}

/// Whether the tracepoints `programs` attach to exist under the mounted `tracefs`.
fn check_tracepoints(programs: &BTreeSet<Program>, tracefs: &str) -> Result<(), String> {
    for hook in HOOKS.iter().filter(|hook| hook.wanted(programs)) {
        let id = Path::new(tracefs)
            .join("events")
            .join(hook.category)
            .join(hook.tracepoint)
            .join("id");
        if !id.exists() {
            return Err(format!(
                "the kernel has no tracepoint {}/{}, which program {} needs; remove it from \
                 `programs`",
                hook.category,
                hook.tracepoint,
                hook.needed_by(programs)
            ));
        }
    }
    Ok(())
}

/// What the loader needs besides the programs.
pub(super) struct LoadSettings<'a> {
    pub(super) programs: &'a BTreeSet<Program>,
    pub(super) filters: &'a Filters,
    /// Bytes, a power of two and a multiple of the page size.
    pub(super) ring_buffer_size: u32,
}

/// Loads the object, configures its filters and attaches the hooks `programs` need. The
/// programs stay attached as long as the returned `Ebpf` lives.
pub(super) fn load(settings: &LoadSettings<'_>) -> Result<Ebpf, String> {
    let programs = settings.programs;
    let flags = settings.filters.flags();
    let emit_connect = u32::from(programs.contains(&Program::TcpConnect));
    let emit_tcp_state = u32::from(programs.contains(&Program::TcpState));
    let wakeup_bytes = u64::from(settings.ring_buffer_size / WAKEUP_FRACTION);
    let mut bpf = EbpfLoader::new()
        .map_max_entries("events", settings.ring_buffer_size)
        .override_global("filter_flags", &flags, true)
        .override_global("emit_connect", &emit_connect, true)
        .override_global("emit_tcp_state", &emit_tcp_state, true)
        .override_global("wakeup_bytes", &wakeup_bytes, true)
        .load(&OBJECT.0)
        .map_err(|e| format!("loading the BPF object failed: {}", one_line(&e)))?;
    settings.filters.write(&mut bpf)?;
    let mut btf = None;
    for hook in HOOKS.iter().filter(|hook| hook.wanted(programs)) {
        attach(&mut bpf, hook, &mut btf).map_err(|e| {
            tracing::debug!(
                hook = hook.function,
                "BPF program failed to load or attach: {e:?}"
            );
            format!(
                "program {} could not attach to tracepoint {}/{}: {}",
                hook.needed_by(programs),
                hook.category,
                hook.tracepoint,
                one_line(e.as_ref())
            )
        })?;
    }
    Ok(bpf)
}

fn attach(bpf: &mut Ebpf, hook: &Hook, btf: &mut Option<Btf>) -> Result<(), Box<dyn Error>> {
    let program = bpf
        .program_mut(hook.function)
        .ok_or_else(|| format!("the BPF object has no function {}", hook.function))?;
    if hook.btf {
        let btf = match btf {
            Some(btf) => btf,
            None => btf.insert(Btf::from_sys_fs()?),
        };
        let program: &mut BtfTracePoint = program.try_into()?;
        program.load(hook.tracepoint, btf)?;
        program.attach()?;
    } else {
        let program: &mut TracePoint = program.try_into()?;
        program.load()?;
        program.attach(hook.category, hook.tracepoint)?;
    }
    Ok(())
}

/// An error and its causes on one line: of a multi-line message (a verifier log) only the last
/// line is kept; the whole error goes to the debug log.
fn one_line(error: &dyn Error) -> String {
    let mut parts = Vec::new();
    let mut next = Some(error);
    while let Some(error) = next {
        let text = error.to_string();
        let line = text
            .lines()
            .rfind(|line| !line.trim().is_empty())
            .unwrap_or("");
        if !line.is_empty() && !parts.iter().any(|part: &String| part.contains(line)) {
            parts.push(line.trim().to_owned());
        }
        next = error.source();
    }
    parts.join(": ")
}

fn list(programs: &BTreeSet<Program>) -> String {
    let names: Vec<_> = programs.iter().map(|p| p.name()).collect();
    names.join(", ")
}

/// Effective capabilities from `/proc/self/status`: CAP_SYS_ADMIN, or CAP_BPF with
/// CAP_PERFMON (what tracepoint programs need since Linux 5.8).
fn has_bpf_privileges() -> bool {
    let Ok(status) = std::fs::read_to_string("/proc/self/status") else {
        return false;
    };
    let Some(caps) = status
        .lines()
        .find_map(|line| line.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
    else {
        return false;
    };
    let has = |cap: u32| caps & (1 << cap) != 0;
    has(CAP_SYS_ADMIN) || (has(CAP_BPF) && has(CAP_PERFMON))
}

/// Where tracefs is mounted, if either usual place has it.
fn mounted_tracefs_path() -> Option<&'static str> {
    [TRACEFS, DEBUGFS_TRACEFS]
        .into_iter()
        .find(|path| Path::new(path).join("events").is_dir())
}

/// Mounts tracefs at `/sys/kernel/tracing` (it is not mounted at boot on every node).
fn mount_tracefs() -> Result<(), String> {
    let target = std::ffi::CString::new(TRACEFS).expect("no NUL in a constant");
    // SAFETY: every pointer is a NUL-terminated string that outlives the call; tracefs takes
    // no mount data.
    let status = unsafe {
        libc::mount(
            c"tracefs".as_ptr(),
            target.as_ptr(),
            c"tracefs".as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if status != 0 {
        return Err(format!(
            "tracefs is not mounted and mounting it at {TRACEFS} failed ({}); tracepoint \
             programs need it",
            std::io::Error::last_os_error()
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_program_has_hooks_in_the_object() {
        let all = [
            Program::Exec,
            Program::Exit,
            Program::TcpConnect,
            Program::TcpState,
            Program::OomKill,
            Program::FileOpen,
        ];
        for program in &all {
            assert!(
                HOOKS.iter().any(|hook| hook.programs.contains(program)),
                "{program:?} has no hook"
            );
        }
        for hook in HOOKS {
            let name = hook.function.as_bytes();
            assert!(
                OBJECT.0.windows(name.len()).any(|window| window == name),
                "the BPF object has no function {}",
                hook.function
            );
        }
    }

    #[test]
    fn errors_name_the_programs_that_need_a_hook() {
        let programs: BTreeSet<_> = [Program::TcpConnect, Program::TcpState, Program::Exec]
            .into_iter()
            .collect();
        let hook = HOOKS
            .iter()
            .find(|hook| hook.function == "handle_set_state")
            .unwrap();
        assert_eq!(hook.needed_by(&programs), "`tcp_connect` and `tcp_state`");
        assert_eq!(list(&programs), "exec, tcp_connect, tcp_state");
    }
}
