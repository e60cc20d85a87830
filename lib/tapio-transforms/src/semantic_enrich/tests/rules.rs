//! Rules: built-in narratives, user rules and option errors.

use super::*;

#[test]
fn narratives_are_specific_sentences() {
    let mut e = enricher("");
    one(&mut e, k8s_pod(&API, "added", ""));
    let probe = one(
        &mut e,
        k8s_reason(
            &API,
            "Unhealthy",
            "Readiness probe failed: Get \"http://10.244.1.15:8080/healthz\"",
        ),
    );
    assert_eq!(
        narrative(&probe),
        "Readiness probe failed for shop/api-7d9 on worker-1"
    );
    assert_eq!(intent(&probe), "readiness-probe-failure");
    let semantic = probe.semantic.as_deref().unwrap();
    assert_eq!(semantic.category.as_deref(), Some("availability"));
    assert_eq!(semantic.confidence, Some(0.95));
    assert!(semantic.tags.contains(&"probe".to_owned()));
    let cni_failure = {
        let mut check = cni(&API, "CHECK");
        check["network"]["error"] = json!("link not found");
        one(&mut e, check)
    };
    assert_eq!(
        narrative(&cni_failure),
        "CNI CHECK failed for shop/api-7d9 on worker-1: link not found"
    );
    let unknown = one(
        &mut e,
        json!({ "type": "kubernetes", "source": "kubernetes", "kubernetes": { "kind": "Deployment",
            "namespace": "shop", "name": "api", "action": "modified" } }),
    );
    assert_eq!(narrative(&unknown), "Deployment shop/api modified");
}

#[test]
fn user_rules_come_first_and_override_per_field() {
    let mut e = enricher(
        r#"
        [[rules]]
        when = { source = "kubernetes", "kubernetes.reason" = "Unhealthy", "entity.namespace" = ["payments", "shop"] }
        intent = "shop-probe-failure"
        tags = ["shop"]
        narrative = "Shop pod {{ entity.name }} failed a probe[[ on {{ entity.node }}]]"

        [[rules]]
        when = { "kubernetes.reason" = "Pulled" }
        category = "deployment"

        [[rules]]
        when = { type = "process", "process.comm" = "api*" }
        intent = "api-process"
        "#,
    );
    let probe = one(
        &mut e,
        k8s_reason(&API, "Unhealthy", "Readiness probe failed: timeout"),
    );
    let semantic = probe.semantic.as_deref().unwrap();
    assert_eq!(semantic.intent.as_deref(), Some("shop-probe-failure"));
    assert_eq!(semantic.tags, ["shop"]);
    assert_eq!(
        narrative(&probe),
        "Shop pod api-7d9 failed a probe on worker-1"
    );
    assert_eq!(
        semantic.category.as_deref(),
        Some("availability"),
        "from the built-in rule"
    );
    let pulled = one(&mut e, k8s_reason(&API, "Pulled", "already present"));
    let semantic = pulled.semantic.as_deref().unwrap();
    assert_eq!(semantic.category.as_deref(), Some("deployment"));
    assert_eq!(semantic.intent.as_deref(), Some("image-ready"));
    // A collector's own fields stay, unless a user rule sets them.
    let mut collected = exec(&API);
    collected["semantic"] = json!({ "intent": "process-execution", "narrative": "exec seen" });
    let collected = one(&mut e, collected);
    let semantic = collected.semantic.as_deref().unwrap();
    assert_eq!(semantic.intent.as_deref(), Some("api-process"));
    assert_eq!(semantic.narrative.as_deref(), Some("exec seen"));
    assert_eq!(semantic.category.as_deref(), Some("process"));
}

#[test]
fn without_builtin_rules_only_user_rules_apply() {
    let mut e = enricher(
        r#"
        builtin_rules = false
        [[rules]]
        when = { type = "network" }
        category = "net"
        "#,
    );
    let events = enrich(&mut e, vec![event(cni(&API, "ADD")), event(exec(&API))]);
    assert_eq!(
        events[0].semantic.as_deref().unwrap().category.as_deref(),
        Some("net")
    );
    assert!(events[0].semantic.as_deref().unwrap().narrative.is_none());
    assert!(events[1].semantic.is_none());
}

#[test]
fn bad_options_are_rejected_with_the_rule() {
    let error = |text: &str| {
        Enricher::new(&config(text), "enrich")
            .expect_err(text)
            .message()
            .to_owned()
    };
    assert!(error("max_entities = 0").contains("max_entities"));
    assert!(error("max_entities = 4294967295").contains("between 1 and 4294967294"));
    let typo = toml::from_str::<SemanticEnrichConfig>(
        "[[rules]]\nwhen = { \"kubernetes.reasn\" = \"x\" }\nintent = \"i\"",
    )
    .expect_err("an unknown field path is a config error");
    assert!(typo.message().contains("kubernetes.reasn"), "{typo}");
    assert_eq!(typo.span(), Some(19..37), "the error points at the path");
    let bad_rules = [
        (
            "[[rules]]\nwhen = { type = \"pod\" }\nintent = \"i\"",
            "unknown event type",
        ),
        (
            "[[rules]]\nwhen = { source = [] }\nintent = \"i\"",
            "non-empty",
        ),
        ("[[rules]]\nconfidence = 1.5", "outside"),
        ("[[rules]]\nwhen = { source = \"x\" }", "sets nothing"),
        ("[[rules]]\nnarrative = \"{{ entity.nam }}\"", "entity.nam"),
        (
            "[[rules]]\nintent = \"a\"\n[[rules]]\nnarrative = \"a [[ b\"",
            "rules[1]",
        ),
    ];
    for (text, expected) in bad_rules {
        let message = error(text);
        assert!(message.contains(expected), "{text}: {message}");
    }
    assert!(toml::from_str::<SemanticEnrichConfig>("max_entity = 3").is_err());
}
