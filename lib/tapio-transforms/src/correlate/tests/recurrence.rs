//! Recurrences: the built-in ones fire once per episode on the entity (or key) they count,
//! link the groups of their occurrences, agree with an independent sliding-window count on
//! random streams, and keep bounded state.

use super::*;

const MINUTE: i64 = 60_000;

fn recurrences<'a>(events: &'a [UnifiedEvent], pattern: &str) -> Vec<&'a UnifiedEvent> {
    summaries(events)
        .into_iter()
        .filter(|s| s.correlation.as_ref().unwrap().pattern.as_deref() == Some(pattern))
        .collect()
}

fn oom(script: &mut Script, minute: i64, pod: &Pod) {
    script.process(minute * MINUTE, pod, "oom_kill", None);
}

#[test]
fn three_oom_kills_in_half_an_hour_fire_once_per_episode() {
    let mut script = Script::default();
    for minute in [0, 10, 20, 25] {
        oom(&mut script, minute, &API);
    }
    // 45 minutes after the 25th the last three are spread wide: the episode is over; three
    // more within minutes make a new one.
    for minute in [70, 71, 72] {
        oom(&mut script, minute, &API);
    }
    let (out, _) = run(&CorrelateConfig::default(), script.events.clone());
    let fired = recurrences(&out, "repeated-oom-kill");
    assert_eq!(fired.len(), 2, "{fired:#?}");
    let first = fired[0].correlation.as_ref().unwrap();
    assert_eq!(first.related_events, ["evt_0001", "evt_0002", "evt_0003"]);
    let groups: Vec<&str> = ["evt_0001", "evt_0002", "evt_0003"]
        .iter()
        .map(|id| id_of(&out, id))
        .collect();
    assert_eq!(first.related_correlations, groups);
    assert_eq!(first.root_cause.as_deref(), Some("memory-limit-exceeded"));
    assert_eq!(fired[0].entity.as_ref().unwrap().id, API.uid);
    assert_eq!(fired[0].timestamp, script.events[2].timestamp);
    let narrative = fired[0].semantic.as_ref().unwrap().narrative.as_deref();
    assert_eq!(
        narrative,
        Some("shop/api-7d9 on worker-1 keeps being OOM-killed: 3 times within 30m.")
    );
    let second = fired[1].correlation.as_ref().unwrap();
    assert_eq!(second.related_events, ["evt_0005", "evt_0006", "evt_0007"]);
    assert_ne!(first.correlation_id, second.correlation_id);
    assert_eq!(
        out.len(),
        script.events.len() + 2,
        "every input event leaves"
    );
}

#[test]
fn occurrences_on_other_entities_or_spread_too_wide_do_not_fire() {
    let mut script = Script::default();
    oom(&mut script, 0, &API);
    oom(&mut script, 1, &CART);
    oom(&mut script, 2, &API);
    oom(&mut script, 40, &API);
    let (out, _) = run(&CorrelateConfig::default(), script.events);
    assert!(recurrences(&out, "repeated-oom-kill").is_empty());
}

#[test]
fn a_flapping_node_and_a_unit_restart_loop_are_told_by_their_key() {
    let mut script = Script::default();
    for minute in [0, 5, 9] {
        script.node_event(minute * MINUTE, "worker-1", "NodeNotReady");
        script.node_event(minute * MINUTE + 1000, "worker-1", "NodeReady");
    }
    for minute in [1, 2, 3] {
        script.unit(
            minute * MINUTE,
            "worker-2",
            "kubelet.service",
            Some("restart"),
            "active",
        );
        script.unit(
            minute * MINUTE,
            "worker-2",
            "containerd.service",
            Some("restart"),
            "active",
        );
    }
    script.unit(
        4 * MINUTE,
        "worker-2",
        "kubelet.service",
        Some("restart"),
        "active",
    );
    let (out, _) = run(&CorrelateConfig::default(), script.events);
    let flapping = recurrences(&out, "node-flapping");
    assert_eq!(flapping.len(), 1);
    assert_eq!(flapping[0].entity.as_ref().unwrap().id, "worker-1");
    let restarts = recurrences(&out, "unit-restart-loop");
    let narratives: Vec<&str> = restarts
        .iter()
        .map(|s| s.semantic.as_ref().unwrap().narrative.as_deref().unwrap())
        .collect();
    assert_eq!(
        narratives,
        [
            "Node worker-2 keeps restarting kubelet.service: 3 times within 30m.",
            "Node worker-2 keeps restarting containerd.service: 3 times within 30m.",
        ]
    );
}

/// Which occurrences (by index) fire, counted the plain way: sort each pod's times and look at
/// every run of `count` consecutive ones.
fn expected_fires(times: &[(usize, i64)], count: usize, within: i64) -> Vec<usize> {
    let mut fires = Vec::new();
    let mut by_pod: std::collections::BTreeMap<usize, Vec<(i64, usize)>> = Default::default();
    for (index, &(pod, at)) in times.iter().enumerate() {
        by_pod.entry(pod).or_default().push((at, index));
    }
    for occurrences in by_pod.values() {
        let mut was_recurring = false;
        for end in 0..occurrences.len() {
            let recurring =
                end + 1 >= count && occurrences[end].0 - occurrences[end + 1 - count].0 <= within;
            if recurring && !was_recurring {
                fires.push(occurrences[end].1);
            }
            was_recurring = recurring;
        }
    }
    fires.sort_unstable();
    fires
}

#[test]
fn random_streams_fire_where_a_sliding_window_says() {
    let pods = [
        API,
        CART,
        Pod {
            uid: "uid-db",
            namespace: "data",
            name: "db-0",
            node: "worker-3",
        },
    ];
    for seed in 1..=20_u64 {
        let mut state = seed;
        let mut next = |bound: i64| {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (state >> 33) as i64 % bound
        };
        let mut script = Script::default();
        let mut times = Vec::new();
        let mut minute = 0;
        for _ in 0..60 {
            minute += 1 + next(12);
            let pod = next(3) as usize;
            oom(&mut script, minute, &pods[pod]);
            times.push((pod, minute * MINUTE * MS));
        }
        let (out, _) = run(&CorrelateConfig::default(), script.events.clone());
        let fired: Vec<usize> = recurrences(&out, "repeated-oom-kill")
            .iter()
            .map(|s| {
                let last = s
                    .correlation
                    .as_ref()
                    .unwrap()
                    .related_events
                    .last()
                    .unwrap();
                script.events.iter().position(|e| &e.id == last).unwrap()
            })
            .collect();
        assert_eq!(
            fired,
            expected_fires(&times, 3, 30 * MINUTE * MS),
            "seed {seed}"
        );
    }
}

#[test]
fn series_are_bounded_by_max_groups() {
    let config: CorrelateConfig = toml::from_str("max_groups = 2").unwrap();
    let pods: Vec<Pod> = ["a", "b", "c", "d"]
        .iter()
        .map(|name| Pod {
            uid: name,
            namespace: "ns",
            name,
            node: "n",
        })
        .collect();
    let mut script = Script::default();
    for round in 0..3 {
        for (index, pod) in pods.iter().enumerate() {
            oom(&mut script, round * 2 + index as i64, pod);
        }
    }
    let (out, stats) = run(&config, script.events.clone());
    assert!(stats.evicted_recurrences > 0, "{stats:?}");
    assert!(
        recurrences(&out, "repeated-oom-kill").is_empty(),
        "each pod's series was evicted before its third kill"
    );
    assert_eq!(out.len(), script.events.len());
}

#[test]
fn a_pattern_takes_only_the_fields_of_its_kind() {
    let head = "[[patterns]]\nname = \"p\"\nroot_cause = \"r\"\nrecommended_action = \"a\"\nconfidence = 0.5\nsummary = \"s\"\n";
    let cases = [
        (
            "kind = \"recurrence\"\nmatch = { source = \"x\" }\nsteps = [{ label = \"x\", match = { source = \"a\" } }]\n",
            "not `steps`",
        ),
        ("kind = \"recurrence\"\n", "needs `match`"),
        (
            "kind = \"recurrence\"\nmatch = { source = \"x\" }\ncount = 1\n",
            "at least 2",
        ),
        (
            "match = { source = \"x\" }\nsteps = [{ label = \"x\", match = { source = \"a\" } }]\n",
            "`match` belongs to `kind = \"recurrence\"`",
        ),
        ("kind = \"again\"\nmatch = { source = \"x\" }\n", "`again`"),
    ];
    for (rest, expected) in cases {
        let text = format!("{head}{rest}");
        let error = toml::from_str::<CorrelateConfig>(&text)
            .map(|_| ())
            .unwrap_err()
            .to_string();
        assert!(error.contains(expected), "{text}\n→ {error}");
    }
    let user = format!(
        "{head}kind = \"recurrence\"\nmatch = {{ \"kubernetes.reason\" = \"BackOff\" }}\ncount = 2\nwithin = \"5m\"\n"
    );
    let config: CorrelateConfig = toml::from_str(&user).unwrap();
    let mut script = Script::default();
    script.kube(0, &API, "BackOff");
    script.kube(4 * MINUTE, &API, "BackOff");
    let (out, _) = run(&config, script.events);
    assert_eq!(
        recurrences(&out, "p").len(),
        1,
        "a user recurrence counts too"
    );
}
