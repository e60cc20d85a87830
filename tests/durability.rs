//! Disk buffers under the real binary: a loop of SIGKILLs at random moments while a `file`
//! source writes numbered events through a disk-buffered `file` sink (every event must arrive at
//! least once; duplicates are counted and reported), a disk that fills up (a small tmpfs the
//! test mounts: a clear error, backpressure, recovery once space returns), `tapio buffer check`
//! on a clean, a damaged and a quarantined buffer, and the isolation an overflow buffer gives a
//! fast sink while its sibling's ClickHouse server is down.
//!
//! `TAPIO_CRASH_RUNS` sets the number of SIGKILL runs (default 20; the benchmark mode is 100).

mod common;
#[path = "clickhouse/server.rs"]
mod server;

use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use common::*;

/// A small xorshift generator seeded from the clock, printed so a failing run can be replayed
/// with `TAPIO_CRASH_SEED`.
struct Random(u64);

impl Random {
    fn new() -> Random {
        let seed = std::env::var("TAPIO_CRASH_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_nanos() as u64
            });
        eprintln!("TAPIO_CRASH_SEED={seed}");
        Random(seed | 1)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// file source → disk-buffered file sink.
fn buffered_file_pipeline(data_dir: &Path, input: &Path, out: &Path, buffer: &str) -> String {
    format!(
        "data_dir = \"{}\"\nshutdown_grace_period = \"20s\"\n\n[sources.in]\ntype = \"file\"\ninclude = [\"{}\"]\nread_from = \"beginning\"\ncheckpoint_interval = \"100ms\"\npoll_interval = \"50ms\"\n\n[sinks.out]\ntype = \"file\"\ninputs = [\"in\"]\npath = \"{}\"\nbuffer = {buffer}\n",
        data_dir.display(),
        input.display(),
        out.display()
    )
}

/// Waits until `out` holds every id of `0..total` (at least once), or panics after `limit`.
fn wait_for_all(out: &Path, total: u64, limit: Duration) {
    let reached = eventually(limit, || {
        std::thread::sleep(Duration::from_millis(200));
        (id_counts(out).0.len() as u64 == total).then_some(())
    });
    let (counts, _) = id_counts(out);
    assert!(
        reached.is_some(),
        "only {} of {total} events arrived",
        counts.len()
    );
}

fn buffer_check(data_dir: &Path) -> std::process::Output {
    tapio()
        .args(["buffer", "check"])
        .arg(data_dir)
        .output()
        .unwrap()
}

#[test]
fn sigkill_at_random_moments_loses_no_event() {
    let runs: u64 = std::env::var("TAPIO_CRASH_RUNS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20);
    let mut random = Random::new();
    let dir = tempfile::tempdir().unwrap();
    let (input, out) = (dir.path().join("in.ndjson"), dir.path().join("out.ndjson"));
    let data_dir = dir.path().join("data");
    // Small segments (4 MiB max → 512 KiB segments), so the kills land on rotations and
    // deletions too; the interval policy is the default the issue asks to be safe.
    let config = write_config(
        dir.path(),
        "crash.toml",
        &buffered_file_pipeline(
            &data_dir,
            &input,
            &out,
            "{ type = \"disk\", max_size = \"4MiB\", sync_interval = \"50ms\" }",
        ),
    );
    let mut total = 0;
    for _ in 0..runs {
        let more = 2000 + random.below(4000);
        append_numbered(&input, total, total + more);
        total += more;
        let (mut child, _) = spawn_collecting(&config);
        std::thread::sleep(Duration::from_millis(50 + random.below(700)));
        signal(child.id(), libc::SIGKILL);
        child.wait().unwrap();
    }
    let (mut child, log) = spawn_collecting(&config);
    wait_for_all(&out, total, Duration::from_secs(90));
    signal(child.id(), libc::SIGTERM);
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(0), "{}", log.lock().unwrap());
    let (counts, torn) = id_counts(&out);
    assert_eq!(counts.len() as u64, total, "events were lost");
    for n in 0..total {
        assert!(counts.contains_key(&format!("evt_{n:09}")), "evt_{n} lost");
    }
    let duplicates: u64 = counts.values().map(|&c| u64::from(c) - 1).sum();
    eprintln!(
        "crash loop: {runs} SIGKILL runs, {total} events, 0 lost, {duplicates} duplicates ({:.2}%), {torn} torn lines",
        duplicates as f64 * 100.0 / total as f64
    );
    let check = buffer_check(&data_dir);
    assert_eq!(
        check.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&check.stdout)
    );
}

/// Unmounts the tmpfs when the test ends, however it ends.
struct Mounted(std::path::PathBuf);

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

fn mount_tmpfs(at: &Path, size: &str) -> bool {
    std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tapio-test"])
        .arg(at)
        .status()
        .is_ok_and(|s| s.success())
}

#[test]
fn a_full_disk_is_one_clear_error_holds_the_events_and_recovers_when_space_returns() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let buffers = data_dir.join("buffers");
    std::fs::create_dir_all(&buffers).unwrap();
    if !mount_tmpfs(&buffers, "1m") {
        eprintln!("skipped: cannot mount a tmpfs here (needs root)");
        return;
    }
    let _mounted = Mounted(buffers.clone());
    let (input, out) = (dir.path().join("in.ndjson"), dir.path().join("out.ndjson"));
    let total = 20_000;
    append_numbered(&input, 0, total);
    // 8 MiB segments on a 1 MiB disk: the first segment cannot be finished, so nothing is
    // freed until space returns.
    let config = write_config(
        dir.path(),
        "full.toml",
        &buffered_file_pipeline(
            &data_dir,
            &input,
            &out,
            "{ type = \"disk\", max_size = \"64MiB\", sync = \"batch\" }",
        ),
    );
    let (mut child, log) = spawn_collecting(&config);
    let reported = eventually(Duration::from_secs(20), || {
        std::thread::sleep(Duration::from_millis(100));
        log.lock()
            .unwrap()
            .lines()
            .find(|l| l.contains("cannot write to the disk buffer"))
            .map(str::to_owned)
    })
    .expect("the full disk was not reported");
    assert!(reported.contains("No space left on device"), "{reported}");
    // Backpressure: the events wait upstream, nothing is dropped.
    std::thread::sleep(Duration::from_secs(1));
    let held = id_counts(&out).0.len() as u64;
    assert!(held < total, "everything arrived despite the full disk");
    std::thread::sleep(Duration::from_secs(1));
    assert!(
        id_counts(&out).0.len() as u64 <= held + 1000,
        "the full disk did not hold the events"
    );
    let remounted = std::process::Command::new("mount")
        .args(["-o", "remount,size=256m"])
        .arg(&buffers)
        .status()
        .unwrap();
    assert!(remounted.success());
    wait_for_all(&out, total, Duration::from_secs(60));
    signal(child.id(), libc::SIGTERM);
    let status = child.wait().unwrap();
    let log = log.lock().unwrap();
    assert_eq!(status.code(), Some(0), "{log}");
    assert!(!log.contains("panicked"), "{log}");
}

#[test]
fn buffer_check_reports_damage_until_a_start_quarantines_it() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let (input, out) = (dir.path().join("in.ndjson"), dir.path().join("out.ndjson"));
    append_numbered(&input, 0, 3000);
    // A ClickHouse sink nobody answers for: it retries, so every event stays in the buffer.
    let stuck = write_config(
        dir.path(),
        "stuck.toml",
        &format!(
            "data_dir = \"{}\"\n\n[sources.in]\ntype = \"file\"\ninclude = [\"{}\"]\nread_from = \"beginning\"\n\n[sinks.out]\ntype = \"clickhouse\"\ninputs = [\"in\"]\nendpoint = \"http://127.0.0.1:{}\"\ntable = \"events\"\nhealthcheck = false\nbuffer = {{ type = \"disk\", sync = \"always\" }}\n",
            data_dir.display(),
            input.display(),
            free_port()
        ),
    );
    let (mut child, _) = spawn_collecting(&stuck);
    let segments = data_dir.join("buffers/out");
    let filled = eventually(Duration::from_secs(20), || {
        std::thread::sleep(Duration::from_millis(200));
        let check = buffer_check(&data_dir);
        String::from_utf8_lossy(&check.stdout)
            .contains(" 3000 ")
            .then_some(check)
    });
    signal(child.id(), libc::SIGKILL);
    child.wait().unwrap();
    let check = filled.expect("the buffer never held the 3000 events");
    assert_eq!(check.status.code(), Some(0));
    // A torn write at the end of the last segment.
    let mut names: Vec<_> = std::fs::read_dir(&segments)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    names.sort();
    let last = names.last().unwrap().clone();
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(&last)
        .unwrap();
    file.write_all(&[200, 0, 0, 0, 1, 2, 3, 4, 5]).unwrap();
    drop(file);
    let damaged = buffer_check(&data_dir);
    let text = String::from_utf8_lossy(&damaged.stdout).into_owned();
    assert_eq!(damaged.status.code(), Some(1), "{text}");
    assert!(
        text.contains("UNREADABLE") && text.contains("length runs past"),
        "{text}"
    );
    // A start quarantines the tail and delivers the valid prefix: all 3000 events.
    let good = write_config(
        dir.path(),
        "good.toml",
        &buffered_file_pipeline(&data_dir, &input, &out, "{ type = \"disk\" }"),
    );
    let (mut child, log) = spawn_collecting(&good);
    wait_for_all(&out, 3000, Duration::from_secs(30));
    signal(child.id(), libc::SIGTERM);
    assert_eq!(child.wait().unwrap().code(), Some(0));
    let log = log.lock().unwrap();
    assert_eq!(
        log.matches("damaged tail").count(),
        1,
        "the damage was not reported exactly once: {log}"
    );
    let repaired = buffer_check(&data_dir);
    let text = String::from_utf8_lossy(&repaired.stdout).into_owned();
    assert_eq!(repaired.status.code(), Some(0), "{text}");
    assert!(text.contains("readable"), "{text}");
}

/// Events per second the sink named `sink` delivered on its way to `total`, from its counter
/// on `/metrics` (`api`) read every 50 ms: from its first delivery to the last reading (the
/// process may exit once it delivered everything).
fn delivery_rate(api: u16, sink: &str, total: u64, limit: Duration) -> f64 {
    let sent = || {
        http_get(api, "/metrics")
            .and_then(|(_, body)| metric(&body, "tapio_component_sent_events_total", sink))
    };
    let first = eventually(Duration::from_secs(20), || sent().filter(|&n| n > 0))
        .expect("the sink never delivered");
    let start = Instant::now();
    let mut last = (first, start);
    while last.0 < total && start.elapsed() < limit {
        std::thread::sleep(Duration::from_millis(50));
        match sent() {
            Some(n) => last = (n, Instant::now()),
            None => break,
        }
    }
    assert!(
        last.0 >= total * 9 / 10,
        "the sink delivered only {} of {total} events",
        last.0
    );
    (last.0 - first) as f64 / last.1.duration_since(start).as_secs_f64()
}

#[test]
fn an_overflowing_sink_does_not_slow_its_sibling_and_catches_up_afterwards() {
    let Some(mut clickhouse) = server::ClickHouse::start() else {
        return;
    };
    let total = 60_000;
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let demo = format!(
        "[sources.demo]\ntype = \"demo\"\ncount = {total}\nrate = 10000\nbatch_size = 500\nseed = 3\nstart_time = \"2026-01-01T00:00:00Z\"\n"
    );
    let file_sink = |out: &Path| {
        format!(
            "[sinks.fast]\ntype = \"file\"\ninputs = [\"demo\"]\npath = \"{}\"\n",
            out.display()
        )
    };
    // Solo: the file sink alone.
    let api = free_port();
    let solo = write_config(
        dir.path(),
        "solo.toml",
        &format!(
            "data_dir = \"{}\"\n[api]\naddress = \"127.0.0.1:{api}\"\n\n{demo}\n{}",
            data_dir.display(),
            file_sink(&dir.path().join("solo.ndjson"))
        ),
    );
    let child = spawn_run(&solo);
    let solo_rate = delivery_rate(api, "fast", total, Duration::from_secs(60));
    assert_success(&wait_with_timeout(child, Duration::from_secs(30)));

    // Beside a ClickHouse sink whose server is down: it spills to its overflow.
    clickhouse.kill();
    let api = free_port();
    let shared = write_config(
        dir.path(),
        "shared.toml",
        &format!(
            "data_dir = \"{}\"\n[api]\naddress = \"127.0.0.1:{api}\"\n\n{demo}\n{}\n[sinks.ch]\ntype = \"clickhouse\"\ninputs = [\"demo\"]\nendpoint = \"http://127.0.0.1:{}\"\ntable = \"events\"\ncreate_table = true\nhealthcheck = false\nrequest_timeout = \"1s\"\nbuffer = {{ max_events = 2000, when_full = \"overflow\", overflow = {{ max_size = \"1GiB\" }} }}\n",
            data_dir.display(),
            file_sink(&dir.path().join("shared.ndjson")),
            clickhouse.http_port
        ),
    );
    let child = spawn_run(&shared);
    let shared_rate = delivery_rate(api, "fast", total, Duration::from_secs(60));
    let spilled = http_get(api, "/metrics")
        .and_then(|(_, body)| {
            body.lines()
                .find(|l| l.contains("disk_buffer_bytes") && l.contains("\"ch\""))
                .and_then(|l| l.rsplit(' ').next())
                .and_then(|v| v.parse::<f64>().ok())
        })
        .unwrap_or(0.0);
    eprintln!(
        "isolation: file sink solo {solo_rate:.0} events/s, beside a stopped clickhouse sink {shared_rate:.0} events/s ({:.1}%), {spilled:.0} bytes spilled",
        shared_rate * 100.0 / solo_rate
    );
    assert!(spilled > 0.0, "the clickhouse sink did not spill to disk");
    assert!(
        shared_rate >= solo_rate * 0.9,
        "the file sink slowed from {solo_rate:.0} to {shared_rate:.0} events/s"
    );
    clickhouse.resume();
    let caught_up = eventually(Duration::from_secs(90), || {
        std::thread::sleep(Duration::from_millis(500));
        let exists = clickhouse.query("EXISTS TABLE events").trim() == "1";
        (exists && clickhouse.count("SELECT uniqExact(id) FROM events") == total).then_some(())
    });
    signal(child.id(), libc::SIGTERM);
    let output = wait_with_timeout(child, Duration::from_secs(60));
    assert!(
        caught_up.is_some(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_success(&output);
}

#[test]
fn file_sink_rejections_are_dead_letters_that_list_counts_and_replay_resends() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let input = dir.path().join("in.ndjson");
    // Half the events name a namespace, half do not: those cannot be routed by the template.
    let mut text = String::new();
    for n in 0..40 {
        let entity = if n % 2 == 0 {
            ",\"entity\":{\"type\":\"pod\",\"id\":\"p\",\"namespace\":\"shop\"}"
        } else {
            ""
        };
        text.push_str(&format!(
            "{{\"id\":\"evt_{n}\",\"timestamp\":\"2026-01-01T00:00:00Z\",\"type\":\"application\",\"source\":\"file\"{entity}}}\n"
        ));
    }
    std::fs::write(&input, text).unwrap();
    let config = write_config(
        dir.path(),
        "routed.toml",
        &format!(
            "data_dir = \"{}\"\n\n[sources.in]\ntype = \"file\"\ninclude = [\"{}\"]\nread_from = \"beginning\"\n\n[sinks.out]\ntype = \"file\"\ninputs = [\"in\"]\npath = \"{}/{{{{ entity.namespace }}}}.ndjson\"\n",
            data_dir.display(),
            input.display(),
            dir.path().display()
        ),
    );
    let (mut child, log) = spawn_collecting(&config);
    let dead = data_dir.join("dead_letter/out.ndjson");
    let lines = |path: &Path| std::fs::read_to_string(path).map_or(0, |t| t.lines().count());
    eventually(Duration::from_secs(20), || {
        std::thread::sleep(Duration::from_millis(100));
        (lines(&dead) == 20 && lines(&dir.path().join("shop.ndjson")) == 20).then_some(())
    })
    .unwrap_or_else(|| panic!("dead letters: {}\n{}", lines(&dead), log.lock().unwrap()));
    signal(child.id(), libc::SIGTERM);
    assert_eq!(child.wait().unwrap().code(), Some(0));
    let record: serde_json::Value = serde_json::from_str(
        std::fs::read_to_string(&dead)
            .unwrap()
            .lines()
            .next()
            .unwrap(),
    )
    .unwrap();
    assert!(
        record["reason"]
            .as_str()
            .unwrap()
            .contains("entity.namespace"),
        "{record}"
    );
    assert!(record["time"].as_str().is_some(), "{record}");

    let list = tapio()
        .args(["dead-letter", "list", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let listed = String::from_utf8_lossy(&list.stdout);
    assert!(
        listed
            .lines()
            .any(|l| l.split_whitespace().take(2).eq(["out", "20"])),
        "{listed}"
    );
    let unknown = tapio()
        .args(["dead-letter", "replay", "nope", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert_eq!(unknown.status.code(), Some(64));
    // Replayed through the same sink, they are rejected again for the same reason: back in
    // the dead-letter file, none lost.
    let replay = tapio()
        .args(["dead-letter", "replay", "out", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&replay.stdout);
    assert_eq!(
        replay.status.code(),
        Some(0),
        "{said}{}",
        String::from_utf8_lossy(&replay.stderr)
    );
    assert!(
        said.contains("replayed 20 events, 20 rejected again"),
        "{said}"
    );
    assert_eq!(lines(&dead), 20);
}
