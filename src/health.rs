//! Whether the node's moving parts still run: every background loop holds a [`Running`] mark
//! while it runs, so a loop that ends early (a panic included) shows on `/health`.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

#[derive(Default)]
pub struct Health {
    stopped: Mutex<Vec<&'static str>>,
    shutting_down: AtomicBool,
    /// Loops running now (marks not yet dropped), for a shutdown to wait on.
    live: AtomicUsize,
}

impl Health {
    /// Marks `name` as running until the returned mark is dropped.
    pub fn running(self: &std::sync::Arc<Self>, name: &'static str) -> Running {
        self.live.fetch_add(1, Ordering::SeqCst);
        Running { health: self.clone(), name }
    }

    /// How many loops still run.
    pub fn live(&self) -> usize {
        self.live.load(Ordering::SeqCst)
    }

    /// From now on loops that end are stopping, not failing.
    pub fn shut_down(&self) {
        self.shutting_down.store(true, Ordering::SeqCst);
    }

    /// The loops that ended without a shutdown.
    pub fn stopped(&self) -> Vec<&'static str> {
        self.stopped.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// Held by a running loop.
pub struct Running {
    health: std::sync::Arc<Health>,
    name: &'static str,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.health.live.fetch_sub(1, Ordering::SeqCst);
        if !self.health.shutting_down.load(Ordering::SeqCst) {
            log::error!("the {} loop stopped", self.name);
            self.health.stopped.lock().unwrap_or_else(|p| p.into_inner()).push(self.name);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_loop_that_ends_before_shutdown_is_reported() {
        let health = std::sync::Arc::new(Health::default());
        drop(health.running("gc"));
        assert_eq!(health.stopped(), ["gc"]);
        health.shut_down();
        drop(health.running("scrub"));
        assert_eq!(health.stopped(), ["gc"]);
    }
}
