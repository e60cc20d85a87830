//! The command line: `validate` reports every problem with file, line and key; `graph` renders
//! the DAG; exit codes follow sysexits; the default pipeline announces itself.

mod common;

use std::process::Stdio;
use std::time::Duration;

use common::*;

#[test]
fn validate_reports_every_error_with_file_line_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        "my.toml",
        r#"data_dir = "/tmp"
nodename = "x"

[sources.node]
type = "demo"
rate = "fast"

[sources.logs]
type = "stdin"
colour = "blue"

[sinks.out]
type = "console"
inputs = ["nod", "logs.errors"]

[sinks.node]
type = "blackhole"
inputs = ["logs"]

[sinks.archive]
type = "fiel"
inputs = ["logs"]

[sinks.dump]
type = "file"
inputs = ["logs"]
path = "/tmp/{{ entity.nam }}.ndjson"
buffer = { max_events = 10, when_full = "spill" }

[sinks.lonely]
type = "blackhole"
"#,
    );
    let output = validate(&config);
    assert_eq!(output.status.code(), Some(78));
    let stderr = String::from_utf8_lossy(&output.stderr);
    let file = config.display();
    for expected in [
        format!("{file}:2: nodename: unknown top-level option; did you mean \"node_name\"?"),
        format!("{file}:6: sources.node.rate: invalid type: string \"fast\", expected f64"),
        format!("{file}:10: sources.logs.colour: unknown field `colour`"),
        format!("{file}:14: sinks.out.inputs: no component named \"nod\"; did you mean \"node\"?"),
        format!(
            "{file}:16: sinks.node: the name \"node\" is already used by sources.node on line 4"
        ),
        format!(
            "{file}:21: sinks.archive.type: unknown sink type \"fiel\"; did you mean \"file\"?"
        ),
        format!("{file}:27: sinks.dump.path: unknown field `entity.nam` in template"),
        format!("{file}:28: sinks.dump.buffer.when_full: unknown value `spill`"),
        format!("{file}:30: sinks.lonely.inputs: a sink needs inputs"),
    ] {
        assert!(
            stderr.contains(&expected),
            "missing {expected:?} in:\n{stderr}"
        );
    }
    assert!(stderr.contains("9 error(s) in the config"), "{stderr}");
}

#[test]
fn validate_interpolates_environment_and_reports_missing_variables() {
    let dir = tempfile::tempdir().unwrap();
    let text = r#"
[sources.in]
type = "demo"
count = ${DEMO_COUNT}
seed = ${DEMO_SEED:-7}

[sinks.out]
type = "file"
inputs = ["in"]
path = "${OUT_DIR}/events.ndjson"
"#;
    let config = write_config(dir.path(), "env.toml", text);
    let output = tapio()
        .args(["validate", "--config"])
        .arg(&config)
        .env("DEMO_COUNT", "10")
        .env_remove("OUT_DIR")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(78));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(&format!(
            "{}:10: environment variable ${{OUT_DIR}} is not set",
            config.display()
        )),
        "{stderr}"
    );
    let output = tapio()
        .args(["validate", "--config"])
        .arg(&config)
        .env("DEMO_COUNT", "10")
        .env("OUT_DIR", dir.path())
        .output()
        .unwrap();
    assert_success(&output);
}

#[test]
fn validate_prints_cycles_and_warns_about_unreachable_sources() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        "warn.toml",
        "[sources.used]\ntype = \"demo\"\n\n[sources.unused]\ntype = \"demo\"\n\n[sinks.out]\ntype = \"blackhole\"\ninputs = [\"used\"]\n",
    );
    let output = validate(&config);
    assert_eq!(output.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&output.stderr).contains(&format!(
        "{}:4: warning: sources.unused: reaches no sink",
        config.display()
    )));
}

#[test]
fn syntax_errors_name_the_line() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        "bad.toml",
        "[sources.in]\ntype = \"demo\"\nrate = = 3\n",
    );
    let output = validate(&config);
    assert_eq!(output.status.code(), Some(78));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(&format!("{}:3: TOML syntax:", config.display())),
        "{stderr}"
    );
}

#[test]
fn graph_renders_dot_and_mermaid() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        "g.toml",
        "[sources.in]\ntype = \"stdin\"\n\n[sinks.out]\ntype = \"console\"\ninputs = [\"in\"]\n\n[sinks.bad]\ntype = \"blackhole\"\ninputs = [\"in.errors\"]\n",
    );
    let dot = tapio()
        .args(["graph", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let dot = String::from_utf8(dot.stdout).unwrap();
    assert!(dot.starts_with("digraph tapio {"), "{dot}");
    assert!(
        dot.contains("\"in\" -> \"out\";") && dot.contains("\"in\" -> \"bad\" [label=\"errors\"];"),
        "{dot}"
    );
    let mermaid = tapio()
        .args(["graph", "--format", "mermaid", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let mermaid = String::from_utf8(mermaid.stdout).unwrap();
    assert!(
        mermaid.contains("n0 --> n1") && mermaid.contains("n0 -- errors --> n2"),
        "{mermaid}"
    );
}

#[test]
fn version_and_help_follow_clap_conventions() {
    let version = tapio().arg("--version").output().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&version.stdout).trim(),
        format!("tapio {}", env!("CARGO_PKG_VERSION"))
    );
    let help = tapio().args(["run", "--help"]).output().unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(
        help.contains("--summary") && help.contains("--config"),
        "{help}"
    );
}

/// The built-in pipeline, stopped with SIGINT once it runs (its log says so: loading eBPF
/// takes a moment, more on a busy machine, and a SIGINT before the handler is installed would
/// kill it).
#[test]
fn default_pipeline_announces_itself_and_stops_on_sigint() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("stderr.log");
    let child = tapio()
        .arg("run")
        .current_dir(dir.path())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let running = eventually(Duration::from_secs(60), || {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        text.contains("pipeline running").then_some(())
    });
    signal(child.id(), libc::SIGINT);
    let output = wait_with_timeout(child, Duration::from_secs(30));
    let stderr = std::fs::read_to_string(&log).unwrap();
    assert!(running.is_some(), "never ran: {stderr}");
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    // Whether tracefs is mounted and eBPF can load here only changes which source the built-in
    // pipeline uses and what follows the first line, never the first line's subject.
    let first = first_line(&stderr);
    if std::path::Path::new("/etc/tapio/tapio.toml").exists() {
        assert!(first.contains("/etc/tapio/tapio.toml"), "{first}");
    } else {
        assert!(first.contains("built-in node-agent pipeline"), "{first}");
    }
}

/// Standard error's first line, which must say which pipeline runs.
fn first_line(stderr: &str) -> String {
    let first = stderr.lines().next().unwrap_or_default().to_owned();
    assert!(first.contains("pipeline"), "{stderr}");
    first
}

/// The first line of a finished run's standard error.
fn first_log_line(output: &std::process::Output) -> String {
    first_line(&String::from_utf8_lossy(&output.stderr))
}

#[test]
fn a_config_from_the_flag_or_the_environment_is_announced_first() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        "finite.toml",
        &format!(
            "{}\n[sinks.out]\ntype = \"blackhole\"\ninputs = [\"demo\"]\n",
            reproducible_demo(3)
        ),
    );
    let output = run_config(&config);
    assert_success(&output);
    let first = first_log_line(&output);
    assert!(
        first.contains(&format!("{}, given with --config", config.display())),
        "{first}"
    );

    let output = tapio()
        .arg("run")
        .env("TAPIO_CONFIG", &config)
        .output()
        .unwrap();
    assert_success(&output);
    let first = first_log_line(&output);
    assert!(
        first.contains(&format!("{}, named by $TAPIO_CONFIG", config.display())),
        "{first}"
    );
}

#[test]
fn unusable_environment_exits_69_and_a_failing_sink_exits_70() {
    let dir = tempfile::tempdir().unwrap();
    let blocked = dir.path().join("not-a-dir");
    std::fs::write(&blocked, "").unwrap();
    let config = write_config(
        dir.path(),
        "unavailable.toml",
        &format!(
            "[sources.in]\ntype = \"demo\"\ncount = 10\n\n[sinks.out]\ntype = \"file\"\ninputs = [\"in\"]\npath = \"{}/sub/out.ndjson\"\n",
            blocked.display()
        ),
    );
    let output = run_config(&config);
    assert_eq!(
        output.status.code(),
        Some(69),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("sinks.out: cannot create directory"),
        "{stderr}"
    );
    assert!(!stderr.contains("sinks.out: sinks.out"), "{stderr}");

    // Standard output that cannot be written (a full device): the console sink fails, 70.
    let config = write_config(
        dir.path(),
        "full.toml",
        "[sources.in]\ntype = \"demo\"\n\n[sinks.out]\ntype = \"console\"\ninputs = [\"in\"]\n",
    );
    let child = tapio()
        .args(["run", "--config"])
        .arg(&config)
        .stdout(std::fs::File::create("/dev/full").unwrap())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let output = wait_with_timeout(child, Duration::from_secs(60));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(70), "{stderr}");
    assert!(
        stderr.contains("sinks.out failed: cannot write to standard output"),
        "{stderr}"
    );
}

/// `tapio run | head`: the reader closing standard output is a graceful stop, as in Vector:
/// the console sink stops, the endless demo source that only fed it stops, the run exits 0.
#[test]
fn a_closed_standard_output_stops_the_run_gracefully() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        "closed.toml",
        "[sources.in]\ntype = \"demo\"\n\n[sinks.out]\ntype = \"console\"\ninputs = [\"in\"]\n",
    );
    let mut child = tapio()
        .args(["run", "--config"])
        .arg(&config)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let mut first = [0u8; 64];
    std::io::Read::read_exact(&mut stdout, &mut first).unwrap();
    drop(stdout);
    let output = wait_with_timeout(child, Duration::from_secs(60));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("standard output was closed"), "{stderr}");
}

/// A sink that keeps dead letters under `data_dir` is refused before anything runs when
/// `data_dir` cannot be written (exit 69), as a source with checkpoints is: it never reaches its
/// healthcheck, which would otherwise be the first thing to fail here.
#[test]
fn a_sink_with_dead_letters_needs_a_writable_data_dir_before_anything_runs() {
    let dir = tempfile::tempdir().unwrap();
    let blocked = dir.path().join("not-a-dir");
    std::fs::write(&blocked, "").unwrap();
    let config = write_config(
        dir.path(),
        "dead-letters.toml",
        &format!(
            "data_dir = \"{}/state\"\n\n[sources.in]\ntype = \"demo\"\ncount = 10\n\n[sinks.ch]\ntype = \"clickhouse\"\ninputs = [\"in\"]\nendpoint = \"http://127.0.0.1:1\"\ntable = \"events\"\n",
            blocked.display()
        ),
    );
    let output = run_config(&config);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(69), "{stderr}");
    assert!(stderr.contains("data_dir: "), "{stderr}");
    assert!(
        stderr.contains("set `data_dir` to a writable directory"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("healthcheck"),
        "the sink started: {stderr}"
    );
}

/// An option that only building can check is a config error (exit 78), not an unusable
/// environment, and names its component once.
#[test]
fn an_option_refused_when_building_exits_78() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        "build-check.toml",
        "[sources.in]\ntype = \"demo\"\nnodes = 0\n\n[sinks.out]\ntype = \"blackhole\"\ninputs = [\"in\"]\n",
    );
    let output = run_config(&config);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(78), "{stderr}");
    assert!(
        stderr.contains("sources.in: `nodes` must be between 1"),
        "{stderr}"
    );
}
