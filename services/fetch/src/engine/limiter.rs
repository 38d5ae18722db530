//! The aggregate bandwidth cap: one token bucket shared by every part of every job.
//!
//! Ours rather than `governor`: the cap must pace chunks of any size (up to a whole 1 MiB
//! buffer) in arrival order, which is these few lines; a general rate limiter needs chunking
//! and brings its own clock crates.

use std::time::{Duration, Instant};

pub struct Limiter {
    rate: u64,
    state: tokio::sync::Mutex<(f64, Instant)>,
}

impl Limiter {
    pub(super) fn new(rate: u64) -> Self {
        Self {
            rate,
            state: tokio::sync::Mutex::new((0.0, Instant::now())),
        }
    }

    pub(super) async fn acquire(&self, bytes: usize) {
        if self.rate == 0 {
            return;
        }
        let burst = (self.rate as f64 / 10.0).max(bytes as f64);
        let mut state = self.state.lock().await;
        let now = Instant::now();
        state.0 = (state.0 + now.duration_since(state.1).as_secs_f64() * self.rate as f64).min(burst);
        state.1 = now;
        state.0 -= bytes as f64;
        if state.0 < 0.0 {
            // Sleep holding the lock: callers queue up in order, which keeps the cap exact.
            tokio::time::sleep(Duration::from_secs_f64(-state.0 / self.rate as f64)).await;
        }
    }
}
