//! The committed JSON Schema of `UnifiedEvent` (`schema/unified-event.schema.json`) must match
//! the Rust types: users validate against it, so a change to the event that forgets the schema
//! fails here. Regenerate with `TAPIO_BLESS=1 cargo test -p tapio-event --test schema`.

use std::path::PathBuf;

use schemars::Schema;
use schemars::generate::SchemaSettings;
use schemars::transform::RecursiveTransform;
use serde_json::Value;
use tapio_event::UnifiedEvent;

/// The schema of the written form: absent values are omitted, so no field is ever `null`.
/// schemars describes `Option<T>` as "T or null"; this drops the null alternative.
fn event_schema() -> Value {
    let generator = SchemaSettings::draft2020_12()
        .with_transform(RecursiveTransform(drop_null))
        .into_generator();
    serde_json::to_value(generator.into_root_schema_for::<UnifiedEvent>()).unwrap()
}

fn drop_null(schema: &mut Schema) {
    let Some(object) = schema.as_object_mut() else {
        return;
    };
    if let Some(Value::Array(types)) = object.get_mut("type") {
        types.retain(|t| t != "null");
        if types.len() == 1 {
            let only = types.remove(0);
            object.insert("type".into(), only);
        }
    }
    let is_null = |v: &Value| v.get("type").is_some_and(|t| t == "null");
    if let Some(Value::Array(options)) = object.get("anyOf")
        && options.len() == 2
        && options.iter().any(is_null)
    {
        let kept = options.iter().find(|v| !is_null(v)).cloned();
        object.remove("anyOf");
        if let Some(Value::Object(kept)) = kept {
            object.extend(kept);
        }
    }
}

#[test]
fn committed_schema_matches_the_types() {
    let path =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../schema/unified-event.schema.json");
    let schema = event_schema();
    let generated = serde_json::to_string_pretty(&schema).unwrap() + "\n";
    if std::env::var_os("TAPIO_BLESS").is_some() {
        std::fs::write(&path, &generated).unwrap();
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == generated,
        "{} is stale; regenerate it with TAPIO_BLESS=1 cargo test -p tapio-event --test schema",
        path.display()
    );
}

#[test]
fn schema_forbids_unknown_fields_and_lists_closed_sets() {
    let schema = event_schema();
    assert!(
        !schema.to_string().contains("\"null\""),
        "the wire form never writes null"
    );
    assert_eq!(schema["additionalProperties"], false);
    let kinds = &schema["$defs"]["EventType"]["enum"];
    assert_eq!(kinds.as_array().map(Vec::len), Some(7), "{kinds}");
    assert_eq!(schema["$defs"]["Entity"]["additionalProperties"], false);
}
