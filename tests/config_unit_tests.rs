//! `tapio test`: the `[[tests]]` of a config run on its transforms alone, through the real
//! binary. Passing tests exit 0; a failing one exits 1 and shows the events it saw.

mod common;

use common::*;

/// A pipeline whose transforms the tests below exercise: a filter dropping debug events and a
/// route splitting out critical ones. The source and sinks are never started by `tapio test`
/// (the file sink's directory does not even exist).
const PIPELINE: &str = r#"
[sources.in]
type = "stdin"

[transforms.noise]
type = "filter"
inputs = ["in"]
condition = { field = "impact.severity", in = ["info", "warning", "error", "critical"] }

[transforms.split]
type = "route"
inputs = ["noise"]

[transforms.split.routes]
critical = { field = "impact.severity", equals = "critical" }

[sinks.out]
type = "file"
inputs = ["split.critical", "split._unmatched"]
path = "/nonexistent/tapio-test/out.ndjson"
"#;

fn tapio_test(dir: &std::path::Path, tests: &str) -> (Option<i32>, String) {
    let config = write_config(dir, "tested.toml", &format!("{PIPELINE}\n{tests}"));
    let output = tapio().arg("test").arg(&config).output().unwrap();
    let text = String::from_utf8_lossy(&output.stdout).to_string()
        + &String::from_utf8_lossy(&output.stderr);
    (output.status.code(), text)
}

#[test]
fn passing_tests_exit_0_with_a_line_each() {
    let dir = tempfile::tempdir().unwrap();
    let (code, text) = tapio_test(
        dir.path(),
        r#"
[[tests]]
name = "critical events are routed"
[[tests.inputs]]
insert_at = "noise"
value = '{"type":"process","source":"ebpf","impact":{"severity":"critical"}}'
[[tests.inputs]]
insert_at = "noise"
log_fields = { type = "process", source = "ebpf", "impact.severity" = "info", "process.comm" = "nginx" }
[[tests.outputs]]
extract_from = "split.critical"
conditions = [{ field = "impact.severity", equals = "critical" }]
count = 1
[[tests.outputs]]
extract_from = "split._unmatched"
conditions = [{ field = "process.comm", equals = "nginx" }]

[[tests]]
name = "debug events are dropped"
no_outputs_from = ["noise", "split.critical", "split._unmatched"]
[[tests.inputs]]
insert_at = "noise"
value = { type = "process", source = "ebpf", impact = { severity = "debug" } }
"#,
    );
    assert_eq!(code, Some(0), "{text}");
    assert!(
        text.contains("test critical events are routed ... ok"),
        "{text}"
    );
    assert!(
        text.contains("test debug events are dropped ... ok"),
        "{text}"
    );
    assert!(text.lines().any(|l| l == "2 passed, 0 failed"), "{text}");
}

#[test]
fn a_failing_test_exits_1_and_shows_the_events_it_saw() {
    let dir = tempfile::tempdir().unwrap();
    let (code, text) = tapio_test(
        dir.path(),
        r#"
[[tests]]
name = "warnings are critical"
[[tests.inputs]]
insert_at = "noise"
value = '{"id":"evt_warn","type":"process","source":"ebpf","impact":{"severity":"warning"}}'
[[tests.outputs]]
extract_from = "split._unmatched"
conditions = [{ field = "impact.severity", equals = "critical" }]
[[tests.outputs]]
extract_from = "split.critical"
count = 1

[[tests]]
name = "names a transform that is not there"
no_outputs_from = ["split.nope"]
[[tests.inputs]]
insert_at = "nosie"
value = '{"type":"process","source":"ebpf"}'
"#,
    );
    assert_eq!(code, Some(1), "{text}");
    assert!(
        text.contains("test warnings are critical ... FAILED"),
        "{text}"
    );
    assert!(
        text.contains("outputs[0] (extract_from \"split._unmatched\"): event 1 of 1 does not satisfy conditions[0]"),
        "{text}"
    );
    assert!(
        text.contains("\"id\":\"evt_warn\""),
        "the event is shown: {text}"
    );
    assert!(
        text.contains(
            "outputs[1] (extract_from \"split.critical\"): expected 1 events, 0 came out"
        ),
        "{text}"
    );
    assert!(
        text.contains(
            "insert_at \"nosie\" is not a transform of this config (transforms: noise, split)"
        ),
        "{text}"
    );
    assert!(text.contains("\"split\" has no output \"nope\""), "{text}");
    assert!(text.lines().any(|l| l == "0 passed, 2 failed"), "{text}");
}

#[test]
fn a_bad_test_table_is_a_config_error_with_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let (code, text) = tapio_test(
        dir.path(),
        r#"
[[tests]]
name = "bad"
[[tests.inputs]]
insert_at = "noise"
value = '{"type":"process","source":"ebpf","colour":"blue"}'
"#,
    );
    assert_eq!(code, Some(78), "{text}");
    assert!(text.contains("tested.toml:"), "{text}");
    assert!(text.contains("unknown field `colour`"), "{text}");
}
