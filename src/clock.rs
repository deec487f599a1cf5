//! Hybrid logical clock: wall-clock milliseconds that never run backwards, with a counter to
//! order events within one millisecond, tied to this node's id. Stamps from it order writes to
//! one name across nodes (last writer wins).

use std::sync::Mutex;

use crate::content::NodeId;
use crate::storage::Stamp;
pub use crate::time::{civil_from_days, days_from_civil, rfc3339, unix_ms};

pub struct Clock {
    node: NodeId,
    last: Mutex<(u64, u32)>,
}

impl Clock {
    pub fn new(node: NodeId) -> Self {
        Self { node, last: Mutex::new((0, 0)) }
    }

    /// A stamp later than every stamp this clock has issued or observed.
    pub fn now(&self) -> Stamp {
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        let wall = unix_ms();
        *last = if wall > last.0 { (wall, 0) } else { (last.0, last.1.saturating_add(1)) };
        Stamp { wall_ms: last.0, counter: last.1, node: *self.node.as_bytes() }
    }

    /// Moves the clock past a stamp seen from elsewhere, so our next write orders after it.
    pub fn observe(&self, seen: &Stamp) {
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        if (seen.wall_ms, seen.counter) > *last {
            *last = (seen.wall_ms, seen.counter);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_increase_and_pass_observed_ones() {
        let clock = Clock::new(NodeId::from_bytes([1; 16]));
        let a = clock.now();
        let b = clock.now();
        assert!(b > a);
        let future = Stamp { wall_ms: a.wall_ms + 60_000, counter: 5, node: [2; 16] };
        clock.observe(&future);
        let c = clock.now();
        assert!(c.wall_ms == future.wall_ms && c.counter == 6);
    }
}
