//! Bounds on what clients can take from a node (connections, uploads in flight) and the
//! counters `/metrics` shows about them. A [`Gate`] admits up to its maximum and refuses the
//! rest at once: a full node answers `503` (or closes) instead of queueing without end.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

/// Admits at most `max` holders of a [`Pass`] at a time.
#[derive(Debug)]
pub struct Gate {
    max: usize,
    used: AtomicUsize,
    refused: AtomicU64,
}

/// One admission; dropping it frees its place.
#[derive(Debug)]
pub struct Pass(Arc<Gate>);

impl Gate {
    pub fn new(max: usize) -> Arc<Gate> {
        Arc::new(Gate { max, used: AtomicUsize::new(0), refused: AtomicU64::new(0) })
    }

    /// A place, or `None` (counted as refused) when all `max` are taken.
    pub fn try_enter(self: &Arc<Self>) -> Option<Pass> {
        let taken = self
            .used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| (used < self.max).then_some(used + 1));
        match taken {
            Ok(_) => Some(Pass(self.clone())),
            Err(_) => {
                self.refused.fetch_add(1, Ordering::Relaxed);
                None
            }
        }
    }

    pub fn max(&self) -> usize {
        self.max
    }

    pub fn in_use(&self) -> usize {
        self.used.load(Ordering::Acquire)
    }

    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }
}

impl Drop for Pass {
    fn drop(&mut self) {
        self.0.used.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The configured bounds of the HTTP and S3 fronts.
#[derive(Debug, Clone, Copy)]
pub struct FrontLimits {
    /// Open connections per listener (HTTP, S3), each.
    pub max_connections: usize,
    /// Longest request head (request line and headers), and longest multipart preamble plus
    /// part headers of a legacy `POST /api/store`.
    pub max_head_bytes: usize,
    /// Time a request head may take to arrive in full (also how long an idle kept-alive
    /// connection stays open).
    pub header_timeout: Duration,
    /// Time a request body may send nothing before the request fails and the connection is
    /// closed.
    pub body_idle_timeout: Duration,
    /// Uploads in flight on the node (native, legacy and S3 together).
    pub max_uploads: usize,
}

/// The node's gates and the counters of what they and the timeouts refused.
#[derive(Debug)]
pub struct Limits {
    pub front: FrontLimits,
    pub http_connections: Arc<Gate>,
    pub s3_connections: Arc<Gate>,
    pub uploads: Arc<Gate>,
    /// Request heads (or multipart framing) refused for length.
    pub heads_refused: AtomicU64,
    /// Connections closed because a started request head did not complete in time.
    pub header_timeouts: AtomicU64,
    /// Requests failed because their body sent nothing for the idle timeout.
    pub body_timeouts: AtomicU64,
    /// Bytes read from and written to HTTP connections (heads, bodies, and the peer links
    /// upgraded from them), counted at the socket.
    pub bytes_received: AtomicU64,
    pub bytes_sent: AtomicU64,
}

impl Limits {
    pub fn new(front: FrontLimits) -> Arc<Limits> {
        Arc::new(Limits {
            front,
            http_connections: Gate::new(front.max_connections),
            s3_connections: Gate::new(front.max_connections),
            uploads: Gate::new(front.max_uploads),
            heads_refused: AtomicU64::new(0),
            header_timeouts: AtomicU64::new(0),
            body_timeouts: AtomicU64::new(0),
            bytes_received: AtomicU64::new(0),
            bytes_sent: AtomicU64::new(0),
        })
    }

    pub fn count(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub fn read(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}

impl Default for FrontLimits {
    fn default() -> Self {
        FrontLimits {
            max_connections: 1024,
            max_head_bytes: 8 * 1024,
            header_timeout: Duration::from_secs(20),
            body_idle_timeout: Duration::from_secs(30),
            max_uploads: 32,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Gate;

    #[test]
    fn a_gate_admits_up_to_its_maximum_and_frees_places_on_drop() {
        let gate = Gate::new(2);
        let a = gate.try_enter().expect("first");
        let _b = gate.try_enter().expect("second");
        assert!(gate.try_enter().is_none());
        assert_eq!((gate.in_use(), gate.refused()), (2, 1));
        drop(a);
        assert!(gate.try_enter().is_some());
        assert_eq!(gate.in_use(), 1);
    }
}
