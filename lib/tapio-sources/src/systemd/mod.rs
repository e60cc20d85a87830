//! `type = "systemd"`: the node's unit manager over D-Bus. Container scopes, pod slices and the
//! node's runtime services starting, stopping, failing and restarting become `systemd` events;
//! a scope's container id and its slice's pod uid are read from their names, so enrichment
//! ties them to the pod.
//!
//! ```toml
//! [sources.units]
//! type = "systemd"
//! bus = "system"                # or "user", or a D-Bus address ("unix:path=/run/dbus/system_bus_socket")
//! units.include = ["kubepods*.slice", "cri-containerd-*.scope", "kubelet.service"]   # see the defaults
//! units.exclude = []
//! report_failed = true          # also any other unit that enters `failed`
//! journal = true                # attach the last `journal_lines` journal lines to a failure
//! journal_directory = "/host/var/log/journal"   # unset: this machine's journal
//! required = true               # false: no bus is a warning, and the source keeps trying
//! ```
//!
//! The source calls `Subscribe`, follows every signal of `org.freedesktop.systemd1` in order
//! (`UnitNew`, `UnitRemoved`, `PropertiesChanged` of unit objects; see [`bus`]), and reads the
//! state of the loaded units with `ListUnits` when it connects (and each container scope's
//! slice), without reporting it: the first event is the first real transition. Only a changed `ActiveState` or `SubState` is a
//! transition (see [`units`]). When the bus goes away it reconnects with backoff, and reports
//! what changed while it was away.

mod bus;
mod journal;
#[cfg(test)]
mod tests;
mod units;

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use glob::Pattern;
use schemars::JsonSchema;
use serde::Deserialize;
use tapio_event::backoff::Backoff;
use tapio_event::id::IdGenerator;
use tapio_event::{
    BuildContext, ComponentConfig, ComponentError, ComponentFuture, Entity, EntityType, EventBatch,
    EventType, ShutdownSignal, Source, SourceContext, SystemdContext, Timestamp, UnifiedEvent,
};

use crate::util::kubepods;
use bus::{Bus, Signal};
use units::{Reading, Transition, UnitFilter, Units};

/// Most events sent in one batch: a burst of unit changes fills batches, a lone one goes at once.
const MAX_BATCH: usize = 512;
/// The first wait before connecting again, doubled after each failure up to [`MAX_BACKOFF`].
const MIN_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// Most journal lines a failure event may carry.
const MAX_JOURNAL_LINES: usize = 1000;

/// Reports systemd unit transitions (`type = systemd` events): what a Kubernetes node's
/// container scopes, pod slices and runtime services do.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SystemdConfig {
    /// The bus systemd is on: `"system"` (honours `DBUS_SYSTEM_BUS_ADDRESS`), `"user"` (the
    /// session bus of a user manager, `DBUS_SESSION_BUS_ADDRESS` or `$XDG_RUNTIME_DIR/bus`),
    /// or a D-Bus address such as `"unix:path=/run/dbus/system_bus_socket"`.
    #[serde(default = "default_bus")]
    pub bus: String,
    /// Which units are reported, by name (globs: `*`, `?`, `[...]`).
    #[serde(default)]
    pub units: UnitGlobs,
    /// Also report any unit that enters `failed`, matched by `units.include` or not (unless
    /// `units.exclude` names it).
    #[serde(default = "yes")]
    pub report_failed: bool,
    /// Attach the unit's last `journal_lines` journal lines (read with `journalctl`) to an
    /// event that reports it `failed`, so the reason travels with it.
    #[serde(default)]
    pub journal: bool,
    /// How many journal lines a failure event carries with `journal = true` (1 to 1000).
    #[serde(default = "default_journal_lines")]
    pub journal_lines: usize,
    /// Read the journal files in this directory (`journalctl --directory`) instead of this
    /// machine's journal: an agent in a container reads the host's `/var/log/journal` (or
    /// `/run/log/journal`) mounted into it.
    #[serde(default)]
    pub journal_directory: Option<PathBuf>,
    /// Stop the pipeline at start (exit 69, one line saying why) when the bus cannot be
    /// reached or systemd is not on it. With `false` the source warns and keeps trying with
    /// backoff.
    #[serde(default = "yes")]
    pub required: bool,
}

/// Unit name globs to include or leave out.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UnitGlobs {
    /// Units reported. The default is what matters on a Kubernetes node: `kubepods*.slice`,
    /// `cri-containerd-*.scope`, `crio-*.scope`, `docker-*.scope`, `kubelet.service`,
    /// `containerd.service`, `crio.service`.
    #[serde(default = "default_include")]
    pub include: Vec<String>,
    /// Units never reported, even when they fail.
    #[serde(default)]
    pub exclude: Vec<String>,
}

impl Default for UnitGlobs {
    fn default() -> Self {
        UnitGlobs {
            include: default_include(),
            exclude: Vec::new(),
        }
    }
}

fn default_bus() -> String {
    "system".into()
}

fn default_include() -> Vec<String> {
    [
        "kubepods*.slice",
        "cri-containerd-*.scope",
        "crio-*.scope",
        "docker-*.scope",
        "kubelet.service",
        "containerd.service",
        "crio.service",
    ]
    .map(String::from)
    .to_vec()
}

fn default_journal_lines() -> usize {
    20
}

fn yes() -> bool {
    true
}

/// Where to connect, from the `bus` option.
#[derive(Debug, Clone)]
enum BusTarget {
    System,
    User,
    Address(String),
}

impl fmt::Display for BusTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BusTarget::System => f.write_str("the system bus"),
            BusTarget::User => f.write_str("the user bus"),
            BusTarget::Address(address) => write!(f, "the bus at {address}"),
        }
    }
}

impl ComponentConfig for SystemdConfig {
    type Component = dyn Source;

    /// Checks the options only: nothing connects before the source runs, so `tapio validate`
    /// never reaches for a bus.
    fn build(&self, cx: &BuildContext) -> Result<Box<dyn Source>, ComponentError> {
        let target = match self.bus.trim() {
            "system" => BusTarget::System,
            "user" => BusTarget::User,
            "" => {
                return Err(ComponentError::config(
                    "`bus` is empty: give \"system\", \"user\" or a D-Bus address",
                ));
            }
            address => {
                zbus::Address::from_str(address).map_err(|e| {
                    ComponentError::config(format!(
                        "`bus` = {address:?} is neither \"system\", \"user\" nor a D-Bus address: {e}"
                    ))
                })?;
                BusTarget::Address(address.to_owned())
            }
        };
        let patterns = |option: &str, globs: &[String]| {
            globs
                .iter()
                .enumerate()
                .map(|(i, glob)| {
                    Pattern::new(glob).map_err(|e| {
                        ComponentError::config(format!("`units.{option}[{i}]` = {glob:?}: {e}"))
                    })
                })
                .collect::<Result<Vec<_>, _>>()
        };
        let filter = UnitFilter {
            include: patterns("include", &self.units.include)?,
            exclude: patterns("exclude", &self.units.exclude)?,
            report_failed: self.report_failed,
        };
        if filter.include.is_empty() && !self.report_failed {
            return Err(ComponentError::config(
                "`units.include` is empty and `report_failed` is false: the source would report nothing",
            ));
        }
        if !(1..=MAX_JOURNAL_LINES).contains(&self.journal_lines) {
            return Err(ComponentError::config(format!(
                "`journal_lines` must be 1 to {MAX_JOURNAL_LINES}, got {}",
                self.journal_lines
            )));
        }
        if self
            .journal_directory
            .as_ref()
            .is_some_and(|dir| dir.as_os_str().is_empty())
        {
            return Err(ComponentError::config(
                "`journal_directory` is empty: give a directory or remove it",
            ));
        }
        let scope = match target {
            BusTarget::User => journal::Scope::User,
            BusTarget::System | BusTarget::Address(_) => journal::Scope::System,
        };
        Ok(Box::new(SystemdSource {
            target,
            filter,
            journal: self.journal.then(|| journal::Journal {
                scope,
                lines: self.journal_lines,
                directory: self.journal_directory.clone(),
            }),
            required: self.required,
            name: cx.name.clone(),
            node: cx.node_name.clone(),
        }))
    }
}

/// The built source: connects when it runs.
struct SystemdSource {
    target: BusTarget,
    filter: UnitFilter,
    /// With `journal = true`: where to read and how much.
    journal: Option<journal::Journal>,
    required: bool,
    name: String,
    node: String,
}

impl Source for SystemdSource {
    fn run(self: Box<Self>, cx: SourceContext) -> ComponentFuture {
        Box::pin(self.collect(cx))
    }
}

/// Why following a connection stopped.
enum Ended {
    /// Shutdown, or nothing reads the output any more: the source ends.
    Done,
    /// The connection broke: connect again.
    Lost(String),
}

impl SystemdSource {
    async fn collect(self, cx: SourceContext) -> Result<(), ComponentError> {
        let SourceContext {
            mut out,
            mut shutdown,
            metrics,
        } = cx;
        let mut state = State {
            units: Units::new(self.filter.clone()),
            ids: IdGenerator::from_entropy(),
            events: Vec::with_capacity(MAX_BATCH),
            reloading: false,
        };
        let mut learned = false;
        let mut backoff = Backoff::new(MIN_BACKOFF, MAX_BACKOFF);
        loop {
            let connected = tokio::select! {
                biased;
                () = shutdown.triggered() => return Ok(()),
                connected = self.start(&mut state, learned) => connected,
            };
            match connected {
                Ok(mut bus) => {
                    if learned {
                        tracing::info!(source = %self.name, "reconnected to {}", self.target);
                    }
                    learned = true;
                    backoff.reset();
                    match self
                        .follow(&mut bus, &mut state, &mut out, &mut shutdown)
                        .await
                    {
                        Ended::Done => return Ok(()),
                        Ended::Lost(error) => {
                            metrics.add_errors("bus_lost", 1);
                            tracing::warn!(
                                source = %self.name,
                                "lost {}: {error}; reconnecting with backoff",
                                self.target
                            );
                        }
                    }
                }
                Err(message) if !learned && self.required => {
                    return Err(ComponentError::unavailable(message));
                }
                Err(message) => {
                    tracing::warn!(
                        source = %self.name,
                        "{message}; retrying in {:?}{}",
                        backoff.peek(),
                        if learned { "" } else { " (required = false)" }
                    );
                }
            }
            tokio::select! {
                biased;
                () = shutdown.triggered() => return Ok(()),
                () = tokio::time::sleep(backoff.next_delay()) => {}
            }
        }
    }

    /// Connects and reads the state of every loaded unit. The first time (`learned` false)
    /// that state is only learned; after a reconnect, what changed meanwhile is queued as
    /// events.
    async fn start(&self, state: &mut State, learned: bool) -> Result<Bus, String> {
        let bus = Bus::connect(&self.target).await?;
        let listed = bus
            .list_units()
            .await
            .map_err(|e| format!("{}: ListUnits failed: {e}", self.target))?;
        let mut loaded = HashSet::with_capacity(listed.len());
        for unit in listed {
            let mut reading = unit.reading;
            if state.units.needs_details(&unit.name) {
                // A unit unloaded in between has no details; its state is still right.
                if let Ok(details) = bus.details(&unit.name).await {
                    reading = Reading {
                        active_state: reading.active_state,
                        sub_state: reading.sub_state,
                        ..details
                    };
                }
            }
            let transition = state.units.apply(&unit.name, reading, !learned);
            self.queue(transition, &mut state.ids, &mut state.events)
                .await;
            loaded.insert(unit.name);
        }
        state.units.retain(&loaded);
        Ok(bus)
    }

    /// Reports the transitions the bus's signals make until shutdown or a lost connection.
    async fn follow(
        &self,
        bus: &mut Bus,
        state: &mut State,
        out: &mut tapio_event::Outputs,
        shutdown: &mut ShutdownSignal,
    ) -> Ended {
        loop {
            if !state.events.is_empty() {
                let batch = EventBatch::new(std::mem::take(&mut state.events));
                if out.send(batch).await.is_err() {
                    return Ended::Done;
                }
            }
            let first = tokio::select! {
                biased;
                () = shutdown.triggered() => return Ended::Done,
                signal = bus.next() => signal,
            };
            let mut signals = match first {
                Ok(signal) => vec![signal],
                Err(error) => return Ended::Lost(error),
            };
            // What else is here already. An error ends the batch; the next `next` reports it.
            while signals.len() < MAX_BATCH {
                match bus.try_next() {
                    Ok(Some(signal)) => signals.push(signal),
                    Ok(None) | Err(_) => break,
                }
            }
            let mut slices = slices_of_new_units(bus, &signals, &state.units).await;
            for signal in signals {
                self.on_signal(bus, signal, state, &mut slices).await;
            }
        }
    }

    /// Takes in one signal; `slices` holds the slices asked for ahead (see
    /// [`slices_of_new_units`]).
    async fn on_signal(
        &self,
        bus: &Bus,
        signal: Signal,
        state: &mut State,
        slices: &mut HashMap<String, Option<String>>,
    ) {
        match signal {
            Signal::UnitNew(name) => state.units.loaded(&name),
            // A reload unloads and loads every unit again: their states stay as they were.
            Signal::UnitRemoved(name) if !state.reloading => state.units.remove(&name),
            Signal::UnitRemoved(_) => {}
            Signal::Reloading(true) => state.reloading = true,
            Signal::Reloading(false) => {
                state.reloading = false;
                // Forget what the reload really unloaded.
                if let Ok(listed) = bus.list_units().await {
                    state
                        .units
                        .retain(&listed.into_iter().map(|u| u.name).collect());
                }
            }
            Signal::Changed(name, mut reading) => {
                // The signal itself carries the type's properties; only the slice is missing.
                if state.units.wants_details(&name) {
                    let slice = match slices.remove(&name) {
                        Some(slice) => slice,
                        None => bus.details(&name).await.ok().and_then(|d| d.slice),
                    };
                    reading.slice = slice.or(reading.slice);
                }
                let transition = state.units.apply(&name, reading, false);
                self.queue(transition, &mut state.ids, &mut state.events)
                    .await;
            }
        }
    }

    /// Queues the event of `transition` (with the journal's last lines for a failure, when
    /// asked to).
    async fn queue(
        &self,
        transition: Option<Transition<'_>>,
        ids: &mut IdGenerator,
        events: &mut Vec<UnifiedEvent>,
    ) {
        let Some(transition) = transition else {
            return;
        };
        let mut event = unit_event(&transition, &self.node, ids);
        let failed = transition.unit.state.active_state.as_deref() == Some("failed");
        if let (true, Some(journal)) = (failed, &self.journal) {
            let unit = transition.unit.name.clone();
            match journal.last_lines(&unit).await {
                Ok(lines) => {
                    if let Some(systemd) = event.systemd.as_deref_mut() {
                        systemd.journal = lines;
                    }
                }
                Err(error) => {
                    tracing::warn!(source = %self.name, %unit, "cannot read the journal: {error}");
                }
            }
        }
        events.push(event);
    }
}

/// The slices of the watched units these signals are the first about, asked for all at once:
/// one call after the other would keep the source a round trip per new unit behind systemd
/// during a burst of new units.
async fn slices_of_new_units(
    bus: &Bus,
    signals: &[Signal],
    units: &Units,
) -> HashMap<String, Option<String>> {
    let new: HashSet<&str> = signals
        .iter()
        .filter_map(|signal| match signal {
            Signal::Changed(name, _) if units.needs_details(name) => Some(name.as_str()),
            _ => None,
        })
        .collect();
    let answers = futures::future::join_all(new.iter().map(|name| bus.details(name))).await;
    new.into_iter()
        .zip(answers)
        .map(|(name, answer)| (name.to_owned(), answer.ok().and_then(|d| d.slice)))
        .collect()
}

/// What the source carries between signals and across reconnects.
struct State {
    units: Units,
    ids: IdGenerator,
    /// Events not sent yet.
    events: Vec<UnifiedEvent>,
    /// Between the manager's `Reloading(true)` and `Reloading(false)`.
    reloading: bool,
}

/// The event of a transition. A scope names its container, a pod slice (the unit's, or the
/// unit itself) its pod, whose uid is then the entity; anything else is about this node.
fn unit_event(transition: &Transition<'_>, node: &str, ids: &mut IdGenerator) -> UnifiedEvent {
    let unit = transition.unit;
    let state = &unit.state;
    let timestamp = state
        .changed_at
        .filter(|micros| *micros > 0)
        .and_then(|micros| i64::try_from(micros.saturating_mul(1000)).ok())
        .map(Timestamp)
        .unwrap_or_else(Timestamp::now);
    let mut event = UnifiedEvent::new(EventType::Systemd, "systemd", timestamp);
    event.id = ids.next_id(timestamp);
    let pod_uid = state
        .slice
        .as_deref()
        .and_then(kubepods::pod_uid)
        .or_else(|| kubepods::pod_uid(&unit.name));
    let entity = match pod_uid {
        Some(uid) => Entity::new(EntityType::Pod, uid),
        None => Entity::new(EntityType::Host, node),
    };
    event.entity = Some(Box::new(Entity {
        node: Some(node.to_owned()),
        ..entity
    }));
    event.systemd = Some(Box::new(SystemdContext {
        unit: Some(unit.name.clone()),
        slice: state.slice.clone(),
        active_state: state.active_state.clone(),
        sub_state: state.sub_state.clone(),
        result: state.result.clone(),
        job_type: transition.job_type().map(str::to_owned),
        main_pid: state.main_pid.filter(|pid| *pid != 0),
        container_id: kubepods::container_id(&unit.name).map(str::to_owned),
        exit_status: state.exit_status(),
        restarts: state.restarts,
        journal: Vec::new(),
    }));
    event
}
