//! What the source knows of each unit, and which changes are transitions worth an event. A
//! D-Bus `PropertiesChanged` signal repeats every property of an interface whenever any of them
//! changes, so most signals restate a unit's state: only a new `ActiveState` or `SubState` is
//! a transition. systemd sends the unit type's interface (`Service`: `Result`,
//! `ExecMainStatus`, `MainPID`, `NRestarts`) before the generic `Unit` one, so those values are
//! current when the state changes and travel with the event.

use std::collections::HashMap;

use glob::Pattern;

/// Property values read from systemd (a `PropertiesChanged` signal, `GetAll` or `ListUnits`);
/// `None` is "not in this reading", never "empty".
#[derive(Debug, Clone, Default, PartialEq)]
pub(super) struct Reading {
    pub active_state: Option<String>,
    pub sub_state: Option<String>,
    pub result: Option<String>,
    pub slice: Option<String>,
    /// `ExecMainCode`: 0 not exited yet, 1 exited (`CLD_EXITED`), 2 killed, 3 dumped core.
    pub exec_main_code: Option<i32>,
    pub exec_main_status: Option<i32>,
    pub main_pid: Option<u32>,
    pub restarts: Option<u32>,
    /// `StateChangeTimestamp`: when the unit last changed state, in µs since the epoch.
    pub changed_at: Option<u64>,
}

impl Reading {
    /// Overwrites what `newer` says, keeps the rest.
    pub fn merge(&mut self, newer: Reading) {
        let Reading {
            active_state,
            sub_state,
            result,
            slice,
            exec_main_code,
            exec_main_status,
            main_pid,
            restarts,
            changed_at,
        } = newer;
        fn set<T>(field: &mut Option<T>, value: Option<T>) {
            if value.is_some() {
                *field = value;
            }
        }
        set(&mut self.active_state, active_state);
        set(&mut self.sub_state, sub_state);
        set(&mut self.result, result);
        set(&mut self.slice, slice);
        set(&mut self.exec_main_code, exec_main_code);
        set(&mut self.exec_main_status, exec_main_status);
        set(&mut self.main_pid, main_pid);
        set(&mut self.restarts, restarts);
        set(&mut self.changed_at, changed_at);
    }

    /// The exit code of the main process, once it exited on its own.
    pub fn exit_status(&self) -> Option<i32> {
        const CLD_EXITED: i32 = 1;
        (self.exec_main_code == Some(CLD_EXITED))
            .then_some(self.exec_main_status)
            .flatten()
    }
}

/// One unit as last seen.
#[derive(Debug, Clone)]
pub(super) struct Unit {
    pub name: String,
    pub state: Reading,
    /// Whether its type-specific properties were asked for since it was loaded.
    asked: bool,
}

impl Unit {
    fn new(name: &str, state: Reading) -> Self {
        Unit {
            name: name.to_owned(),
            state,
            asked: false,
        }
    }
}

/// A change of a unit's state: the unit after it, and the state it left.
#[derive(Debug)]
pub(super) struct Transition<'a> {
    pub unit: &'a Unit,
    pub from: Option<String>,
}

impl Transition<'_> {
    /// What the change did. D-Bus job signals carry no job type (and a fast job is gone before
    /// it could be asked for), so it is read from the direction of the change: into
    /// `activating`/`active` is a start, `auto-restart` systemd's own restart, into
    /// `deactivating` (and on to `inactive`) a stop, `reloading` a reload. A unit whose
    /// processes ended by themselves (to `failed`, or straight to `inactive`) ran no job.
    pub fn job_type(&self) -> Option<&'static str> {
        let to = self.unit.state.active_state.as_deref()?;
        if self.unit.state.sub_state.as_deref() == Some("auto-restart") {
            return Some("restart");
        }
        match (self.from.as_deref(), to) {
            (_, "reloading") | (Some("reloading"), "active") => Some("reload"),
            (Some("active"), "active") => None,
            (_, "activating" | "active") => Some("start"),
            (_, "deactivating") | (Some("deactivating"), "inactive") => Some("stop"),
            _ => None,
        }
    }
}

/// Which units are reported: `include` globs minus `exclude` globs, and with
/// `report_failed` any unit (not excluded) that enters `failed`.
#[derive(Debug, Clone)]
pub(super) struct UnitFilter {
    pub include: Vec<Pattern>,
    pub exclude: Vec<Pattern>,
    pub report_failed: bool,
}

impl UnitFilter {
    /// Whether `name` is followed closely: its properties are read, its transitions reported.
    pub fn watches(&self, name: &str) -> bool {
        self.include.iter().any(|p| p.matches(name)) && !self.excluded(name)
    }

    fn excluded(&self, name: &str) -> bool {
        self.exclude.iter().any(|p| p.matches(name))
    }

    /// Whether this transition of `unit` is reported.
    fn reports(&self, unit: &Unit) -> bool {
        self.watches(&unit.name)
            || (self.report_failed
                && unit.state.active_state.as_deref() == Some("failed")
                && !self.excluded(&unit.name))
    }
}

/// Every loaded unit by name: the watched ones with all they said, the rest with their state
/// only (to see them enter `failed`).
#[derive(Debug)]
pub(super) struct Units {
    filter: UnitFilter,
    units: HashMap<String, Unit>,
}

impl Units {
    pub fn new(filter: UnitFilter) -> Self {
        Units {
            filter,
            units: HashMap::new(),
        }
    }

    /// Learns that `name` was loaded (`UnitNew`): known, with no state yet, so its first
    /// state is a transition.
    pub fn loaded(&mut self, name: &str) {
        self.units
            .entry(name.to_owned())
            .or_insert_with(|| Unit::new(name, Reading::default()));
    }

    /// Whether the source should ask for `name`'s type-specific properties (its slice) before
    /// taking in a signal about it: once per loaded unit, and only for watched scopes. Asking
    /// loads a unit systemd has just unloaded again (it sends `UnitNew`, never a state), so
    /// this is never asked on `UnitNew`, which would then repeat forever.
    pub fn wants_details(&mut self, name: &str) -> bool {
        if !self.slice_matters(name) {
            return false;
        }
        let unit = self
            .units
            .entry(name.to_owned())
            .or_insert_with(|| Unit::new(name, Reading::default()));
        !std::mem::replace(&mut unit.asked, true)
    }

    /// What [`Units::wants_details`] would answer, without recording that it was asked.
    pub fn needs_details(&self, name: &str) -> bool {
        self.slice_matters(name) && self.units.get(name).is_none_or(|unit| !unit.asked)
    }

    /// A watched scope's slice names the pod of the container in it; any other unit's slice
    /// tells nothing its name does not (a pod slice names itself), and the signals carry the
    /// rest, so asking would only cost a round trip per unit.
    fn slice_matters(&self, name: &str) -> bool {
        name.ends_with(".scope") && self.filter.watches(name)
    }

    /// Takes in `reading` of `name`; returns the transition if it changed the unit's state
    /// and the unit is reported. The first state seen of a unit is a transition unless it is
    /// `inactive` (a unit loaded only to be looked at) or the source is `learning` (reading
    /// what was there when it started).
    pub fn apply(
        &mut self,
        name: &str,
        mut reading: Reading,
        learning: bool,
    ) -> Option<Transition<'_>> {
        if !self.filter.watches(name) {
            // Only the state matters for a unit that is reported only when it fails.
            reading = Reading {
                active_state: reading.active_state,
                sub_state: reading.sub_state,
                changed_at: reading.changed_at,
                ..Reading::default()
            };
        }
        let before = match self.units.get_mut(name) {
            Some(unit) => {
                let before = (
                    unit.state.active_state.clone(),
                    unit.state.sub_state.clone(),
                );
                unit.state.merge(reading);
                Some(before)
            }
            None => {
                self.units.insert(name.to_owned(), Unit::new(name, reading));
                None
            }
        };
        let unit = &self.units[name];
        let now = (&unit.state.active_state, &unit.state.sub_state);
        let changed = match &before {
            None if learning => false,
            None | Some((None, _)) => now.0.as_deref().is_some_and(|state| state != "inactive"),
            Some((active, sub)) => now != (active, sub),
        };
        (changed && self.filter.reports(unit)).then(|| Transition {
            unit,
            from: before.and_then(|(active, _)| active),
        })
    }

    /// Forgets a unit systemd unloaded.
    pub fn remove(&mut self, name: &str) {
        self.units.remove(name);
    }

    /// Forgets every unit not in `loaded` (they were unloaded while the source was away).
    pub fn retain(&mut self, loaded: &std::collections::HashSet<String>) {
        self.units.retain(|name, _| loaded.contains(name));
    }
}

/// The unit name a systemd object path encodes: `/org/freedesktop/systemd1/unit/<label>`,
/// where every byte but `[A-Za-z0-9]` is `_xx` (hex), as systemd's `bus_label_escape` writes.
pub(super) fn unit_of_path(path: &str) -> Option<String> {
    let label = path.strip_prefix(UNIT_PATH_PREFIX)?;
    let bytes = label.as_bytes();
    let mut name = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'_' {
            let hex = label.get(i + 1..i + 3)?;
            name.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            name.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(name).ok()
}

/// The object path of unit `name` (the inverse of [`unit_of_path`]).
pub(super) fn path_of_unit(name: &str) -> String {
    let mut path = String::with_capacity(UNIT_PATH_PREFIX.len() + name.len() * 2);
    path.push_str(UNIT_PATH_PREFIX);
    for (i, b) in name.bytes().enumerate() {
        if b.is_ascii_alphabetic() || (i > 0 && b.is_ascii_digit()) {
            path.push(char::from(b));
        } else {
            path.push_str(&format!("_{b:02x}"));
        }
    }
    path
}

/// Where systemd puts unit objects.
pub(super) const UNIT_PATH_PREFIX: &str = "/org/freedesktop/systemd1/unit/";
