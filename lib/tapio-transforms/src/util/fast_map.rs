//! The hash map of the transforms' per-event lookups (entity cache, correlation keys,
//! recurrence series). std's SipHash cost ~9% of `semantic_enrich → correlate →
//! impact_assess` in the profile; foldhash's quality hasher is several times faster on short
//! keys and still randomly seeded per process, so keys an attacker controls (pod names, IPs)
//! cannot be chosen to collide.

use std::collections::HashMap;

/// A `HashMap` with foldhash's seeded quality hasher.
pub(crate) type FastMap<K, V> = HashMap<K, V, foldhash::quality::RandomState>;
