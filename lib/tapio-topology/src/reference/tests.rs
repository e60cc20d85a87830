use std::collections::BTreeMap;

use serde::Deserialize;
use tapio_event::{ConfigDuration, WhenFull};

use super::*;

/// A component config with one option of each shape the tables must show.
#[allow(dead_code)]
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct Tiny {
    /// Where to send.
    address: String,
    /// How long to wait, in a
    /// doc comment of two lines.
    #[serde(default = "default_wait")]
    wait: ConfigDuration,
    /// What a full buffer does.
    #[serde(default)]
    when_full: WhenFull,
    /// Tried in turn | never all.
    #[serde(default)]
    fallbacks: Vec<String>,
    /// Optional security.
    #[serde(default)]
    tls: Option<Nested>,
    /// Always there.
    #[serde(default)]
    batch: Nested,
    /// Extra labels.
    #[serde(default = "default_labels")]
    labels: BTreeMap<String, String>,
    /// The shape.
    #[serde(default)]
    shape: Shape,
}

#[allow(dead_code)]
#[derive(Default, serde::Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
enum Shape {
    #[default]
    Round,
    Square,
}

fn default_labels() -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app".into(), "api".into()),
        ("k8s.io/name".into(), "x".into()),
    ])
}

#[allow(dead_code)]
#[derive(Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct Nested {
    /// The key file.
    key_file: String,
    /// How many.
    #[serde(default)]
    count: Option<u32>,
}

fn default_wait() -> ConfigDuration {
    ConfigDuration(std::time::Duration::from_secs(90))
}

fn table_of<T: JsonSchema>(tables: &mut Tables) -> Result<String, String> {
    let root = root_schema::<T>();
    tables.options_table(&root, &root, "", "sinks.tiny")
}

#[test]
fn a_table_shows_type_default_and_doc_of_every_option() {
    let mut tables = Tables::default();
    let table = table_of::<Tiny>(&mut tables).unwrap();
    assert_eq!(
        table,
        "| option | type | default | description |
|---|---|---|---|
| `address` | string | required | Where to send. |
| `batch` | table |  | Always there. |
| `batch.key_file` | string | required | The key file. |
| `batch.count` | integer | none | How many. |
| `fallbacks` | list of string | `[]` | Tried in turn \\| never all. |
| `labels` | table of string | `{ app = \"api\", \"k8s.io/name\" = \"x\" }` | Extra labels. |
| `shape` | `\"round\"` or `\"square\"` | `\"round\"` | The shape. |
| `tls` | table | none | Optional security. |
| `tls.key_file` | string | required | The key file. |
| `tls.count` | integer | none | How many. |
| `wait` | duration | `\"1m30s\"` | How long to wait, in a doc comment of two lines. |
| `when_full` | `\"block\"`, `\"drop_newest\"` or `\"overflow\"` | `\"block\"` | What a full buffer does. |
"
    );
    assert!(
        tables
            .value_types_table()
            .contains("| duration | Numbers each followed by a unit"),
        "{}",
        tables.value_types_table()
    );
}

#[test]
fn lists_of_tables_get_rows_for_their_entries() {
    #[allow(dead_code)]
    #[derive(Deserialize, JsonSchema)]
    struct WithRules {
        /// Rules, in order.
        #[serde(default)]
        rules: Vec<Rule>,
    }
    #[allow(dead_code)]
    #[derive(serde::Serialize, Deserialize, JsonSchema)]
    struct Rule {
        /// What to match.
        when: String,
    }
    let table = table_of::<WithRules>(&mut Tables::default()).unwrap();
    assert!(
        table.contains("| `rules` | list of tables | `[]` | Rules, in order. |\n"),
        "{table}"
    );
    assert!(
        table.contains("| `rules[].when` | string | required | What to match. |\n"),
        "{table}"
    );
}

#[test]
fn an_option_without_a_doc_comment_or_a_showable_default_is_an_error() {
    #[allow(dead_code)]
    #[derive(Deserialize, JsonSchema)]
    struct Undocumented {
        #[serde(default)]
        quiet: bool,
    }
    let error = table_of::<Undocumented>(&mut Tables::default()).unwrap_err();
    assert_eq!(error, "sinks.tiny: option `quiet` has no doc comment");

    /// Has a `Default` but no `Serialize`, so its value cannot be shown.
    #[allow(dead_code)]
    #[derive(Default, Deserialize, JsonSchema)]
    struct Opaque(u32);
    #[allow(dead_code)]
    #[derive(Deserialize, JsonSchema)]
    struct Hidden {
        /// Documented, but its default is not serializable.
        #[serde(default)]
        opaque: Opaque,
    }
    let error = table_of::<Hidden>(&mut Tables::default()).unwrap_err();
    assert!(error.contains("`opaque` cannot be shown"), "{error}");
}

fn blocks_of(entries: &[(&str, &str)]) -> BTreeMap<String, String> {
    entries
        .iter()
        .map(|(key, content)| (key.to_string(), content.to_string()))
        .collect()
}

#[test]
fn splicing_replaces_only_what_is_between_the_markers() {
    let page =
        "# Title\nprose\n<!-- generated:sinks.a -->\nold table\n<!-- /generated -->\nmore prose\n";
    let blocks = blocks_of(&[("sinks.a", "| new |\n")]);
    assert_eq!(
        splice(page, &blocks).unwrap(),
        "# Title\nprose\n<!-- generated:sinks.a -->\n| new |\n<!-- /generated -->\nmore prose\n"
    );
    let spliced = splice(page, &blocks).unwrap();
    assert_eq!(
        splice(&spliced, &blocks).unwrap(),
        spliced,
        "not idempotent"
    );
}

#[test]
fn splicing_fails_on_missing_unknown_or_unclosed_markers() {
    let blocks = blocks_of(&[("sinks.a", "a\n"), ("sinks.b", "b\n")]);
    let only_a = "<!-- generated:sinks.a -->\n<!-- /generated -->\n";
    let error = splice(only_a, &blocks).unwrap_err();
    assert!(
        error.contains("no place for the generated blocks sinks.b"),
        "{error}"
    );

    let unknown = format!("{only_a}<!-- generated:sinks.c -->\n<!-- /generated -->\n");
    let error = splice(&unknown, &blocks).unwrap_err();
    assert!(
        error.contains("generated:sinks.c -->` names no generated block"),
        "{error}"
    );

    let error = splice("<!-- generated:sinks.a -->\nno end\n", &blocks).unwrap_err();
    assert!(error.contains("`sinks.a` has no closing"), "{error}");
}

#[test]
fn every_registered_component_type_has_a_block() {
    let blocks = blocks().unwrap();
    for (section, types) in [
        ("sources", tapio_sources::SourceConfig::TYPES),
        ("transforms", tapio_transforms::TransformConfig::TYPES),
        ("sinks", tapio_sinks::SinkConfig::TYPES),
    ] {
        for type_name in types {
            let key = format!("{section}.{type_name}");
            assert!(blocks.contains_key(&key), "no table for {key}");
        }
    }
    assert!(blocks["sinks.kafka"].contains("| `sasl.password` | string | required |"));
}
