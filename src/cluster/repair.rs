//! Repair: each node fetches the chunks it should hold and lacks, and drops the chunks it no
//! longer has to hold once their holders confirm they have them. Driven by events, never by a
//! timer that rescans the store:
//!
//! - A change of the cluster view (a member joins, comes back, goes down, passes its
//!   `--down-out-after` grace, is drained or removed) starts one **ranking pass**: the chunk
//!   references in pages of [`PASS_PAGE`], each ranked against the placement nodes, the
//!   cursor persisted after every page so a restart goes on where it stopped. A new change
//!   mid-pass starts the pass over (what it ranked went by the old view).
//! - A chunk found missing or damaged (the scrub dropped a copy; a peer asked this node for a
//!   chunk it lacks; names arrived by anti-entropy; a fetch found no copy) goes into the
//!   persisted queue (`storage::repair_queue`), which this loop drains, retrying what it
//!   cannot settle yet with a backoff.
//!
//! Copies move at `--repair-rate` chunks per second at most (fetches and the verifications
//! before a drop). A node that knows no member does nothing at all; an idle node waits on its
//! wake-up channel, with a timer only for the next grace to end or queued retry to fall due.
//!
//! "Should hold" = this node ranks among the R best placement nodes for the chunk: the live
//! ones and those down for less than the grace, less those draining or removed. A node inside
//! the grace keeps its share: a restart moves nothing.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::messages::{self, MAX_VERIFY, Request, Response};
use super::{CHUNK_TIMEOUT, Cluster, ClusterError, lock, placement};
use crate::clock::unix_ms;
use crate::content::{ChunkId, NodeId};
use crate::runtime;
use crate::storage::{QueuePage, Queued, StorageError};

/// Chunk references ranked per page of a pass (a blocking thread's work, then the cursor is
/// saved).
const PASS_PAGE: usize = 4096;
/// Queued chunks handled per step.
const QUEUE_PAGE: usize = 256;
/// Chunks fetched per durable write.
const FETCH_BATCH: usize = 8;
/// Retry delays of queued chunks that could not be settled: doubling from the first, capped.
/// The cap bounds how long a surplus copy outlives the heal that lets its owner confirm (a
/// retry is one verify or fetch, paced by `--repair-rate`, so a short cap costs little).
const RETRY_FIRST: Duration = Duration::from_secs(1);
const RETRY_MAX: Duration = Duration::from_secs(8);
/// Tries a held copy no manifest names yet gets before it is left to the collector (with the
/// backoff, about 80 s for its upload's name to arrive).
const UNNAMED_TRIES: u32 = 12;
/// How long after a stand-in copy arrives repair first looks at it (its upload commits first).
const STAND_IN_DELAY: Duration = Duration::from_secs(5);
/// `META` key of the pass under way or last done.
const PASS_KEY: &str = "repair_pass";

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RepairReport {
    /// Chunks this node should hold but lacked and could not fetch, at the last pass.
    pub missing: u64,
    /// Chunks of the whole store with fewer than R owners up, as this node saw the cluster at
    /// the last pass: an owner is down (within its grace), or there are fewer nodes than R.
    pub under_replicated: u64,
    /// When the last pass ended (Unix ms): the two figures above are from then.
    pub last_pass_ms: Option<u64>,
    /// Ranking passes completed since start.
    pub passes: u64,
    /// Whether a pass is under way, and how many chunk references it has ranked.
    pub pass_running: bool,
    pub pass_ranked: u64,
    /// Chunks in the repair queue.
    pub queued: u64,
    pub fetched: u64,
    pub fetched_bytes: u64,
    pub dropped: u64,
}

/// The pass under way or last done, persisted under [`PASS_KEY`] (postcard; see
/// `docs/format.md`). A field change is a new key.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
struct PassRecordV1 {
    /// The cluster view the pass ranks against ([`View::fingerprint`]).
    view: [u8; 32],
    /// The last chunk reference ranked; `None` before the first page.
    cursor: Option<[u8; 32]>,
    done: bool,
    ranked: u64,
    /// Figures so far (for a pass done: its result).
    missing: u64,
    under_replicated: u64,
    ended_ms: u64,
}

/// What ranking goes by: the placement nodes, the live ones, R.
struct View {
    placing: Vec<NodeId>,
    live: Vec<NodeId>,
    want: usize,
    short: bool,
}

impl View {
    fn of(cluster: &Cluster) -> View {
        let placing = cluster.placement_nodes();
        let want = cluster.config.replication.min(placing.len());
        View { short: want < cluster.config.replication, want, live: cluster.live_nodes(), placing }
    }

    /// Changes exactly when a pass would rank differently (owners, or which are up).
    fn fingerprint(&self) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update((self.want as u64).to_le_bytes());
        for n in &self.placing {
            h.update(n.as_bytes());
        }
        h.update([0xff]);
        for n in &self.live {
            h.update(n.as_bytes());
        }
        h.finalize().into()
    }

    fn owners(&self, id: &ChunkId) -> Vec<NodeId> {
        placement::rank(id, &self.placing).into_iter().take(self.want).collect()
    }
}

/// Of chunks a peer's upload stored here, those this node does not own: a write that fell
/// back past an owner it could not reach. Queued, due after the upload has had time to
/// commit, so repair hands each to its owner and drops this copy once the owner confirms
/// (no view change need follow: the owner may never have been seen down here).
pub(super) async fn queue_stand_ins(cluster: &Cluster, ids: &[ChunkId]) -> Result<(), ClusterError> {
    let view = View::of(cluster);
    let due = unix_ms() + STAND_IN_DELAY.as_millis() as u64;
    let stand_ins: Vec<(ChunkId, u64)> =
        ids.iter().filter(|id| !view.owners(id).contains(&cluster.me)).map(|id| (*id, due)).collect();
    if !stand_ins.is_empty() {
        cluster.store.settle_repair(Vec::new(), stand_ins).await?;
        cluster.wake_repair();
    }
    Ok(())
}

/// At most `rate` chunks a second, over any stretch of a second or more.
struct Pace {
    per_chunk: Duration,
    next: Instant,
}

impl Pace {
    fn new(rate: u32) -> Self {
        Self { per_chunk: Duration::from_secs(1) / rate.max(1), next: Instant::now() }
    }

    async fn take(&mut self, chunks: usize) {
        let now = Instant::now();
        if self.next > now {
            runtime::sleep(self.next - now).await;
        }
        self.next = self.next.max(now) + self.per_chunk * chunks as u32;
    }
}

/// What one step found to do.
enum Worked {
    /// Did some work; step again.
    Busy,
    /// Nothing to do until woken, or until this instant (Unix ms).
    Idle(Option<u64>),
}

struct Repair {
    cluster: Arc<Cluster>,
    pass: Option<PassRecordV1>,
    pace: Pace,
}

pub async fn run(cluster: Arc<Cluster>, shutdown: async_channel::Receiver<()>) {
    let pass = match cluster.store.meta(PASS_KEY).await {
        Ok(Some(bytes)) => messages::decode(&bytes).ok(),
        _ => None,
    };
    let mut repair = Repair { pace: Pace::new(cluster.config.repair_rate), cluster, pass };
    repair.publish(0);
    loop {
        if shutdown.try_recv().is_ok() || shutdown.is_closed() {
            return;
        }
        let until = match repair.step().await {
            Ok(Worked::Busy) => continue,
            Ok(Worked::Idle(until)) => until,
            // The database closes first when the node shuts down: not a failure worth an alarm.
            Err(ClusterError::Storage(StorageError::WriterGone)) => {
                log::debug!("repair stops: the database is closed");
                return;
            }
            Err(e) => {
                log::error!("repair failed: {e}");
                Some(unix_ms() + RETRY_MAX.as_millis() as u64)
            }
        };
        let woken = repair.cluster.repair_woken.recv();
        let stop = shutdown.recv();
        let stopped = futures_lite::future::or(async { woken.await.is_err() }, async {
            stop.await.ok();
            true
        });
        let stopped = match until {
            Some(at) => {
                let wait = Duration::from_millis(at.saturating_sub(unix_ms()));
                runtime::timeout(wait, stopped).await.unwrap_or(false)
            }
            None => stopped.await,
        };
        if stopped {
            return;
        }
        // Let a burst of membership changes settle into one view.
        runtime::sleep(Duration::from_millis(200)).await;
    }
}

impl Repair {
    async fn step(&mut self) -> Result<Worked, ClusterError> {
        let cluster = self.cluster.clone();
        if !cluster.has_members() {
            return Ok(Worked::Idle(None));
        }
        // Until this node has heard from its members (and their members), its view is partial:
        // ranking against it would fetch chunks that are not its own.
        if !cluster.view_settled() {
            return Ok(Worked::Idle(Some(unix_ms() + 100)));
        }
        let view = View::of(&cluster);
        let fingerprint = view.fingerprint();
        // The pass under way for this view goes on; a new view starts a new one.
        let pass = match &self.pass {
            Some(p) if p.view == fingerprint && p.done => None,
            Some(p) if p.view == fingerprint => Some(p.clone()),
            _ => Some(PassRecordV1 {
                view: fingerprint,
                cursor: None,
                done: false,
                ranked: 0,
                missing: 0,
                under_replicated: 0,
                ended_ms: 0,
            }),
        };
        if let Some(pass) = pass {
            return self.pass_page(&view, pass).await;
        }
        let now = unix_ms();
        let QueuePage { due, queued, next_due } = cluster.store.repair_queue(QUEUE_PAGE, now).await?;
        self.publish(queued);
        if !due.is_empty() {
            self.queue_page(&view, due).await?;
            return Ok(Worked::Busy);
        }
        if queued == 0 {
            cluster.leave_if_drained().await;
        }
        let next_view = cluster.next_placement_change();
        Ok(Worked::Idle(match (next_due, next_view) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }))
    }

    /// Ranks one page of chunk references and acts on it.
    async fn pass_page(&mut self, view: &View, mut pass: PassRecordV1) -> Result<Worked, ClusterError> {
        let cluster = self.cluster.clone();
        let page =
            cluster.store.referenced_chunks_after(pass.cursor.map(ChunkId::from_bytes), PASS_PAGE).await?;
        let ended = page.len() < PASS_PAGE;
        pass.cursor = page.last().map(|(id, _)| *id.as_bytes()).or(pass.cursor);
        pass.ranked += page.len() as u64;
        let (me, placing, live, want, short) =
            (cluster.me, view.placing.clone(), view.live.clone(), view.want, view.short);
        // Ranking hashes every chunk against every node: a blocking thread's work.
        let (fetch, surplus, under) = runtime::blocking(move || {
            let mut fetch = Vec::new();
            let mut under = 0u64;
            // For chunks held here but owned elsewhere: the owners that must confirm.
            let mut surplus: Vec<(ChunkId, Vec<NodeId>)> = Vec::new();
            for (id, held) in page {
                let owners: Vec<NodeId> = placement::rank(&id, &placing).into_iter().take(want).collect();
                if short || owners.iter().any(|o| !live.contains(o)) {
                    under += 1;
                }
                let mine = owners.contains(&me);
                if mine && !held {
                    fetch.push(id);
                } else if !mine && held {
                    surplus.push((id, owners));
                }
            }
            (fetch, surplus, under)
        })
        .await;
        pass.under_replicated += under;
        let failed = self.fetch(fetch).await?;
        pass.missing += failed.len() as u64;
        let unsettled = self.drop_confirmed(view, surplus).await?;
        let retry = unix_ms() + RETRY_FIRST.as_millis() as u64;
        let defer: Vec<(ChunkId, u64)> = failed.into_iter().chain(unsettled).map(|id| (id, retry)).collect();
        cluster.store.settle_repair(Vec::new(), defer).await?;
        if ended {
            pass.done = true;
            pass.ended_ms = unix_ms();
            log::info!(
                "repair: pass over {} chunk references done; {} missing, {} under-replicated",
                pass.ranked,
                pass.missing,
                pass.under_replicated
            );
        }
        cluster.store.set_meta(PASS_KEY, messages::encode(&pass)).await?;
        if ended {
            lock(&cluster.repair_report).passes += 1;
        }
        self.pass = Some(pass);
        let queued = lock(&cluster.repair_report).queued;
        self.publish(queued);
        Ok(Worked::Busy)
    }

    /// Settles queued chunks: fetches those this node should hold and lacks, and drops a
    /// surplus copy once every owner confirms its own (an owner asked about a chunk it lacks
    /// queues it in turn). One it neither owns nor holds is none of its business: whoever
    /// owns it was asked first by any read or fetch, and queued it then.
    async fn queue_page(&mut self, view: &View, due: Vec<Queued>) -> Result<(), ClusterError> {
        let cluster = self.cluster.clone();
        let tries: HashMap<ChunkId, u32> = due.iter().map(|q| (q.id, q.tries)).collect();
        let ids: Vec<ChunkId> = due.into_iter().map(|q| q.id).collect();
        let states = cluster.store.chunk_states(ids.clone()).await?;
        let mut done = Vec::new();
        let mut fetch = Vec::new();
        let mut surplus = Vec::new();
        let mut unnamed = Vec::new();
        for (id, (used, held)) in ids.into_iter().zip(states) {
            let owners = view.owners(&id);
            match (used, owners.contains(&cluster.me), held) {
                (true, true, false) => fetch.push(id),
                (true, false, true) => surplus.push((id, owners)),
                // Held, not ours, and no manifest here names it yet: a stand-in copy whose
                // upload's name has not arrived (a lossy link delays it). Looked at again a few
                // times, so it goes to its owner once the name lands; past that, an upload that
                // never committed left it, and it is the collector's.
                (false, false, true) if tries.get(&id).is_some_and(|t| *t < UNNAMED_TRIES) => {
                    unnamed.push(id)
                }
                // Collected since, held as it should be (the scrub checks the copy), or not
                // this node's.
                _ => done.push(id),
            }
        }
        let failed = self.fetch(fetch.clone()).await?;
        done.extend(fetch.into_iter().filter(|id| !failed.contains(id)));
        let ids: Vec<ChunkId> = surplus.iter().map(|(id, _)| *id).collect();
        let unsettled = self.drop_confirmed(view, surplus).await?;
        done.extend(ids.into_iter().filter(|id| !unsettled.contains(id)));
        let now = unix_ms();
        let defer = failed
            .into_iter()
            .chain(unsettled)
            .chain(unnamed)
            .map(|id| {
                let n = tries.get(&id).copied().unwrap_or(0).min(16);
                let delay = (RETRY_FIRST * 2u32.pow(n)).min(RETRY_MAX);
                (id, now + delay.as_millis() as u64)
            })
            .collect();
        cluster.store.settle_repair(done, defer).await?;
        Ok(())
    }

    /// Fetches `ids` from peers at the set rate, storing them durably in small batches.
    /// Returns those no peer could give.
    async fn fetch(&mut self, ids: Vec<ChunkId>) -> Result<Vec<ChunkId>, ClusterError> {
        let cluster = self.cluster.clone();
        let mut failed = Vec::new();
        for batch in ids.chunks(FETCH_BATCH) {
            self.pace.take(batch.len()).await;
            let mut got = Vec::new();
            for id in batch {
                match cluster.fetch_chunk(*id).await {
                    Ok((_, sealed)) => got.push((*id, sealed)),
                    Err(e) => {
                        log::debug!("repair: {e}");
                        failed.push(*id);
                    }
                }
            }
            if !got.is_empty() {
                let (n, bytes) = (got.len() as u64, got.iter().map(|(_, s)| s.len() as u64).sum::<u64>());
                cluster.store.put_chunks_durable(got).await?;
                let mut r = lock(&cluster.repair_report);
                r.fetched += n;
                r.fetched_bytes += bytes;
            }
        }
        if !ids.is_empty() {
            log::info!("repair: fetched {} of {} chunks", ids.len() - failed.len(), ids.len());
        }
        Ok(failed)
    }

    /// Asks each live owner which of the chunks it holds in a copy that verifies; returns, per
    /// chunk, how many owners confirmed. An owner asked about a chunk it lacks queues it.
    async fn verify_on_owners(&mut self, chunks: &[(ChunkId, Vec<NodeId>)]) -> HashMap<ChunkId, usize> {
        let mut asks: HashMap<NodeId, Vec<ChunkId>> = HashMap::new();
        for (id, owners) in chunks {
            for o in owners {
                asks.entry(*o).or_default().push(*id);
            }
        }
        let mut confirmed: HashMap<ChunkId, usize> = HashMap::new();
        for (owner, ids) in asks {
            let Some(link) = self.cluster.link_of(owner) else { continue };
            // Verified, not only listed: a damaged copy there must not retire a good one here.
            for part in ids.chunks(MAX_VERIFY) {
                self.pace.take(part.len()).await;
                let req = Request::VerifyChunks { ids: part.iter().map(|c| *c.as_bytes()).collect() };
                if let Ok(Response::Have(have)) = link.request(req, CHUNK_TIMEOUT).await {
                    for (id, has) in part.iter().zip(have) {
                        if has {
                            *confirmed.entry(*id).or_default() += 1;
                        }
                    }
                }
            }
        }
        confirmed
    }

    /// Drops local chunks whose every owner confirms holding a copy that verifies. Returns
    /// those it could not drop yet (an owner down, lacking it, or holding it damaged).
    async fn drop_confirmed(
        &mut self,
        view: &View,
        surplus: Vec<(ChunkId, Vec<NodeId>)>,
    ) -> Result<Vec<ChunkId>, ClusterError> {
        if surplus.is_empty() {
            return Ok(Vec::new());
        }
        // With an owner down, that owner cannot confirm: wait for it (or for its grace).
        let (askable, waiting): (Vec<_>, Vec<_>) =
            surplus.into_iter().partition(|(_, owners)| owners.iter().all(|o| view.live.contains(o)));
        let confirmed = self.verify_on_owners(&askable).await;
        let (droppable, unconfirmed): (Vec<_>, Vec<_>) = askable
            .into_iter()
            .partition(|(id, owners)| confirmed.get(id).copied().unwrap_or(0) == owners.len());
        let droppable: Vec<ChunkId> = droppable.into_iter().map(|(id, _)| id).collect();
        let mut kept = Vec::new();
        if !droppable.is_empty() {
            let freed = self.cluster.store.drop_chunks(droppable.clone()).await?;
            // The writer keeps a copy a transfer in flight has pinned: those wait for a retry.
            let still = self.cluster.store.have_chunks(droppable.clone()).await?;
            let asked = droppable.len();
            kept = droppable.into_iter().zip(still).filter(|(_, s)| *s).map(|(id, _)| id).collect::<Vec<_>>();
            let n = (asked - kept.len()) as u64;
            lock(&self.cluster.repair_report).dropped += n;
            log::info!("repair: dropped {n} chunks ({freed} bytes) now held by their owners");
        }
        Ok(waiting.into_iter().chain(unconfirmed).map(|(id, _)| id).chain(kept).collect())
    }

    /// Shows the pass's state in the report.
    fn publish(&self, queued: u64) {
        let mut r = lock(&self.cluster.repair_report);
        r.queued = queued;
        match &self.pass {
            Some(p) if p.done => {
                r.pass_running = false;
                r.pass_ranked = 0;
                r.missing = p.missing;
                r.under_replicated = p.under_replicated;
                r.last_pass_ms = Some(p.ended_ms);
            }
            Some(p) => {
                r.pass_running = true;
                r.pass_ranked = p.ranked;
            }
            None => r.pass_running = false,
        }
    }
}
