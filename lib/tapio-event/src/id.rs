//! Event ids: `evt_` followed by a ULID (48-bit millisecond time, 80 random bits, Crockford
//! base32), so ids sort roughly by time and never collide in practice. The generator is seeded,
//! so a seeded `demo` run produces the same ids every time.

use crate::time::Timestamp;

const CROCKFORD: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";

/// A fast, seedable source of event ids (splitmix64 for the random part).
#[derive(Debug, Clone)]
pub struct IdGenerator {
    state: u64,
}

impl IdGenerator {
    /// A generator whose sequence is fixed by `seed`.
    pub fn seeded(seed: u64) -> Self {
        IdGenerator { state: seed }
    }

    /// A generator seeded from the clock and the process id, for sources without a seed.
    pub fn from_entropy() -> Self {
        let mix = Timestamp::now().as_nanos() as u64 ^ (u64::from(std::process::id()) << 32);
        let stack_address = &mix as *const u64 as u64;
        IdGenerator::seeded(mix ^ stack_address.rotate_left(17))
    }

    /// The next pseudo-random 64 bits.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// The id of an event derived from others (a summary, an anomaly), at `at`, whose random
    /// part is a hash of `parts`: the same inputs give the same id, so a replay writes the same
    /// bytes and a re-sent derived event is recognisably the same one.
    pub fn derived_id(parts: &[&[u8]], at: Timestamp) -> String {
        IdGenerator::seeded(fnv1a(parts)).next_id(at)
    }

    /// A new id for an event that happened at `at`.
    pub fn next_id(&mut self, at: Timestamp) -> String {
        let millis = (at.as_millis().max(0) as u128) & ((1 << 48) - 1);
        let random = (u128::from(self.next_u64()) << 16) | u128::from(self.next_u64() as u16);
        let value = (millis << 80) | (random & ((1 << 80) - 1));
        let mut text = [0u8; 30];
        text[..4].copy_from_slice(b"evt_");
        for (i, slot) in text[4..].iter_mut().enumerate() {
            let shift = 125 - 5 * i as u32;
            *slot = CROCKFORD[((value >> shift) & 31) as usize];
        }
        String::from_utf8(text.to_vec()).expect("Crockford alphabet is ASCII")
    }
}

/// FNV-1a, 64 bits: a fixed, documented hash, so derived ids do not change between Rust
/// versions.
fn fnv1a(parts: &[&[u8]]) -> u64 {
    parts
        .iter()
        .flat_map(|part| part.iter())
        .fold(0xcbf2_9ce4_8422_2325, |hash, &byte| {
            (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_ulids_that_sort_by_time() {
        let mut ids = IdGenerator::seeded(7);
        let early = ids.next_id(Timestamp(1_700_000_000_000_000_000));
        let late = ids.next_id(Timestamp(1_700_000_000_001_000_000));
        assert_eq!(early.len(), 30);
        assert!(early.starts_with("evt_"));
        assert!(early < late);
        assert!(early[4..].bytes().all(|b| CROCKFORD.contains(&b)));
    }

    #[test]
    fn seeded_generators_repeat() {
        let at = Timestamp(42_000_000);
        let a: Vec<_> = (0..3).map(|_| IdGenerator::seeded(1).next_id(at)).collect();
        assert_eq!(a[0], a[1]);
        let mut one = IdGenerator::seeded(1);
        assert_ne!(one.next_id(at), one.next_id(at));
    }
}
