//! Bounds on unauthenticated peer handshakes. Anyone who can reach the node can open
//! `/api/v1/peer` and stall in the handshake (until its 10 s timeout): bounded in total, one
//! source could hold every slot and keep real peers out, so each source gets a few, and the
//! refusals are logged at most once per period with their count rather than once each.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::clock::unix_ms;

/// Handshakes in progress at once, in total and from one address.
const TOTAL: usize = 32;
const PER_SOURCE: usize = 4;
/// At most one "refused" line per this many milliseconds.
const LOG_EVERY_MS: u64 = 10_000;

#[derive(Default)]
pub(super) struct Handshakes {
    in_progress: Mutex<(usize, HashMap<Option<IpAddr>, usize>)>,
    refused: AtomicU64,
    logged_at: AtomicU64,
}

/// A handshake slot, given back when dropped.
pub(super) struct Slot {
    owner: Arc<Handshakes>,
    source: Option<IpAddr>,
}

impl Handshakes {
    fn state(&self) -> std::sync::MutexGuard<'_, (usize, HashMap<Option<IpAddr>, usize>)> {
        self.in_progress.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A slot for a handshake from `source`, or `None` when the node or that source is at its
    /// bound (the refusal is counted and logged, rate-limited).
    pub(super) fn admit(self: &Arc<Self>, source: Option<IpAddr>) -> Option<Slot> {
        let mut state = self.state();
        let from_source = state.1.get(&source).copied().unwrap_or(0);
        if state.0 >= TOTAL || from_source >= PER_SOURCE {
            drop(state);
            self.refuse(source);
            return None;
        }
        state.0 += 1;
        *state.1.entry(source).or_default() += 1;
        Some(Slot { owner: self.clone(), source })
    }

    fn refuse(&self, source: Option<IpAddr>) {
        let refused = self.refused.fetch_add(1, Ordering::Relaxed) + 1;
        let now = unix_ms();
        let last = self.logged_at.load(Ordering::Relaxed);
        if now.saturating_sub(last) >= LOG_EVERY_MS
            && self.logged_at.compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed).is_ok()
        {
            let who = source.map_or_else(|| "an unknown address".to_owned(), |ip| ip.to_string());
            log::warn!(
                "refused peer connections: too many handshakes in progress (latest from {who}; {refused} refused so far)"
            );
        }
    }

    /// Handshakes refused so far.
    pub(super) fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut state = self.owner.state();
        state.0 = state.0.saturating_sub(1);
        if let Some(n) = state.1.get_mut(&self.source) {
            *n -= 1;
            if *n == 0 {
                state.1.remove(&self.source);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_source_cannot_take_every_slot() {
        let h = Arc::new(Handshakes::default());
        let attacker: IpAddr = "10.0.0.66".parse().unwrap();
        let held: Vec<Slot> = (0..100).filter_map(|_| h.admit(Some(attacker))).collect();
        assert_eq!(held.len(), PER_SOURCE);
        assert_eq!(h.refused(), 100 - PER_SOURCE as u64);
        // A real peer elsewhere still gets in.
        let peer = h.admit(Some("10.0.0.2".parse().unwrap()));
        assert!(peer.is_some());
        drop(held);
        assert_eq!(h.state().0, 1, "slots come back when dropped");
        // Many sources together are still bounded in total.
        let many: Vec<Slot> = (0..=255u8)
            .flat_map(|i| (0..PER_SOURCE).map(move |_| Some(IpAddr::from([10, 1, 0, i]))))
            .filter_map(|s| h.admit(s))
            .collect();
        assert_eq!(many.len(), TOTAL - 1);
    }
}
