//! The cluster: peer links, membership, chunk placement, name replication, anti-entropy and
//! repair.
//!
//! Every node keeps an outbound [`link::Link`] to every member it knows and sends its own
//! requests over it; a peer's requests arrive on the peer's outbound link ([`Cluster::accept`]).
//! Manifests and names go to every node; chunks go to the R best-ranked live nodes
//! ([`placement`]).

pub mod connection;
mod link;
pub mod messages;
pub mod placement;
mod repair;
mod sync;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_tungstenite::WebSocketStream;
use futures_util::{AsyncRead, AsyncWrite, StreamExt};

use crate::clock::{Clock, rfc3339};
use crate::content::{ChunkId, FileId, Manifest, NodeId};
use crate::crypto::Keys;
use crate::events::{Event, Events};
use crate::runtime;
use crate::storage::records::ManifestRecordV1;
use crate::storage::{NameRecord, StorageError, Store};
use connection::LinkError;
use link::Link;
pub use link::ws_config;
use messages::{HolderEpoch, Message, Request, Response};
pub use messages::{Member, NameUpdate, PeerStats};
pub use repair::RepairReport;

/// Unauthenticated peer handshakes served at once.
const MAX_HANDSHAKES: usize = 16;
/// Requests one peer may have in progress on this node at once.
const HANDLERS_PER_LINK: usize = 32;
/// Chunks sent to one holder in one request, when that many are ready. Each request costs its
/// holder a few thread hand-offs; 8 instead of 4 cut its context switches by a seventh.
pub(crate) const CHUNKS_PER_REQUEST: usize = 8;
const _: () = assert!(CHUNKS_PER_REQUEST <= messages::MAX_ATTACHMENTS);
/// Chunk stores an upload keeps in flight across the cluster.
const STORES_IN_FLIGHT: usize = 32;
const CHUNK_TIMEOUT: Duration = Duration::from_secs(60);
const NAMES_TIMEOUT: Duration = Duration::from_secs(20);

#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// Peers to join through.
    pub seeds: Vec<String>,
    pub replication: usize,
    /// Fewer live nodes than this (this one included) refuse writes with 503.
    pub min_replicas: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("only {live} node(s) reachable; writes need at least {needed}")]
    Unavailable { live: usize, needed: usize },
    #[error(
        "node {0} could not confirm the upload durable on it (it went away, restarted or lost queued chunks)"
    )]
    NotDurable(NodeId),
    #[error("no live node holds chunk {0}")]
    ChunkUnavailable(ChunkId),
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// A peer as the status page shows it.
#[derive(Debug, Clone)]
pub struct PeerView {
    pub node: Option<NodeId>,
    pub url: String,
    pub up: bool,
    pub last_seen: Option<String>,
    pub stats: PeerStats,
}

pub struct Cluster {
    me: NodeId,
    url: Mutex<String>,
    keys: Keys,
    store: Store,
    clock: Arc<Clock>,
    events: Arc<Events>,
    config: ClusterConfig,
    /// Outbound links by peer URL.
    links: Mutex<HashMap<String, Arc<Link>>>,
    repair_wake: async_channel::Sender<()>,
    repair_woken: async_channel::Receiver<()>,
    repair_report: Mutex<RepairReport>,
    /// Random per process start; see [`HolderEpoch`].
    boot: u64,
    /// Slots for unauthenticated handshakes: a send takes one, a receive gives it back.
    handshakes: async_channel::Sender<()>,
    handshakes_done: async_channel::Receiver<()>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Cluster {
    pub fn new(
        store: Store,
        keys: Keys,
        clock: Arc<Clock>,
        events: Arc<Events>,
        config: ClusterConfig,
    ) -> Arc<Self> {
        let (repair_wake, repair_woken) = async_channel::bounded(1);
        let handshake_slots = async_channel::bounded(MAX_HANDSHAKES);
        Arc::new(Cluster {
            me: store.node_id(),
            url: Mutex::new(String::new()),
            keys,
            store,
            clock,
            events,
            config,
            links: Mutex::new(HashMap::new()),
            repair_wake,
            repair_woken,
            repair_report: Mutex::new(RepairReport::default()),
            handshakes: handshake_slots.0,
            handshakes_done: handshake_slots.1,
            boot: {
                let mut b = [0u8; 8];
                getrandom::fill(&mut b).expect("the OS random source works");
                u64::from_le_bytes(b)
            },
        })
    }

    pub fn me(&self) -> NodeId {
        self.me
    }

    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    pub fn url(&self) -> String {
        lock(&self.url).clone()
    }

    pub fn replication(&self) -> usize {
        self.config.replication
    }

    /// Starts the links to the seeds and the background loops, once this node's URL is known.
    pub fn start(self: &Arc<Self>, url: String, shutdown: async_channel::Receiver<()>) {
        *lock(&self.url) = url.trim_end_matches('/').to_owned();
        for seed in self.config.seeds.clone() {
            self.ensure_link(seed.trim_end_matches('/'));
        }
        let me = self.clone();
        let stop = shutdown.clone();
        runtime::spawn(async move { sync::run(me, stop).await });
        let me = self.clone();
        runtime::spawn(async move { repair::run(me, shutdown).await });
    }

    fn ensure_link(self: &Arc<Self>, url: &str) {
        if url.is_empty() || url == self.url() {
            return;
        }
        let mut links = lock(&self.links);
        if links.contains_key(url) {
            return;
        }
        let link = Link::new(url.to_owned());
        links.insert(url.to_owned(), link.clone());
        drop(links);
        runtime::spawn(link.run(self.clone()));
    }

    /// Records that `link` reached `peer`; false when another live link already serves it.
    fn claim(&self, peer: NodeId, link: &Arc<Link>) -> bool {
        let links = lock(&self.links);
        !links.values().any(|l| !Arc::ptr_eq(l, link) && l.is_up() && l.node() == Some(peer))
    }

    fn forget(&self, url: &str) {
        if let Some(link) = lock(&self.links).remove(url) {
            link.stop();
        }
    }

    fn peer_up(self: &Arc<Self>, link: Arc<Link>) {
        self.events.publish(Event::Membership);
        self.wake_repair();
        let me = self.clone();
        // A returning peer catches up at once rather than at the next period.
        runtime::spawn(async move {
            if let Err(e) = sync::exchange(&me, &link).await {
                log::warn!("anti-entropy with {} failed: {e}", link.url);
            }
        });
    }

    fn peer_down(&self) {
        self.events.publish(Event::Membership);
        self.wake_repair();
    }

    fn wake_repair(&self) {
        let _ = self.repair_wake.try_send(());
    }

    /// Members this node knows (itself included) for gossip.
    fn members(&self) -> Vec<Member> {
        let mut out = vec![Member { node: *self.me.as_bytes(), url: self.url() }];
        for link in lock(&self.links).values() {
            if let Some(node) = link.node() {
                out.push(Member { node: *node.as_bytes(), url: link.url.clone() });
            }
        }
        out
    }

    /// Links to members heard of through gossip.
    fn learn(self: &Arc<Self>, members: Vec<Member>) {
        for m in members {
            if m.node != *self.me.as_bytes() && !m.url.is_empty() {
                let known =
                    lock(&self.links).values().any(|l| l.node().is_some_and(|n| *n.as_bytes() == m.node));
                if !known {
                    self.ensure_link(&m.url);
                }
            }
        }
    }

    async fn local_stats(&self) -> PeerStats {
        match self.store.stats().await {
            Ok(s) => PeerStats { files: s.files, stored_bytes: s.stored_bytes, chunks: s.chunks },
            Err(_) => PeerStats::default(),
        }
    }

    /// Up links with their node ids.
    fn up_links(&self) -> Vec<(NodeId, Arc<Link>)> {
        lock(&self.links)
            .values()
            .filter(|l| l.is_up())
            .filter_map(|l| l.node().map(|n| (n, l.clone())))
            .collect()
    }

    /// Whether this node knows any other member (up or not).
    pub fn has_members(&self) -> bool {
        !lock(&self.links).is_empty()
    }

    pub fn peers_up(&self) -> usize {
        self.up_links().len()
    }

    /// Live nodes, this one included.
    fn live_nodes(&self) -> Vec<NodeId> {
        let mut nodes: Vec<NodeId> = self.up_links().into_iter().map(|(n, _)| n).collect();
        nodes.push(self.me);
        nodes.sort();
        nodes.dedup();
        nodes
    }

    fn link_of(&self, node: NodeId) -> Option<Arc<Link>> {
        self.up_links().into_iter().find(|(n, _)| *n == node).map(|(_, l)| l)
    }

    pub fn peers(&self) -> Vec<PeerView> {
        let mut out: Vec<PeerView> = lock(&self.links)
            .values()
            .map(|l| {
                let st = l.state();
                PeerView {
                    node: st.node,
                    url: l.url.clone(),
                    up: st.up,
                    last_seen: st.last_seen_ms.map(rfc3339),
                    stats: st.stats,
                }
            })
            .collect();
        out.sort_by(|a, b| a.url.cmp(&b.url));
        out
    }

    pub fn repair_report(&self) -> RepairReport {
        *lock(&self.repair_report)
    }

    /// Whether enough nodes are live to accept a write.
    pub fn check_writable(&self) -> Result<(), ClusterError> {
        let live = self.live_nodes().len();
        if live < self.config.min_replicas {
            return Err(ClusterError::Unavailable { live, needed: self.config.min_replicas });
        }
        Ok(())
    }

    /// This node as a holder, now: read before queueing chunks (see [`HolderEpoch`]).
    fn epoch(&self) -> HolderEpoch {
        HolderEpoch { boot: self.boot, write_failures: self.store.write_failures() }
    }

    /// Makes everything this node queued durable; its epoch as of then.
    async fn synced_epoch(&self) -> Result<HolderEpoch, StorageError> {
        Ok(HolderEpoch { boot: self.boot, write_failures: self.store.sync().await? })
    }

    /// Stores sealed chunks, each on its R best-ranked live nodes (falling back down its
    /// ranking). The chunks bound for one node go in one request, and the nodes are written in
    /// parallel. Returns the new bytes (averaged over the copies) and the holders that took
    /// chunks (this node among them, if it did), with their epochs: they must be synced
    /// before the chunks are durable.
    pub async fn store_group(
        &self,
        chunks: Vec<(ChunkId, bytes::Bytes)>,
    ) -> Result<(u64, Vec<(NodeId, HolderEpoch)>), ClusterError> {
        self.check_writable()?;
        let live = self.live_nodes();
        let want = self.config.replication.min(live.len());
        let rankings: Vec<Vec<NodeId>> = chunks.iter().map(|(id, _)| placement::rank(id, &live)).collect();
        let mut stored = vec![0usize; chunks.len()];
        let mut next = vec![0usize; chunks.len()];
        let (mut new_bytes, mut peers) = (0u64, Vec::new());
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
                async move { (node, idx, self.store_on(node, items).await) }
            });
            for (node, idx, result) in futures_util::future::join_all(rounds).await {
                match result {
                    Ok((n, epoch)) => {
                        idx.iter().for_each(|&i| stored[i] += 1);
                        new_bytes += n;
                        peers.push((node, epoch));
                    }
                    Err(e) => log::warn!(
                        "storing {} chunks on {node} failed: {e}; trying the next nodes",
                        idx.len()
                    ),
                }
            }
        }
        // Every live node down each ranking was tried: fewer copies than the live nodes allow
        // is not an acknowledged write.
        if let Some(&fewest) = stored.iter().min() {
            if fewest < want {
                return Err(ClusterError::Unavailable { live: fewest, needed: want });
            }
        }
        Ok((new_bytes / want.max(1) as u64, peers))
    }

    /// Makes the chunks stored on `peers` (this node possibly among them) durable there, all at
    /// once: one fsync per holder per upload rather than one per chunk.
    /// Each holder must answer with the epoch it stored them under: a holder that restarted,
    /// or failed to commit queued chunks, in between may have lost them.
    pub async fn sync_peers(&self, peers: HashMap<NodeId, HolderEpoch>) -> Result<(), ClusterError> {
        let syncs = peers.into_iter().map(|(node, epoch)| async move {
            let now = if node == self.me {
                // Flushed beside the others: the file's commit then has only its own records
                // left to make durable.
                self.synced_epoch().await?
            } else {
                let link = self.link_of(node).ok_or(ClusterError::NotDurable(node))?;
                match link.request(Request::Sync, CHUNK_TIMEOUT).await {
                    Ok(Response::Synced { epoch }) => epoch,
                    _ => return Err(ClusterError::NotDurable(node)),
                }
            };
            if now == epoch { Ok(()) } else { Err(ClusterError::NotDurable(node)) }
        });
        futures_util::future::try_join_all(syncs).await.map(|_| ())
    }

    /// One holder's copies, queued on this node or on a peer; [`Cluster::sync_peers`] makes
    /// them durable. Returns the new bytes and the holder's epoch from before they were queued.
    async fn store_on(
        &self,
        node: NodeId,
        items: Vec<(ChunkId, bytes::Bytes)>,
    ) -> Result<(u64, HolderEpoch), String> {
        if node == self.me {
            let epoch = self.epoch();
            let had = self
                .store
                .have_chunks(items.iter().map(|(id, _)| *id).collect())
                .await
                .map_err(|e| e.to_string())?;
            let mut new_bytes = 0;
            for ((id, sealed), had) in items.into_iter().zip(had) {
                new_bytes += if had { 0 } else { sealed.len() as u64 };
                self.store.put_chunk(id, sealed).await.map_err(|e| e.to_string())?;
            }
            return Ok((new_bytes, epoch));
        }
        let link = self.link_of(node).ok_or("went down")?;
        let chunks = items
            .into_iter()
            .map(|(id, sealed)| messages::SealedChunk { id: *id.as_bytes(), sealed })
            .collect();
        match link.request(Request::PutChunks { chunks }, CHUNK_TIMEOUT).await {
            Ok(Response::Stored { new_bytes, epoch }) => Ok((new_bytes, epoch)),
            Ok(_) => Err("unexpected response".into()),
            Err(e) => Err(e.to_string()),
        }
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

    /// Sends a name change to every live peer and waits (bounded) for their answers.
    /// Peers that miss it catch up by anti-entropy.
    pub async fn announce(&self, update: NameUpdate) {
        let requests = self.up_links().into_iter().map(|(node, link)| {
            let update = update.clone();
            async move {
                if let Err(e) =
                    link.request(Request::ApplyNames { updates: vec![update] }, NAMES_TIMEOUT).await
                {
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

    /// Serves a peer's inbound connection (its outbound link) until it closes.
    pub async fn accept<S>(self: Arc<Self>, mut ws: WebSocketStream<S>)
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        // Anyone can open this endpoint: bound how many unauthenticated handshakes (each may
        // buffer one message) run at once.
        if self.handshakes.try_send(()).is_err() {
            log::warn!("refused a peer connection: too many handshakes in progress");
            return;
        }
        let handshake = connection::server_handshake(&mut ws, &self.keys, self.me).await;
        let _ = self.handshakes_done.try_recv();
        let auth = match handshake {
            Ok(auth) => auth,
            Err(e) => {
                log::warn!("refused a peer connection: {e}");
                return;
            }
        };
        let peer = auth.peer;
        log::debug!("peer {peer} ({}) connected", auth.peer_url);
        // The dialer may be new to us: link back so requests flow both ways.
        if !auth.peer_url.is_empty() {
            self.learn(vec![Member { node: *peer.as_bytes(), url: auth.peer_url.clone() }]);
        }
        let (mut writer, mut reader) = connection::split(ws, auth);
        let (tx, rx) = async_channel::bounded::<Message>(64);
        let write = async move {
            while let Ok(msg) = rx.recv().await {
                if writer.send(msg).await.is_err() {
                    break;
                }
            }
            writer.close().await;
        };
        let handler = self.clone();
        // Requests a peer may have in progress at once; past this, its link waits.
        let (busy, done) = async_channel::bounded::<()>(HANDLERS_PER_LINK);
        let read = async move {
            loop {
                let Some(received) = runtime::timeout(link::INBOUND_SILENCE, reader.recv()).await else {
                    log::warn!("link from peer {peer} dropped: no message for {:?}", link::INBOUND_SILENCE);
                    break;
                };
                match received {
                    Ok(Message::Request { id, body }) => {
                        if busy.send(()).await.is_err() {
                            break;
                        }
                        let (cluster, tx, done) = (handler.clone(), tx.clone(), done.clone());
                        runtime::spawn(async move {
                            let body = cluster.handle(body).await;
                            let _ = done.try_recv();
                            let _ = tx.send(Message::Response { id, body }).await;
                        });
                    }
                    Ok(Message::Response { .. }) => {
                        log::warn!("peer {peer} sent a response on its own link; dropping it");
                        break;
                    }
                    Err(LinkError::Closed) => break,
                    Err(e) => {
                        log::warn!("link from peer {peer} dropped: {e}");
                        break;
                    }
                }
            }
        };
        futures_lite::future::race(write, read).await;
    }

    async fn handle(self: &Arc<Self>, request: Request) -> Response {
        match self.try_handle(request).await {
            Ok(r) => r,
            Err(e) => Response::Error(e.to_string()),
        }
    }

    async fn try_handle(self: &Arc<Self>, request: Request) -> Result<Response, ClusterError> {
        Ok(match request {
            Request::Ping { members, stats: _ } => {
                self.learn(members);
                Response::Pong { members: self.members(), stats: self.local_stats().await }
            }
            Request::PutChunks { chunks } => {
                // Never store bytes that do not open under our key to their id. Checked, with
                // which chunks are new here, in one trip to a blocking thread.
                let (keys, store) = (self.keys.clone(), self.store.clone());
                let checked = runtime::blocking(move || {
                    let chunks: Vec<(ChunkId, bytes::Bytes)> =
                        chunks.into_iter().map(|c| (ChunkId::from_bytes(c.id), c.sealed)).collect();
                    for (id, sealed) in &chunks {
                        if let Err(e) = keys.verify_chunk(id, sealed) {
                            return Ok(Err(format!("refused chunk {id}: {e}")));
                        }
                    }
                    let ids: Vec<ChunkId> = chunks.iter().map(|(id, _)| *id).collect();
                    let had = store.have_chunks_blocking(&ids)?;
                    let new_bytes = chunks
                        .iter()
                        .zip(had)
                        .filter(|(_, had)| !had)
                        .map(|((_, sealed), _)| sealed.len() as u64)
                        .sum::<u64>();
                    Ok::<_, StorageError>(Ok((chunks, new_bytes)))
                })
                .await?;
                let (chunks, new_bytes) = match checked {
                    Ok(c) => c,
                    Err(refusal) => return Ok(Response::Error(refusal)),
                };
                let epoch = self.epoch();
                self.store.put_received_chunks(chunks).await?;
                Response::Stored { new_bytes, epoch }
            }
            Request::Sync => Response::Synced { epoch: self.synced_epoch().await? },
            Request::GetChunk { id } => {
                let store = self.store.clone();
                Response::Chunk(
                    runtime::blocking(move || store.chunk_blocking(ChunkId::from_bytes(id)))
                        .await?
                        .map(bytes::Bytes::from),
                )
            }
            Request::VerifyChunks { ids } if ids.len() > messages::MAX_VERIFY => {
                Response::Error(format!("{} chunks to verify, at most {}", ids.len(), messages::MAX_VERIFY))
            }
            Request::VerifyChunks { ids } => {
                let (store, keys) = (self.store.clone(), self.keys.clone());
                // A copy that cannot be read counts as absent: the asker then keeps its own.
                Response::Have(
                    runtime::blocking(move || {
                        ids.into_iter()
                            .map(ChunkId::from_bytes)
                            .map(|id| {
                                matches!(store.chunk_blocking(id), Ok(Some(sealed)) if keys.verify_chunk(&id, &sealed).is_ok())
                            })
                            .collect()
                    })
                    .await,
                )
            }
            Request::HasChunks { ids } => Response::Have(
                self.store.have_chunks(ids.into_iter().map(ChunkId::from_bytes).collect()).await?,
            ),
            Request::ApplyNames { updates } => {
                self.apply_updates(updates).await?;
                Response::Applied
            }
            Request::Digest => Response::Digest(self.store.name_digest().await?),
            Request::ListBucket { bucket } => Response::Bucket(
                self.store
                    .records(Some(bucket))
                    .await?
                    .into_iter()
                    .map(|(name, record)| NameUpdate { name, record, manifest: None })
                    .collect(),
            ),
            Request::GetManifest { id } => Response::Manifest(
                self.store
                    .manifest(FileId::from_bytes(id))
                    .await?
                    .as_ref()
                    .map(ManifestRecordV1::from_manifest),
            ),
        })
    }

    /// Applies name records from a peer; publishes what changed.
    async fn apply_updates(&self, updates: Vec<NameUpdate>) -> Result<(), ClusterError> {
        let mut batch = Vec::with_capacity(updates.len());
        for u in updates {
            // A name this node's API could neither serve nor delete is refused.
            if let Err(e) = crate::content::FileName::new(u.name.as_str()) {
                log::warn!("refused a name record from a peer: {e}");
                continue;
            }
            self.clock.observe(&u.record.stamp);
            let manifest = match (u.record.file, u.manifest) {
                (Some(file), Some(m)) => Some(m.into_manifest(FileId::from_bytes(file))),
                _ => None,
            };
            batch.push((u.name, u.record, manifest));
        }
        let names: Vec<(String, bool)> =
            batch.iter().map(|(n, r, _)| (n.clone(), r.file.is_some())).collect();
        let applied = self.store.apply_names(batch).await?;
        for ((name, live), applied) in names.into_iter().zip(applied) {
            if applied {
                self.events.publish(if live { Event::Put { name } } else { Event::Delete { name } });
            }
        }
        Ok(())
    }

    /// A name update carrying the manifest a live record points at.
    pub async fn update_for(&self, name: String, record: NameRecord) -> Result<NameUpdate, ClusterError> {
        let manifest = match record.file_id() {
            Some(id) => self.store.manifest(id).await?.as_ref().map(ManifestRecordV1::from_manifest),
            None => None,
        };
        Ok(NameUpdate { name, record, manifest })
    }

    /// An update for a manifest already in hand.
    pub fn update_with(name: String, record: NameRecord, manifest: Option<&Manifest>) -> NameUpdate {
        NameUpdate { name, record, manifest: manifest.map(ManifestRecordV1::from_manifest) }
    }
}

/// Drives a stream of chunk stores with bounded concurrency; the first error wins.
pub async fn store_all(
    cluster: Arc<Cluster>,
    chunks: async_channel::Receiver<(ChunkId, bytes::Bytes)>,
) -> Result<u64, ClusterError> {
    let mut results = Box::pin(chunks)
        .ready_chunks(CHUNKS_PER_REQUEST)
        .map(|group| {
            let cluster = cluster.clone();
            async move { cluster.store_group(group).await }
        })
        .buffer_unordered(STORES_IN_FLIGHT / CHUNKS_PER_REQUEST);
    let mut new_bytes = 0;
    let mut peers: HashMap<NodeId, HolderEpoch> = HashMap::new();
    // An error returns at once: the upload fails, and the rest of the body need not travel.
    while let Some(stored) = results.next().await {
        let (n, holders) = stored?;
        new_bytes += n;
        for (node, epoch) in holders {
            // Two epochs from one holder: it restarted or lost queued chunks mid-upload.
            if peers.insert(node, epoch).is_some_and(|before| before != epoch) {
                return Err(ClusterError::NotDurable(node));
            }
        }
    }
    cluster.sync_peers(peers).await?;
    Ok(new_bytes)
}
