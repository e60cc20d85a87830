//! The `state` variable of a stateful script: a map that outlives one run, so a script can
//! count, remember and compare across events (the last value per pod, a sample counter).
//! It is bounded by `max_state_entries`, since its keys usually come from event data (pod
//! names, addresses) and would otherwise grow with the cluster: storing a new key in a full
//! state fails that event with an error saying so (what the run stored before that stays).
//! A script that mentions `state` runs its events strictly in order, one at a time.

use std::collections::HashMap;

use rhai::{Array, Dynamic, Engine, EvalAltResult, INT, ImmutableString, Position};

/// The entries a stateful script keeps between runs.
#[derive(Debug, Clone)]
pub(crate) struct State {
    entries: HashMap<ImmutableString, Dynamic>,
    max_entries: usize,
}

impl State {
    /// An empty state holding at most `max_entries` keys.
    pub(crate) fn new(max_entries: usize) -> Self {
        State {
            entries: HashMap::new(),
            max_entries,
        }
    }

    fn set(&mut self, key: ImmutableString, value: Dynamic) -> Result<(), Box<EvalAltResult>> {
        if value.is_unit() {
            self.entries.remove(&key);
            return Ok(());
        }
        if self.entries.len() >= self.max_entries && !self.entries.contains_key(&key) {
            let message = format!(
                "state is full ({} entries, max_state_entries); remove keys with state.remove(key) or raise the bound",
                self.max_entries
            );
            return Err(Box::new(EvalAltResult::ErrorRuntime(
                message.into(),
                Position::NONE,
            )));
        }
        self.entries.insert(key, value);
        Ok(())
    }
}

/// Registers the state type: `state["key"]` and `state.key` read (`()` when absent) and
/// write (assigning `()` removes), plus `remove`, `contains` (and so `"key" in state`),
/// `len`, `keys` and `clear`.
pub(crate) fn register(engine: &mut Engine) {
    engine.register_type_with_name::<State>("State");
    engine.register_indexer_get(|state: &mut State, key: ImmutableString| -> Dynamic {
        state.entries.get(&key).cloned().unwrap_or(Dynamic::UNIT)
    });
    engine.register_indexer_set(State::set);
    engine.register_fn("remove", |state: &mut State, key: ImmutableString| {
        state.entries.remove(&key).unwrap_or(Dynamic::UNIT)
    });
    engine.register_fn("contains", |state: &mut State, key: ImmutableString| {
        state.entries.contains_key(&key)
    });
    engine.register_fn("len", |state: &mut State| state.entries.len() as INT);
    engine.register_fn("keys", |state: &mut State| -> Array {
        state.entries.keys().cloned().map(Dynamic::from).collect()
    });
    engine.register_fn("clear", |state: &mut State| state.entries.clear());
}
