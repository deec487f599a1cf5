//! Repair: each node fetches the chunks it should hold and lacks, and drops the chunks it no
//! longer has to hold once their holders confirm they have them.
//!
//! "Should hold" = this node ranks among the R best placement nodes for the chunk: the live
//! ones and those down for less than `--down-out-after`. A node down for longer no longer
//! places chunks, and the survivors re-replicate its share among themselves; when it returns
//! it fetches its share back and the stand-ins drop theirs. A node inside the grace keeps its
//! share: a restart moves nothing. A node that knows no member does nothing at all.
//! Unit of work: one pass over the referenced chunks ([`step`]).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use super::messages::{MAX_VERIFY, Request, Response};
use super::{CHUNK_TIMEOUT, Cluster, ClusterError, lock, placement};
use crate::content::{ChunkId, NodeId};
use crate::runtime;

/// Chunks fetched per durable write.
const FETCH_BATCH: usize = 8;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RepairReport {
    /// Chunks this node should hold but lacks, at the last pass.
    pub missing: u64,
    /// Chunks of the whole store with fewer than R owners up, as this node saw the cluster at
    /// the last pass: an owner is down (within its grace), or there are fewer nodes than R.
    pub under_replicated: u64,
    pub fetched: u64,
    pub dropped: u64,
    pub passes: u64,
}

pub async fn step(cluster: &Arc<Cluster>) -> Result<RepairReport, ClusterError> {
    let mut report = RepairReport::default();
    if !cluster.has_members() {
        return Ok(report);
    }
    let live = cluster.live_nodes();
    let placing = cluster.placement_nodes();
    let want = cluster.config.replication.min(placing.len());
    let referenced = cluster.store.referenced_chunks().await?;
    let (me, nodes) = (cluster.me, placing);
    let (short, up) = (want < cluster.config.replication, live.clone());
    // Ranking hashes every chunk against every node: a blocking thread's work at scale.
    let (fetch, surplus, under_replicated) = runtime::blocking(move || {
        let mut fetch = Vec::new();
        let mut under_replicated = 0u64;
        // For chunks held here but owned elsewhere: the owners that must confirm.
        let mut surplus: Vec<(ChunkId, Vec<NodeId>)> = Vec::new();
        for (id, held) in referenced {
            let owners: Vec<NodeId> = placement::rank(&id, &nodes).into_iter().take(want).collect();
            if short || owners.iter().any(|o| !up.contains(o)) {
                under_replicated += 1;
            }
            let mine = owners.contains(&me);
            if mine && !held {
                fetch.push(id);
            } else if !mine && held {
                surplus.push((id, owners));
            }
        }
        (fetch, surplus, under_replicated)
    })
    .await;
    report.missing = fetch.len() as u64;
    report.under_replicated = under_replicated;
    for batch in fetch.chunks(FETCH_BATCH) {
        let mut got = Vec::new();
        for id in batch {
            match cluster.fetch_chunk(*id).await {
                Ok((_, sealed)) => got.push((*id, sealed)),
                Err(e) => log::debug!("repair: {e}"),
            }
        }
        report.fetched += got.len() as u64;
        if !got.is_empty() {
            cluster.store.put_chunks_durable(got).await?;
        }
    }
    if !surplus.is_empty() && live.len() > 1 {
        report.dropped = drop_confirmed(cluster, surplus).await?;
    }
    Ok(report)
}

/// Drops local chunks whose every owner confirms holding a copy that verifies.
async fn drop_confirmed(
    cluster: &Arc<Cluster>,
    surplus: Vec<(ChunkId, Vec<NodeId>)>,
) -> Result<u64, ClusterError> {
    let mut asks: HashMap<NodeId, Vec<ChunkId>> = HashMap::new();
    for (id, owners) in &surplus {
        for o in owners {
            asks.entry(*o).or_default().push(*id);
        }
    }
    let mut confirmed: HashMap<ChunkId, usize> = HashMap::new();
    for (owner, ids) in asks {
        let Some(link) = cluster.link_of(owner) else { continue };
        // Verified, not only listed: a damaged copy there must not retire a good one here.
        for part in ids.chunks(MAX_VERIFY) {
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
    let droppable: Vec<ChunkId> = surplus
        .into_iter()
        .filter(|(id, owners)| confirmed.get(id).copied().unwrap_or(0) == owners.len())
        .map(|(id, _)| id)
        .collect();
    let n = droppable.len() as u64;
    if n > 0 {
        let freed = cluster.store.drop_chunks(droppable).await?;
        log::info!("repair: dropped {n} chunks ({freed} bytes) now held by their owners");
    }
    Ok(n)
}

pub async fn run(cluster: Arc<Cluster>, shutdown: async_channel::Receiver<()>) {
    loop {
        let woken = cluster.repair_woken.recv();
        let stop = shutdown.recv();
        let stopped = futures_lite::future::or(async { woken.await.is_err() }, async {
            stop.await.ok();
            true
        });
        if runtime::timeout(cluster.config.timing.repair_period, stopped).await == Some(true) {
            return;
        }
        // Let a burst of membership changes settle into one pass.
        runtime::sleep(Duration::from_millis(200)).await;
        match step(&cluster).await {
            Ok(r) => {
                let missing = r.missing.saturating_sub(r.fetched);
                if r.fetched + r.dropped > 0 {
                    log::info!(
                        "repair: fetched {}, dropped {}, {missing} still missing",
                        r.fetched,
                        r.dropped
                    );
                }
                let mut total = lock(&cluster.repair_report);
                *total = RepairReport {
                    missing,
                    under_replicated: r.under_replicated,
                    fetched: total.fetched + r.fetched,
                    dropped: total.dropped + r.dropped,
                    passes: total.passes + 1,
                };
            }
            // The database closes first when the node shuts down: not a failure worth an alarm.
            Err(ClusterError::Storage(crate::storage::StorageError::WriterGone)) => {
                log::debug!("repair stops: the database is closed");
                return;
            }
            Err(e) => log::error!("repair pass failed: {e}"),
        }
    }
}
