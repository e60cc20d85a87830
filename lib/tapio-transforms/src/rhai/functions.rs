//! The functions scripts call besides Rhai's core packages. Pure ones (time, JSON, durations,
//! regular expressions, CIDR ranges, hashing) are in every engine, conditions included; the
//! ones that act on the run (`drop`, `route`, `emit`, `log`, `hmac_sha256` with the
//! transform's keys) only in the `rhai` transform's.
//!
//! What a run asks for besides changing its event (the outputs it routed to, the events it
//! emitted) is kept per thread, because a run happens on one thread from start to end and
//! stateless scripts of one transform run on several threads at once.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use hmac::{Hmac, Mac};
use regex::Regex;
use rhai::{Dynamic, Engine, EvalAltResult, INT, ImmutableString, Map, Position};
use sha2::{Digest, Sha256};
use tapio_event::throttle::Throttle;
use tapio_event::{ConfigDuration, Secret, Timestamp};

use super::event::{to_dynamic, to_json};

/// Patterns one engine keeps compiled; a script building patterns from event data gets them
/// compiled per call beyond this, rather than a cache without bound.
const MAX_CACHED_PATTERNS: usize = 1024;

/// How often `log` may write a line for one transform; the lines in between are counted and
/// the next one says how many it stands for.
const LOG_EVERY: Duration = Duration::from_secs(1);

/// What `drop()` throws: it ends the run, and the runner tells it from a failure.
#[derive(Debug, Clone)]
pub(crate) struct Dropped;

/// What one run asked for besides changing its event.
#[derive(Debug, Default)]
pub(crate) struct RunEffects {
    /// The declared outputs `route()` named, one bit each.
    pub(crate) routed: u64,
    /// The maps given to `emit()`, in order.
    pub(crate) emitted: Vec<Dynamic>,
}

thread_local! {
    static EFFECTS: RefCell<RunEffects> = RefCell::default();
}

/// The effects of the run that just ended on this thread, leaving none for the next one.
pub(crate) fn take_effects() -> RunEffects {
    EFFECTS.with(|effects| std::mem::take(&mut *effects.borrow_mut()))
}

fn runtime_error(message: String) -> Box<EvalAltResult> {
    Box::new(EvalAltResult::ErrorRuntime(message.into(), Position::NONE))
}

/// Regular expressions by their text, compiled on first use.
#[derive(Default)]
struct Patterns(RwLock<HashMap<ImmutableString, Arc<Regex>>>);

impl Patterns {
    fn get(&self, pattern: &ImmutableString) -> Result<Arc<Regex>, Box<EvalAltResult>> {
        if let Some(regex) = self
            .0
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(pattern)
        {
            return Ok(Arc::clone(regex));
        }
        let regex = Arc::new(
            Regex::new(pattern)
                .map_err(|error| runtime_error(format!("bad regular expression: {error}")))?,
        );
        let mut cache = self.0.write().unwrap_or_else(|e| e.into_inner());
        if cache.len() < MAX_CACHED_PATTERNS {
            cache.insert(pattern.clone(), Arc::clone(&regex));
        }
        Ok(regex)
    }
}

/// Registers the pure functions every script and condition may call.
pub(crate) fn register_pure(engine: &mut Engine) {
    engine.register_fn("now", || -> ImmutableString {
        Timestamp::now().to_string().into()
    });
    engine.register_fn(
        "unix_nanos",
        |timestamp: &str| -> Result<INT, Box<EvalAltResult>> {
            Timestamp::parse_rfc3339(timestamp)
                .map(Timestamp::as_nanos)
                .map_err(|error| runtime_error(format!("unix_nanos({timestamp:?}): {error}")))
        },
    );
    engine.register_fn(
        "parse_duration",
        |text: &str| -> Result<INT, Box<EvalAltResult>> {
            let duration = ConfigDuration::parse(text).map_err(runtime_error)?;
            INT::try_from(duration.0.as_nanos())
                .map_err(|_| runtime_error(format!("parse_duration({text:?}): too long")))
        },
    );
    engine.register_fn(
        "parse_json",
        |text: &str| -> Result<Dynamic, Box<EvalAltResult>> {
            serde_json::from_str(text)
                .map(to_dynamic)
                .map_err(|error| runtime_error(format!("parse_json: {error}")))
        },
    );
    engine.register_fn(
        "to_json",
        |value: Dynamic| -> Result<ImmutableString, Box<EvalAltResult>> {
            let json =
                to_json(&value).map_err(|error| runtime_error(format!("to_json: {error}")))?;
            Ok(json.to_string().into())
        },
    );
    let patterns = Arc::new(Patterns::default());
    let cache = Arc::clone(&patterns);
    engine.register_fn(
        "matches",
        move |text: &str, pattern: ImmutableString| -> Result<bool, Box<EvalAltResult>> {
            Ok(cache.get(&pattern)?.is_match(text))
        },
    );
    engine.register_fn(
        "capture",
        move |text: &str, pattern: ImmutableString| -> Result<Dynamic, Box<EvalAltResult>> {
            let regex = patterns.get(&pattern)?;
            let Some(found) = regex.captures(text) else {
                return Ok(Dynamic::UNIT);
            };
            let mut groups = Map::new();
            for (index, name) in regex.capture_names().enumerate() {
                let Some(group) = found.get(index) else {
                    continue;
                };
                let value: Dynamic = group.as_str().into();
                if let Some(name) = name {
                    groups.insert(name.into(), value.clone());
                }
                groups.insert(index.to_string().into(), value);
            }
            Ok(groups.into())
        },
    );
    engine.register_fn("cidr_contains", cidr_contains);
    engine.register_fn("sha256", |text: &str| -> ImmutableString {
        hex(&Sha256::digest(text.as_bytes())).into()
    });
}

/// Whether `ip` lies in `cidr` (`10.0.0.0/8`, `fd00::/8`, or a bare address for one host). An
/// address of the other family is outside; text that is no address or range is an error, so a
/// typo in a script does not read as "no match".
fn cidr_contains(cidr: &str, ip: &str) -> Result<bool, Box<EvalAltResult>> {
    let bad = |what: &str| runtime_error(format!("cidr_contains({cidr:?}, {ip:?}): {what}"));
    let (network, prefix) = match cidr.split_once('/') {
        Some((network, prefix)) => (network, Some(prefix)),
        None => (cidr, None),
    };
    let network: IpAddr = network.parse().map_err(|_| bad("not a CIDR range"))?;
    let address: IpAddr = ip.parse().map_err(|_| bad("not an IP address"))?;
    let width = if network.is_ipv4() { 32 } else { 128 };
    let prefix: u32 = match prefix {
        Some(prefix) => prefix
            .parse()
            .ok()
            .filter(|&p| p <= width)
            .ok_or_else(|| bad("bad prefix length"))?,
        None => width,
    };
    let bits = |ip: IpAddr| match ip {
        IpAddr::V4(v4) => u128::from(v4.to_bits()) << 96,
        IpAddr::V6(v6) => v6.to_bits(),
    };
    if network.is_ipv4() != address.is_ipv4() {
        return Ok(false);
    }
    let mask = u128::MAX.checked_shl(128 - prefix).unwrap_or(0);
    Ok(bits(network) & mask == bits(address) & mask)
}

fn hex(bytes: &[u8]) -> String {
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut text, byte| {
            let _ = write!(text, "{byte:02x}");
            text
        })
}

/// What the run-acting functions need from the transform's options.
pub(crate) struct RunFunctions {
    /// The declared outputs, in order; `route()` sets the bit of the one it names.
    pub(crate) outputs: Vec<String>,
    /// The keys `hmac_sha256` may use, by name.
    pub(crate) keys: BTreeMap<String, Secret>,
    /// Most events one run may `emit()`.
    pub(crate) max_emitted: usize,
    /// The transform's name, in its log lines.
    pub(crate) name: String,
}

/// Registers `drop`, `route`, `emit`, `log` and `hmac_sha256`.
pub(crate) fn register_run(engine: &mut Engine, functions: RunFunctions) {
    let RunFunctions {
        outputs,
        keys,
        max_emitted,
        name,
    } = functions;
    engine.register_fn("drop", || -> Result<(), Box<EvalAltResult>> {
        Err(Box::new(EvalAltResult::ErrorRuntime(
            Dynamic::from(Dropped),
            Position::NONE,
        )))
    });
    engine.register_fn(
        "route",
        move |output: ImmutableString| -> Result<(), Box<EvalAltResult>> {
            let index = outputs.iter().position(|o| o == output.as_str()).ok_or_else(|| {
                runtime_error(format!(
                    "route(\"{output}\"): no such output; declare it in `outputs` (declared: {})",
                    outputs.join(", ")
                ))
            })?;
            EFFECTS.with(|effects| effects.borrow_mut().routed |= 1 << index);
            Ok(())
        },
    );
    engine.register_fn(
        "emit",
        move |event: Map| -> Result<(), Box<EvalAltResult>> {
            EFFECTS.with(|effects| {
                let mut effects = effects.borrow_mut();
                if effects.emitted.len() >= max_emitted {
                    return Err(runtime_error(format!(
                        "emit: more than {max_emitted} events in one run (max_array_size)"
                    )));
                }
                effects.emitted.push(event.into());
                Ok(())
            })
        },
    );
    let throttle = Mutex::new(Throttle::new(LOG_EVERY));
    engine.register_fn(
        "log",
        move |level: &str, message: &str| -> Result<(), Box<EvalAltResult>> {
            let level = match level {
                "error" => tracing::Level::ERROR,
                "warn" => tracing::Level::WARN,
                "info" => tracing::Level::INFO,
                "debug" => tracing::Level::DEBUG,
                "trace" => tracing::Level::TRACE,
                other => {
                    return Err(runtime_error(format!(
                        "log({other:?}, …): the level is one of error, warn, info, debug, trace"
                    )));
                }
            };
            let due = throttle.lock().unwrap_or_else(|e| e.into_inner()).add(1);
            if let Some(lines) = due {
                let suppressed = lines - 1;
                let transform = name.as_str();
                macro_rules! at {
                    ($level:expr) => {
                        tracing::event!(target: "tapio::rhai", $level, transform, suppressed, "{message}")
                    };
                }
                match level {
                    tracing::Level::ERROR => at!(tracing::Level::ERROR),
                    tracing::Level::WARN => at!(tracing::Level::WARN),
                    tracing::Level::INFO => at!(tracing::Level::INFO),
                    tracing::Level::DEBUG => at!(tracing::Level::DEBUG),
                    _ => at!(tracing::Level::TRACE),
                }
            }
            Ok(())
        },
    );
    engine.register_fn(
        "hmac_sha256",
        move |key: &str, text: &str| -> Result<ImmutableString, Box<EvalAltResult>> {
            let secret = keys.get(key).ok_or_else(|| {
                let known: Vec<&str> = keys.keys().map(String::as_str).collect();
                runtime_error(format!(
                    "hmac_sha256({key:?}, …): no such key; declare it in `keys` (declared: {})",
                    known.join(", ")
                ))
            })?;
            let mut mac = Hmac::<Sha256>::new_from_slice(secret.expose().as_bytes())
                .map_err(|error| runtime_error(format!("hmac_sha256: {error}")))?;
            mac.update(text.as_bytes());
            Ok(hex(&mac.finalize().into_bytes()).into())
        },
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidr_ranges_hold_the_addresses_they_should() {
        let contains = |cidr, ip| cidr_contains(cidr, ip).unwrap();
        assert!(contains("10.0.0.0/8", "10.244.1.15"));
        assert!(!contains("10.0.0.0/8", "11.0.0.1"));
        assert!(contains("10.244.1.0/24", "10.244.1.255"));
        assert!(!contains("10.244.1.0/24", "10.244.2.0"));
        assert!(contains("0.0.0.0/0", "192.0.2.1"));
        assert!(contains("192.0.2.7", "192.0.2.7"));
        assert!(!contains("192.0.2.7/32", "192.0.2.8"));
        assert!(contains("fd00::/8", "fd12:3456::1"));
        assert!(!contains("fd00::/8", "fe80::1"));
        assert!(!contains("10.0.0.0/8", "::ffff:10.0.0.1"));
        for (cidr, ip) in [
            ("10.0.0.0/33", "10.0.0.1"),
            ("10.0.0/8", "10.0.0.1"),
            ("10.0.0.0/8", "pod-a"),
        ] {
            assert!(cidr_contains(cidr, ip).is_err(), "{cidr} {ip}");
        }
    }

    #[test]
    fn hashes_match_published_vectors() {
        // FIPS 180-2's "abc" and RFC 4231's test case 2.
        assert_eq!(
            hex(&Sha256::digest(b"abc")),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        let mut mac = Hmac::<Sha256>::new_from_slice(b"Jefe").unwrap();
        mac.update(b"what do ya want for nothing?");
        assert_eq!(
            hex(&mac.finalize().into_bytes()),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
