//! The cluster: peer links, membership, chunk placement, name replication, anti-entropy and
//! repair.
//!
//! Every node keeps an outbound [`link::Link`] to every member it knows and sends its own
//! requests over it; a peer's requests arrive on the peer's outbound link ([`Cluster::accept`],
//! in `serve.rs`). Manifests and names go to every node; chunks go to the R best-ranked live
//! nodes ([`placement`]), moved by `transfer.rs` under leases (`leases.rs`).
//! Members are persisted, so a restarted node dials them at once and, until it has heard from
//! them (or a bound passes), neither acknowledges writes with fewer copies than the cluster
//! can give nor reads a chunk it lacks as missing.

pub mod connection;
mod handshakes;
mod leases;
mod link;
pub mod messages;
pub mod placement;
mod repair;
mod serve;
mod sync;
mod transfer;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::clock::{Clock, rfc3339};
use crate::content::{ChunkId, Manifest, NodeId};
use crate::crypto::Keys;
use crate::events::{Event, Events};
use crate::health::Health;
use crate::runtime;
use crate::storage::records::ManifestRecordV1;
use crate::storage::{NameRecord, StorageError, Store};
use leases::Leases;
pub use leases::RemoteLease;
use link::Link;
pub use link::ws_config;
pub use messages::{Member, NameUpdate, PeerStats};
use messages::{Request, Response};
pub use repair::RepairReport;
pub use serve::reachable_url;
pub use transfer::{Placed, store_all};

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
/// `META` key of the members this node knows, dialled at start.
const MEMBERS_KEY: &str = "members";

#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// Peers to join through.
    pub seeds: Vec<String>,
    pub replication: usize,
    /// Fewer live nodes than this (this one included) refuse writes with 503, in a cluster
    /// (a node that knows no member writes alone).
    pub min_replicas: usize,
    pub timing: Timing,
}

/// Periods and bounds of the cluster's loops; settable so tests need not wait them out.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    /// At start, how long to wait to hear from the known members before acting without them.
    pub settle: Duration,
    /// Anti-entropy period.
    pub sync_period: Duration,
    /// Repair period.
    pub repair_period: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        Self {
            settle: Duration::from_secs(10),
            sync_period: Duration::from_secs(5),
            repair_period: Duration::from_secs(10),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("only {live} node(s) reachable; writes need at least {needed}")]
    Unavailable { live: usize, needed: usize },
    #[error("could not store {wanted} copies of every chunk: {failures}")]
    Replication { wanted: usize, failures: String },
    #[error("node {node} could not confirm the upload's chunks durable: {reason}")]
    NotDurable { node: NodeId, reason: String },
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
    /// Why it cannot be reached, while down.
    pub error: Option<String>,
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
    /// Pins peers' uploads and downloads hold here.
    leases: Leases,
    health: Arc<Health>,
    started: Instant,
    /// Bounds unauthenticated handshakes, in total and per source.
    handshakes: Arc<handshakes::Handshakes>,
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
        health: Arc<Health>,
        config: ClusterConfig,
    ) -> Arc<Self> {
        let (repair_wake, repair_woken) = async_channel::bounded(1);
        Arc::new(Cluster {
            me: store.node_id(),
            url: Mutex::new(String::new()),
            keys,
            leases: Leases::new(store.clone()),
            store,
            clock,
            events,
            config,
            links: Mutex::new(HashMap::new()),
            repair_wake,
            repair_woken,
            repair_report: Mutex::new(RepairReport::default()),
            handshakes: Arc::default(),
            health,
            started: Instant::now(),
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

    /// Starts the links to the seeds and the members this node knew before it stopped, and
    /// the background loops, once this node's URL is known.
    pub async fn start(self: &Arc<Self>, url: String, shutdown: async_channel::Receiver<()>) {
        *lock(&self.url) = url.trim_end_matches('/').to_owned();
        for seed in self.config.seeds.clone() {
            self.ensure_link(seed.trim_end_matches('/'));
        }
        match self.remembered().await {
            Ok(members) => members.iter().for_each(|m| self.ensure_link(&m.url)),
            Err(e) => log::warn!("could not read the members this node knew: {e}"),
        }
        let (me, stop, running) = (self.clone(), shutdown.clone(), self.health.running("anti-entropy"));
        runtime::spawn(async move {
            sync::run(me, stop).await;
            drop(running);
        });
        let (me, running) = (self.clone(), self.health.running("repair"));
        runtime::spawn(async move {
            repair::run(me, shutdown).await;
            drop(running);
        });
    }

    async fn remembered(&self) -> Result<Vec<Member>, StorageError> {
        Ok(match self.store.meta(MEMBERS_KEY).await? {
            Some(bytes) => messages::decode(&bytes).unwrap_or_else(|e| {
                log::warn!("ignoring the stored member list: {e}");
                Vec::new()
            }),
            None => Vec::new(),
        })
    }

    /// Stores the members this node has reached, when that adds one, so that it dials them at
    /// its next start (without `--peer` too).
    async fn remember(&self) {
        let mut known = match self.remembered().await {
            Ok(known) => known,
            Err(e) => return log::warn!("could not read the members this node knew: {e}"),
        };
        let mut changed = false;
        for (node, link) in self.up_links() {
            let entry = Member { node: *node.as_bytes(), url: link.url.clone() };
            match known.iter_mut().find(|m| m.node == entry.node) {
                Some(m) if m.url == entry.url => continue,
                Some(m) => *m = entry,
                None => known.push(entry),
            }
            changed = true;
        }
        if changed && let Err(e) = self.store.set_meta(MEMBERS_KEY, messages::encode(&known)).await {
            log::warn!("could not store the member list: {e}");
        }
    }

    /// Whether this node has heard from every member it knows, or waited long enough.
    pub fn settled(&self) -> bool {
        self.started.elapsed() >= self.config.timing.settle || lock(&self.links).values().all(|l| l.is_up())
    }

    /// Waits (at most the settle bound) until [`Cluster::settled`].
    pub async fn wait_settled(&self) {
        while !self.settled() {
            runtime::sleep(Duration::from_millis(50)).await;
        }
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
            me.remember().await;
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

    /// Links to members heard of through gossip. An address no other host can dial (a member
    /// listening on `0.0.0.0` without `--advertise`) is skipped: whoever linked to it knows a
    /// better one and gossips that.
    fn learn(self: &Arc<Self>, members: Vec<Member>) {
        for m in members {
            if m.node != *self.me.as_bytes() && !m.url.is_empty() && !unspecified_host(&m.url) {
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
                    error: if st.up { None } else { st.error },
                }
            })
            .collect();
        out.sort_by(|a, b| a.url.cmp(&b.url));
        out
    }

    pub fn repair_report(&self) -> RepairReport {
        *lock(&self.repair_report)
    }

    /// Whether enough nodes are live to accept a write: in a cluster, `--min-replicas`
    /// (by default the replication factor, so a `201` means R copies); alone, this node.
    pub fn check_writable(&self) -> Result<(), ClusterError> {
        let live = self.live_nodes().len();
        let needed = if self.has_members() { self.config.min_replicas } else { 1 };
        if live < needed {
            return Err(ClusterError::Unavailable { live, needed });
        }
        Ok(())
    }

    /// Unauthenticated peer handshakes refused so far (over the total or a source's bound).
    pub fn handshakes_refused(&self) -> u64 {
        self.handshakes.refused()
    }

    /// Leases peers hold on this node now (uploads and downloads in flight).
    pub fn leases_held(&self) -> usize {
        self.leases.count()
    }

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
        Ok(NameUpdate { name, record, manifest })
    }

    /// An update for a manifest already in hand.
    pub fn update_with(name: String, record: NameRecord, manifest: Option<&Manifest>) -> NameUpdate {
        NameUpdate { name, record, manifest: manifest.map(ManifestRecordV1::from_manifest) }
    }
}

/// Whether a URL names the unspecified address (`0.0.0.0`, `[::]`), which no peer can dial.
pub fn unspecified_host(url: &str) -> bool {
    url_ip(url).is_some_and(|ip| ip.is_unspecified())
}

/// The IP address a URL names as its host, when it names one rather than a host name.
pub fn url_ip(url: &str) -> Option<std::net::IpAddr> {
    let url = url::Url::parse(url).ok()?;
    url.host_str()?.trim_matches(['[', ']']).parse().ok()
}
