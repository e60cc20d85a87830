//! The parts of the `systemd` source that need no bus: options, object paths, which readings
//! are transitions and what their events say, journal output. `tests/systemd.rs` runs the
//! source against a real user manager.

use tapio_event::id::IdGenerator;
use tapio_event::{ComponentConfig, EntityType, ErrorKind};

use super::units::{Reading, UnitFilter, Units, path_of_unit, unit_of_path};
use super::{SystemdConfig, journal, unit_event};
use crate::util::testing::{build_context, context};

const CONTAINER: &str = "3f1c2b7e9d8a4c6b5e0f1a2b3c4d5e6f7a8b9c0d1e2f3a4b5c6d7e8f9a0b1c2d";
const POD_UID: &str = "1b4e28ba-2fa1-11d2-883f-0016d3cca427";

fn config(text: &str) -> SystemdConfig {
    toml::from_str(text).unwrap()
}

fn build_error(text: &str) -> String {
    match config(text).build(&build_context("units")) {
        Ok(_) => panic!("{text:?} built"),
        Err(error) => error.message().to_owned(),
    }
}

fn state(active: &str, sub: &str) -> Reading {
    Reading {
        active_state: Some(active.into()),
        sub_state: Some(sub.into()),
        ..Reading::default()
    }
}

fn default_units() -> Units {
    Units::new(default_filter())
}

/// The default globs, excluding `noisy-*.service`.
fn default_filter() -> UnitFilter {
    let SystemdConfig { units, .. } = config("");
    let patterns = |globs: &[String]| {
        globs
            .iter()
            .map(|g| glob::Pattern::new(g).unwrap())
            .collect()
    };
    UnitFilter {
        include: patterns(&units.include),
        exclude: patterns(&["noisy-*.service".to_owned()]),
        report_failed: true,
    }
}

fn scope_name() -> String {
    format!("cri-containerd-{CONTAINER}.scope")
}

fn pod_slice() -> String {
    format!("kubepods-burstable-pod{}.slice", POD_UID.replace('-', "_"))
}

#[test]
fn options_are_checked_without_connecting() {
    // An address nobody listens on builds: `tapio validate` never connects.
    let nowhere = config("bus = \"unix:path=/nonexistent/bus\"");
    assert!(nowhere.build(&build_context("units")).is_ok());
    assert!(build_error("bus = \"\"").contains("`bus` is empty"));
    assert!(build_error("bus = \"sytem\"").contains("neither \"system\", \"user\""));
    let bad_glob = build_error("units.include = [\"kubelet.service\", \"[oops\"]");
    assert!(bad_glob.contains("`units.include[1]`"), "{bad_glob}");
    assert!(build_error("journal_lines = 0").contains("`journal_lines` must be 1 to 1000"));
    assert!(build_error("journal_directory = \"\"").contains("`journal_directory` is empty"));
    assert!(
        build_error("units.include = []\nreport_failed = false").contains("would report nothing")
    );
    let unknown = toml::from_str::<SystemdConfig>("unit = []").unwrap_err();
    assert!(unknown.to_string().contains("unknown field `unit`"));
}

#[test]
fn defaults_are_a_kubernetes_nodes_units() {
    let defaults = config("");
    assert_eq!(defaults.bus, "system");
    assert!(defaults.required && defaults.report_failed && !defaults.journal);
    assert_eq!(defaults.journal_lines, 20);
    let units = default_filter();
    for name in [
        scope_name().as_str(),
        &pod_slice(),
        "kubepods.slice",
        "crio-abc.scope",
        "docker-abc.scope",
        "kubelet.service",
        "containerd.service",
        "crio.service",
    ] {
        assert!(units.watches(name), "{name}");
    }
    for name in ["ssh.service", "user.slice", "session-1.scope"] {
        assert!(!units.watches(name), "{name}");
    }
}

#[test]
fn object_paths_are_systemds_escaped_labels() {
    let scope = scope_name();
    let path = path_of_unit(&scope);
    assert_eq!(
        path,
        format!("/org/freedesktop/systemd1/unit/cri_2dcontainerd_2d{CONTAINER}_2escope")
    );
    for name in [
        scope.as_str(),
        "-.slice",
        "kubelet.service",
        "2fa.service",
        "a@b.service",
    ] {
        assert_eq!(unit_of_path(&path_of_unit(name)).as_deref(), Some(name));
    }
    assert_eq!(
        path_of_unit("2fa.service"),
        "/org/freedesktop/systemd1/unit/_32fa_2eservice"
    );
    assert_eq!(unit_of_path("/org/freedesktop/systemd1/job/12"), None);
    assert_eq!(unit_of_path("/org/freedesktop/systemd1/unit/bad_zz"), None);
}

#[test]
fn only_changed_states_are_transitions() {
    let mut units = default_units();
    let kubelet = "kubelet.service";
    assert!(
        units
            .apply(kubelet, state("active", "running"), true)
            .is_none(),
        "what is there at start is learned"
    );
    assert!(
        units
            .apply(kubelet, state("active", "running"), false)
            .is_none(),
        "a signal that repeats the state"
    );
    let result = Reading {
        result: Some("exit-code".into()),
        exec_main_code: Some(1),
        exec_main_status: Some(3),
        restarts: Some(0),
        ..Reading::default()
    };
    assert!(
        units.apply(kubelet, result, false).is_none(),
        "the service's own properties come first and change no state"
    );
    let failed = units
        .apply(kubelet, state("failed", "failed"), false)
        .expect("active → failed");
    assert_eq!(failed.from.as_deref(), Some("active"));
    assert_eq!(failed.unit.state.result.as_deref(), Some("exit-code"));
    assert_eq!(failed.unit.state.exit_status(), Some(3));
    assert_eq!(failed.job_type(), None, "a unit that fails ran no job");
    let restart = units
        .apply(kubelet, state("activating", "auto-restart"), false)
        .unwrap();
    assert_eq!(restart.job_type(), Some("restart"));
    let start = units
        .apply(kubelet, state("active", "running"), false)
        .unwrap();
    assert_eq!(start.job_type(), Some("start"));
    assert!(
        units
            .apply(kubelet, state("active", "running"), false)
            .is_none()
    );
    let stopping = units
        .apply(kubelet, state("deactivating", "stop-sigterm"), false)
        .unwrap();
    assert_eq!(stopping.job_type(), Some("stop"));
    let stopped = units
        .apply(kubelet, state("inactive", "dead"), false)
        .unwrap();
    assert_eq!(stopped.job_type(), Some("stop"));
}

#[test]
fn new_units_report_their_first_state_unless_only_loaded() {
    let mut units = default_units();
    let scope = scope_name();
    units.loaded(&scope);
    assert!(units.needs_details(&scope) && units.needs_details(&scope));
    assert!(
        units.wants_details(&scope),
        "a new scope's slice is asked for"
    );
    assert!(!units.wants_details(&scope), "once");
    assert!(!units.needs_details(&scope));
    assert!(
        !units.wants_details("kubelet.service"),
        "not for other units: the signals carry the rest"
    );
    assert!(
        !units.wants_details("session-1.scope"),
        "not for units only reported on failure"
    );
    let started = units
        .apply(&scope, state("active", "running"), false)
        .expect("first state of a new unit");
    assert_eq!(started.from, None);
    assert_eq!(started.job_type(), Some("start"));
    // A unit loaded to be looked at (`systemctl status`) is inactive: nothing happened.
    assert!(
        units
            .apply("containerd.service", state("inactive", "dead"), false)
            .is_none()
    );
    // After a reconnect, a unit that appeared meanwhile is reported.
    assert!(
        units
            .apply("crio.service", state("active", "running"), false)
            .is_some()
    );
}

#[test]
fn other_units_are_reported_only_when_they_fail() {
    let mut units = default_units();
    let ssh = "ssh.service";
    assert!(units.apply(ssh, state("active", "running"), true).is_none());
    assert!(
        units
            .apply(ssh, state("deactivating", "stop"), false)
            .is_none()
    );
    assert!(units.apply(ssh, state("failed", "failed"), false).is_some());
    let noisy = "noisy-thing.service";
    units.apply(noisy, state("active", "running"), true);
    assert!(
        units
            .apply(noisy, state("failed", "failed"), false)
            .is_none(),
        "excluded, even when it fails"
    );
}

#[test]
fn a_container_scope_event_names_its_container_and_pod() {
    let mut units = default_units();
    let scope = scope_name();
    let details = Reading {
        slice: Some(pod_slice()),
        result: Some("success".into()),
        ..Reading::default()
    };
    units.loaded(&scope);
    assert!(units.apply(&scope, details, false).is_none());
    let running = Reading {
        changed_at: Some(1_800_000_000_123_456),
        ..state("active", "running")
    };
    let transition = units.apply(&scope, running, false).unwrap();
    let event = unit_event(&transition, "node-a", &mut IdGenerator::seeded(1));
    assert_eq!(event.source, "systemd");
    assert_eq!(event.timestamp.as_nanos(), 1_800_000_000_123_456_000);
    let entity = event.entity.as_deref().unwrap();
    assert_eq!(
        (entity.kind, entity.id.as_str(), entity.node.as_deref()),
        (EntityType::Pod, POD_UID, Some("node-a"))
    );
    let systemd = event.systemd.as_deref().unwrap();
    assert_eq!(systemd.unit.as_deref(), Some(scope.as_str()));
    assert_eq!(systemd.slice.as_deref(), Some(pod_slice().as_str()));
    assert_eq!(systemd.container_id.as_deref(), Some(CONTAINER));
    assert_eq!(systemd.job_type.as_deref(), Some("start"));
    assert_eq!(
        (
            systemd.active_state.as_deref(),
            systemd.sub_state.as_deref()
        ),
        (Some("active"), Some("running"))
    );
}

#[test]
fn a_node_service_event_is_about_the_host() {
    let mut units = default_units();
    let details = Reading {
        slice: Some("system.slice".into()),
        main_pid: Some(0),
        restarts: Some(2),
        exec_main_code: Some(1),
        exec_main_status: Some(1),
        result: Some("exit-code".into()),
        ..state("active", "running")
    };
    units.apply("kubelet.service", details, true);
    let transition = units
        .apply("kubelet.service", state("failed", "failed"), false)
        .unwrap();
    let event = unit_event(&transition, "node-a", &mut IdGenerator::seeded(1));
    let entity = event.entity.as_deref().unwrap();
    assert_eq!(
        (entity.kind, entity.id.as_str()),
        (EntityType::Host, "node-a")
    );
    let systemd = event.systemd.as_deref().unwrap();
    assert_eq!(systemd.result.as_deref(), Some("exit-code"));
    assert_eq!(systemd.exit_status, Some(1));
    assert_eq!(systemd.restarts, Some(2));
    assert_eq!(systemd.main_pid, None, "MainPID 0 is no process");
    assert_eq!(systemd.container_id, None);
}

#[test]
fn journal_messages_are_read_from_journalctl_json() {
    let output = concat!(
        r#"{"MESSAGE":"Starting api.service...","_PID":"1"}"#,
        "\n",
        r#"{"MESSAGE":[104,105,255],"_PID":"2"}"#,
        "\n",
        r#"{"_PID":"3"}"#,
        "\n",
        "-- No entries --\n",
    );
    assert_eq!(
        journal::messages(output.as_bytes()),
        vec![
            "Starting api.service...".to_owned(),
            "hi\u{fffd}".to_owned()
        ]
    );
}

#[tokio::test]
async fn a_required_source_with_no_bus_stops_with_unavailable() {
    let dir = tempfile::tempdir().unwrap();
    let address = format!("bus = \"unix:path={}\"", dir.path().join("none").display());
    let source = config(&address).build(&build_context("units")).unwrap();
    let (cx, _taps) = context("systemd", false);
    let error = source.run(cx).await.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Unavailable);
    assert!(
        error
            .message()
            .contains("cannot connect to the bus at unix:path=")
    );
}

#[tokio::test]
async fn an_optional_source_with_no_bus_keeps_trying_until_shutdown() {
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "bus = \"unix:path={}\"\nrequired = false",
        dir.path().join("none").display()
    );
    let source = config(&text).build(&build_context("units")).unwrap();
    let (cx, taps) = context("systemd", false);
    let running = tokio::spawn(source.run(cx));
    tokio::time::sleep(std::time::Duration::from_millis(400)).await;
    assert!(!running.is_finished(), "it waits for the bus");
    taps.trigger.trigger();
    running.await.unwrap().unwrap();
}
