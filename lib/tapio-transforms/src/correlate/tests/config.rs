//! Options and user patterns: defaults, patterns added or replacing built-in ones, predicate
//! forms, and bad patterns reported with their line when the config is read.

use std::time::Duration;

use tapio_event::ConfigDuration;

use crate::correlate::PatternConfig;

use super::*;

fn parse(text: &str) -> Result<CorrelateConfig, String> {
    toml::from_str(text).map_err(|e| e.to_string())
}

fn patterns_of(out: &[UnifiedEvent]) -> Vec<String> {
    summaries(out)
        .iter()
        .map(|s| s.correlation.as_ref().unwrap().pattern.clone().unwrap())
        .collect()
}

#[test]
fn defaults_follow_the_issue() {
    let config = parse("").unwrap();
    assert_eq!(config.window.0, Duration::from_secs(60));
    assert_eq!(config.allowed_lateness.0, Duration::from_secs(5));
    assert_eq!(config.max_group_duration.0, Duration::from_secs(600));
    assert_eq!(config.max_groups, 100_000);
    assert_eq!(config.max_buffered_events, 65_536);
    assert_eq!(config.max_group_keys, 64);
    assert_eq!(config.max_related_events, 1000);
    assert_eq!(config.idle_flush.0, Duration::from_secs(1));
    assert!(config.builtin_patterns && config.patterns.is_empty());
}

const IMAGE_PULL: &str = r#"
window = "30s"

[[patterns]]
name = "image-pull-failure"
priority = 5
root_cause = "image-unavailable"
recommended_action = "check-image-reference"
confidence = 0.8
summary = "cannot pull its image"
steps = [
  { label = "pull failed {count} times", count = 2, match = { "kubernetes.reason" = ["Failed", "ErrImagePull"], "kubernetes.message" = { glob = "*pull*" } } },
  { label = "backing off", match = [{ "kubernetes.reason" = "BackOff" }, { "kubernetes.reason" = "ImagePullBackOff" }] },
]
forbidden = { "kubernetes.message" = { glob = "*quota*" } }
"#;

fn pull_failure(script: &mut Script, message: &str) {
    for (ms, reason) in [(0, "Failed"), (500, "ErrImagePull"), (900, "BackOff")] {
        script.kube(ms, &API, reason);
        let event = script.events.last_mut().unwrap();
        event.kubernetes.as_mut().unwrap().message = Some(message.into());
    }
}

#[test]
fn user_patterns_extend_the_catalog() {
    let config = parse(IMAGE_PULL).unwrap();
    let mut script = Script::default();
    pull_failure(&mut script, "failed to pull image");
    let (out, _) = run(&config, script.events.clone());
    assert_eq!(patterns_of(&out), ["image-pull-failure"]);
    let narrative = summaries(&out)[0]
        .semantic
        .as_ref()
        .unwrap()
        .narrative
        .clone();
    assert_eq!(
        narrative.as_deref(),
        Some("shop/api-7d9 on worker-1 cannot pull its image: pull failed 2 times, backing off.")
    );

    let mut forbidden = Script::default();
    pull_failure(&mut forbidden, "pull denied: quota exceeded");
    assert!(summaries(&run(&config, forbidden.events).0).is_empty());
}

#[test]
fn user_patterns_replace_builtin_ones_of_the_same_name() {
    let config = parse(
        r#"
[[patterns]]
name = "crash-loop"
root_cause = "application-crash"
recommended_action = "page-the-owner"
confidence = 1
summary = "keeps crashing"
steps = [{ label = "exits", count = 2, match = { "process.operation" = "exit", "process.exit_code" = { not = [0, 143] } } }]
"#,
    )
    .unwrap();
    let mut script = Script::default();
    script
        .process(0, &API, "exit", Some(143))
        .process(100, &API, "exit", Some(1))
        .process(200, &API, "exit", Some(2));
    let (out, _) = run(&config, script.events.clone());
    let summary = summaries(&out)[0].correlation.as_deref().unwrap();
    assert_eq!(
        summary.recommended_action.as_deref(),
        Some("page-the-owner")
    );
    assert_eq!(summary.pattern.as_deref(), Some("crash-loop"));
}

#[test]
fn the_builtin_catalog_can_be_turned_off() {
    let config = parse("builtin_patterns = false").unwrap();
    let mut script = Script::default();
    oom_kill(&mut script, &API, 0);
    let (out, _) = run(&config, script.events.clone());
    assert!(summaries(&out).is_empty());
    assert_eq!(out.len(), 3, "events are still grouped and emitted");
}

#[test]
fn a_pattern_can_complete_on_a_lone_event() {
    let config = parse(
        r#"
builtin_patterns = false
[[patterns]]
name = "oom-on-unknown-process"
root_cause = "memory-pressure"
recommended_action = "inspect-node"
confidence = 0.5
summary = "killed a process for memory"
steps = [{ label = "OOM kill", match = { "entity.type" = "host", "process.operation" = "oom_kill", "process.container_id" = { present = false } } }]
"#,
    )
    .unwrap();
    let mut script = Script::default();
    script.host(0, "worker-9", "oom_kill");
    let (out, _) = run(&config, script.events.clone());
    assert_eq!(patterns_of(&out), ["oom-on-unknown-process"]);
    let summary = summaries(&out)[0];
    assert_eq!(
        summary.correlation.as_ref().unwrap().related_events,
        ["evt_0001"]
    );
    assert_eq!(correlation_id(summary), correlation_id(&out[0]));
}

/// `patterns` with one pattern whose steps are `steps` (a TOML array) and extra keys `extra`.
fn with_steps(steps: &str, extra: &str) -> String {
    format!(
        "[[patterns]]\nname = \"p\"\nroot_cause = \"r\"\nrecommended_action = \"a\"\nconfidence = 0.5\nsummary = \"s\"\n{extra}steps = {steps}\n"
    )
}

#[test]
fn bad_patterns_are_config_errors_with_their_line() {
    let cases = [
        (
            with_steps(
                r#"[{ label = "x", match = { "kubernetes.reasn" = "BackOff" } }]"#,
                "",
            ),
            "unknown field path `kubernetes.reasn`",
        ),
        (with_steps("[]", ""), "needs at least one step"),
        (
            with_steps(r#"[{ label = "x", match = {} }]"#, ""),
            "a match needs at least one field",
        ),
        (
            with_steps(
                r#"[{ label = "x", match = { source = { nope = 1 } } }]"#,
                "",
            ),
            "unknown field `nope`",
        ),
        (
            with_steps(
                r#"[{ label = "x", match = { source = { not = "a", glob = "b" } } }]"#,
                "",
            ),
            "exactly one of",
        ),
        (
            with_steps(r#"[{ label = "x", match = { source = [] } }]"#, ""),
            "at least one value",
        ),
        (
            with_steps(
                r#"[{ label = "x", count = 0, match = { source = "a" } }]"#,
                "",
            ),
            "count must be at least 1",
        ),
        (
            with_steps(
                r#"[{ label = "x", match = { source = "a" }, when = 1 }]"#,
                "",
            ),
            "unknown field `when`",
        ),
        (
            with_steps(
                r#"[{ label = "x", match = { source = "a" } }]"#,
                "confidence2 = 1\n",
            ),
            "unknown field `confidence2`",
        ),
        (
            with_steps(r#"[{ label = "x", match = [] }]"#, ""),
            "at least one table",
        ),
    ];
    for (text, expected) in cases {
        let error = parse(&text).unwrap_err();
        assert!(error.contains(expected), "{text}\n→ {error}");
        assert!(error.contains("line "), "no line in: {error}");
    }
    let line = parse(&format!(
        "window = \"1m\"\n\n{}",
        with_steps(r#"[{ label = "x", match = { "process.nope" = "a" } }]"#, "")
    ))
    .unwrap_err();
    assert!(line.contains("line 9"), "{line}");
    let twice = format!(
        "{}{}",
        with_steps(r#"[{ label = "x", match = { source = "a" } }]"#, ""),
        with_steps(r#"[{ label = "y", match = { source = "b" } }]"#, "")
    );
    assert!(
        parse(&twice)
            .unwrap_err()
            .contains("pattern `p` is defined twice")
    );
    assert!(
        parse(
            &with_steps(r#"[{ label = "x", match = { source = "a" } }]"#, "").replace("0.5", "1.5")
        )
        .unwrap_err()
        .contains("not between 0 and 1")
    );
}

#[test]
fn impossible_options_fail_the_build() {
    for (config, expected) in [
        (
            CorrelateConfig {
                max_groups: 0,
                ..CorrelateConfig::default()
            },
            "max_groups",
        ),
        (
            CorrelateConfig {
                max_buffered_events: 0,
                ..CorrelateConfig::default()
            },
            "max_buffered_events",
        ),
        (
            CorrelateConfig {
                max_group_keys: 0,
                ..CorrelateConfig::default()
            },
            "max_group_keys",
        ),
        (
            CorrelateConfig {
                window: ConfigDuration(Duration::ZERO),
                ..CorrelateConfig::default()
            },
            "window",
        ),
    ] {
        let error = config.correlator().err().unwrap();
        assert!(error.message().contains(expected), "{error}");
    }
}

#[test]
fn patterns_serialize_to_the_form_they_are_read_from() {
    // The generated reference shows `patterns`' default by serializing it; every predicate form
    // (value, list, `not`, `glob`, `present`, a list of alternatives) must come back the same.
    let builtin = parse(include_str!("../catalog.toml")).unwrap().patterns;
    let user = parse(IMAGE_PULL).unwrap().patterns;
    let steps = |p: &PatternConfig| {
        p.steps
            .iter()
            .map(|s| s.matcher.clone())
            .collect::<Vec<_>>()
    };
    for pattern in builtin.iter().chain(&user) {
        let written = serde_json::to_value(pattern).unwrap();
        let read: PatternConfig = serde_json::from_value(written.clone()).unwrap();
        assert_eq!(read.forbidden, pattern.forbidden, "{written}");
        assert_eq!(steps(&read), steps(pattern), "{written}");
    }
}

#[test]
fn a_variant_must_vary_a_pattern_of_the_catalog() {
    let variant = |of: &str| {
        parse(&format!(
            "[[patterns]]\nname = \"mine\"\nvariant_of = \"{of}\"\nroot_cause = \"r\"\nrecommended_action = \"a\"\nconfidence = 0.5\nsummary = \"s\"\nsteps = [{{ label = \"l\", match = {{ \"kubernetes.reason\" = \"Evicted\" }} }}]\n"
        ))
        .unwrap()
    };
    let unknown = variant("no-such-pattern").correlator().err().unwrap();
    assert!(
        unknown
            .message()
            .contains("`no-such-pattern`, which is not in the catalog"),
        "{unknown}"
    );
    let nested = variant("crash-loop-cluster").correlator().err().unwrap();
    assert!(nested.message().contains("itself a variant"), "{nested}");
    assert!(variant("crash-loop").correlator().is_ok());
}
