//! The event as a script sees it: a custom type whose properties are the event's fields and
//! contexts. A context is converted to a Rhai map only when the script reads it and written
//! back into the typed event only when the script assigns to it (Rhai calls the setter after
//! changing a property chain such as `event.process.comm = "x"` or
//! `event.semantic.tags.push("x")`), so a script pays for the contexts it touches, not for a
//! JSON round trip of the whole event.
//!
//! An absent context reads as a map without fields, so `event.kubernetes.reason` is `()` and
//! assigning into it creates the context; `semantic` always has its `tags` list. A value of the
//! wrong type for a typed field fails the event with an error naming the field.

use rhai::{Array, Dynamic, EvalAltResult, FLOAT, INT, ImmutableString, Map, Position};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use tapio_event::{EventType, UnifiedEvent};

/// The `event` variable of a script.
#[derive(Debug, Clone)]
pub(crate) struct ScriptEvent(pub(crate) UnifiedEvent);

/// The error a setter returns, positioned by Rhai at the assignment.
fn field_error(message: String) -> Box<EvalAltResult> {
    Box::new(EvalAltResult::ErrorRuntime(message.into(), Position::NONE))
}

/// A JSON value as the script's value: objects become maps, arrays arrays, integers `INT`.
pub(crate) fn to_dynamic(value: Value) -> Dynamic {
    match value {
        Value::Null => Dynamic::UNIT,
        Value::Bool(b) => b.into(),
        Value::Number(n) => match n.as_i64() {
            Some(i) => (i as INT).into(),
            // Beyond INT (a u64 above i64::MAX): the nearest float, as JSON readers do.
            None => (n.as_f64().unwrap_or(FLOAT::NAN) as FLOAT).into(),
        },
        Value::String(s) => s.into(),
        Value::Array(items) => items.into_iter().map(to_dynamic).collect::<Array>().into(),
        Value::Object(fields) => fields
            .into_iter()
            .map(|(key, value)| (key.into(), to_dynamic(value)))
            .collect::<Map>()
            .into(),
    }
}

/// A script's value as JSON, or what it is when it has no JSON form (a function pointer, a
/// timestamp, a float that is not a number).
pub(crate) fn to_json(value: &Dynamic) -> Result<Value, String> {
    if value.is_unit() {
        return Ok(Value::Null);
    }
    if let Ok(b) = value.as_bool() {
        return Ok(b.into());
    }
    if let Ok(i) = value.as_int() {
        return Ok(i.into());
    }
    if let Ok(f) = value.as_float() {
        return serde_json::Number::from_f64(f)
            .map(Value::Number)
            .ok_or_else(|| format!("{f} is not a number JSON can hold"));
    }
    if let Ok(c) = value.as_char() {
        return Ok(c.to_string().into());
    }
    if let Some(s) = value.read_lock::<ImmutableString>() {
        return Ok(s.as_str().into());
    }
    if let Some(items) = value.read_lock::<Array>() {
        return items
            .iter()
            .map(to_json)
            .collect::<Result<_, _>>()
            .map(Value::Array);
    }
    if let Some(fields) = value.read_lock::<Map>() {
        return fields
            .iter()
            .map(|(key, value)| Ok((key.to_string(), to_json(value)?)))
            .collect::<Result<_, String>>()
            .map(Value::Object);
    }
    Err(format!(
        "a {} cannot be stored in an event",
        value.type_name()
    ))
}

/// A context as the map a script reads: its fields, or none when the event lacks it.
/// Serialized straight into Rhai values, without a JSON tree in between.
fn read_context<C: Serialize>(context: Option<&C>) -> Dynamic {
    match context {
        Some(context) => rhai::serde::to_dynamic(context).unwrap_or(Dynamic::UNIT),
        None => Map::new().into(),
    }
}

/// The typed context a script assigned, `None` for `()` or a map without fields, or an error
/// naming the first field whose value the type refuses.
fn write_context<C: DeserializeOwned>(name: &str, value: Dynamic) -> Result<Option<C>, String> {
    // Straight from the Rhai map in the common case; through JSON when that fails, since
    // JSON's rules are the event's (an integer where a float goes) and it can blame a field.
    if value
        .read_lock::<Map>()
        .is_some_and(|fields| !fields.is_empty())
        && let Ok(context) = rhai::serde::from_dynamic::<C>(&value)
    {
        return Ok(Some(context));
    }
    let json = to_json(&value).map_err(|error| format!("{name}: {error}"))?;
    let fields = match &json {
        Value::Null => return Ok(None),
        Value::Object(fields) if fields.is_empty() => return Ok(None),
        Value::Object(fields) => fields,
        other => return Err(format!("{name}: must be a map, not {other}")),
    };
    // Read from the map in place; it is looked at again only to blame a field.
    C::deserialize(&json).map(Some).map_err(|whole| {
        blame_field::<C>(name, fields).unwrap_or_else(|| format!("{name}: {whole}"))
    })
}

/// Which field of a context's map a type refuses, for an error that names it: the first
/// whose value alone does not deserialize.
fn blame_field<C: DeserializeOwned>(
    name: &str,
    fields: &serde_json::Map<String, Value>,
) -> Option<String> {
    fields.iter().find_map(|(key, value)| {
        let single = Value::Object(serde_json::Map::from_iter([(key.clone(), value.clone())]));
        C::deserialize(&single)
            .err()
            .filter(|e| !e.to_string().starts_with("missing field"))
            .map(|e| format!("{name}.{key}: {e}"))
    })
}

/// `text` as a script string, reusing the one made for the previous call on this thread when
/// the text is the same: an event's type and source repeat from event to event, and a script
/// string is an allocation each time it is made.
fn repeated_text(text: &str) -> ImmutableString {
    thread_local! {
        static LAST: std::cell::RefCell<[ImmutableString; 2]> = Default::default();
    }
    LAST.with(|last| {
        let mut last = last.borrow_mut();
        if let Some(found) = last.iter().find(|s| s.as_str() == text) {
            return found.clone();
        }
        let made = ImmutableString::from(text);
        last.rotate_right(1);
        last[0] = made.clone();
        made
    })
}

/// The semantic context of a map holding only `tags` (strings), built without the
/// deserializer: pushing a tag onto an event without semantics is the write scripts make most.
fn tags_only(value: &Dynamic) -> Option<tapio_event::SemanticContext> {
    let fields = value.read_lock::<Map>()?;
    let tags = match fields.len() {
        1 => fields.get("tags")?.read_lock::<Array>()?,
        _ => return None,
    };
    let tags = tags
        .iter()
        .map(|tag| tag.read_lock::<ImmutableString>().map(|s| s.to_string()))
        .collect::<Option<Vec<String>>>()?;
    Some(tapio_event::SemanticContext {
        tags,
        ..Default::default()
    })
}

/// Registers the `event` type with a getter and setter per field and context.
pub(crate) fn register(engine: &mut rhai::Engine) {
    engine.register_type_with_name::<ScriptEvent>("Event");
    engine.register_get_set(
        "id",
        |e: &mut ScriptEvent| -> ImmutableString { e.0.id.as_str().into() },
        |e: &mut ScriptEvent, id: ImmutableString| e.0.id = id.to_string(),
    );
    engine.register_get_set(
        "source",
        |e: &mut ScriptEvent| repeated_text(&e.0.source),
        |e: &mut ScriptEvent, source: ImmutableString| e.0.source = source.to_string(),
    );
    engine.register_get_set(
        "type",
        |e: &mut ScriptEvent| repeated_text(e.0.kind.as_str()),
        |e: &mut ScriptEvent, kind: ImmutableString| -> Result<(), Box<EvalAltResult>> {
            e.0.kind = serde_json::from_value::<EventType>(Value::String(kind.to_string()))
                .map_err(|error| field_error(format!("type: {error}")))?;
            Ok(())
        },
    );
    engine.register_get("timestamp", |e: &mut ScriptEvent| -> ImmutableString {
        e.0.timestamp.to_string().into()
    });
    macro_rules! context {
        ($($name:literal => $field:ident,)+) => {$(
            engine.register_get_set(
                $name,
                |e: &mut ScriptEvent| read_context(e.0.$field.as_deref()),
                |e: &mut ScriptEvent, value: Dynamic| -> Result<(), Box<EvalAltResult>> {
                    e.0.$field = write_context($name, value).map_err(field_error)?.map(Box::new);
                    Ok(())
                },
            );
        )+};
    }
    context! {
        "trace_context" => trace_context,
        "entity" => entity,
        "network" => network,
        "process" => process,
        "kubernetes" => kubernetes,
        "systemd" => systemd,
        "application" => application,
        "impact" => impact,
        "correlation" => correlation,
    }
    // `semantic` always offers its `tags`, so a tag can be pushed onto an event without one.
    engine.register_get_set(
        "semantic",
        |e: &mut ScriptEvent| {
            let mut semantic = read_context(e.0.semantic.as_deref());
            if let Some(mut fields) = semantic.write_lock::<Map>() {
                fields
                    .entry("tags".into())
                    .or_insert_with(|| Array::new().into());
            }
            semantic
        },
        |e: &mut ScriptEvent, value: Dynamic| -> Result<(), Box<EvalAltResult>> {
            let semantic = match tags_only(&value) {
                Some(tagged) => Some(tagged),
                None => write_context("semantic", value).map_err(field_error)?,
            };
            e.0.semantic = semantic
                .filter(|s| *s != tapio_event::SemanticContext::default())
                .map(Box::new);
            Ok(())
        },
    );
}
