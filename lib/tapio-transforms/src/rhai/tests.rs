use super::*;
use crate::util::testing::{Collected, Rng, random_batches, run};
use tapio_event::{EventBatch, EventType, ProcessContext, Timestamp};

fn config(text: &str) -> Result<RhaiConfig, String> {
    toml::from_str::<RhaiConfig>(text).map_err(|e| e.to_string())
}

fn script(source: &str) -> RhaiConfig {
    config(&format!("source = '''{source}'''")).unwrap()
}

fn build(config: &RhaiConfig) -> Box<dyn Transform> {
    let cx = BuildContext {
        name: "script".into(),
        data_dir: std::env::temp_dir(),
        node_name: "n".into(),
    };
    config.build(&cx).unwrap()
}

fn process_event(source: &str, pid: u32, comm: &str) -> UnifiedEvent {
    let mut event = UnifiedEvent::new(EventType::Process, source, Timestamp(1));
    event.process = Some(Box::new(ProcessContext {
        pid: Some(pid),
        comm: Some(comm.into()),
        ..Default::default()
    }));
    event
}

async fn run_script(config: &RhaiConfig, read: &[&str], events: Vec<UnifiedEvent>) -> Collected {
    run(build(config), read, vec![EventBatch::new(events)]).await
}

fn events_on<'a>(got: &'a Collected, output: &str) -> Vec<&'a UnifiedEvent> {
    got.outputs[output]
        .iter()
        .flat_map(|b| b.events())
        .collect()
}

#[tokio::test]
async fn the_event_reads_and_writes_as_a_natural_object() {
    let config = script(
        r#"
        if event.process.pid == 1001 && event.process.comm == "nginx" {
            event.semantic.tags.push("web");
            event.application.user = "alice";
            event.process.comm = "nginx-master";
        }
        if event.kubernetes.reason == () && event.kubernetes?.reason == () {
            event.source = event.source + "-checked";
        }
        "#,
    );
    let got = run_script(
        &config,
        &[],
        vec![
            process_event("a", 1001, "nginx"),
            process_event("b", 1002, "nginx"),
        ],
    )
    .await;
    let out = events_on(&got, "");
    assert_eq!(out.len(), 2);
    let web = out[0];
    assert_eq!(web.source, "a-checked");
    assert_eq!(web.semantic.as_ref().unwrap().tags, ["web"]);
    assert_eq!(web.application.as_ref().unwrap()["user"], "alice");
    assert_eq!(
        web.process.as_ref().unwrap().comm.as_deref(),
        Some("nginx-master")
    );
    assert_eq!(
        web.process.as_ref().unwrap().pid,
        Some(1001),
        "an untouched field changed"
    );
    let other = out[1];
    assert_eq!(other.source, "b-checked");
    assert!(other.semantic.is_none(), "reading semantic created it");
    assert!(other.application.is_none() && other.kubernetes.is_none());
}

#[tokio::test]
async fn a_random_stream_is_tagged_exactly_where_the_script_says() {
    let config = script(
        r#"
        let comm = event.process.comm;
        let severity = event.impact?.severity;
        if comm == "nginx" || severity == "critical" { event.semantic.tags.push("look") }
        "#,
    );
    let mut rng = Rng::new(11);
    let batches = random_batches(&mut rng, 500);
    let expected: Vec<bool> = batches
        .iter()
        .flat_map(|b| b.events())
        .map(|e| {
            e.process.as_ref().unwrap().comm.as_deref() == Some("nginx")
                || e.impact.as_ref().and_then(|i| i.severity)
                    == Some(tapio_event::Severity::Critical)
        })
        .collect();
    let got = run(build(&config), &[], batches).await;
    let tagged: Vec<bool> = events_on(&got, "")
        .iter()
        .map(|e| e.semantic.as_ref().is_some_and(|s| s.tags == ["look"]))
        .collect();
    assert_eq!(tagged, expected);
}

#[tokio::test]
async fn failures_go_to_errors_with_the_field_and_position() {
    let config = script(
        "if event.source == \"bad\" {\n  event.process.pid = \"many\";\n}\nif event.source == \"loop\" { loop {} }",
    );
    let got = run_script(
        &config,
        &[ERRORS_OUTPUT],
        vec![
            process_event("bad", 1, "x"),
            process_event("ok", 1, "x"),
            process_event("loop", 1, "x"),
        ],
    )
    .await;
    assert_eq!(
        events_on(&got, "")
            .iter()
            .map(|e| e.source.as_str())
            .collect::<Vec<_>>(),
        ["ok"]
    );
    let errors = events_on(&got, ERRORS_OUTPUT);
    assert_eq!(errors.len(), 2);
    let message = |i: usize| errors[i].application.as_ref().unwrap()["error"].to_string();
    assert!(message(0).contains("process.pid"), "{}", message(0));
    assert!(message(0).contains("script line 2"), "{}", message(0));
    assert!(message(1).contains("Too many operations"), "{}", message(1));
    assert_eq!(
        errors[0].application.as_ref().unwrap()["error_component"],
        "script"
    );
    assert_eq!(got.metrics.errors.get(SCRIPT_ERROR), Some(&2));
}

#[tokio::test]
async fn drop_and_route_choose_where_events_go() {
    let config = config(
        r#"
        outputs = ["web", "audit"]
        source = '''
            if event.process.comm == "kworker" { drop(); }
            if event.process.comm == "nginx" { route("web"); route("audit"); }
            if event.process.comm == "sshd" { route("audit"); }
            event.source = "after";
        '''
        "#,
    )
    .unwrap();
    assert_eq!(config.named_outputs(), ["web", "audit"]);
    let got = run_script(
        &config,
        &["web", "audit"],
        vec![
            process_event("1", 1, "kworker"),
            process_event("2", 2, "nginx"),
            process_event("3", 3, "sshd"),
            process_event("4", 4, "bash"),
        ],
    )
    .await;
    let pids = |output: &str| -> Vec<u32> {
        events_on(&got, output)
            .iter()
            .map(|e| e.process.as_ref().unwrap().pid.unwrap())
            .collect()
    };
    assert_eq!(pids(""), [4]);
    assert_eq!(pids("web"), [2]);
    assert_eq!(pids("audit"), [2, 3]);
    assert_eq!(got.metrics.dropped.get(DROPPED_BY_SCRIPT), Some(&1));
    assert!(
        events_on(&got, "audit").iter().all(|e| e.source == "after"),
        "route() ended the script"
    );
}

#[test]
fn bad_scripts_are_config_errors_with_their_position() {
    for (text, expected) in [
        (
            "source = '''\nlet a = 1;\nlet x = ;'''",
            "script 2:9: Unexpected ';'",
        ),
        ("source = 'eval(\"1\")'", "script 1:"),
        (
            "source = 'let x = 1;'\noutputs = [\"errors\"]",
            "\"errors\" is taken",
        ),
        (
            "source = 'let x = 1;'\noutputs = [\"a\", \"a\"]",
            "listed twice",
        ),
        (
            "source = 'if evnt.source == \"a\" { drop() }'",
            "script 1:4: Undefined variable: evnt",
        ),
        ("source = 'let a = 1;'\nfile = '/dev/null'", "not both"),
        ("outputs = []", "missing the script"),
        ("source = 'let a = 1;'\nconcurrency = 0", "at least 1"),
    ] {
        let error = config(text).unwrap_err();
        assert!(error.contains(expected), "{text}: {error}");
    }
}

#[tokio::test]
async fn routing_to_an_undeclared_output_fails_the_event() {
    let got = run_script(
        &script("route(\"nowhere\")"),
        &[ERRORS_OUTPUT],
        vec![process_event("1", 1, "x")],
    )
    .await;
    let errors = events_on(&got, ERRORS_OUTPUT);
    assert!(
        errors[0].application.as_ref().unwrap()["error"]
            .to_string()
            .contains("no such output")
    );
}

#[tokio::test]
async fn the_documented_recipes_do_what_they_say() {
    let mut event = process_event("cni", 1, "x");
    event.process.as_mut().unwrap().filename = Some("/secret".into());
    let got = run_script(
        &script("event.process.filename = ();"),
        &[],
        vec![event.clone()],
    )
    .await;
    assert_eq!(
        events_on(&got, "")[0].process.as_ref().unwrap().filename,
        None
    );
    let source = r#"if event.source == "cni" { event.source = "network-plugin"; }"#;
    let got = run_script(&script(source), &[], vec![event.clone()]).await;
    assert_eq!(events_on(&got, "")[0].source, "network-plugin");
    let mut payments = event.clone();
    let mut entity = tapio_event::Entity::new(tapio_event::EntityType::Pod, "uid");
    entity.attributes.insert("team".into(), "payments".into());
    payments.entity = Some(Box::new(entity));
    let source = r#"if event.entity.attributes?.team != "payments" { drop(); }"#;
    let got = run_script(&script(source), &[], vec![event, payments]).await;
    assert_eq!(events_on(&got, "").len(), 1);
    assert!(events_on(&got, "")[0].entity.is_some());
}

#[test]
fn a_script_file_is_read_relative_to_the_config_and_its_errors_name_it() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("scripts")).unwrap();
    std::fs::write(
        dir.path().join("scripts/tag.rhai"),
        "// tags web servers\nif event.process.comm == \"nginx\" {\n    event.semantic.tags.push(\"web\");\n}\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("scripts/bad.rhai"),
        "let a = 1;\nlet b = ;\n",
    )
    .unwrap();
    let parse = |text: &str| tapio_event::config_dir::with_config_dir(dir.path(), || config(text));
    assert!(parse("file = 'scripts/tag.rhai'").is_ok());
    let bad = dir.path().join("scripts/bad.rhai");
    let error = parse("file = 'scripts/bad.rhai'").unwrap_err();
    assert!(
        error.contains(&format!("{}:2:9: Unexpected ';'", bad.display())),
        "{error}"
    );
    let error = parse("file = 'scripts/missing.rhai'").unwrap_err();
    assert!(
        error.contains("cannot read") && error.contains("missing.rhai"),
        "{error}"
    );
    assert!(
        config("file = 'scripts/tag.rhai'").is_err(),
        "outside that config's directory the relative path must not resolve"
    );
}

#[tokio::test]
async fn a_script_file_runs_like_an_inline_one() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("tag.rhai"),
        "if event.process.comm == \"nginx\" { event.semantic.tags.push(\"web\"); }",
    )
    .unwrap();
    let config =
        tapio_event::config_dir::with_config_dir(dir.path(), || config("file = 'tag.rhai'"))
            .unwrap();
    let got = run_script(
        &config,
        &[],
        vec![process_event("a", 1, "nginx"), process_event("b", 2, "sh")],
    )
    .await;
    let out = events_on(&got, "");
    assert_eq!(out[0].semantic.as_ref().unwrap().tags, ["web"]);
    assert!(out[1].semantic.is_none());
}

/// Runs `source` on one process event (pid 7, comm nginx) with the key `pii` configured, and
/// gives back `application.out`, which the script sets to what it computed.
async fn computed(source: &str) -> serde_json::Value {
    let config = config(&format!(
        "source = '''{source}'''\nkeys = {{ pii = \"s3cret\" }}"
    ))
    .unwrap();
    let got = run_script(
        &config,
        &[ERRORS_OUTPUT],
        vec![process_event("a", 7, "nginx")],
    )
    .await;
    let failed = events_on(&got, ERRORS_OUTPUT);
    assert!(failed.is_empty(), "{source}: {:?}", failed[0].application);
    events_on(&got, "")[0].application.as_ref().unwrap()["out"].clone()
}

/// Runs `source` on one process event and gives back the error it failed with.
async fn failure(source: &str) -> String {
    let got = run_script(
        &script(source),
        &[ERRORS_OUTPUT],
        vec![process_event("a", 7, "x")],
    )
    .await;
    let failed = events_on(&got, ERRORS_OUTPUT);
    assert_eq!(failed.len(), 1, "{source} did not fail");
    failed[0].application.as_ref().unwrap()["error"].to_string()
}

#[tokio::test]
async fn the_functions_compute_what_they_document() {
    use serde_json::json;
    let cases: &[(&str, serde_json::Value)] = &[
        (
            r#"parse_json("{\"a\": [1, 2.5, true, null]}")"#,
            json!({"a": [1, 2.5, true, null]}),
        ),
        (r#"to_json(#{ b: [1, "x"] })"#, json!(r#"{"b":[1,"x"]}"#)),
        (r#"parse_duration("1m30s")"#, json!(90_000_000_000_i64)),
        (r#"matches(event.process.comm, "^ng.nx$")"#, json!(true)),
        (r#"matches("sh", "^ng")"#, json!(false)),
        (
            r#"capture("pod-api-7d9", "^pod-(?<app>[a-z]+)-(\\w+)$")"#,
            json!({"0": "pod-api-7d9", "1": "api", "app": "api", "2": "7d9"}),
        ),
        (r#"capture("x", "^y")"#, json!(null)),
        (
            r#"cidr_contains("10.244.0.0/16", "10.244.3.9")"#,
            json!(true),
        ),
        (
            r#"sha256("abc")"#,
            json!("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"),
        ),
        (
            r#"hmac_sha256("pii", "alice") == hmac_sha256("pii", "alice")"#,
            json!(true),
        ),
        (
            r#"hmac_sha256("pii", "alice") != sha256("alice")"#,
            json!(true),
        ),
        (r#"hmac_sha256("pii", "alice").len()"#, json!(64)),
        (
            r#"unix_nanos("1970-01-01T00:00:01.000000002Z")"#,
            json!(1_000_000_002_i64),
        ),
        (
            r#"unix_nanos(now()) > unix_nanos("2026-01-01T00:00:00Z")"#,
            json!(true),
        ),
        (
            r#"{ log("info", "seen " + event.process.pid); 1 }"#,
            json!(1),
        ),
    ];
    for (expression, expected) in cases {
        let got = computed(&format!("event.application.out = {expression};")).await;
        assert_eq!(&got, expected, "{expression}");
    }
    // RFC 4231's second test case, with its key from the config.
    let config = config(
        "source = 'event.application.out = hmac_sha256(\"jefe\", \"what do ya want for nothing?\");'\nkeys = { jefe = \"Jefe\" }",
    )
    .unwrap();
    let got = run_script(&config, &[], vec![process_event("a", 1, "x")]).await;
    assert_eq!(
        events_on(&got, "")[0].application.as_ref().unwrap()["out"],
        "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
    );
    assert!(
        !format!("{config:?}").contains("Jefe"),
        "a key reached Debug"
    );
}

#[tokio::test]
async fn misused_functions_fail_the_event_with_a_reason() {
    for (source, expected) in [
        (r#"hmac_sha256("nope", "x")"#, "no such key"),
        (r#"matches("x", "(")"#, "bad regular expression"),
        (
            r#"cidr_contains("10.0.0.0/40", "10.0.0.1")"#,
            "bad prefix length",
        ),
        (r#"parse_json("{")"#, "parse_json"),
        (r#"parse_duration("soon")"#, "invalid duration"),
        (r#"log("loud", "x")"#, "the level is one of"),
        (r#"emit(#{ type: "nonsense" })"#, "emit:"),
        (r#"emit(#{ application: #{ a: 1 }, extra: 1 })"#, "emit:"),
    ] {
        let error = failure(source).await;
        assert!(error.contains(expected), "{source}: {error}");
    }
}

#[tokio::test]
async fn emitted_events_follow_their_trigger_with_its_time_and_source() {
    let source = r#"
        emit(#{ application: #{ note: "first of " + event.process.pid } });
        emit(#{ type: "process", source: "rhai", process: #{ pid: 9, comm: "child" } });
        if event.process.pid == 2 { drop(); }
    "#;
    let numbered = |pid: u32, at: i64| {
        let mut event = process_event("agent", pid, "a");
        event.id = format!("evt_{pid}");
        event.timestamp = tapio_event::Timestamp(at);
        event
    };
    let got = run_script(&script(source), &[], vec![numbered(1, 1), numbered(2, 5)]).await;
    let out = events_on(&got, "");
    let ids: Vec<&str> = out.iter().map(|e| e.id.as_str()).collect();
    assert_eq!(out.len(), 5, "{ids:?}");
    assert_eq!(out[0].id, "evt_1");
    let note = out[1];
    assert_eq!(note.kind, EventType::Application);
    assert_eq!(note.source, "agent");
    assert_eq!(note.timestamp, tapio_event::Timestamp(1));
    assert_eq!(note.application.as_ref().unwrap()["note"], "first of 1");
    assert!(!note.id.is_empty() && note.id != "evt_1");
    let child = out[2];
    assert_eq!(
        (child.kind, child.source.as_str()),
        (EventType::Process, "rhai")
    );
    assert_eq!(child.process.as_ref().unwrap().pid, Some(9));
    assert_ne!(note.id, child.id);
    // A dropped trigger's emitted events still go out, with its time.
    assert_eq!(out[3].timestamp, tapio_event::Timestamp(5));
    assert_eq!(out[4].source, "rhai");
    assert_eq!(got.metrics.dropped.get(DROPPED_BY_SCRIPT), Some(&1));
    // The same input gives the same ids.
    let again = run_script(&script(source), &[], vec![numbered(1, 1)]).await;
    assert_eq!(events_on(&again, "")[1].id, note.id);
}

#[tokio::test]
async fn state_carries_across_events_in_order_and_is_bounded() {
    let config = config(
        r#"source = '''
let key = event.process.comm;
let seen = state[key] ?? 0;
state[key] = seen + 1;
event.application.seen = state[key];
'''
max_state_entries = 3"#,
    )
    .unwrap();
    assert!(config.uses_state);
    let events: Vec<UnifiedEvent> = ["a", "b", "a", "c", "a", "d", "b"]
        .iter()
        .enumerate()
        .map(|(pid, comm)| process_event("s", pid as u32, comm))
        .collect();
    // Several batches, so that order across batches counts too.
    let batches = events
        .chunks(2)
        .map(|c| EventBatch::new(c.to_vec()))
        .collect();
    let got = run(build(&config), &[ERRORS_OUTPUT], batches).await;
    let seen: Vec<(String, i64)> = events_on(&got, "")
        .iter()
        .map(|e| {
            let count = e.application.as_ref().unwrap()["seen"].as_i64().unwrap();
            (e.process.as_ref().unwrap().comm.clone().unwrap(), count)
        })
        .collect();
    let expected: Vec<(String, i64)> = [("a", 1), ("b", 1), ("a", 2), ("c", 1), ("a", 3), ("b", 2)]
        .iter()
        .map(|(comm, n)| (comm.to_string(), *n))
        .collect();
    assert_eq!(seen, expected);
    let full = events_on(&got, ERRORS_OUTPUT);
    assert_eq!(full.len(), 1, "a fourth key must not fit");
    assert_eq!(full[0].process.as_ref().unwrap().comm.as_deref(), Some("d"));
    let error = full[0].application.as_ref().unwrap()["error"].to_string();
    assert!(error.contains("state is full"), "{error}");
}

#[tokio::test]
async fn parallel_batches_leave_in_order() {
    let config = config(
        "source = '''if event.process.pid % 3 == 0 { drop(); } event.semantic.tags.push(`p${event.process.pid}`);'''\nconcurrency = 4",
    )
    .unwrap();
    assert!(!config.uses_state);
    let mut rng = Rng::new(5);
    let batches = random_batches(&mut rng, 2_000);
    let expected: Vec<String> = batches
        .iter()
        .flat_map(|b| b.events())
        .filter_map(|e| e.process.as_ref().unwrap().pid)
        .filter(|pid| pid % 3 != 0)
        .map(|pid| format!("p{pid}"))
        .collect();
    let got = run(build(&config), &[], batches).await;
    let tags: Vec<String> = events_on(&got, "")
        .iter()
        .map(|e| e.semantic.as_ref().unwrap().tags[0].clone())
        .collect();
    assert_eq!(tags, expected);
}
