//! Scrub: a background loop that re-verifies every stored chunk, slowly, and drops the local
//! copies that fail. Reads already refuse such a copy; dropping it makes it a chunk this node
//! lacks. In a cluster, repair then fetches a good copy back from another holder. On a single
//! node, uploading the file again stores the chunk afresh, where the corrupt copy would have
//! stood in for it through dedup.
//!
//! The node's key was checked against the data at start (see [`super::check_data_key`]), so a
//! chunk that fails here is damaged, not read under a wrong key.
//!
//! Unit of work: one pass over the chunk index ([`Scrubber::pass`]), in batches, at no more
//! than the configured bytes per second. A pass runs at start and then once a day.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::content::ChunkId;
use crate::crypto::Keys;
use crate::runtime;
use crate::storage::{StorageError, Store};

const PERIOD: Duration = Duration::from_secs(24 * 60 * 60);
/// After a pass that stopped on an error.
const RETRY: Duration = Duration::from_secs(60 * 60);
/// Chunks per trip to a blocking thread: up to 32 MiB to decrypt and hash.
const BATCH: usize = 32;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ScrubReport {
    /// Bytes verified per second at most; 0: scrubbing is off.
    pub rate: u64,
    /// Passes completed since start.
    pub passes: u64,
    /// Chunks verified since start.
    pub checked: u64,
    /// Chunks found damaged (and their local copies dropped) since start.
    pub corrupt: u64,
    /// Failures met since start: chunks that could not be read or dropped (a damaged database
    /// page, a failing disk) and passes that stopped early. Each is logged; the scrub goes on.
    pub errors: u64,
}

pub struct Scrubber {
    store: Store,
    keys: Keys,
    rate: u64,
    report: Mutex<ScrubReport>,
}

/// What one batch found.
struct Batch {
    /// The last chunk id looked at; `None` when the walk is done.
    last: Option<ChunkId>,
    checked: u64,
    bytes: usize,
    damaged: Vec<Damaged>,
    /// Chunks that could not be read, for a reason other than damage to the chunk.
    errors: u64,
}

/// A chunk that failed verification.
struct Damaged {
    id: ChunkId,
    /// The bytes that failed; `None` when they could not be read whole.
    found: Option<Vec<u8>>,
    why: String,
}

/// Blocking: reads and verifies the next [`BATCH`] chunks after `after`.
fn check_batch(store: &Store, keys: &Keys, after: Option<ChunkId>) -> Result<Batch, StorageError> {
    let ids = store.chunk_ids_after_blocking(after, BATCH)?;
    let mut batch = Batch { last: ids.last().copied(), checked: 0, bytes: 0, damaged: Vec::new(), errors: 0 };
    for id in ids {
        match store.chunk_blocking(id) {
            Ok(Some(sealed)) => {
                batch.bytes += sealed.len();
                if let Err(e) = keys.verify_chunk(&id, &sealed) {
                    batch.damaged.push(Damaged { id, found: Some(sealed), why: e.to_string() });
                }
            }
            // Removed since the ids were read (collected, or dropped by repair).
            Ok(None) => continue,
            Err(StorageError::Corrupt(why)) => batch.damaged.push(Damaged { id, found: None, why }),
            // Not this chunk's fault (a failing read): the walk goes on, the copy stays.
            Err(e) => {
                log::warn!("scrub: reading chunk {id} failed: {e}");
                batch.errors += 1;
                continue;
            }
        }
        batch.checked += 1;
    }
    Ok(batch)
}

impl Scrubber {
    pub fn new(store: Store, keys: Keys, rate: u64) -> Self {
        Self { store, keys, rate, report: Mutex::new(ScrubReport::default()) }
    }

    /// The counts so far, with the configured rate (kept once, in `self.rate`).
    pub fn report(&self) -> ScrubReport {
        ScrubReport { rate: self.rate, ..*self.report.lock().unwrap_or_else(|p| p.into_inner()) }
    }

    fn count(&self, f: impl FnOnce(&mut ScrubReport)) {
        f(&mut self.report.lock().unwrap_or_else(|p| p.into_inner()));
    }

    /// One pass over every stored chunk.
    pub async fn pass(&self) -> Result<(), StorageError> {
        let mut after = None;
        loop {
            let started = Instant::now();
            let (store, keys) = (self.store.clone(), self.keys.clone());
            let batch = runtime::blocking(move || check_batch(&store, &keys, after)).await?;
            // Damage is rare and local; a whole batch failing points at the key or the disk as
            // a whole, where dropping copies would only make it worse.
            if batch.checked >= 4 && batch.damaged.len() as u64 == batch.checked {
                return Err(StorageError::Corrupt(format!(
                    "every one of {} chunks in a row failed verification; dropped none of them \
                     (a failing disk?)",
                    batch.checked
                )));
            }
            for Damaged { id, found, why } in batch.damaged {
                match self.store.drop_corrupt_chunk(id, found).await {
                    Ok(true) => {
                        log::error!(
                            "scrub: chunk {id} failed verification ({why}); dropped this node's \
                             copy, which repair fetches again from another holder if there is one"
                        );
                        self.count(|r| r.corrupt += 1);
                    }
                    Ok(false) => {}
                    // A damaged database page under the chunk fails its removal too: reported,
                    // and the walk goes on to the chunks after it.
                    Err(e) => {
                        log::error!(
                            "scrub: chunk {id} failed verification ({why}) and dropping it failed: {e}"
                        );
                        self.count(|r| r.errors += 1);
                    }
                }
            }
            self.count(|r| {
                r.checked += batch.checked;
                r.errors += batch.errors;
            });
            let Some(last) = batch.last else { break };
            after = Some(last);
            // At most `rate` bytes a second (0: as fast as it goes): a pass over a large store
            // stays a light load.
            if self.rate > 0 {
                let due = Duration::from_secs_f64(batch.bytes as f64 / self.rate as f64);
                if let Some(wait) = due.checked_sub(started.elapsed()) {
                    runtime::sleep(wait).await;
                }
            }
        }
        self.count(|r| r.passes += 1);
        Ok(())
    }

    /// A pass at start, then one a day (an hour after a pass that failed), until `shutdown`
    /// closes. At rate 0 it only waits for `shutdown`.
    pub async fn run(&self, shutdown: async_channel::Receiver<()>) {
        if self.rate == 0 {
            // Off, not stopped: a loop that returns early reads as a failure on /health.
            shutdown.recv().await.ok();
            return;
        }
        // `None` once `shutdown` closes.
        let stopped = || async {
            shutdown.recv().await.ok();
            None
        };
        loop {
            let pass = async {
                match self.pass().await {
                    Ok(()) => Some(PERIOD),
                    Err(e) => {
                        log::error!("scrub pass stopped: {e}");
                        self.count(|r| r.errors += 1);
                        Some(RETRY)
                    }
                }
            };
            let Some(next) = futures_lite::future::or(pass, stopped()).await else { return };
            if let Some(None) = runtime::timeout(next, stopped()).await {
                return;
            }
        }
    }
}
