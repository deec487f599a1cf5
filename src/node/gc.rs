//! The garbage collector: a background loop that removes content nobody names.
//!
//! Unit of work: one collection pass in the storage writer (see `storage::writer`), which
//! skips chunks pinned by uploads in flight, so it never races an upload.

use std::time::Duration;

use crate::events::Event;
use crate::runtime;
use crate::storage::{GcReport, StorageError, Store};

/// The default period between passes not woken by a delete.
pub const PERIOD: Duration = Duration::from_secs(60);

pub struct Collector {
    store: Store,
    period: Duration,
    /// Passes done and what they removed, for the status page.
    totals: std::sync::Mutex<GcTotals>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GcTotals {
    pub passes: u64,
    pub files: u64,
    pub chunks: u64,
    pub bytes: u64,
}

impl Collector {
    pub fn new(store: Store, period: Duration) -> Self {
        Self { store, period, totals: Default::default() }
    }

    pub fn totals(&self) -> GcTotals {
        *self.totals.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// One pass.
    pub async fn step(&self) -> Result<GcReport, StorageError> {
        let report = self.store.collect_garbage().await?;
        {
            let mut t = self.totals.lock().unwrap_or_else(|p| p.into_inner());
            t.passes += 1;
            t.files += report.files;
            t.chunks += report.chunks;
            t.bytes += report.bytes;
        }
        if report.chunks > 0 || report.files > 0 {
            log::info!(
                "gc: removed {} files, {} chunks, {} bytes",
                report.files,
                report.chunks,
                report.bytes
            );
        }
        // Freed pages are reused by later writes; once enough piled up (or the disk is below
        // its reserve), compaction gives them back to the disk. Reads wait while it runs, so
        // it comes right after the last pass of a run, which follows deletes rather than
        // uploads.
        if report.more {
            return Ok(report);
        }
        match self.store.compact_if_worthwhile().await {
            Ok(Some(shrunk)) => log::info!("gc: compaction returned {shrunk} bytes to the disk"),
            Ok(None) => {}
            Err(e) => log::error!("gc: compacting the database failed: {e}"),
        }
        Ok(report)
    }

    /// Runs a pass at start, after deletes (local or from peers), and every period, until
    /// `shutdown` closes; passes follow each other while each leaves more queued.
    pub async fn run(&self, changes: async_channel::Receiver<Event>, shutdown: async_channel::Receiver<()>) {
        loop {
            match self.step().await {
                Ok(report) if report.more && !shutdown.is_closed() => continue,
                Ok(_) => {}
                Err(e) => log::error!("gc pass failed: {e}"),
            }
            // Deletes (here or from peers) are what make garbage: wake on them.
            let woken = async {
                loop {
                    match changes.recv().await {
                        Ok(Event::Delete { .. }) => return Ok(()),
                        Ok(_) => continue,
                        Err(e) => return Err(e),
                    }
                }
            };
            let stop = shutdown.recv();
            let next = futures_lite::future::or(async { woken.await.is_ok() }, async {
                stop.await.ok();
                false
            });
            // Woken or timed out: another pass. Shut down: stop.
            if let Some(false) = runtime::timeout(self.period, next).await {
                return;
            }
        }
    }
}
