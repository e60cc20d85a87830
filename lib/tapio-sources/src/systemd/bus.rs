//! The D-Bus side: one connection to the bus systemd is on, one match rule for every signal
//! `org.freedesktop.systemd1` sends (so `UnitNew`, `PropertiesChanged`, `Reloading` and
//! `UnitRemoved` arrive in the order systemd sent them; the job signals carry nothing the
//! source uses), `Subscribe` so systemd sends them at
//! all, and the calls that read state (`ListUnits`, `GetAll`).
//!
//! zbus stops reading the socket while a stream's queue is full, which would also hold back
//! the reply to a call made while signals pile up; a task therefore moves every signal into an
//! unbounded channel as it arrives, and the source reads from there.

use std::collections::HashMap;
use std::time::Duration;

use futures::StreamExt;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use zbus::message::Type;
use zbus::zvariant::{OwnedObjectPath, OwnedValue};
use zbus::{Connection, MatchRule, Message, MessageStream};

use super::BusTarget;
use super::units::{Reading, path_of_unit, unit_of_path};

const SYSTEMD: &str = "org.freedesktop.systemd1";
const MANAGER_PATH: &str = "/org/freedesktop/systemd1";
const MANAGER: &str = "org.freedesktop.systemd1.Manager";
const PROPERTIES: &str = "org.freedesktop.DBus.Properties";
/// A call that takes longer means systemd is stuck or gone: the connection is started anew.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// zbus's own queue for the stream; the forwarding task empties it as messages arrive.
const STREAM_QUEUE: usize = 1024;

/// What systemd said, as the source uses it.
#[derive(Debug)]
pub(super) enum Signal {
    /// A unit was loaded (`UnitNew`).
    UnitNew(String),
    /// A unit was unloaded (`UnitRemoved`).
    UnitRemoved(String),
    /// Properties of a unit changed (`PropertiesChanged` on a unit object).
    Changed(String, Reading),
    /// The manager started (`true`) or finished (`false`) reloading its configuration: it
    /// sends `UnitRemoved` and `UnitNew` for units that stay loaded throughout.
    Reloading(bool),
}

/// A connection subscribed to systemd's signals. Dropping it stops the forwarding task.
pub(super) struct Bus {
    connection: Connection,
    signals: mpsc::UnboundedReceiver<zbus::Result<Message>>,
    forwarder: JoinHandle<()>,
}

impl Drop for Bus {
    fn drop(&mut self) {
        self.forwarder.abort();
    }
}

/// One row of `ListUnits`: a loaded unit and its state.
pub(super) struct Listed {
    pub name: String,
    pub reading: Reading,
}

impl Bus {
    /// Connects, adds the match rule, then subscribes: nothing systemd sends after
    /// `Subscribe` returns is missed.
    pub async fn connect(target: &BusTarget) -> Result<Bus, String> {
        let builder = match target {
            BusTarget::System => zbus::connection::Builder::system(),
            BusTarget::User => zbus::connection::Builder::session(),
            BusTarget::Address(address) => zbus::connection::Builder::address(address.as_str()),
        }
        .map_err(|e| format!("{target}: {e}"))?;
        let connection = builder
            .method_timeout(CALL_TIMEOUT)
            .build()
            .await
            .map_err(|e| format!("cannot connect to {target}: {e}"))?;
        let rule = MatchRule::builder()
            .msg_type(Type::Signal)
            .sender(SYSTEMD)
            .map_err(|e| e.to_string())?
            .build();
        let mut stream = MessageStream::for_match_rule(rule, &connection, Some(STREAM_QUEUE))
            .await
            .map_err(|e| format!("{target}: cannot add a match rule: {e}"))?;
        let (tx, signals) = mpsc::unbounded_channel();
        let forwarder = tokio::spawn(async move {
            while let Some(message) = stream.next().await {
                if tx.send(message).is_err() {
                    return;
                }
            }
        });
        let bus = Bus {
            connection,
            signals,
            forwarder,
        };
        bus.call(MANAGER_PATH, MANAGER, "Subscribe", &())
            .await
            .map_err(|e| format!("{target}: systemd's Subscribe failed: {e}"))?;
        Ok(bus)
    }

    async fn call<B>(
        &self,
        path: &str,
        interface: &str,
        method: &str,
        body: &B,
    ) -> zbus::Result<Message>
    where
        B: serde::Serialize + zbus::zvariant::DynamicType,
    {
        self.connection
            .call_method(Some(SYSTEMD), path, Some(interface), method, body)
            .await
    }

    /// Every loaded unit with its state (`ListUnits`).
    pub async fn list_units(&self) -> zbus::Result<Vec<Listed>> {
        type Row = (
            String,
            String,
            String,
            String,
            String,
            String,
            OwnedObjectPath,
            u32,
            String,
            OwnedObjectPath,
        );
        let reply = self.call(MANAGER_PATH, MANAGER, "ListUnits", &()).await?;
        let rows: Vec<Row> = reply.body().deserialize()?;
        Ok(rows
            .into_iter()
            .map(|(name, _, _, active, sub, ..)| Listed {
                name,
                reading: Reading {
                    active_state: Some(active),
                    sub_state: Some(sub),
                    ..Reading::default()
                },
            })
            .collect())
    }

    /// What the unit's type-specific interface says (`Slice`, `Result`, `ExecMainStatus`,
    /// `MainPID`, `NRestarts` as far as the type has them). Never its state: that comes from
    /// the signals or `ListUnits`, so reading it here cannot swallow a transition.
    pub async fn details(&self, name: &str) -> zbus::Result<Reading> {
        let Some(interface) = type_interface(name) else {
            return Ok(Reading::default());
        };
        let reply = self
            .call(&path_of_unit(name), PROPERTIES, "GetAll", &(interface,))
            .await?;
        let properties: HashMap<String, OwnedValue> = reply.body().deserialize()?;
        Ok(reading(&properties))
    }

    /// The next signal about a unit; `Err` once the connection is gone.
    pub async fn next(&mut self) -> Result<Signal, String> {
        loop {
            let message = match self.signals.recv().await {
                Some(Ok(message)) => message,
                Some(Err(error)) => return Err(error.to_string()),
                None => return Err("the bus closed the connection".into()),
            };
            if let Some(signal) = parse(&message) {
                return Ok(signal);
            }
        }
    }

    /// The next signal if one is already here (`None` when there is none yet); `Err` once the
    /// connection is gone.
    pub fn try_next(&mut self) -> Result<Option<Signal>, String> {
        loop {
            match self.signals.try_recv() {
                Ok(Ok(message)) => {
                    if let Some(signal) = parse(&message) {
                        return Ok(Some(signal));
                    }
                }
                Ok(Err(error)) => return Err(error.to_string()),
                Err(mpsc::error::TryRecvError::Empty) => return Ok(None),
                Err(mpsc::error::TryRecvError::Disconnected) => {
                    return Err("the bus closed the connection".into());
                }
            }
        }
    }
}

/// The signal `message` is, if the source cares about it.
fn parse(message: &Message) -> Option<Signal> {
    let header = message.header();
    let member = header.member()?.as_str();
    let interface = header.interface()?.as_str();
    let body = message.body();
    match (interface, member) {
        (MANAGER, "UnitNew") => {
            let (name, _): (String, OwnedObjectPath) = body.deserialize().ok()?;
            Some(Signal::UnitNew(name))
        }
        (MANAGER, "Reloading") => {
            let (active,): (bool,) = body.deserialize().ok()?;
            Some(Signal::Reloading(active))
        }
        (MANAGER, "UnitRemoved") => {
            let (name, _): (String, OwnedObjectPath) = body.deserialize().ok()?;
            Some(Signal::UnitRemoved(name))
        }
        (PROPERTIES, "PropertiesChanged") => {
            let name = unit_of_path(header.path()?.as_str())?;
            let (changed_interface, changed, _): (
                String,
                HashMap<String, OwnedValue>,
                Vec<String>,
            ) = body.deserialize().ok()?;
            changed_interface
                .starts_with("org.freedesktop.systemd1.")
                .then(|| Signal::Changed(name, reading(&changed)))
        }
        _ => None,
    }
}

/// The properties the source follows, out of a D-Bus property map.
fn reading(properties: &HashMap<String, OwnedValue>) -> Reading {
    let text = |key: &str| {
        properties
            .get(key)
            .and_then(|v| <&str>::try_from(v).ok())
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
    };
    let int = |key: &str| properties.get(key).and_then(|v| i32::try_from(v).ok());
    let count = |key: &str| properties.get(key).and_then(|v| u32::try_from(v).ok());
    Reading {
        active_state: text("ActiveState"),
        sub_state: text("SubState"),
        result: text("Result"),
        slice: text("Slice"),
        exec_main_code: int("ExecMainCode"),
        exec_main_status: int("ExecMainStatus"),
        main_pid: count("MainPID"),
        restarts: count("NRestarts"),
        changed_at: properties
            .get("StateChangeTimestamp")
            .and_then(|v| u64::try_from(v).ok()),
    }
}

/// The interface holding a unit type's own properties (`foo.service` →
/// `org.freedesktop.systemd1.Service`); `None` for a name with no known type.
fn type_interface(name: &str) -> Option<&'static str> {
    Some(match name.rsplit_once('.')?.1 {
        "service" => "org.freedesktop.systemd1.Service",
        "scope" => "org.freedesktop.systemd1.Scope",
        "slice" => "org.freedesktop.systemd1.Slice",
        "socket" => "org.freedesktop.systemd1.Socket",
        "mount" => "org.freedesktop.systemd1.Mount",
        "swap" => "org.freedesktop.systemd1.Swap",
        "timer" => "org.freedesktop.systemd1.Timer",
        "path" => "org.freedesktop.systemd1.Path",
        _ => return None,
    })
}
