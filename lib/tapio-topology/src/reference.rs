//! The generated half of the components reference (`website/components.md`): one option table
//! per component type, made from the config structs' JSON Schemas (schemars), so the option
//! names, types, defaults and doc comments a user reads are those the parser applies. The prose
//! around the tables stays hand-written; each table sits between markers,
//!
//! ```text
//! <!-- generated:sinks.kafka -->
//! ...
//! <!-- /generated -->
//! ```
//!
//! and [`update`] rewrites what is between them. The registries (`SourceConfig`,
//! `TransformConfig`, `SinkConfig`) are walked, so a new component type gets its table without a
//! change here; a type without its markers in the page is an error that says where to add them.
//!
//! The docs site shows each component on a page of its own, cut from its section of that file
//! (the `pages` module), and lists those pages in its sidebar between the `reference-pages`
//! markers of `website/src/SUMMARY.md` (and in `README.md`, between its `components` markers);
//! [`generate`] makes them all, so `website/components.md` stays the one place where a component
//! is documented.

use std::collections::{BTreeMap, BTreeSet};

use schemars::{JsonSchema, SchemaGenerator};
use serde_json::Value;
use tapio_sinks::SinkConfig;
use tapio_sources::SourceConfig;
use tapio_transforms::TransformConfig;

use crate::config::BufferOptions;

mod pages;

pub use pages::{PAGES_DIR, Page};

/// Opens a generated block; the text up to ` -->` is the block's key.
const BEGIN: &str = "<!-- generated:";
/// Closes a generated block.
const END: &str = "<!-- /generated -->";
/// The key of the block of buffer options every sink has.
const SINK_BUFFER: &str = "sinks.*.buffer";
/// The key of the block describing the value types the tables name (`duration`, `size`, …).
const VALUE_TYPES: &str = "value-types";

/// The key of the block of `website/src/SUMMARY.md` that lists the component pages.
const SUMMARY_PAGES: &str = "reference-pages";
/// The key of the block of `README.md` that links the component pages.
const README_COMPONENTS: &str = "components";

/// What [`generate`] makes: every generated file of the reference.
pub struct Reference {
    /// `website/components.md` with every table current.
    pub components: String,
    /// `website/src/SUMMARY.md` listing every component page.
    pub summary: String,
    /// `README.md` linking every component page.
    pub readme: String,
    /// The page of each component type, by path under `website/src/`.
    pub pages: Vec<Page>,
}

/// The reference made from the committed `website/components.md` (`components`),
/// `website/src/SUMMARY.md` (`summary`) and `README.md` (`readme`): the first with its tables
/// current, the page of every registered component type cut from it, the other two listing
/// those pages. An error names the file to fix and, for a new component, what it needs.
pub fn generate(components: &str, summary: &str, readme: &str) -> Result<Reference, String> {
    let new_component = "a new component needs its own `### `<type>`` section under `## Sources`, \
        `## Transforms` or `## Sinks` there, with a line of prose and the two marker lines \
        `<!-- generated:<kind>.<type> -->` and `<!-- /generated -->`; then \
        `TAPIO_BLESS=1 cargo test -p tapio-topology --test reference` writes its table, its page \
        on the site and the site's sidebar entry";
    let components = update(components)
        .map_err(|error| format!("website/components.md: {error}.\nHint: {new_component}"))?;
    let types = [
        ("sources", SourceConfig::TYPES),
        ("transforms", TransformConfig::TYPES),
        ("sinks", SinkConfig::TYPES),
    ];
    let pages = pages::pages(&components, &types)
        .map_err(|error| format!("website/components.md: {error}.\nHint: {new_component}"))?;
    let list = BTreeMap::from([(SUMMARY_PAGES.to_owned(), pages::summary(&pages))]);
    let summary =
        splice(summary, &list).map_err(|error| format!("website/src/SUMMARY.md: {error}"))?;
    let list = BTreeMap::from([(README_COMPONENTS.to_owned(), pages::readme_list(&pages))]);
    let readme = splice(readme, &list).map_err(|error| format!("README.md: {error}"))?;
    Ok(Reference {
        components,
        summary,
        readme,
        pages,
    })
}

/// `markdown` with the content of every generated block replaced by the current tables. Fails
/// when a block has no markers in `markdown`, or a marker names no block, so that no table goes
/// missing or stale silently.
fn update(markdown: &str) -> Result<String, String> {
    splice(markdown, &blocks()?)
}

/// Every generated block by key: `<kind>s.<type>` for each component type, the sinks' buffer
/// options and the value types.
fn blocks() -> Result<BTreeMap<String, String>, String> {
    let mut tables = Tables::default();
    tables.registry::<SourceConfig>("sources")?;
    tables.registry::<TransformConfig>("transforms")?;
    tables.registry::<SinkConfig>("sinks")?;
    let buffer = root_schema::<BufferOptions>();
    let table = tables.options_table(&buffer, &buffer, "buffer.", SINK_BUFFER)?;
    tables.blocks.insert(SINK_BUFFER.to_owned(), table);
    let value_types = tables.value_types_table();
    tables.blocks.insert(VALUE_TYPES.to_owned(), value_types);
    Ok(tables.blocks)
}

/// The JSON Schema of `T`, with every type it uses under `$defs`.
fn root_schema<T: JsonSchema>() -> Value {
    SchemaGenerator::default()
        .into_root_schema_for::<T>()
        .to_value()
}

/// Replaces the content of each marked block of `markdown` with its entry in `blocks`.
fn splice(markdown: &str, blocks: &BTreeMap<String, String>) -> Result<String, String> {
    let mut out = String::with_capacity(markdown.len());
    let mut placed = BTreeSet::new();
    let mut rest = markdown;
    while let Some(start) = rest.find(BEGIN) {
        let after_begin = &rest[start + BEGIN.len()..];
        let key_end = after_begin
            .find("-->")
            .ok_or_else(|| format!("a `{BEGIN}` marker is not closed with `-->`"))?;
        let key = after_begin[..key_end].trim();
        let content = blocks.get(key).ok_or_else(|| {
            let known: Vec<&str> = blocks.keys().map(String::as_str).collect();
            format!(
                "`{BEGIN}{key} -->` names no generated block; known: {}",
                known.join(", ")
            )
        })?;
        let body = &after_begin[key_end + "-->".len()..];
        let body_end = body
            .find(END)
            .ok_or_else(|| format!("the block `{key}` has no closing `{END}`"))?;
        if !placed.insert(key) {
            return Err(format!("the block `{key}` is marked twice"));
        }
        out.push_str(&rest[..start]);
        out.push_str(&format!("{BEGIN}{key} -->\n{content}{END}"));
        rest = &body[body_end + END.len()..];
    }
    out.push_str(rest);
    let missing: Vec<&str> = blocks
        .keys()
        .map(String::as_str)
        .filter(|key| !placed.contains(key))
        .collect();
    if !missing.is_empty() {
        return Err(format!(
            "no place for the generated blocks {}: add `{BEGIN}<key> -->` and `{END}` lines \
             under each one's section",
            missing.join(", ")
        ));
    }
    Ok(out)
}

/// One option of a table.
struct Row {
    name: String,
    type_name: String,
    default: String,
    doc: String,
}

/// The tables made so far, and the value types (`format`s) they name, with their descriptions.
#[derive(Default)]
struct Tables {
    blocks: BTreeMap<String, String>,
    value_types: BTreeMap<String, String>,
}

impl Tables {
    /// One block per variant of the externally tagged registry `T`, keyed `<section>.<type>`.
    fn registry<T: JsonSchema>(&mut self, section: &str) -> Result<(), String> {
        let root = root_schema::<T>();
        let variants = root["oneOf"]
            .as_array()
            .ok_or_else(|| format!("the {section} registry is not an enum of component types"))?;
        for variant in variants {
            let Some((type_name, config)) = variant["properties"]
                .as_object()
                .and_then(|properties| properties.iter().next())
            else {
                return Err(format!("a {section} type carries no options: {variant}"));
            };
            let key = format!("{section}.{type_name}");
            let table = self.options_table(&root, config, "", &key)?;
            self.blocks.insert(key, table);
        }
        Ok(())
    }

    /// The Markdown table of the options of `config` (a struct's schema, `$ref`s resolved in
    /// `root`), option names prefixed with `prefix`; `key` names the component in errors.
    fn options_table(
        &mut self,
        root: &Value,
        config: &Value,
        prefix: &str,
        key: &str,
    ) -> Result<String, String> {
        let mut rows = Vec::new();
        self.rows(root, config, prefix, key, &mut rows)?;
        let mut table =
            String::from("| option | type | default | description |\n|---|---|---|---|\n");
        for row in rows {
            table.push_str(&format!(
                "| `{}` | {} | {} | {} |\n",
                row.name,
                cell(&row.type_name),
                cell(&row.default),
                cell(&row.doc)
            ));
        }
        Ok(table)
    }

    /// Appends a row for each property of the struct `schema`, required ones first, then by
    /// name; a property that is itself a table (or a list of tables) is followed by rows for its
    /// own options, named `<name>.<option>` (or `<name>[].<option>`).
    fn rows(
        &mut self,
        root: &Value,
        schema: &Value,
        prefix: &str,
        key: &str,
        rows: &mut Vec<Row>,
    ) -> Result<(), String> {
        let schema = resolve(root, schema);
        let Some(properties) = schema["properties"].as_object() else {
            return Ok(());
        };
        let required: BTreeSet<&str> = schema["required"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        let mut names: Vec<&String> = properties.keys().collect();
        names.sort_by_key(|name| (!required.contains(name.as_str()), *name));
        for name in names {
            let property = &properties[name];
            let option = format!("{prefix}{name}");
            let doc = property["description"]
                .as_str()
                .map(|doc| doc.split_whitespace().collect::<Vec<_>>().join(" "))
                .filter(|doc| !doc.is_empty())
                .ok_or_else(|| format!("{key}: option `{option}` has no doc comment"))?;
            let (value, optional) = without_null(property);
            let nested = resolve(root, &value);
            let is_table = nested["properties"].is_object();
            let default = if required.contains(name.as_str()) {
                "required".to_owned()
            } else if let Some(default) = property.get("default") {
                match default {
                    Value::Null => "none".to_owned(),
                    default => format!("`{}`", toml_value(default)),
                }
            } else if is_table && optional {
                "none".to_owned()
            } else if is_table {
                String::new()
            } else {
                return Err(format!(
                    "{key}: the default of `{option}` cannot be shown: its type does not \
                     implement Serialize"
                ));
            };
            rows.push(Row {
                name: option.clone(),
                type_name: self.type_name(root, &value),
                default,
                doc,
            });
            if is_table {
                self.rows(root, nested, &format!("{option}."), key, rows)?;
            } else if let Some(items) = nested.get("items").map(|items| resolve(root, items))
                && items["properties"].is_object()
            {
                self.rows(root, items, &format!("{option}[]."), key, rows)?;
            }
        }
        Ok(())
    }

    /// How a value of `schema` is written, for the type column: `bool`, `integer`, `duration`,
    /// `list of string`, the allowed values of an enum, …
    fn type_name(&mut self, root: &Value, schema: &Value) -> String {
        let schema = resolve(root, schema);
        if let Some(values) = allowed_values(schema) {
            return values;
        }
        if let Some(alternatives) = schema["anyOf"].as_array() {
            let names: Vec<String> = alternatives
                .iter()
                .map(|alternative| self.type_name(root, alternative))
                .collect();
            return names.join(" or ");
        }
        let types: Vec<&str> = match &schema["type"] {
            Value::String(one) => vec![one.as_str()],
            Value::Array(many) => many.iter().filter_map(Value::as_str).collect(),
            _ => Vec::new(),
        };
        let numeric = types.iter().all(|t| *t == "integer" || *t == "number");
        if let Some(format) = schema["format"].as_str().filter(|_| !numeric) {
            let description = schema["description"].as_str().unwrap_or_default();
            self.value_types
                .insert(format.to_owned(), description.to_owned());
            return format.to_owned();
        }
        let names: Vec<String> = types
            .iter()
            .map(|t| match *t {
                "boolean" => "bool".to_owned(),
                "array" => match schema.get("items") {
                    Some(items) if resolve(root, items)["properties"].is_object() => {
                        "list of tables".to_owned()
                    }
                    Some(items) => format!("list of {}", self.type_name(root, items)),
                    None => "list".to_owned(),
                },
                "object" if schema["properties"].is_object() => "table".to_owned(),
                "object" => match schema.get("additionalProperties") {
                    Some(values) if values.is_object() => {
                        format!("table of {}", self.type_name(root, values))
                    }
                    _ => "table".to_owned(),
                },
                other => other.to_owned(),
            })
            .collect();
        names.join(" or ")
    }

    /// The table of the value types the option tables name, with how each is written.
    fn value_types_table(&self) -> String {
        let mut table = String::from("| type | written as |\n|---|---|\n");
        for (name, description) in &self.value_types {
            table.push_str(&format!("| {name} | {} |\n", cell(description)));
        }
        table
    }
}

/// `schema`, or the definition in `root` it refers to (`{"$ref": "#/$defs/<name>"}`).
fn resolve<'a>(root: &'a Value, schema: &'a Value) -> &'a Value {
    schema["$ref"]
        .as_str()
        .and_then(|reference| reference.strip_prefix("#/$defs/"))
        .and_then(|name| root["$defs"].get(name))
        .unwrap_or(schema)
}

/// `schema` without the `null` schemars adds for an `Option`, and whether it was there.
fn without_null(schema: &Value) -> (Value, bool) {
    let is_null = |s: &Value| s["type"] == "null";
    let mut schema = schema.clone();
    if let Some(alternatives) = schema["anyOf"].as_array()
        && alternatives.iter().any(is_null)
    {
        let kept: Vec<Value> = alternatives
            .iter()
            .filter(|s| !is_null(s))
            .cloned()
            .collect();
        schema = match <[Value; 1]>::try_from(kept) {
            Ok([only]) => only,
            Err(kept) => serde_json::json!({ "anyOf": kept }),
        };
        return (schema, true);
    }
    if let Some(Value::Array(types)) = schema.get_mut("type")
        && types.iter().any(|t| t == "null")
    {
        types.retain(|t| t != "null");
        if let [only] = types.as_slice() {
            let only = only.clone();
            schema["type"] = only;
        }
        return (schema, true);
    }
    (schema, false)
}

/// The values an enum allows (`"json"` or `"text"`), from `enum` or a `oneOf` of `const`s.
fn allowed_values(schema: &Value) -> Option<String> {
    let values: Vec<&Value> = match (&schema["enum"], &schema["oneOf"]) {
        (Value::Array(values), _) => values.iter().collect(),
        (_, Value::Array(variants)) => variants
            .iter()
            .map(|variant| variant.get("const"))
            .collect::<Option<_>>()?,
        _ => return None,
    };
    let written: Vec<String> = values
        .iter()
        .map(|value| format!("`{}`", toml_value(value)))
        .collect();
    Some(match written.split_last() {
        Some((last, [])) => last.clone(),
        Some((last, others)) => format!("{} or {last}", others.join(", ")),
        None => String::new(),
    })
}

/// `value` as it is written in `tapio.toml` (inline tables, strings quoted).
fn toml_value(value: &Value) -> String {
    match value {
        Value::Array(items) => {
            let items: Vec<String> = items.iter().map(toml_value).collect();
            format!("[{}]", items.join(", "))
        }
        Value::Object(entries) if entries.is_empty() => "{}".to_owned(),
        Value::Object(entries) => {
            let entries: Vec<String> = entries
                .iter()
                .map(|(key, value)| format!("{} = {}", toml_key(key), toml_value(value)))
                .collect();
            format!("{{ {} }}", entries.join(", "))
        }
        other => other.to_string(),
    }
}

/// `key` as a TOML key: bare when it can be, else quoted (`"fetch.max.bytes"`).
fn toml_key(key: &str) -> String {
    let bare = !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if bare {
        key.to_owned()
    } else {
        Value::from(key).to_string()
    }
}

/// `text` made safe for one Markdown table cell.
fn cell(text: &str) -> String {
    text.replace('|', "\\|").replace('\n', " ")
}

#[cfg(test)]
mod tests;
