//! Hot reload under the real binary, on real configs: a `file` source that the test appends
//! numbered events to (ids `evt_<n>`), through transforms into `file` sinks, reloaded with
//! `SIGHUP` or by rewriting the file under `--watch-config` while events flow. Each test counts
//! what reached the sinks: every event exactly once where nothing was restarted that could
//! send it again, the new options on later events, the old pipeline untouched by a broken file.
//! The last one measures the pause a reload adds to a path it does not change.

mod common;

use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::*;

/// A running `tapio run` with its API port and log.
struct Running {
    child: Child,
    log: Arc<Mutex<String>>,
    api: u16,
}

impl Running {
    /// Starts `tapio run` on `config` (plus `extra` arguments) and waits until it runs.
    fn start(config: &Path, extra: &[&str], api: u16) -> Running {
        let mut command = tapio();
        command.args(["run", "--config"]).arg(config).args(extra);
        let (child, log) = spawn_command_collecting(command);
        let running = Running { child, log, api };
        running.wait_for_log("pipeline running", 1);
        running
    }

    fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// Waits until `needle` has been logged `times` times.
    fn wait_for_log(&self, needle: &str, times: usize) {
        let found = eventually(Duration::from_secs(30), || {
            (self.log().matches(needle).count() >= times).then_some(())
        });
        assert!(
            found.is_some(),
            "no {times}× \"{needle}\" in:\n{}",
            self.log()
        );
    }

    /// Sends SIGHUP and waits for the reload's outcome: `reloaded` (applied) or refused.
    fn reload(&self, reloaded: bool) {
        let before_ok = self.log().matches("config reloaded").count();
        let before_refused = self.log().matches("reload refused").count();
        signal(self.child.id(), libc::SIGHUP);
        if reloaded {
            self.wait_for_log("config reloaded", before_ok + 1);
        } else {
            self.wait_for_log("reload refused", before_refused + 1);
        }
    }

    /// `tapio_config_reloads_total` by result: (ok, failed).
    fn reload_counts(&self) -> (u64, u64) {
        let (_, body) = http_get(self.api, "/metrics").expect("/metrics answers");
        let count = |result: &str| {
            let needle = format!("tapio_config_reloads_total{{result=\"{result}\"}} ");
            body.lines()
                .find_map(|line| line.strip_prefix(&needle))
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("no {needle} in:\n{body}"))
        };
        (count("ok"), count("failed"))
    }

    fn health(&self) -> String {
        http_get(self.api, "/health").map_or_else(String::new, |(_, body)| body)
    }

    /// SIGTERM, then the exit code and the whole log.
    fn stop(self) -> (Option<i32>, String) {
        signal(self.child.id(), libc::SIGTERM);
        let output = wait_with_timeout(self.child, Duration::from_secs(60));
        let log = self.log.lock().unwrap().clone();
        (output.status.code(), log)
    }
}

/// The config every test starts from: `[sources.in]` tailing `input`, a `rhai` transform
/// `shape` stamping `application.stage = <stage>`, and a file sink `out` writing `out`;
/// `extra` is appended (more sinks).
fn pipeline(dir: &Path, api: u16, stage: &str, extra: &str) -> String {
    format!(
        r#"data_dir = "{data}"
shutdown_grace_period = "30s"

[api]
address = "127.0.0.1:{api}"

[sources.in]
type = "file"
include = ["{input}"]
read_from = "beginning"
poll_interval = "20ms"

[transforms.shape]
type = "rhai"
inputs = ["in"]
source = 'event.application.stage = "{stage}";'

[sinks.out]
type = "file"
inputs = ["shape"]
path = "{out}"
{extra}"#,
        data = dir.join("data").display(),
        input = dir.join("in.ndjson").display(),
        out = dir.join("out.ndjson").display(),
    )
}

/// A file sink named `name` reading `input`, writing `<dir>/<name>.ndjson`.
fn file_sink(dir: &Path, name: &str, input: &str) -> String {
    format!(
        "\n[sinks.{name}]\ntype = \"file\"\ninputs = [\"{input}\"]\npath = \"{}\"\n",
        dir.join(format!("{name}.ndjson")).display()
    )
}

/// Waits until `path` holds every id of `0..total`, then returns how often each appears.
fn all_arrived(path: &Path, total: u64) -> HashMap<String, u32> {
    let arrived = eventually(Duration::from_secs(60), || {
        let (counts, _) = id_counts(path);
        (counts.len() as u64 >= total).then_some(counts)
    });
    arrived.unwrap_or_else(|| {
        panic!(
            "only {} of {total} events reached {}",
            id_counts(path).0.len(),
            path.display()
        )
    })
}

/// `application.stage` of each event in `path`, by `application.n`.
fn stages(path: &Path) -> HashMap<u64, String> {
    let text = std::fs::read_to_string(path).unwrap();
    parse_ndjson(&text)
        .iter()
        .map(|event| {
            let application = &event["application"];
            (
                application["n"].as_u64().unwrap(),
                application["stage"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect()
}

fn ids(range: std::ops::Range<u64>) -> impl Iterator<Item = String> {
    range.map(|n| format!("evt_{n:09}"))
}

/// Appends `0..total` to `input` in chunks of `chunk` every `pause`, on its own thread.
fn feed(input: PathBuf, total: u64, chunk: u64, pause: Duration) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        for from in (0..total).step_by(chunk as usize) {
            append_numbered(&input, from, (from + chunk).min(total));
            std::thread::sleep(pause);
        }
    })
}

/// (1) A transform's options change while 100k events flow: none is lost, none duplicated
/// (nothing restarted could send one again: a file source and a file sink stay untouched), and
/// events after the reload carry the new option.
#[test]
fn a_changed_transform_takes_effect_without_losing_or_repeating_events() {
    const TOTAL: u64 = 100_000;
    let dir = tempfile::tempdir().unwrap();
    let api = free_port();
    let config = write_config(
        dir.path(),
        "tapio.toml",
        &pipeline(dir.path(), api, "v1", ""),
    );
    let running = Running::start(&config, &[], api);
    let out = dir.path().join("out.ndjson");
    let writer = feed(
        dir.path().join("in.ndjson"),
        TOTAL,
        1000,
        Duration::from_millis(20),
    );
    eventually(Duration::from_secs(30), || {
        (id_counts(&out).0.len() >= 30_000).then_some(())
    })
    .expect("events flow");
    write_config(
        dir.path(),
        "tapio.toml",
        &pipeline(dir.path(), api, "v2", ""),
    );
    running.reload(true);
    let reloaded_at = id_counts(&out).0.len();
    writer.join().unwrap();
    let counts = all_arrived(&out, TOTAL);
    let duplicates: u32 = counts.values().map(|c| c - 1).sum();
    eprintln!(
        "{TOTAL} events, reload after ~{reloaded_at}: {} distinct, {duplicates} duplicates",
        counts.len()
    );
    for id in ids(0..TOTAL) {
        assert!(counts.contains_key(&id), "{id} lost");
    }
    assert_eq!(duplicates, 0, "events were sent twice");
    let stages = stages(&out);
    let v1 = stages.values().filter(|s| *s == "v1").count();
    let v2 = stages.values().filter(|s| *s == "v2").count();
    assert_eq!(v1 + v2, TOTAL as usize, "events without a stage");
    assert!(v1 >= 30_000 && v2 > 0, "v1 {v1}, v2 {v2}");
    assert!(
        (TOTAL - 1000..TOTAL).all(|n| stages[&n] == "v2"),
        "the last events were shaped by the old options"
    );
    assert_eq!(running.reload_counts(), (1, 0));
    assert!(running.log().contains("changed: transforms.shape"));
    let (code, log) = running.stop();
    assert_eq!(code, Some(0), "{log}");
}

/// (1b) The source itself changes while events flow: the old `file` source stops and
/// records how far its acknowledged events got, the new one resumes there: none lost, none
/// read twice.
#[test]
fn a_changed_source_resumes_where_the_old_one_stopped() {
    const TOTAL: u64 = 50_000;
    let dir = tempfile::tempdir().unwrap();
    let api = free_port();
    let text = pipeline(dir.path(), api, "v1", "");
    let config = write_config(dir.path(), "tapio.toml", &text);
    let running = Running::start(&config, &[], api);
    let out = dir.path().join("out.ndjson");
    let writer = feed(
        dir.path().join("in.ndjson"),
        TOTAL,
        1000,
        Duration::from_millis(20),
    );
    eventually(Duration::from_secs(30), || {
        (id_counts(&out).0.len() >= 15_000).then_some(())
    })
    .expect("events flow");
    let slower = text.replace("poll_interval = \"20ms\"", "poll_interval = \"30ms\"");
    write_config(dir.path(), "tapio.toml", &slower);
    running.reload(true);
    assert!(
        running.log().contains("changed: sources.in"),
        "{}",
        running.log()
    );
    writer.join().unwrap();
    let counts = all_arrived(&out, TOTAL);
    let duplicates: u32 = counts.values().map(|c| c - 1).sum();
    eprintln!("{TOTAL} events through a replaced file source: 0 lost, {duplicates} duplicates");
    assert!(
        ids(0..TOTAL).all(|id| counts.contains_key(&id)),
        "events lost"
    );
    // The old source stops gracefully: it waits for the sink's acknowledgements before it
    // records its position, and the new one is built (and reads it) only then.
    assert_eq!(
        duplicates, 0,
        "the new source read again what the old one had delivered"
    );
    let (code, log) = running.stop();
    assert_eq!(code, Some(0), "{log}");
}

/// (2) A sink added and another removed during a run: the kept one gets everything once, the
/// removed one everything before the reload and nothing after, the added one everything after.
#[test]
fn a_sink_is_added_and_another_removed_while_events_flow() {
    let dir = tempfile::tempdir().unwrap();
    let api = free_port();
    let before = pipeline(dir.path(), api, "v1", &file_sink(dir.path(), "old", "in"));
    let config = write_config(dir.path(), "tapio.toml", &before);
    let running = Running::start(&config, &[], api);
    let input = dir.path().join("in.ndjson");
    let path = |name: &str| dir.path().join(format!("{name}.ndjson"));
    append_numbered(&input, 0, 5000);
    all_arrived(&path("old"), 5000);
    let after = pipeline(
        dir.path(),
        api,
        "v1",
        &file_sink(dir.path(), "new", "shape"),
    );
    write_config(dir.path(), "tapio.toml", &after);
    running.reload(true);
    running.wait_for_log("reload complete", 1);
    append_numbered(&input, 5000, 10_000);
    let out = all_arrived(&path("out"), 10_000);
    let new = eventually(Duration::from_secs(30), || {
        let counts = id_counts(&path("new")).0;
        ids(5000..10_000)
            .all(|id| counts.contains_key(&id))
            .then_some(counts)
    })
    .unwrap_or_else(|| id_counts(&path("new")).0);
    assert!(
        out.values().all(|&c| c == 1),
        "the kept sink got duplicates"
    );
    let old = id_counts(&path("old")).0;
    assert_eq!(
        old.len(),
        5000,
        "the removed sink got events after its removal"
    );
    assert!(ids(0..5000).all(|id| old.contains_key(&id)));
    assert!(
        ids(5000..10_000).all(|id| new.contains_key(&id)),
        "the added sink missed events: {} of 5000",
        ids(5000..10_000).filter(|id| new.contains_key(id)).count()
    );
    let (_, metrics) = http_get(api, "/metrics").unwrap();
    assert!(metric(&metrics, "tapio_component_sent_events_total", "new").is_some());
    assert!(
        metric(&metrics, "tapio_component_sent_events_total", "old").is_none(),
        "/metrics still lists the removed sink"
    );
    assert!(
        running
            .log()
            .contains("added: sinks.new; changed: none; removed: sinks.old")
    );
    let (code, log) = running.stop();
    assert_eq!(code, Some(0), "{log}");
}

/// A FIFO a sink writes to and the test reads when it chooses: while it does not, the sink's
/// write blocks once the pipe (64 KiB) is full and its buffer fills behind it.
struct Pipe {
    reader: std::fs::File,
    read: Vec<u8>,
}

impl Pipe {
    /// Makes the FIFO and opens it for reading without blocking, so the sink's open for
    /// writing finds a reader.
    fn open(path: &Path) -> Pipe {
        use std::os::unix::fs::OpenOptionsExt;
        let c_path = std::ffi::CString::new(path.to_str().unwrap()).unwrap();
        // SAFETY: mkfifo(3) reads a NUL-terminated path that outlives the call.
        assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) }, 0);
        let reader = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(path)
            .unwrap();
        Pipe {
            reader,
            read: Vec::new(),
        }
    }

    /// Reads what the pipe holds now; `true` once the writer has closed it and it is empty.
    fn read(&mut self) -> bool {
        let mut chunk = [0u8; 65536];
        loop {
            match self.reader.read(&mut chunk) {
                Ok(0) => return true,
                Ok(n) => self.read.extend_from_slice(&chunk[..n]),
                Err(_would_block) => return false,
            }
        }
    }

    /// Reads until the writer has closed the pipe.
    fn read_to_end(&mut self) {
        eventually(Duration::from_secs(30), || self.read().then_some(()))
            .expect("the sink closed the pipe");
    }

    /// The events read so far, by id.
    fn ids(&self) -> HashMap<String, u32> {
        let mut counts = HashMap::new();
        for event in parse_ndjson(&String::from_utf8_lossy(&self.read)) {
            *counts
                .entry(event["id"].as_str().unwrap().to_owned())
                .or_insert(0) += 1;
        }
        counts
    }

    fn lines(&self) -> usize {
        self.ids().values().map(|&c| c as usize).sum()
    }
}

/// (2b) A sink whose options change keeps its buffer: the old sink is stuck writing into a
/// full pipe with events queued behind it (in memory, then on disk), the reload points it at a
/// file, and once the pipe is read the new sink delivers everything the old one had not,
/// from the same buffer.
#[test]
fn a_changed_sink_takes_over_its_buffer_memory_and_disk() {
    const TOTAL: u64 = 6000;
    for buffer in [
        "{ max_events = 5000 }",
        "{ type = \"disk\", max_size = \"64MiB\" }",
    ] {
        let dir = tempfile::tempdir().unwrap();
        let api = free_port();
        let fifo = dir.path().join("slow.ndjson");
        let mut pipe = Pipe::open(&fifo);
        let slow = |path: &Path| {
            format!(
                "\n[sinks.slow]\ntype = \"file\"\ninputs = [\"in\"]\npath = \"{}\"\nbuffer = {buffer}\n",
                path.display()
            )
        };
        let config = write_config(
            dir.path(),
            "tapio.toml",
            &pipeline(dir.path(), api, "v1", &slow(&fifo)),
        );
        let running = Running::start(&config, &[], api);
        // The first half fills the pipe and leaves the old sink stuck writing; the second
        // waits in its buffer.
        let input = dir.path().join("in.ndjson");
        append_numbered(&input, 0, TOTAL / 2);
        all_arrived(&dir.path().join("out.ndjson"), TOTAL / 2);
        append_numbered(&input, TOTAL / 2, TOTAL);
        all_arrived(&dir.path().join("out.ndjson"), TOTAL);
        let moved = dir.path().join("moved.ndjson");
        write_config(
            dir.path(),
            "tapio.toml",
            &pipeline(dir.path(), api, "v1", &slow(&moved)),
        );
        running.reload(true);
        assert!(
            running.log().contains("changed: sinks.slow"),
            "{}",
            running.log()
        );
        pipe.read_to_end();
        let moved = all_arrived(&moved, TOTAL - pipe.ids().len() as u64);
        let through_pipe = pipe.ids();
        assert!(
            !through_pipe.is_empty() && !moved.is_empty(),
            "{buffer}: one sink wrote all ({} through the pipe)",
            through_pipe.len()
        );
        let lost: Vec<String> = ids(0..TOTAL)
            .filter(|id| !through_pipe.contains_key(id) && !moved.contains_key(id))
            .collect();
        assert!(
            lost.is_empty(),
            "{buffer}: {} events lost, e.g. {:?}",
            lost.len(),
            lost.first()
        );
        let twice = through_pipe
            .keys()
            .filter(|id| moved.contains_key(*id))
            .count();
        eprintln!(
            "{buffer}: {} through the old sink, {} through the new one, {twice} both",
            through_pipe.len(),
            moved.len()
        );
        assert_eq!(
            twice, 0,
            "{buffer}: the new sink repeated events the old one wrote"
        );
        let (code, log) = running.stop();
        assert_eq!(code, Some(0), "{log}");
    }
}

/// (3) A file with a syntax error, then one with an unknown input, then one whose changed
/// source cannot be built: each is refused (the first two with their file:line), nothing
/// changes, and events keep flowing through the old pipeline.
#[test]
fn a_broken_file_changes_nothing_and_says_where() {
    let dir = tempfile::tempdir().unwrap();
    let api = free_port();
    let good = pipeline(dir.path(), api, "v1", "");
    let config = write_config(dir.path(), "tapio.toml", &good);
    let running = Running::start(&config, &[], api);
    let input = dir.path().join("in.ndjson");
    let out = dir.path().join("out.ndjson");
    let file = config.display().to_string();

    // Line 4 is `[api]`; the bracket left open is a TOML syntax error there.
    write_config(dir.path(), "tapio.toml", &good.replacen("[api]", "[api", 1));
    running.reload(false);
    let log = running.log();
    assert!(
        log.contains(&format!("{file}:4:")) || log.contains(&format!("{file}:5:")),
        "no file:line for the syntax error in:\n{log}"
    );
    assert!(log.contains("TOML syntax"), "{log}");

    let unknown = good.replace("inputs = [\"shape\"]", "inputs = [\"shpae\"]");
    let line = unknown
        .lines()
        .position(|l| l.contains("shpae"))
        .expect("the broken line")
        + 1;
    write_config(dir.path(), "tapio.toml", &unknown);
    running.reload(false);
    let log = running.log();
    assert!(
        log.contains(&format!(
            "{file}:{line}: sinks.out.inputs: no component named \"shpae\"; did you mean \"shape\"?"
        )),
        "no file:line for the unknown input in:\n{log}"
    );

    // Valid TOML and graph, but the changed source cannot be built: refused all the same.
    let unbuildable = good.replace("in.ndjson\"]", "in.ndjson\", \"[\"]");
    write_config(dir.path(), "tapio.toml", &unbuildable);
    running.reload(false);
    assert!(
        running
            .log()
            .contains("reload refused: sources.in: include pattern \"[\" is not a valid glob"),
        "{}",
        running.log()
    );

    append_numbered(&input, 0, 3000);
    let counts = all_arrived(&out, 3000);
    assert!(counts.values().all(|&c| c == 1));
    assert!(stages(&out).values().all(|s| s == "v1"));
    assert_eq!(running.reload_counts(), (0, 3));
    assert!(running.health().contains("running"), "{}", running.health());
    let (code, log) = running.stop();
    assert_eq!(code, Some(0), "{log}");
}

/// (4) With `--watch-config`, writing the file is enough: no SIGHUP.
#[test]
fn watch_config_reloads_when_the_file_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let api = free_port();
    let config = write_config(
        dir.path(),
        "tapio.toml",
        &pipeline(dir.path(), api, "v1", ""),
    );
    let running = Running::start(&config, &["--watch-config"], api);
    running.wait_for_log("watching the config file", 1);
    let input = dir.path().join("in.ndjson");
    let out = dir.path().join("out.ndjson");
    append_numbered(&input, 0, 100);
    all_arrived(&out, 100);
    write_config(
        dir.path(),
        "tapio.toml",
        &pipeline(dir.path(), api, "v2", ""),
    );
    running.wait_for_log("the config file changed; reloading the config", 1);
    running.wait_for_log("config reloaded", 1);
    append_numbered(&input, 100, 200);
    all_arrived(&out, 200);
    let stages = stages(&out);
    assert!((0..100).all(|n| stages[&n] == "v1"));
    assert!(
        (100..200).all(|n| stages[&n] == "v2"),
        "the change did not take effect"
    );
    assert_eq!(running.reload_counts(), (1, 0), "one write, one reload");
    // Saving the same text again changes nothing, so nothing is reloaded.
    write_config(
        dir.path(),
        "tapio.toml",
        &pipeline(dir.path(), api, "v2", ""),
    );
    std::thread::sleep(Duration::from_millis(1000));
    assert_eq!(
        running.reload_counts(),
        (1, 0),
        "an unchanged file was reloaded"
    );
    let (code, log) = running.stop();
    assert_eq!(code, Some(0), "{log}");
}

/// (4b) A Kubernetes ConfigMap volume updates a file by swapping the `..data` symlink the
/// file's own symlink points through; `--watch-config` picks that up too.
#[test]
fn watch_config_follows_a_configmap_style_symlink_swap() {
    use std::os::unix::fs::symlink;
    let dir = tempfile::tempdir().unwrap();
    let mount = dir.path().join("mount");
    let api = free_port();
    for (version, stage) in [("..v1", "v1"), ("..v2", "v2")] {
        std::fs::create_dir_all(mount.join(version)).unwrap();
        write_config(
            &mount.join(version),
            "tapio.toml",
            &pipeline(dir.path(), api, stage, ""),
        );
    }
    symlink("..v1", mount.join("..data")).unwrap();
    symlink("..data/tapio.toml", mount.join("tapio.toml")).unwrap();
    let running = Running::start(&mount.join("tapio.toml"), &["--watch-config"], api);
    running.wait_for_log("watching the config file", 1);
    symlink("..v2", mount.join("..data_tmp")).unwrap();
    std::fs::rename(mount.join("..data_tmp"), mount.join("..data")).unwrap();
    running.wait_for_log("config reloaded", 1);
    let input = dir.path().join("in.ndjson");
    append_numbered(&input, 0, 100);
    let out = dir.path().join("out.ndjson");
    all_arrived(&out, 100);
    assert!(
        stages(&out).values().all(|s| s == "v2"),
        "the swapped-in config did not apply"
    );
    assert_eq!(running.reload_counts(), (1, 0));
    let (code, log) = running.stop();
    assert_eq!(code, Some(0), "{log}");
}

/// (5) `/health` says `reloading` while a removed sink drains: its file is a FIFO that the
/// test stops reading, so the sink cannot finish until the test reads again.
#[test]
fn health_says_reloading_while_a_removed_sink_drains() {
    let dir = tempfile::tempdir().unwrap();
    let api = free_port();
    let fifo = dir.path().join("slow.ndjson");
    let mut pipe = Pipe::open(&fifo);
    let with_slow = pipeline(dir.path(), api, "v1", &file_sink(dir.path(), "slow", "in"));
    let config = write_config(dir.path(), "tapio.toml", &with_slow);
    let running = Running::start(&config, &[], api);
    assert!(running.health().contains("running"));
    // Far more than the pipe holds (64 KiB): the sink blocks, its buffer fills.
    append_numbered(&dir.path().join("in.ndjson"), 0, 2000);
    all_arrived(&dir.path().join("out.ndjson"), 2000);

    write_config(
        dir.path(),
        "tapio.toml",
        &pipeline(dir.path(), api, "v1", ""),
    );
    running.reload(true);
    let reloading = running.health();
    assert!(reloading.contains("reloading"), "/health said {reloading}");
    let (status, _) = http_get(api, "/health").unwrap();
    assert_eq!(status, 200, "a reloading pipeline still serves");

    let settled = eventually(Duration::from_secs(30), || {
        pipe.read();
        running.health().contains("\"running\"").then_some(())
    });
    assert!(
        settled.is_some(),
        "still {} after the drain",
        running.health()
    );
    pipe.read_to_end();
    assert_eq!(
        pipe.lines(),
        2000,
        "the removed sink did not deliver what it held"
    );
    running.wait_for_log("reload complete", 1);
    let (code, log) = running.stop();
    assert_eq!(code, Some(0), "{log}");
}

fn now_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_micros() as u64
}

/// The p-th percentile of `values` (sorted in place).
fn percentile(values: &mut [u64], p: f64) -> u64 {
    values.sort_unstable();
    let index = ((values.len() as f64 - 1.0) * p).round() as usize;
    values[index]
}

/// The pause a reload causes on a path it does not change: events stamped with the time they
/// were written flow `in → out` (unchanged) while `shape → other` is reloaded five times; the
/// latency of events written within 500 ms after a reload began is compared with the rest
/// (from the moment events flow).
/// Prints both p99s (run with `--nocapture`); fails if a reload stalls the unchanged path.
#[test]
fn a_reload_barely_pauses_an_unchanged_path() {
    const TOTAL: u64 = 12_000;
    let dir = tempfile::tempdir().unwrap();
    let api = free_port();
    let config_text = |stage: &str| {
        pipeline(dir.path(), api, stage, "")
            .replace("inputs = [\"shape\"]", "inputs = [\"in\"]")
            .replace(
                "[sinks.out]",
                &format!("{}\n[sinks.out]", file_sink(dir.path(), "other", "shape")),
            )
    };
    let config = write_config(dir.path(), "tapio.toml", &config_text("s0"));
    let running = Running::start(&config, &[], api);
    let input = dir.path().join("in.ndjson");
    let out = dir.path().join("out.ndjson");

    // Written at 2000 events/s, each stamped with when it was written.
    let writer = {
        let input = input.clone();
        std::thread::spawn(move || {
            for from in (0..TOTAL).step_by(20) {
                append_events(&input, from, from + 20, |_| {
                    format!(",\"written_us\":{}", now_micros())
                });
                std::thread::sleep(Duration::from_millis(10));
            }
        })
    };
    // (written, latency) of every event, by number, read as `out` grows.
    let arrivals: Arc<Mutex<HashMap<u64, (u64, u64)>>> = Arc::default();
    let tail = {
        let arrivals = Arc::clone(&arrivals);
        let out = out.clone();
        std::thread::spawn(move || {
            let started = Instant::now();
            let mut file = None;
            let (mut text, mut done) = (Vec::new(), 0);
            while arrivals.lock().unwrap().len() < TOTAL as usize
                && started.elapsed() < Duration::from_secs(90)
            {
                std::thread::sleep(Duration::from_millis(2));
                if file.is_none() {
                    file = std::fs::File::open(&out).ok();
                }
                let Some(file) = file.as_mut() else { continue };
                file.read_to_end(&mut text).unwrap();
                let now = now_micros();
                let complete = text.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
                for line in text[done..complete].split(|&b| b == b'\n') {
                    if let Ok(event) = serde_json::from_slice::<serde_json::Value>(line) {
                        let n = event["application"]["n"].as_u64().unwrap();
                        let written = event["application"]["written_us"].as_u64().unwrap();
                        let latency = now.saturating_sub(written);
                        arrivals.lock().unwrap().insert(n, (written, latency));
                    }
                }
                done = complete;
            }
        })
    };
    // Events written before the source found the file wait for it: not a latency to compare.
    eventually(Duration::from_secs(30), || {
        (!arrivals.lock().unwrap().is_empty()).then_some(())
    })
    .expect("events flow");
    let warm = now_micros();
    let mut reloads = Vec::new();
    std::thread::sleep(Duration::from_millis(500));
    for stage in 1..=5 {
        write_config(dir.path(), "tapio.toml", &config_text(&format!("s{stage}")));
        reloads.push(now_micros());
        running.reload(true);
        std::thread::sleep(Duration::from_millis(700));
    }
    writer.join().unwrap();
    tail.join().unwrap();
    let arrivals = arrivals.lock().unwrap();
    assert_eq!(
        arrivals.len(),
        TOTAL as usize,
        "events were lost on the unchanged path"
    );
    let (mut during, mut outside): (Vec<u64>, Vec<u64>) = (Vec::new(), Vec::new());
    for &(written, latency) in arrivals.values().filter(|(written, _)| *written >= warm) {
        if reloads
            .iter()
            .any(|&r| written >= r && written < r + 500_000)
        {
            during.push(latency);
        } else {
            outside.push(latency);
        }
    }
    let during_p99 = percentile(&mut during, 0.99);
    let outside_p99 = percentile(&mut outside, 0.99);
    eprintln!(
        "unchanged path, debug build: p99 latency {:.1} ms within 500 ms of a reload ({} events), {:.1} ms otherwise ({} events); added {:.1} ms",
        during_p99 as f64 / 1000.0,
        during.len(),
        outside_p99 as f64 / 1000.0,
        outside.len(),
        during_p99.saturating_sub(outside_p99) as f64 / 1000.0
    );
    assert!(!during.is_empty(), "no event was written during a reload");
    assert_eq!(running.reload_counts(), (5, 0));
    assert!(
        during_p99 < outside_p99 + 1_000_000,
        "a reload stalled the unchanged path: p99 {during_p99} µs vs {outside_p99} µs"
    );
    let (code, log) = running.stop();
    assert_eq!(code, Some(0), "{log}");
}

/// The inode of the socket listening on 127.0.0.1:`port` in process `pid`, if any.
fn listening_socket(pid: u32, port: u16) -> Option<String> {
    let table = std::fs::read_to_string(format!("/proc/{pid}/net/tcp")).unwrap();
    let local = format!("0100007F:{port:04X}");
    table.lines().skip(1).find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        // `0A` is LISTEN.
        (fields[1] == local && fields[3] == "0A").then(|| fields[9].to_owned())
    })
}

/// (6) A listener re-binds only when its address changes: a `grpc` source whose other options
/// change is replaced on the very same socket; moved to another port, it listens there and
/// the old port is freed.
#[test]
fn a_changed_source_keeps_its_socket_unless_its_address_changes() {
    let dir = tempfile::tempdir().unwrap();
    let (api, first, second) = (free_port(), free_port(), free_port());
    let config_text = |port: u16, max_in_flight: u32| {
        format!(
            "data_dir = \"{}\"\n[api]\naddress = \"127.0.0.1:{api}\"\n\n[sources.grpc]\ntype = \"grpc\"\naddress = \"127.0.0.1:{port}\"\nmax_in_flight = {max_in_flight}\n{}",
            dir.path().join("data").display(),
            file_sink(dir.path(), "out", "grpc")
        )
    };
    let config = write_config(dir.path(), "tapio.toml", &config_text(first, 8));
    let running = Running::start(&config, &[], api);
    let pid = running.child.id();
    let socket = listening_socket(pid, first).expect("the grpc source listens");

    write_config(dir.path(), "tapio.toml", &config_text(first, 16));
    running.reload(true);
    assert!(
        running.log().contains("changed: sources.grpc"),
        "{}",
        running.log()
    );
    running.wait_for_log("reload complete", 1);
    assert_eq!(
        listening_socket(pid, first),
        Some(socket.clone()),
        "the replaced source bound a new socket"
    );
    assert!(std::net::TcpStream::connect(("127.0.0.1", first)).is_ok());

    write_config(dir.path(), "tapio.toml", &config_text(second, 16));
    running.reload(true);
    let moved = eventually(Duration::from_secs(10), || listening_socket(pid, second));
    assert!(
        moved.is_some_and(|s| s != socket),
        "not listening on the new port"
    );
    let freed = eventually(Duration::from_secs(15), || {
        listening_socket(pid, first).is_none().then_some(())
    });
    assert!(freed.is_some(), "the old port stayed bound");
    let (code, log) = running.stop();
    assert_eq!(code, Some(0), "{log}");
}

/// `POST path` with an NDJSON `body` on 127.0.0.1:port; the status code.
fn post_ndjson(port: u16, path: &str, body: &str) -> u16 {
    use std::io::Write as _;
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        stream,
        "POST {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/x-ndjson\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    response.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// The ids of the events `GET /v1/events` lists now; `None` while it answers something else.
fn stored_ids(port: u16) -> Option<Vec<String>> {
    let (status, body) = http_get(port, "/v1/events?limit=10000")?;
    (status == 200).then(|| {
        let list: serde_json::Value = serde_json::from_str(&body).unwrap();
        list["events"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["id"].as_str().unwrap().to_owned())
            .collect()
    })
}

/// The API's store and intake come and go by reload like any component: an `api_store` sink
/// and an `api` source added while running answer queries and take POSTs, a changed store
/// answers with its new options (a fresh store), and removing them gives 404 again; the port
/// and the file pipeline beside them are untouched.
#[test]
fn the_apis_store_and_intake_are_added_changed_and_removed_by_reload() {
    let dir = tempfile::tempdir().unwrap();
    let api = free_port();
    let config = dir.path().join("tapio.toml");
    let input = dir.path().join("in.ndjson");
    append_numbered(&input, 0, 100);
    let base = pipeline(dir.path(), api, "one", "");
    std::fs::write(&config, &base).unwrap();
    let running = Running::start(&config, &[], api);
    all_arrived(&dir.path().join("out.ndjson"), 100);
    assert_eq!(stored_ids(api), None);
    assert_eq!(http_get(api, "/v1/events").unwrap().0, 404);

    let with_api = |store_options: &str| {
        format!(
            "{base}\n[sources.posted]\ntype = \"api\"\n\n[sinks.recent]\ntype = \"api_store\"\ninputs = [\"shape\", \"posted\"]\n{store_options}\n"
        )
    };
    std::fs::write(&config, with_api("")).unwrap();
    running.reload(true);
    append_numbered(&input, 100, 200);
    let posted = r#"{"id":"posted-1","type":"process","source":"test"}"#;
    assert_eq!(post_ndjson(api, "/v1/events", posted), 200);
    let stored = eventually(Duration::from_secs(20), || {
        stored_ids(api).filter(|ids| ids.len() >= 101)
    })
    .expect("the added store fills");
    assert!(stored.contains(&"posted-1".to_owned()), "{stored:?}");
    assert!(stored.contains(&"evt_000000150".to_owned()));

    // A changed store is a new one: it holds what arrives from then on, at most 10 events.
    std::fs::write(&config, with_api("max_events = 10")).unwrap();
    running.reload(true);
    append_numbered(&input, 200, 300);
    let stored = eventually(Duration::from_secs(20), || {
        stored_ids(api).filter(|ids| ids.contains(&"evt_000000299".to_owned()))
    })
    .expect("the changed store takes new events");
    assert_eq!(stored.len(), 10, "{stored:?}");
    assert!(!stored.contains(&"posted-1".to_owned()));

    std::fs::write(&config, &base).unwrap();
    running.reload(true);
    assert_eq!(http_get(api, "/v1/events").unwrap().0, 404);
    assert_eq!(post_ndjson(api, "/v1/events", posted), 404);
    all_arrived(&dir.path().join("out.ndjson"), 300);
    assert_eq!(running.reload_counts(), (3, 0));
    let (code, log) = running.stop();
    assert_eq!(code, Some(0), "{log}");
}
