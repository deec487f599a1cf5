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
//! than the configured bytes per second. A pass runs once a day. Where a pass has got to, and
//! when the last one ended, are kept in the database (`META` `scrub_v1`), so a restart resumes
//! the pass where it stopped, or waits out the day since the last one, instead of starting a
//! full pass again.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::cluster::Cluster;
use crate::content::ChunkId;
use crate::crypto::Keys;
use crate::runtime;
use crate::storage::{StorageError, Store};

/// Time between passes (`--scrub-period`, hidden, for tests).
pub const PERIOD: Duration = Duration::from_secs(24 * 60 * 60);
/// After a pass that stopped on an error.
const RETRY: Duration = Duration::from_secs(60 * 60);
/// Chunks per trip to a blocking thread: up to 32 MiB to decrypt and hash.
const BATCH: usize = 32;
/// `META` key of the scrub's progress: the last pass's end (unix ms, u64 LE), then the chunk
/// id the pass in progress has got to (32 bytes), if one is in progress.
const PROGRESS_KEY: &str = "scrub_v1";
/// How often the position of a pass in progress is saved.
const SAVE_EVERY: Duration = Duration::from_secs(1);
/// How often a saved position is also made durable (an fsync of its own on an idle node):
/// a crash repeats at most this much of a pass.
const DURABLE_EVERY: Duration = Duration::from_secs(60);

/// The scrub's progress as kept in the database.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Progress {
    last_pass_ended_ms: u64,
    at: Option<ChunkId>,
}

impl Progress {
    fn encode(&self) -> Vec<u8> {
        let mut out = self.last_pass_ended_ms.to_le_bytes().to_vec();
        if let Some(at) = self.at {
            out.extend_from_slice(at.as_bytes());
        }
        out
    }

    /// Anything else than what `encode` writes reads as no progress: a full pass, soon.
    fn decode(bytes: &[u8]) -> Progress {
        let ended = bytes.get(..8).and_then(|b| b.try_into().ok()).map(u64::from_le_bytes);
        let at = bytes.get(8..40).and_then(|b| <[u8; 32]>::try_from(b).ok()).map(ChunkId::from_bytes);
        match (ended, bytes.len()) {
            (Some(last_pass_ended_ms), 8 | 40) => Progress { last_pass_ended_ms, at },
            _ => Progress::default(),
        }
    }
}

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
    /// How far the pass under way has got: the first 8 bytes (big-endian) of the last chunk id
    /// it checked. Ids are SHA-256, spread evenly, so `position / 2^64` is the share of the
    /// stored chunks this pass has checked. 0 between passes.
    pub position: u64,
    /// When the next pass starts (Unix ms) while the scrub waits for it; 0 while a pass runs
    /// or before the scrub has decided (at start, and when it is off).
    pub next_pass_ms: u64,
}

pub struct Scrubber {
    store: Store,
    /// Told of each copy dropped (the writer queued it for repair in the same commit).
    cluster: Arc<Cluster>,
    keys: Keys,
    rate: u64,
    period: Duration,
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
    pub fn new(store: Store, cluster: Arc<Cluster>, keys: Keys, rate: u64, period: Duration) -> Self {
        Self { store, cluster, keys, rate, period, report: Mutex::new(ScrubReport::default()) }
    }

    /// The counts so far, with the configured rate (kept once, in `self.rate`).
    pub fn report(&self) -> ScrubReport {
        ScrubReport { rate: self.rate, ..*self.report.lock().unwrap_or_else(|p| p.into_inner()) }
    }

    fn count(&self, f: impl FnOnce(&mut ScrubReport)) {
        f(&mut self.report.lock().unwrap_or_else(|p| p.into_inner()));
    }

    async fn progress(&self) -> Progress {
        match self.store.meta(PROGRESS_KEY).await {
            Ok(Some(bytes)) => Progress::decode(&bytes),
            _ => Progress::default(),
        }
    }

    /// Saves the position, durably or riding the next durable commit (a clean stop makes it
    /// durable too; a crash may lose it).
    async fn save(&self, progress: Progress, durable: bool) {
        let value = progress.encode();
        let saved = if durable {
            self.store.set_meta(PROGRESS_KEY, value).await
        } else {
            self.store.set_meta_lazily(PROGRESS_KEY, value).await
        };
        if let Err(e) = saved {
            log::warn!("scrub: could not save its progress: {e}");
        }
    }

    /// One pass over every stored chunk.
    pub async fn pass(&self) -> Result<(), StorageError> {
        self.pass_from(None).await
    }

    /// A pass from the chunk after `after` to the end, saving where it has got to.
    async fn pass_from(&self, mut after: Option<ChunkId>) -> Result<(), StorageError> {
        let mut progress = self.progress().await;
        let (mut saved, mut durable) = (Instant::now(), Instant::now());
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
                        self.cluster.wake_repair();
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
            let Some(last) = batch.last else {
                self.count(|r| {
                    r.checked += batch.checked;
                    r.errors += batch.errors;
                });
                break;
            };
            after = Some(last);
            // Saved before the batch is counted: a position the status shows is one a restart
            // resumes after.
            if saved.elapsed() >= SAVE_EVERY {
                progress.at = after;
                let now_durable = durable.elapsed() >= DURABLE_EVERY;
                self.save(progress, now_durable).await;
                saved = Instant::now();
                if now_durable {
                    durable = saved;
                }
            }
            let position = last.as_bytes()[..8].try_into().map(u64::from_be_bytes).unwrap_or(0);
            self.count(|r| {
                r.checked += batch.checked;
                r.errors += batch.errors;
                r.position = position;
            });
            // At most `rate` bytes a second (0: as fast as it goes): a pass over a large store
            // stays a light load.
            if self.rate > 0 {
                let due = Duration::from_secs_f64(batch.bytes as f64 / self.rate as f64);
                if let Some(wait) = due.checked_sub(started.elapsed()) {
                    runtime::sleep(wait).await;
                }
            }
        }
        self.count(|r| {
            r.passes += 1;
            r.position = 0;
        });
        self.save(Progress { last_pass_ended_ms: crate::time::unix_ms(), at: None }, true).await;
        Ok(())
    }

    /// A pass a day (an hour after a pass that failed), until `shutdown` closes: at start, a
    /// pass in progress goes on where it stopped, and otherwise the next one comes a day after
    /// the last one ended. At rate 0 it only waits for `shutdown`.
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
        let saved = self.progress().await;
        // No pass under way, and the last one ended less than a day ago: wait out the day.
        if saved.at.is_none() && saved.last_pass_ended_ms > 0 {
            let since = crate::time::unix_ms().saturating_sub(saved.last_pass_ended_ms);
            let wait = self.period.saturating_sub(Duration::from_millis(since));
            if self.wait(wait, stopped()).await {
                return;
            }
        }
        let mut resume = saved.at;
        if let Some(at) = resume {
            log::info!("scrub: resuming the pass that was under way, after chunk {at}");
        }
        loop {
            let from = resume.take();
            let pass = async {
                match self.pass_from(from).await {
                    Ok(()) => Some(self.period),
                    Err(e) => {
                        log::error!("scrub pass stopped: {e}");
                        self.count(|r| r.errors += 1);
                        Some(RETRY)
                    }
                }
            };
            let Some(next) = futures_lite::future::or(pass, stopped()).await else { return };
            if self.wait(next, stopped()).await {
                return;
            }
        }
    }

    /// Waits `wait` for the next pass, showing when it starts; true if `stopped` came first.
    async fn wait<T>(&self, wait: Duration, stopped: impl Future<Output = Option<T>>) -> bool {
        let at = crate::time::unix_ms().saturating_add(u64::try_from(wait.as_millis()).unwrap_or(u64::MAX));
        self.count(|r| r.next_pass_ms = at);
        let stop = runtime::timeout(wait, stopped).await.is_some();
        self.count(|r| r.next_pass_ms = 0);
        stop
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_round_trips_and_bad_bytes_read_as_none() {
        let at = Some(ChunkId::of(b"x"));
        for p in [Progress { last_pass_ended_ms: 5, at }, Progress { last_pass_ended_ms: 7, at: None }] {
            assert_eq!(Progress::decode(&p.encode()), p);
        }
        for bad in [&[][..], &[1, 2, 3][..], &[0; 20][..], &[0; 41][..]] {
            assert_eq!(Progress::decode(bad), Progress::default());
        }
    }
}
