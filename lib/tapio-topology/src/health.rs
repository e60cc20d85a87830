//! The pipeline's lifecycle state, shared with the API so `/health` answers 200 only while the
//! pipeline is running (and 503 while it starts or drains, so load balancers stop sending).

use std::sync::atomic::{AtomicU8, Ordering};

/// Where the pipeline is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum HealthState {
    Starting = 0,
    Running = 1,
    Draining = 2,
}

/// Shared, lock-free lifecycle state.
#[derive(Debug, Default)]
pub struct Health(AtomicU8);

impl Health {
    /// Moves to `state`.
    pub fn set(&self, state: HealthState) {
        self.0.store(state as u8, Ordering::Release);
    }

    /// The current state.
    pub fn get(&self) -> HealthState {
        match self.0.load(Ordering::Acquire) {
            0 => HealthState::Starting,
            1 => HealthState::Running,
            _ => HealthState::Draining,
        }
    }
}
