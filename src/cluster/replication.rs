//! Replication and remote reads: name changes announced to every peer, and chunks moved: an
//! upload's chunks to their R holders (under a lease, confirmed present
//! after an fsync on every holder before the upload may commit), and a download's chunks from
//! whichever holder answers (pinned on every node for the download's lifetime).

use std::collections::HashMap;
use std::sync::Arc;

use futures_util::StreamExt;

use super::leases::RemoteLease;
use super::messages::{self, MAX_PIN, NameUpdate, Request, Response};
use super::{
    CHUNK_TIMEOUT, CHUNKS_PER_REQUEST, Cluster, ClusterError, NAMES_TIMEOUT, STORES_IN_FLIGHT, placement,
};
use crate::content::{ChunkId, Manifest, NodeId};
use crate::runtime;
use crate::storage::NameRecord;
use crate::storage::records::ManifestRecordV1;

/// Where one upload's chunks went: the holders (this node possibly among them) with the chunks
/// each took. Dropping it releases the holders' pins.
pub struct Placed {
    pub lease: RemoteLease,
    on: HashMap<NodeId, Vec<ChunkId>>,
}

/// What one group of chunk stores did.
#[derive(Default)]
struct Stored {
    /// Sealed bytes new on their holders, averaged over the copies.
    new_bytes: u64,
    placed: Vec<(NodeId, Vec<ChunkId>)>,
    /// Nodes whose store failed.
    touched: Vec<NodeId>,
}

impl Cluster {
    /// Stores sealed chunks, each on its R best-ranked live nodes (falling back down its
    /// ranking), under the upload's lease. The chunks bound for one node go in one request,
    /// and the nodes are written in parallel. Returns the new bytes (averaged over the copies)
    /// and which node took which chunks.
    async fn store_group(
        &self,
        lease: u64,
        chunks: Vec<(ChunkId, bytes::Bytes)>,
    ) -> Result<Stored, ClusterError> {
        self.check_writable()?;
        let live = self.writable_nodes();
        let want = self.config.replication.min(live.len());
        let rankings: Vec<Vec<NodeId>> = chunks.iter().map(|(id, _)| placement::rank(id, &live)).collect();
        let mut stored = vec![0usize; chunks.len()];
        let mut next = vec![0usize; chunks.len()];
        let mut out = Stored::default();
        let mut failures = Vec::new();
        loop {
            // This round: each chunk short of copies goes to the next nodes of its ranking.
            let mut by_node: HashMap<NodeId, Vec<usize>> = HashMap::new();
            for (i, ranking) in rankings.iter().enumerate() {
                let mut short = want.saturating_sub(stored[i]);
                while short > 0 && next[i] < ranking.len() {
                    by_node.entry(ranking[next[i]]).or_default().push(i);
                    next[i] += 1;
                    short -= 1;
                }
            }
            if by_node.is_empty() {
                break;
            }
            let rounds = by_node.into_iter().map(|(node, idx)| {
                let items: Vec<(ChunkId, bytes::Bytes)> = idx.iter().map(|&i| chunks[i].clone()).collect();
                async move { (node, idx, self.store_on(node, lease, items).await) }
            });
            for (node, idx, result) in futures_util::future::join_all(rounds).await {
                match result {
                    Ok(n) => {
                        idx.iter().for_each(|&i| stored[i] += 1);
                        out.new_bytes += n;
                        out.placed.push((node, idx.iter().map(|&i| chunks[i].0).collect()));
                    }
                    Err(e) => {
                        log::warn!(
                            "storing {} chunks on {node} failed: {e}; trying the next nodes",
                            idx.len()
                        );
                        failures.push(format!("{node}: {e}"));
                        // It may have pinned some before failing: release there too.
                        out.touched.push(node);
                    }
                }
            }
        }
        // Every live node down each ranking was tried: fewer copies than wanted is not an
        // acknowledged write.
        if stored.iter().min().is_some_and(|&fewest| fewest < want) {
            return Err(ClusterError::Replication { wanted: want, failures: failures.join("; ") });
        }
        out.new_bytes /= want.max(1) as u64;
        Ok(out)
    }

    /// One holder's copies, queued on this node or on a peer under `lease`. Returns the new
    /// bytes.
    async fn store_on(
        &self,
        node: NodeId,
        lease: u64,
        items: Vec<(ChunkId, bytes::Bytes)>,
    ) -> Result<u64, String> {
        if node == self.me {
            // The upload pinned these here before sealing them.
            let had = self
                .store
                .have_chunks(items.iter().map(|(id, _)| *id).collect())
                .await
                .map_err(|e| e.to_string())?;
            let mut new_bytes = 0;
            let ids: Vec<ChunkId> = items.iter().map(|(id, _)| *id).collect();
            for ((id, sealed), had) in items.into_iter().zip(had) {
                new_bytes += if had { 0 } else { sealed.len() as u64 };
                self.store.put_chunk(id, sealed).await.map_err(|e| e.to_string())?;
            }
            // This node may be standing in for an owner it could not reach.
            super::repair::queue_stand_ins(self, &ids).await.map_err(|e| e.to_string())?;
            return Ok(new_bytes);
        }
        let link = self.link_of(node).ok_or("it is down")?;
        let chunks = items
            .into_iter()
            .map(|(id, sealed)| messages::SealedChunk { id: *id.as_bytes(), sealed })
            .collect();
        match link.request(Request::PutChunks { lease, chunks }, CHUNK_TIMEOUT).await {
            Ok(Response::Stored { new_bytes }) => Ok(new_bytes),
            Ok(other) => Err(format!("unexpected response {other:?}")),
            Err(e) => Err(e.to_string()),
        }
    }

    /// Asks every holder to make the upload's chunks durable and to say, after the fsync,
    /// that each is there: one fsync per holder per upload, and presence checked rather than
    /// promised. A holder that restarted, lost a batch or dropped its lease fails the upload.
    async fn confirm(&self, lease: u64, placed: &HashMap<NodeId, Vec<ChunkId>>) -> Result<(), ClusterError> {
        let checks = placed.iter().map(|(&node, ids)| async move {
            if node == self.me {
                let present = self.store.confirm_chunks(ids.clone()).await?;
                let absent = present.iter().filter(|p| !**p).count();
                return if absent == 0 {
                    Ok(())
                } else {
                    Err(ClusterError::NotDurable {
                        node,
                        reason: format!("{absent} chunks went missing here"),
                    })
                };
            }
            let not_durable = |reason: String| ClusterError::NotDurable { node, reason };
            let link = self.link_of(node).ok_or_else(|| not_durable("it went down".into()))?;
            match link.request(Request::Confirm { lease }, CHUNK_TIMEOUT).await {
                Ok(Response::Confirmed { present, absent: 0 }) if present >= ids.len() as u64 => Ok(()),
                Ok(Response::Confirmed { present, absent }) => Err(not_durable(format!(
                    "it holds {present} of the upload's chunks and lacks {absent}, {} were sent",
                    ids.len()
                ))),
                Ok(other) => Err(not_durable(format!("unexpected response {other:?}"))),
                Err(e) => Err(not_durable(e.to_string())),
            }
        });
        futures_util::future::try_join_all(checks).await.map(|_| ())
    }

    /// A chunk this node does not hold, from the live nodes in ranking order (holders first),
    /// verified. A peer sending bad bytes is skipped.
    pub async fn fetch_chunk(&self, id: ChunkId) -> Result<(Vec<u8>, bytes::Bytes), ClusterError> {
        for node in placement::rank(&id, &self.live_nodes()) {
            let Some(link) = self.link_of(node) else { continue };
            let sealed = match link.request(Request::GetChunk { id: *id.as_bytes() }, CHUNK_TIMEOUT).await {
                Ok(Response::Chunk(Some(sealed))) => sealed,
                Ok(_) => continue,
                Err(e) => {
                    log::debug!("fetching chunk {id} from {node}: {e}");
                    continue;
                }
            };
            let keys = self.keys.clone();
            let checked =
                runtime::blocking(move || keys.open_chunk(&id, sealed.to_vec()).map(|plain| (plain, sealed)))
                    .await;
            match checked {
                Ok(pair) => return Ok(pair),
                Err(e) => log::warn!("peer {node} sent chunk {id} that failed verification: {e}"),
            }
        }
        Err(ClusterError::ChunkUnavailable(id))
    }

    /// Pins `ids` on every live peer for a download, so that a delete or overwrite of its
    /// file during the download collects none of them. Returns the lease (released when
    /// dropped) and, per id, whether some peer holds it.
    pub async fn pin_for_read(self: &Arc<Self>, ids: &[ChunkId]) -> (RemoteLease, Vec<bool>) {
        let mut lease = RemoteLease::new(self.clone());
        let mut held = vec![false; ids.len()];
        let asks = self.up_links().into_iter().map(|(node, link)| {
            let lease = lease.id;
            async move {
                let mut have = Vec::with_capacity(ids.len());
                for part in ids.chunks(MAX_PIN) {
                    let ids = part.iter().map(|c| *c.as_bytes()).collect();
                    match link.request(Request::Pin { lease, ids }, CHUNK_TIMEOUT).await {
                        Ok(Response::Have(h)) if h.len() == part.len() => have.extend(h),
                        _ => return (node, None),
                    }
                }
                (node, Some(have))
            }
        });
        for (node, have) in futures_util::future::join_all(asks).await {
            lease.add(node);
            if let Some(have) = have {
                held.iter_mut().zip(have).for_each(|(h, there)| *h |= there);
            }
        }
        (lease, held)
    }
}

/// Drives a stream of chunk stores with bounded concurrency (the first error wins), then
/// confirms every chunk present on every holder. Dropping the result releases the pins the
/// upload holds on its holders: do so once the manifest is committed and announced.
pub async fn store_all(
    cluster: Arc<Cluster>,
    chunks: async_channel::Receiver<(ChunkId, bytes::Bytes)>,
) -> Result<(u64, Placed), ClusterError> {
    let mut placed = Placed { lease: RemoteLease::new(cluster.clone()), on: HashMap::new() };
    let lease = placed.lease.id;
    let mut results = Box::pin(chunks)
        .ready_chunks(CHUNKS_PER_REQUEST)
        .map(|group| {
            let cluster = cluster.clone();
            async move { cluster.store_group(lease, group).await }
        })
        .buffer_unordered(STORES_IN_FLIGHT / CHUNKS_PER_REQUEST);
    let mut new_bytes = 0;
    // An error returns at once: the upload fails, and the rest of the body need not travel.
    while let Some(stored) = results.next().await {
        let stored = stored?;
        new_bytes += stored.new_bytes;
        stored.touched.into_iter().for_each(|node| placed.lease.add(node));
        for (node, ids) in stored.placed {
            placed.lease.add(node);
            placed.on.entry(node).or_default().extend(ids);
        }
    }
    cluster.confirm(lease, &placed.on).await?;
    Ok((new_bytes, placed))
}

impl Cluster {
    /// Sends a name change to every live peer and waits (bounded) for their answers.
    /// Peers that miss it catch up by anti-entropy.
    pub async fn announce(&self, update: NameUpdate) {
        self.announce_all(vec![update]).await
    }

    /// Tells every live peer of several name changes in one request, which each peer applies
    /// in one transaction (a move's new name and its source's tombstone together).
    pub async fn announce_all(&self, updates: Vec<NameUpdate>) {
        let requests = self.up_links().into_iter().map(|(node, link)| {
            let updates = updates.clone();
            async move {
                if let Err(e) = link.request(Request::ApplyNames { updates }, NAMES_TIMEOUT).await {
                    log::warn!("announcing a name change to {node} failed: {e}");
                }
            }
        });
        futures_util::future::join_all(requests).await;
    }

    /// Which nodes hold how many of `chunks`.
    pub async fn holders(&self, chunks: Vec<ChunkId>) -> Vec<(NodeId, String, usize)> {
        let ids: Vec<[u8; 32]> = chunks.iter().map(|c| *c.as_bytes()).collect();
        let mut out = Vec::new();
        if let Ok(have) = self.store.have_chunks(chunks.clone()).await {
            out.push((self.me, self.url(), have.iter().filter(|h| **h).count()));
        }
        for (node, link) in self.up_links() {
            if let Ok(Response::Have(have)) =
                link.request(Request::HasChunks { ids: ids.clone() }, NAMES_TIMEOUT).await
            {
                out.push((node, link.url.clone(), have.iter().filter(|h| **h).count()));
            }
        }
        out
    }

    /// A name update carrying the manifest a live record points at.
    pub async fn update_for(&self, name: String, record: NameRecord) -> Result<NameUpdate, ClusterError> {
        let manifest = match record.file_id() {
            Some(id) => self.store.manifest(id).await?.as_ref().map(ManifestRecordV1::from_manifest),
            None => None,
        };
        Ok(NameUpdate::new(name, record, manifest))
    }

    /// An update for a manifest already in hand.
    pub fn update_with(name: String, record: NameRecord, manifest: Option<&Manifest>) -> NameUpdate {
        NameUpdate::new(name, record, manifest.map(ManifestRecordV1::from_manifest))
    }
}
