//! Fault injection, for tests that check clients survive what real API servers do to them.

use std::sync::Mutex;

use tokio::sync::watch;

use super::status::ApiError;

/// The faults currently injected into the emulated API server.
pub struct Faults {
    /// Bumped to end every open watch.
    watch_generation: watch::Sender<u64>,
    /// Requests still to fail, and with which code.
    failures: Mutex<(u32, u16)>,
    paused: watch::Sender<bool>,
}

impl Default for Faults {
    fn default() -> Self {
        Faults {
            watch_generation: watch::channel(0).0,
            failures: Mutex::new((0, 500)),
            paused: watch::channel(false).0,
        }
    }
}

impl Faults {
    /// Ends every open watch, as an API server restart or a load balancer timeout does.
    pub fn drop_watches(&self) {
        self.watch_generation.send_modify(|g| *g += 1);
    }

    /// A receiver that changes when watches are to be dropped.
    pub fn watch_drops(&self) -> watch::Receiver<u64> {
        self.watch_generation.subscribe()
    }

    /// Fails the next `count` requests with `code` (500 or 429).
    pub fn fail_next(&self, count: u32, code: u16) {
        *self
            .failures
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = (count, code);
    }

    /// How many injected failures are still to be served.
    pub fn pending_failures(&self) -> u32 {
        self.failures
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .0
    }

    /// Holds every response until `resume` is called.
    pub fn pause(&self) {
        self.paused.send_replace(true);
    }

    pub fn resume(&self) {
        self.paused.send_replace(false);
    }

    /// Called at the start of each request: waits while paused, then fails it if asked to.
    pub async fn before_request(&self) -> Result<(), ApiError> {
        let mut paused = self.paused.subscribe();
        // The sender lives as long as `self`, so waiting cannot fail.
        let _ = paused.wait_for(|p| !*p).await;
        let mut failures = self
            .failures
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if failures.0 == 0 {
            return Ok(());
        }
        failures.0 -= 1;
        Err(match failures.1 {
            429 => ApiError::too_many_requests(),
            _ => ApiError::internal("injected failure"),
        })
    }
}
