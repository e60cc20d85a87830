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
            "script line 2, column 9: Unexpected ';'",
        ),
        ("source = 'eval(\"1\")'", "script line 1"),
        (
            "source = 'x'\noutputs = [\"errors\"]",
            "\"errors\" is taken",
        ),
        ("source = 'x'\noutputs = [\"a\", \"a\"]", "listed twice"),
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
