//! Shutdown drain. On SIGTERM the node stops taking uploads and waits, up to a bound, for
//! those in flight to commit (or fail) before its background loops stop and the database
//! closes: an upload is then either whole or absent, and one that was acknowledged is kept.
//!
//! Each upload holds an [`InFlight`], a clone of a channel sender; the drain is over when
//! the last one drops (the receiver sees the channel close), with no polling.

use std::sync::Mutex;
use std::time::Duration;

use crate::runtime;

pub struct Drain {
    /// Cloned into each upload; `None` once shutdown began, so no new upload starts.
    uploads: Mutex<Option<async_channel::Sender<()>>>,
    /// Closes when the last upload's sender drops.
    idle: async_channel::Receiver<()>,
    /// Dropped when shutdown begins, which closes `stopping`.
    begin: Mutex<Option<async_channel::Sender<()>>>,
    stopping: async_channel::Receiver<()>,
}

/// Held by an upload from its start until its commit ends.
pub struct InFlight(#[allow(dead_code)] async_channel::Sender<()>);

impl Default for Drain {
    fn default() -> Self {
        let (uploads, idle) = async_channel::bounded(1);
        let (begin, stopping) = async_channel::bounded(1);
        Drain { uploads: Mutex::new(Some(uploads)), idle, begin: Mutex::new(Some(begin)), stopping }
    }
}

impl Drain {
    /// A mark for a new upload, or `None` once shutdown began.
    pub fn enter(&self) -> Option<InFlight> {
        self.uploads.lock().unwrap_or_else(|p| p.into_inner()).as_ref().map(|tx| InFlight(tx.clone()))
    }

    /// Refuses new uploads from now on and wakes whatever waits in [`Drain::stopping`].
    pub fn begin(&self) {
        self.uploads.lock().unwrap_or_else(|p| p.into_inner()).take();
        self.begin.lock().unwrap_or_else(|p| p.into_inner()).take();
    }

    /// Resolves once shutdown began (for the accept loops).
    pub async fn stopping(&self) {
        let _ = self.stopping.recv().await;
    }

    /// Uploads still running.
    pub fn in_flight(&self) -> usize {
        // The receiver side counts senders: every upload's, plus ours until shutdown began.
        let ours = usize::from(self.uploads.lock().unwrap_or_else(|p| p.into_inner()).is_some());
        self.idle.sender_count().saturating_sub(ours)
    }

    /// Waits, up to `grace`, for every upload in flight to end. Call after [`Drain::begin`].
    /// Returns whether they all did.
    pub async fn drained(&self, grace: Duration) -> bool {
        runtime::timeout(grace, async {
            let _ = self.idle.recv().await;
        })
        .await
        .is_some()
    }
}
