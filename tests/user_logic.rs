//! End-to-end runs of the transforms users program in `tapio.toml` (`filter`, `route`): the
//! real binary over the reproducible demo stream, each output checked against what an
//! unfiltered copy of the same stream says it must hold.

mod common;

use std::path::Path;

use common::*;
use serde_json::Value;

/// The demo stream through `impact_assess` (so events have a severity), with an unfiltered
/// copy of it written to `all` and `rest` (TOML) added.
fn assessed_demo(all: &Path, rest: &str) -> String {
    format!(
        "{}\n[transforms.impact]\ntype = \"impact_assess\"\ninputs = [\"demo\"]\n\n{}\n{rest}",
        reproducible_demo(3000),
        copy_sink("impact", all)
    )
}

fn file_sink(name: &str, input: &str, path: &Path) -> String {
    format!(
        "[sinks.{name}]\ntype = \"file\"\ninputs = [\"{input}\"]\npath = \"{}\"\n",
        path.display()
    )
}

fn events(path: &Path) -> Vec<Value> {
    parse_ndjson(&std::fs::read_to_string(path).unwrap_or_default())
}

fn ids(events: &[&Value]) -> Vec<String> {
    events
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_owned())
        .collect()
}

fn severity(event: &Value) -> &str {
    event["impact"]["severity"].as_str().unwrap_or("")
}

#[test]
fn filter_keeps_the_matching_events_and_counts_the_rest_as_filtered() {
    let dir = tempfile::tempdir().unwrap();
    let (all, kept) = (
        dir.path().join("all.ndjson"),
        dir.path().join("kept.ndjson"),
    );
    let kept_by_script = dir.path().join("kept_by_script.ndjson");
    let config = assessed_demo(
        &all,
        &format!(
            "[transforms.severe]\ntype = \"filter\"\ninputs = [\"impact\"]\ncondition = {{ field = \"impact.severity\", in = [\"warning\", \"error\", \"critical\"] }}\n\n[transforms.severe_rhai]\ntype = \"filter\"\ninputs = [\"impact\"]\ncondition = 'event.impact.severity in [\"warning\", \"error\", \"critical\"]'\n\n{}\n{}",
            file_sink("out", "severe", &kept),
            file_sink("out_rhai", "severe_rhai", &kept_by_script)
        ),
    );
    let output = run_with_stdin(&write_config(dir.path(), "f.toml", &config), b"");
    assert_success(&output);
    let all = events(&all);
    let expected: Vec<&Value> = all
        .iter()
        .filter(|e| ["warning", "error", "critical"].contains(&severity(e)))
        .collect();
    assert!(
        !expected.is_empty() && expected.len() < all.len(),
        "the demo stream no longer exercises the filter"
    );
    assert_eq!(
        ids(&events(&kept).iter().collect::<Vec<_>>()),
        ids(&expected)
    );
    let counts = summary_row(&output.stderr, "severe");
    assert_eq!(counts.events_out, expected.len() as u64);
    assert_eq!(counts.dropped, (all.len() - expected.len()) as u64);
    assert_eq!(counts.errors, 0, "filtered events are not errors");
}

#[test]
fn route_sends_each_event_to_every_route_it_matches() {
    let dir = tempfile::tempdir().unwrap();
    let path = |name: &str| dir.path().join(format!("{name}.ndjson"));
    let config = assessed_demo(
        &path("all"),
        &format!(
            r#"[transforms.split]
type = "route"
inputs = ["impact"]

[transforms.split.routes]
severe = {{ field = "impact.severity", in = ["error", "critical"] }}
network = {{ field = "type", equals = "network" }}

{}
{}
{}"#,
            file_sink("severe", "split.severe", &path("severe")),
            file_sink("network", "split.network", &path("network")),
            file_sink("rest", "split._unmatched", &path("rest")),
        ),
    );
    let output = run_with_stdin(&write_config(dir.path(), "r.toml", &config), b"");
    assert_success(&output);
    let all = events(&path("all"));
    let is_severe = |e: &&Value| ["error", "critical"].contains(&severity(e));
    let is_network = |e: &&Value| e["type"] == "network";
    let severe: Vec<&Value> = all.iter().filter(is_severe).collect();
    let network: Vec<&Value> = all.iter().filter(is_network).collect();
    let rest: Vec<&Value> = all
        .iter()
        .filter(|e| !is_severe(e) && !is_network(e))
        .collect();
    assert!(
        all.iter().any(|e| is_severe(&e) && is_network(&e)),
        "no event matches both routes; the test would not see sharing"
    );
    for (name, expected) in [("severe", severe), ("network", network), ("rest", rest)] {
        assert!(!expected.is_empty(), "{name} is empty in the demo stream");
        let got = events(&path(name));
        assert_eq!(
            ids(&got.iter().collect::<Vec<_>>()),
            ids(&expected),
            "{name}"
        );
    }
}

#[test]
fn an_unknown_route_is_a_config_error_with_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let config = format!(
        "{}\n[transforms.split]\ntype = \"route\"\ninputs = [\"demo\"]\nroutes = {{ severe = {{ field = \"impact.severity\", equals = \"critical\" }} }}\n\n[sinks.out]\ntype = \"blackhole\"\ninputs = [\"split.sever\"]\n",
        reproducible_demo(1)
    );
    let path = write_config(dir.path(), "bad.toml", &config);
    let output = validate(&path);
    assert_eq!(output.status.code(), Some(78));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(&format!(
            "{}:14: sinks.out.inputs: \"split\" has no output \"sever\"",
            path.display()
        )),
        "{stderr}"
    );
}

#[test]
fn rhai_shapes_events_and_sends_script_failures_to_its_errors_output() {
    let dir = tempfile::tempdir().unwrap();
    let path = |name: &str| dir.path().join(format!("{name}.ndjson"));
    let config = assessed_demo(
        &path("all"),
        &format!(
            r#"[transforms.script]
type = "rhai"
inputs = ["impact"]
outputs = ["severe"]
source = '''
if event.type == "network" {{
    event.process.pid = "not a pid";
}}
if event.impact.severity == "debug" {{ drop(); }}
event.semantic.tags.push("seen");
if event.impact.severity == "critical" {{ route("severe"); }}
'''

{}
{}
{}"#,
            file_sink("kept", "script", &path("kept")),
            file_sink("severe", "script.severe", &path("severe")),
            file_sink("failed", "script.errors", &path("failed")),
        ),
    );
    let output = run_with_stdin(&write_config(dir.path(), "s.toml", &config), b"");
    assert_success(&output);
    let all = events(&path("all"));
    let network: Vec<&Value> = all.iter().filter(|e| e["type"] == "network").collect();
    let others = |keep: &dyn Fn(&str) -> bool| -> Vec<&Value> {
        all.iter()
            .filter(|e| e["type"] != "network" && keep(severity(e)))
            .collect()
    };
    let critical = others(&|s| s == "critical");
    let kept = others(&|s| s != "critical" && s != "debug");
    for (name, expected) in [
        ("network", &network),
        ("critical", &critical),
        ("kept", &kept),
    ] {
        assert!(!expected.is_empty(), "no {name} events in the demo stream");
    }
    let failed = events(&path("failed"));
    assert_eq!(ids(&failed.iter().collect::<Vec<_>>()), ids(&network));
    for event in &failed {
        let error = event["application"]["error"].as_str().unwrap();
        assert!(
            error.contains("process.pid") && error.contains("script line 2"),
            "{error}"
        );
        assert_eq!(event["application"]["error_component"], "script");
    }
    for (name, expected) in [("severe", &critical), ("kept", &kept)] {
        let got = events(&path(name));
        assert_eq!(
            ids(&got.iter().collect::<Vec<_>>()),
            ids(expected),
            "{name}"
        );
        assert!(
            got.iter().all(|e| e["semantic"]["tags"]
                .as_array()
                .unwrap()
                .contains(&"seen".into())),
            "{name}: an event missed its tag"
        );
    }
    let counts = summary_row(&output.stderr, "script");
    assert_eq!(counts.errors, network.len() as u64);
    assert_eq!(
        counts.dropped,
        others(&|s| s == "debug").len() as u64,
        "drop() is counted as dropped"
    );
}

#[test]
fn a_script_syntax_error_is_a_config_error_with_the_script_position() {
    let dir = tempfile::tempdir().unwrap();
    let config = format!(
        "{}\n[transforms.script]\ntype = \"rhai\"\ninputs = [\"demo\"]\nsource = '''\nlet a = 1;\nlet b = ;\n'''\n\n[sinks.out]\ntype = \"blackhole\"\ninputs = [\"script\"]\n",
        reproducible_demo(1)
    );
    let path = write_config(dir.path(), "bad.toml", &config);
    let output = validate(&path);
    assert_eq!(output.status.code(), Some(78));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(&format!(
            "{}:12: transforms.script.source: 2:9: Unexpected ';'",
            path.display()
        )),
        "{stderr}"
    );
}

/// The recipes of the Rhai page are whole configs with their own `[[tests]]`: each must pass
/// `tapio test`, so the page cannot promise what the transform does not do.
#[test]
fn the_rhai_pages_recipes_pass_their_own_tests() {
    let page = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("website/src/rhai.md"),
    )
    .unwrap();
    let recipes: Vec<&str> = page
        .split("```toml\n")
        .skip(1)
        .filter_map(|block| block.split_once("\n```").map(|(toml, _)| toml))
        .filter(|toml| toml.contains("[[tests]]"))
        .collect();
    assert!(recipes.len() >= 5, "found {} recipes", recipes.len());
    let dir = tempfile::tempdir().unwrap();
    for (index, recipe) in recipes.iter().enumerate() {
        let path = write_config(dir.path(), &format!("recipe-{index}.toml"), recipe);
        let output = tapio().arg("test").arg(&path).output().unwrap();
        assert_eq!(
            output.status.code(),
            Some(0),
            "recipe {index}:\n{recipe}\n{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
}
