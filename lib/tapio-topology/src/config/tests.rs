//! Config loading: every kind of problem is reported with its line and key.

use super::*;

fn problems(text: &str) -> Vec<String> {
    load_str("t.toml", text, |name| {
        (name == "SET").then(|| "value".to_owned())
    })
    .diagnostics
    .iter()
    .map(ToString::to_string)
    .collect()
}

fn assert_has(problems: &[String], expected: &str) {
    assert!(
        problems.iter().any(|p| p == expected),
        "missing {expected:?} in {problems:#?}"
    );
}

#[test]
fn a_valid_config_loads_with_defaults() {
    let loaded = load_str(
        "t.toml",
        "[sources.in]\ntype = \"stdin\"\n\n[sinks.out]\ntype = \"console\"\ninputs = [\"in\"]\n",
        |_| None,
    );
    assert!(loaded.diagnostics.is_empty(), "{:?}", loaded.diagnostics);
    let config = loaded.config.unwrap();
    assert_eq!(config.data_dir, PathBuf::from("/var/lib/tapio"));
    assert_eq!(config.shutdown_grace_period, Duration::from_secs(60));
    assert_eq!(config.sinks[0].buffer, BufferOptions::default());
    assert!(!config.node_name.is_empty());
    assert_eq!(config.graph.edges.len(), 1);
}

#[test]
fn unknown_types_options_and_sections_name_their_line() {
    let found = problems(
        "[sources.a]\ntype = \"stdn\"\n\n[sources.b]\ntype = \"demo\"\nbogus = 1\n\n[sinks.c]\ntype = \"blackhole\"\ninputs = [\"b\"]\nprint_interval = \"soon\"\n\n[sink.d]\n",
    );
    assert_has(
        &found,
        "t.toml:2: sources.a.type: unknown source type \"stdn\"; did you mean \"stdin\"? known types: api, cni, demo, ebpf, file, grpc, kafka, kubernetes, otlp, stdin, systemd",
    );
    assert!(
        found
            .iter()
            .any(|p| p.starts_with("t.toml:6: sources.b.bogus: unknown field `bogus`")),
        "{found:#?}"
    );
    assert!(
        found
            .iter()
            .any(|p| p.starts_with("t.toml:11: sinks.c.print_interval: invalid duration \"soon\"")),
        "{found:#?}"
    );
    assert_has(
        &found,
        "t.toml:13: sink: unknown top-level option; did you mean \"sinks\"?",
    );
}

#[test]
fn missing_type_and_missing_required_options() {
    let found = problems("[sources.a]\nrate = 1\n\n[sinks.b]\ntype = \"file\"\ninputs = [\"a\"]\n");
    assert_has(
        &found,
        "t.toml:1: sources.a: missing `type` (one of: api, cni, demo, ebpf, file, grpc, kafka, kubernetes, otlp, stdin, systemd)",
    );
    assert!(
        found
            .iter()
            .any(|p| p.starts_with("t.toml:4: sinks.b: missing field `path`")),
        "{found:#?}"
    );
}

#[test]
fn buffers_are_checked() {
    let found = problems(
        "[sources.a]\ntype = \"demo\"\n\n[sinks.b]\ntype = \"blackhole\"\ninputs = [\"a\"]\nbuffer = { type = \"disk\", when_full = \"overflow\", max_size = \"1KiB\" }\n\n[sinks.c]\ntype = \"blackhole\"\ninputs = [\"a\"]\n[sinks.c.buffer]\nmax_events = 0\nwhen_full = \"overflow\"\noverflow = { when_full = \"overflow\" }\n\n[sinks.d]\ntype = \"blackhole\"\ninputs = [\"a\"]\nbuffer = { type = \"disk\", sync = \"batch\", max_size = \"1GiB\", when_full = \"drop_newest\" }\n",
    );
    assert_has(
        &found,
        "t.toml:7: sinks.b.buffer.when_full: \"overflow\" spills a memory buffer to disk; a disk buffer takes \"block\" or \"drop_newest\"",
    );
    assert_has(
        &found,
        "t.toml:7: sinks.b.buffer.max_size: must be at least 64KiB",
    );
    assert_has(
        &found,
        "t.toml:12: sinks.c.buffer.max_events: must be at least 1",
    );
    assert_has(
        &found,
        "t.toml:12: sinks.c.buffer.overflow.when_full: the overflow is the last buffer; use \"block\" or \"drop_newest\"",
    );
    assert_eq!(found.len(), 4, "sinks.d is valid: {found:#?}");
}

#[test]
fn sources_take_no_inputs_and_names_are_checked() {
    let found = problems(
        "[sources.a]\ntype = \"demo\"\ninputs = [\"x\"]\n\n[sources.\"b.c\"]\ntype = \"demo\"\n",
    );
    assert_has(
        &found,
        "t.toml:3: sources.a.inputs: sources read from the outside world and take no inputs",
    );
    assert!(
        found
            .iter()
            .any(|p| p.starts_with("t.toml:5: sources.b.c: component names may use only")),
        "{found:#?}"
    );
}

#[test]
fn transforms_of_any_type_join_the_graph_checks() {
    let found = problems(
        "[sources.a]\ntype = \"demo\"\n\n[transforms.t]\ntype = \"impact_assess\"\ninputs = [\"a\", \"u\"]\n\n[transforms.u]\ntype = \"x\"\ninputs = [\"t\"]\n\n[sinks.s]\ntype = \"blackhole\"\ninputs = [\"u\"]\n",
    );
    assert_has(
        &found,
        "t.toml:9: transforms.u.type: unknown transform type \"x\"; known types: anomaly, correlate, filter, impact_assess, rhai, route, semantic_enrich",
    );
    assert_has(&found, "t.toml:4: transforms.t.inputs: cycle: t -> u -> t");
}

#[test]
fn environment_is_interpolated_before_parsing() {
    let found = problems(
        "[sources.a]\ntype = \"demo\"\n\n[sinks.b]\ntype = \"file\"\ninputs = [\"a\"]\npath = \"/tmp/${SET}/${UNSET}\"\n",
    );
    assert_has(
        &found,
        "t.toml:7: environment variable ${UNSET} is not set (give a default with ${UNSET:-value})",
    );
    let loaded = load_str(
        "t.toml",
        "[sources.a]\ntype = \"demo\"\ncount = ${N:-5}\n\n[sinks.b]\ntype = \"blackhole\"\ninputs = [\"a\"]\n",
        |_| None,
    );
    assert!(loaded.config.is_some(), "{:?}", loaded.diagnostics);
}

#[test]
fn every_example_config_is_valid() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/examples");
    let mut seen = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let loaded = load_file(&path);
        let errors: Vec<_> = loaded
            .diagnostics
            .iter()
            .filter(|d| d.severity == Severity::Error)
            .collect();
        assert!(errors.is_empty(), "{errors:#?}");
        let config = loaded.config.unwrap();
        assert!(
            config.transforms.is_empty() || !config.tests.is_empty(),
            "{} has transforms but no [[tests]] (CI runs `tapio test` on every example)",
            path.display()
        );
        seen += 1;
    }
    assert!(seen >= 1);
}

#[test]
fn bad_rules_and_patterns_are_config_errors_on_their_line() {
    let found = problems(
        "[sources.a]\ntype = \"demo\"\n\n[transforms.e]\ntype = \"semantic_enrich\"\ninputs = [\"a\"]\n[[transforms.e.rules]]\nwhen = { \"kubernetes.reson\" = \"X\" }\nintent = \"i\"\n\n[transforms.c]\ntype = \"correlate\"\ninputs = [\"e\"]\n[[transforms.c.patterns]]\nname = \"mine\"\nroot_cause = \"x\"\nrecommended_action = \"y\"\nconfidence = 0.5\nsummary = \"s\"\nsteps = [ { label = \"a\", match = { \"process.nope\" = \"exec\" } } ]\n\n[sinks.s]\ntype = \"blackhole\"\ninputs = [\"c\"]\n",
    );
    assert!(
        found
            .iter()
            .any(|p| p.starts_with("t.toml:8: transforms.e") && p.contains("kubernetes.reson")),
        "{found:#?}"
    );
    assert!(
        found
            .iter()
            .any(|p| p.starts_with("t.toml:20: transforms.c") && p.contains("process.nope")),
        "{found:#?}"
    );
}

/// Each registry's listed names are the names serde accepts: every listed type is taken as a
/// known type (the only complaints are about its options), and a type outside the list is
/// refused with exactly the listed names.
#[test]
fn registry_names_are_the_names_serde_accepts() {
    for (section, kind, types) in [
        ("sources", "source", SourceConfig::TYPES),
        ("transforms", "transform", TransformConfig::TYPES),
        ("sinks", "sink", SinkConfig::TYPES),
    ] {
        for type_name in types {
            let found = problems(&format!("[{section}.x]\ntype = \"{type_name}\"\n"));
            assert!(
                !found
                    .iter()
                    .any(|p| p.contains("unknown") && p.contains("type")),
                "{type_name}: {found:#?}"
            );
        }
        let found = problems(&format!("[{section}.x]\ntype = \"no_such_type\"\n"));
        let listed = format!("known types: {}", types.join(", "));
        assert!(
            found
                .iter()
                .any(|p| p.contains(&format!("unknown {kind} type")) && p.ends_with(&listed)),
            "{found:#?}"
        );
        let serde_names = serde_variant_names(kind);
        assert_eq!(serde_names, *types, "{kind} registry");
    }
}

/// The variant names serde lists when refusing a type it does not know ("expected one of
/// `a`, `b`").
fn serde_variant_names(kind: &str) -> Vec<String> {
    let value = toml::Value::Table(toml::toml! { no_such_type = {} });
    let error = match kind {
        "source" => SourceConfig::deserialize(value).err(),
        "transform" => TransformConfig::deserialize(value).err(),
        _ => SinkConfig::deserialize(value).err(),
    }
    .expect("an unknown variant is refused")
    .to_string();
    let (_, expected) = error
        .split_once("expected")
        .expect("serde lists the variants");
    expected
        .split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_owned)
        .collect()
}

#[test]
fn every_transform_has_an_errors_output() {
    let found = problems(
        "[sources.in]\ntype = \"stdin\"\n\n[transforms.enrich]\ntype = \"semantic_enrich\"\ninputs = [\"in\"]\n\n[sinks.out]\ntype = \"blackhole\"\ninputs = [\"enrich\", \"enrich.errors\"]\n\n[sinks.bad]\ntype = \"blackhole\"\ninputs = [\"enrich.nope\"]\n",
    );
    assert_eq!(
        found,
        [
            "t.toml:14: sinks.bad.inputs: \"enrich\" has no output \"nope\"; its named outputs: errors"
        ]
    );
}

#[test]
fn route_outputs_come_from_its_routes() {
    let config = r#"[sources.in]
type = "stdin"

[transforms.split]
type = "route"
inputs = ["in"]
routes = { critical = { field = "impact.severity", equals = "critical" } }

[sinks.out]
type = "blackhole"
inputs = ["split.critical", "split._unmatched", "split.errors"]

[sinks.bad]
type = "blackhole"
inputs = ["split.network"]
"#;
    assert_eq!(
        problems(config),
        [
            "t.toml:15: sinks.bad.inputs: \"split\" has no output \"network\"; its named outputs: errors, critical, _unmatched"
        ]
    );
    let bad_options = config.replace("equals = \"critical\"", "equal = \"critical\"");
    let found = problems(&bad_options);
    assert!(
        found[0].starts_with("t.toml:7: transforms.split.routes"),
        "{found:?}"
    );
    assert!(
        !found.iter().any(|p| p.contains("\"_unmatched\"")),
        "the type's own output looked unknown: {found:?}"
    );
}

#[test]
fn a_script_error_names_the_config_line_it_is_on() {
    let head = "[sources.in]\ntype = \"stdin\"\n\n";
    let tail =
        "inputs = [\"in\"]\n\n[sinks.out]\ntype = \"blackhole\"\ninputs = [\"shape\", \"keep\"]\n";
    // Line 6 opens the script; TOML drops the newline after ''', so its line 3 is file line 9.
    let multi_line = format!(
        "{head}[transforms.shape]\ntype = \"rhai\"\nsource = '''\nlet a = 1;\nlet b = 2;\nlet c = ;\n'''\n{tail}"
    );
    assert_has(
        &problems(&multi_line),
        "t.toml:9: transforms.shape.source: 3:9: Unexpected ';'",
    );
    let same_line = format!(
        "{head}[transforms.shape]\ntype = \"rhai\"\nsource = '''let a = 1;\nlet b = evnt;'''\n{tail}"
    );
    assert_has(
        &problems(&same_line),
        "t.toml:7: transforms.shape.source: 2:9: Undefined variable: evnt",
    );
    let condition = format!(
        "{head}[transforms.keep]\ntype = \"filter\"\ncondition = 'event.source == '\n{tail}"
    );
    let found = problems(&condition);
    assert!(
        found
            .iter()
            .any(|p| p.starts_with("t.toml:6: transforms.keep.condition: 1:")),
        "{found:#?}"
    );
}

#[test]
fn a_script_file_is_found_next_to_the_config() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("scripts")).unwrap();
    std::fs::write(dir.path().join("scripts/ok.rhai"), "let a = 1;\n").unwrap();
    std::fs::write(
        dir.path().join("scripts/bad.rhai"),
        "let a = 1;\nlet b = ;\n",
    )
    .unwrap();
    let config = |script: &str| {
        format!(
            "[sources.in]\ntype = \"stdin\"\n\n[transforms.shape]\ntype = \"rhai\"\ninputs = [\"in\"]\nfile = \"scripts/{script}\"\n\n[sinks.out]\ntype = \"blackhole\"\ninputs = [\"shape\"]\n"
        )
    };
    let path = dir.path().join("tapio.toml");
    std::fs::write(&path, config("ok.rhai")).unwrap();
    let loaded = load_file(&path);
    assert!(loaded.diagnostics.is_empty(), "{:?}", loaded.diagnostics);
    std::fs::write(&path, config("bad.rhai")).unwrap();
    let found: Vec<String> = load_file(&path)
        .diagnostics
        .iter()
        .map(ToString::to_string)
        .collect();
    let expected = format!(
        "{}:7: transforms.shape.file: {}:2:9: Unexpected ';'",
        path.display(),
        dir.path().join("scripts/bad.rhai").display()
    );
    assert_has(&found, &expected);
}

#[test]
fn the_api_serves_one_store_and_one_intake() {
    let components = "[sources.in]\ntype = \"api\"\n\n[sources.more]\ntype = \"api\"\n\n[sinks.a]\ntype = \"api_store\"\ninputs = [\"in\", \"more\"]\n\n[sinks.b]\ntype = \"api_store\"\ninputs = [\"in\"]\n";
    let found = problems(&format!("[api]\naddress = \"127.0.0.1:1\"\n\n{components}"));
    assert_has(
        &found,
        "t.toml:7: sources.more: only one `api` source is allowed (the API serves one), and sources.in on line 4 is one already",
    );
    assert_has(
        &found,
        "t.toml:14: sinks.b: only one `api_store` sink is allowed (the API serves one), and sinks.a on line 10 is one already",
    );
    assert!(!found.iter().any(|p| p.contains("warning")), "{found:#?}");
    let without_api = problems(
        "[sources.in]\ntype = \"api\"\n\n[sinks.a]\ntype = \"api_store\"\ninputs = [\"in\"]\n",
    );
    assert_has(
        &without_api,
        "t.toml:4: warning: sinks.a: the config has no `[api] address`, so no API call reaches this component",
    );
    assert_eq!(without_api.len(), 2, "{without_api:#?}");
}
