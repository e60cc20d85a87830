//! The `ebpf` source in the real binary: kernel events reach a file sink, and a node where the
//! programs cannot load either stops the run (exit 69, one line naming what is missing) or,
//! with `required = false`, warns while the rest of the pipeline runs.

mod common;

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use common::*;

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

fn events_of(path: &Path) -> Vec<serde_json::Value> {
    parse_ndjson(&std::fs::read_to_string(path).unwrap_or_default())
}

fn process_event(
    events: &[serde_json::Value],
    operation: &str,
    pid: u32,
) -> Option<serde_json::Value> {
    events
        .iter()
        .find(|e| e["process"]["operation"] == operation && e["process"]["pid"] == pid)
        .cloned()
}

#[test]
fn kernel_events_reach_the_file_sink() {
    if !is_root() {
        eprintln!("skipping: the ebpf source needs root");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("events.ndjson");
    let config = write_config(
        dir.path(),
        "tapio.toml",
        &format!(
            "node_name = \"it-node\"\n{}",
            source_to_file("type = \"ebpf\"\nprograms = [\"exec\", \"exit\"]", &out)
        ),
    );
    let mut child = tapio()
        .args(["run", "--config"])
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = mpsc::channel();
    let stderr = BufReader::new(child.stderr.take().unwrap());
    let log = std::thread::spawn(move || {
        let mut lines = Vec::new();
        for line in stderr.lines().map_while(Result::ok) {
            if line.contains("eBPF programs attached") {
                let _ = tx.send(());
            }
            lines.push(line);
        }
        lines
    });
    if rx.recv_timeout(Duration::from_secs(60)).is_err() {
        signal(child.id(), libc::SIGKILL);
        let _ = child.wait();
        panic!(
            "tapio never attached its programs:\n{}",
            log.join().unwrap().join("\n")
        );
    }
    let shell = Command::new("/bin/sh")
        .args(["-c", "exit 7"])
        .status()
        .unwrap();
    assert_eq!(shell.code(), Some(7));
    let spawned = eventually(Duration::from_secs(30), || {
        let events = events_of(&out);
        events
            .iter()
            .filter(|e| e["process"]["operation"] == "exit" && e["process"]["exit_code"] == 7)
            .filter_map(|exit| {
                let pid = exit["process"]["pid"].as_u64()? as u32;
                Some((process_event(&events, "exec", pid)?, exit.clone()))
            })
            .find(|(exec, _)| exec["process"]["filename"] == "/bin/sh")
    });
    signal(child.id(), libc::SIGTERM);
    let status = child.wait().unwrap();
    let log = log.join().unwrap().join("\n");
    let (exec, exit) = spawned.unwrap_or_else(|| panic!("no exec/exit of the shell; log:\n{log}"));
    assert_eq!(status.code(), Some(0), "{log}");
    assert_eq!(exec["source"], "ebpf");
    assert_eq!(exec["type"], "process");
    assert_eq!(exec["entity"]["type"], "host");
    assert_eq!(exec["entity"]["node"], "it-node");
    assert_eq!(exec["process"]["ppid"], std::process::id());
    assert_eq!(exit["process"]["pid"], exec["process"]["pid"]);
}

/// Runs `tapio run --summary` on `config` as an unprivileged user (dropping root if the test
/// has it); None when that user cannot reach the binary.
fn run_unprivileged(config: &Path) -> Option<std::process::Output> {
    let binary = Path::new(env!("CARGO_BIN_EXE_tapio"));
    let reachable = binary.ancestors().skip(1).all(|dir| {
        dir.metadata()
            .is_ok_and(|m| m.permissions().mode() & 0o001 != 0)
    });
    if is_root() && !reachable {
        return None;
    }
    let mut command = tapio();
    command
        .args(["run", "--summary", "--config"])
        .arg(config)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    if is_root() {
        // SAFETY: setgroups, setgid and setuid are async-signal-safe and touch no memory of
        // the parent.
        unsafe {
            command.pre_exec(|| {
                let nobody = 65534;
                if libc::setgroups(0, std::ptr::null()) != 0
                    || libc::setgid(nobody) != 0
                    || libc::setuid(nobody) != 0
                {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }
    Some(wait_with_timeout(
        command.spawn().unwrap(),
        Duration::from_secs(60),
    ))
}

fn unprivileged_config(dir: &Path, required: bool) -> std::path::PathBuf {
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    write_config(
        dir,
        "tapio.toml",
        &format!(
            "[sources.node]\ntype = \"ebpf\"\nrequired = {required}\n\n\
             [sources.sim]\ntype = \"demo\"\ncount = 10\nseed = 1\n\n\
             [sinks.out]\ntype = \"blackhole\"\ninputs = [\"node\", \"sim\"]\n"
        ),
    )
}

#[test]
fn a_required_source_that_cannot_load_stops_the_run() {
    let dir = tempfile::tempdir().unwrap();
    let config = unprivileged_config(dir.path(), true);
    let Some(output) = run_unprivileged(&config) else {
        eprintln!("skipping: an unprivileged user cannot reach the tapio binary");
        return;
    };
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(69), "{stderr}");
    let line = stderr
        .lines()
        .find(|line| line.contains("sources.node"))
        .unwrap_or_else(|| panic!("no error for sources.node:\n{stderr}"));
    assert!(line.contains("needs root"), "{line}");
    assert!(
        line.contains("exec, exit, tcp_connect, tcp_state, oom_kill"),
        "{line}"
    );
}

#[test]
fn an_optional_source_that_cannot_load_lets_the_rest_run() {
    let dir = tempfile::tempdir().unwrap();
    let config = unprivileged_config(dir.path(), false);
    let Some(output) = run_unprivileged(&config) else {
        eprintln!("skipping: an unprivileged user cannot reach the tapio binary");
        return;
    };
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains("ebpf source disabled (required = false)") && stderr.contains("needs root"),
        "{stderr}"
    );
    assert_eq!(summary_row(&output.stderr, "out").events_in, 10);
}
