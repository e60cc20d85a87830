//! What a reload changes: the running config and a new, validated one compared component by
//! component (its `type` and options as parsed, a sink's buffer), so that only what changed is
//! stopped and started. A component's `inputs` are not part of it: they are its producers'
//! wiring, which the running topology redoes without restarting anyone.

use std::collections::BTreeMap;

use tapio_event::metrics::ComponentKind;
use tokio::sync::oneshot;

use crate::config::{Config, Options};
use crate::running::ComponentFailure;

/// What a reload does with one component.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// Unchanged: keeps running untouched (its producers may be rewired).
    Keep,
    /// A sink whose options changed but whose buffer did not: the new sink takes over the
    /// buffer (and its disk buffer) once the old one has delivered what it had taken.
    Rebuild,
    /// Changed: a new instance takes over. A transform's new instance runs beside the old one
    /// while the old drains what it was sent; a source's and a sink's start once the old one
    /// has finished (so a port, a file or a disk buffer is never held twice).
    Replace,
    /// New in the config.
    Add,
    /// Gone from the config: a source is stopped, a transform or sink drains what it was
    /// sent and ends.
    Remove,
}

/// Every component's [`Change`], in name order. A name moved to another kind is two entries:
/// the old component removed and the new one added.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Diff {
    pub changes: Vec<(String, ComponentKind, Change)>,
}

/// One component as the diff sees it.
struct Compared<'a> {
    kind: ComponentKind,
    type_name: &'static str,
    options: &'a Options,
    buffer: Option<&'a crate::config::BufferOptions>,
}

fn components(config: &Config) -> BTreeMap<&str, Compared<'_>> {
    let sources = config.sources.iter().map(|c| {
        let compared = Compared {
            kind: ComponentKind::Source,
            type_name: c.config.type_name(),
            options: &c.options,
            buffer: None,
        };
        (c.name.as_str(), compared)
    });
    let transforms = config.transforms.iter().map(|c| {
        let compared = Compared {
            kind: ComponentKind::Transform,
            type_name: c.config.type_name(),
            options: &c.options,
            buffer: None,
        };
        (c.name.as_str(), compared)
    });
    let sinks = config.sinks.iter().map(|c| {
        let compared = Compared {
            kind: ComponentKind::Sink,
            type_name: c.config.type_name(),
            options: &c.options,
            buffer: Some(&c.buffer),
        };
        (c.name.as_str(), compared)
    });
    sources.chain(transforms).chain(sinks).collect()
}

impl Diff {
    /// Compares `new` with `current`; `running` says which of `current`'s components still
    /// run (one that finished is started again if `new` has it). A change that cannot be made
    /// while running is an error naming the option, and nothing is changed.
    pub fn between(
        current: &Config,
        new: &Config,
        running: impl Fn(&str) -> bool,
    ) -> Result<Diff, Vec<ComponentFailure>> {
        let old = components(current);
        let now = components(new);
        let mut diff = Diff::default();
        let mut problems = Vec::new();
        if current.data_dir != new.data_dir {
            problems.push(restart_only(
                "data_dir",
                "the components' state and disk buffers live there",
            ));
        }
        for (name, now) in &now {
            let change = match old.get(name) {
                Some(before) if before.kind == now.kind && running(name) => {
                    let new_buffer = before.buffer != now.buffer;
                    if new_buffer || before.type_name != now.type_name {
                        // A sink of another type, or with other buffer options, gets a new
                        // buffer once the old sink has drained its own.
                        let disk = |b: Option<&crate::config::BufferOptions>| {
                            b.and_then(|b| b.disk()).is_some()
                        };
                        if disk(before.buffer) || disk(now.buffer) {
                            let option = if new_buffer { "buffer" } else { "type" };
                            problems.push(restart_only(
                                &format!("sinks.{name}.{option}"),
                                "the sink's disk buffer is kept and reopened by the next start",
                            ));
                        }
                        Change::Replace
                    } else if before.options != now.options {
                        if now.kind == ComponentKind::Sink {
                            Change::Rebuild
                        } else {
                            Change::Replace
                        }
                    } else {
                        Change::Keep
                    }
                }
                _ => Change::Add,
            };
            diff.changes.push((name.to_string(), now.kind, change));
        }
        for (name, before) in &old {
            let kept = now.get(name).is_some_and(|now| now.kind == before.kind);
            if running(name) && !kept {
                diff.changes
                    .push((name.to_string(), before.kind, Change::Remove));
            }
        }
        diff.changes.sort_by(|a, b| a.0.cmp(&b.0));
        if problems.is_empty() {
            Ok(diff)
        } else {
            Err(problems)
        }
    }

    /// The names with `change`, in name order.
    pub fn with(&self, change: Change) -> impl Iterator<Item = (&str, ComponentKind)> + '_ {
        self.changes
            .iter()
            .filter(move |(_, _, c)| *c == change)
            .map(|(name, kind, _)| (name.as_str(), *kind))
    }

    /// `added 2, changed 1, removed 1, unchanged 3`, for the log line a reload ends with.
    pub fn summary(&self) -> String {
        let names = |changes: &[Change]| {
            let list: Vec<String> = changes
                .iter()
                .flat_map(|c| self.with(*c))
                .map(|(name, kind)| format!("{}s.{name}", kind.as_str()))
                .collect();
            if list.is_empty() {
                "none".to_owned()
            } else {
                list.join(", ")
            }
        };
        format!(
            "added: {}; changed: {}; removed: {}; {} unchanged",
            names(&[Change::Add]),
            names(&[Change::Rebuild, Change::Replace]),
            names(&[Change::Remove]),
            self.with(Change::Keep).count()
        )
    }
}

fn restart_only(key: &str, why: &str) -> ComponentFailure {
    ComponentFailure {
        component: key.to_owned(),
        error: tapio_event::ComponentError::config(format!(
            "cannot change while running ({why}); restart tapio to apply it"
        )),
    }
}

/// A validated config to apply to the running pipeline, and where to say how it went.
pub struct ReloadRequest {
    pub config: Config,
    pub reply: oneshot::Sender<Result<Reloaded, Vec<ComponentFailure>>>,
}

/// An applied reload: what changed, and what the API serves from now on.
pub struct Reloaded {
    /// `added: …; changed: …; removed: …; N unchanged`.
    pub summary: String,
    /// The store, intake and chain after the reload (new ones where it built them anew).
    pub api: crate::ApiHandles,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> Config {
        let loaded = crate::load_str("t.toml", text, |_| None);
        loaded
            .config
            .unwrap_or_else(|| panic!("{:?}", loaded.diagnostics))
    }

    const BASE: &str = r#"
data_dir = "/tmp/tapio-reload-diff"
[sources.in]
type = "demo"
count = 10
[transforms.shape]
type = "filter"
inputs = ["in"]
condition = 'event.source == "demo"'
[sinks.out]
type = "blackhole"
inputs = ["shape"]
[sinks.other]
type = "blackhole"
inputs = ["in"]
"#;

    fn changes(new: &str) -> Vec<(String, Change)> {
        let diff = Diff::between(&load(BASE), &load(new), |_| true).expect("applicable");
        diff.changes
            .into_iter()
            .map(|(name, _, change)| (name, change))
            .collect()
    }

    #[test]
    fn only_what_changed_is_restarted_and_layout_does_not_count() {
        let relaid = BASE.replace("count = 10", "count   =   10   # same");
        assert!(changes(&relaid).iter().all(|(_, c)| *c == Change::Keep));
        let changed = BASE.replace("== \"demo\"", "== \"other\"");
        assert_eq!(
            changes(&changed),
            [
                ("in".into(), Change::Keep),
                ("other".into(), Change::Keep),
                ("out".into(), Change::Keep),
                ("shape".into(), Change::Replace),
            ]
        );
    }

    #[test]
    fn inputs_are_wiring_and_sinks_keep_their_buffer_when_only_options_change() {
        let rewired = BASE.replace("inputs = [\"shape\"]", "inputs = [\"in\"]");
        assert!(changes(&rewired).iter().all(|(_, c)| *c == Change::Keep));
        let sink_changed = BASE.replace(
            "[sinks.other]\ntype = \"blackhole\"",
            "[sinks.other]\ntype = \"blackhole\"\nprint_interval = \"5s\"",
        );
        assert!(changes(&sink_changed).contains(&("other".into(), Change::Rebuild)));
        let buffer_changed = BASE.replace(
            "[sinks.other]\ntype = \"blackhole\"",
            "[sinks.other]\ntype = \"blackhole\"\nbuffer = { max_events = 5 }",
        );
        assert!(changes(&buffer_changed).contains(&("other".into(), Change::Replace)));
    }

    #[test]
    fn added_removed_and_finished_components() {
        let new = BASE.replace("[sinks.other]", "[sinks.third]");
        let diff = Diff::between(&load(BASE), &load(&new), |name| name != "out").unwrap();
        let list = |change| {
            diff.with(change)
                .map(|(n, _)| n.to_owned())
                .collect::<Vec<_>>()
        };
        assert_eq!(
            list(Change::Add),
            ["out", "third"],
            "a finished sink starts again"
        );
        assert_eq!(list(Change::Remove), ["other"]);
        assert!(
            diff.summary()
                .starts_with("added: sinks.out, sinks.third; changed: none; removed: sinks.other")
        );
    }

    #[test]
    fn a_changed_disk_buffer_or_data_dir_needs_a_restart() {
        let new = BASE
            .replace("/tmp/tapio-reload-diff", "/tmp/elsewhere")
            .replace(
                "[sinks.other]\ntype = \"blackhole\"",
                "[sinks.other]\ntype = \"blackhole\"\nbuffer = { type = \"disk\" }",
            );
        let problems = Diff::between(&load(BASE), &load(&new), |_| true).unwrap_err();
        let problems: Vec<String> = problems.iter().map(ToString::to_string).collect();
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(problems[0].starts_with("data_dir: cannot change while running"));
        assert!(problems[1].starts_with("sinks.other.buffer: cannot change while running"));
    }

    #[test]
    fn the_apis_store_and_intake_change_like_any_component() {
        let with_api = format!(
            "{BASE}\n[sources.posted]\ntype = \"api\"\n\n[sinks.recent]\ntype = \"api_store\"\ninputs = [\"posted\"]\n"
        );
        let changes = |from: &str, to: &str| {
            let diff =
                Diff::between(&load(from), &load(to), |_| true).expect("a reload may change them");
            diff.changes
                .into_iter()
                .filter(|(name, _, _)| name == "posted" || name == "recent")
                .map(|(_, _, change)| change)
                .collect::<Vec<_>>()
        };
        assert_eq!(changes(BASE, &with_api), [Change::Add, Change::Add]);
        let bigger = with_api.replace(
            "type = \"api_store\"",
            "type = \"api_store\"\nmax_events = 10",
        );
        assert_eq!(changes(&with_api, &bigger), [Change::Keep, Change::Rebuild]);
        assert_eq!(changes(&with_api, BASE), [Change::Remove, Change::Remove]);
    }
}
