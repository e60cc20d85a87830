//! The pipeline's lifecycle state, shared with the API so `/health` answers 200 only while the
//! pipeline is running or reloading (and 503 while it starts or drains, so load balancers stop
//! sending), and how many config reloads succeeded or were refused.

use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};

/// Where the pipeline is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum HealthState {
    Starting = 0,
    Running = 1,
    Draining = 2,
    /// Running while a new config is applied: from the moment a reload starts until every
    /// component it stopped has drained.
    Reloading = 3,
}

/// Shared, lock-free lifecycle state and reload counters.
#[derive(Debug, Default)]
pub struct Health {
    state: AtomicU8,
    reloads_ok: AtomicU64,
    reloads_failed: AtomicU64,
}

impl Health {
    /// Moves to `state`.
    pub fn set(&self, state: HealthState) {
        self.state.store(state as u8, Ordering::Release);
    }

    /// The current state.
    pub fn get(&self) -> HealthState {
        match self.state.load(Ordering::Acquire) {
            0 => HealthState::Starting,
            1 => HealthState::Running,
            3 => HealthState::Reloading,
            _ => HealthState::Draining,
        }
    }

    /// Counts a reload that was applied (`ok`) or refused, for `/metrics`.
    pub fn count_reload(&self, ok: bool) {
        let counter = if ok {
            &self.reloads_ok
        } else {
            &self.reloads_failed
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Reloads applied and refused so far.
    pub fn reloads(&self) -> (u64, u64) {
        (
            self.reloads_ok.load(Ordering::Relaxed),
            self.reloads_failed.load(Ordering::Relaxed),
        )
    }
}
