//! The cluster: peer links, membership, chunk placement, name replication, anti-entropy and
//! repair.
//!
//! Every node keeps an outbound [`link::Link`] to every member it knows and sends its own
//! requests over it; a peer's requests arrive on the peer's outbound link ([`Cluster::accept`],
//! in `serve.rs`). Manifests and names go to every node; chunks go to the R best-ranked live
//! nodes ([`placement`]), moved by `replication.rs` under leases (`leases.rs`); who is a
//! member and which links are up is `membership.rs`; a peer's requests are served by
//! `serve.rs`.
//! Members are persisted, so a restarted node dials them at once and, until it has heard from
//! them (or a bound passes), neither acknowledges writes with fewer copies than the cluster
//! can give nor reads a chunk it lacks as missing.

pub mod connection;
mod handshakes;
mod leases;
mod lifecycle;
mod link;
mod membership;
pub mod messages;
pub mod placement;
mod repair;
mod replication;
mod serve;
mod space;
mod sync;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::clock::Clock;
use crate::content::{ChunkId, NodeId};
use crate::crypto::Keys;
use crate::events::Events;
use crate::health::Health;
use crate::storage::{StorageError, Store};
use leases::Leases;
pub use leases::RemoteLease;
pub use lifecycle::{NodeState, NodeView};
use link::Link;
pub use link::ws_config;
pub use membership::{unspecified_host, url_ip};
pub use messages::{Member, NameUpdate, PeerStats};
pub use repair::RepairReport;
pub use replication::{Placed, store_all};
pub use serve::reachable_url;
pub use space::{Capacity, PeerSpace, SPACE_CURRENT_FOR};

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
    /// Fewer live nodes than this (this one included) refuse writes with 503, in a cluster
    /// (a node that knows no member writes alone).
    pub min_replicas: usize,
    /// Chunks repair copies (or verifies before a drop) per second at most (`--repair-rate`).
    pub repair_rate: u32,
    pub timing: Timing,
}

/// `--repair-rate` when not given: 100 chunks a second, at most 100 MiB/s at the largest
/// chunk, a tenth of what one node here writes, so re-replication never starves clients.
pub const DEFAULT_REPAIR_RATE: u32 = 100;

/// Periods and bounds of the cluster's loops; settable so tests need not wait them out.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    /// At start, how long to wait to hear from the known members before acting without them.
    pub settle: Duration,
    /// Anti-entropy period.
    pub sync_period: Duration,
    /// How long a member may be down before it no longer places chunks (`--down-out-after`).
    pub down_out_after: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        Self {
            settle: Duration::from_secs(10),
            sync_period: Duration::from_secs(5),
            down_out_after: Duration::from_secs(600),
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
    #[error("no member {0} in this cluster")]
    UnknownNode(NodeId),
    /// A drain or removal refused as it stands (it would leave too few members, the node is up).
    #[error("{0}")]
    Lifecycle(String),
    #[error("this node was removed from the cluster: write through another node")]
    Removed,
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
    /// The same instant in Unix milliseconds, for `/metrics`.
    pub last_seen_ms: Option<u64>,
    pub stats: PeerStats,
    /// Its last reported space figures, if any arrived (they may be old: see
    /// [`PeerSpace::age`]).
    pub space: Option<PeerSpace>,
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
    /// Every member this node knows of (persisted ones from before a restart included), by id:
    /// the set chunks are placed over, so that one going down moves nothing for a while.
    known: Mutex<HashMap<NodeId, String>>,
    repair_wake: async_channel::Sender<()>,
    repair_woken: async_channel::Receiver<()>,
    repair_report: Mutex<RepairReport>,
    /// Members an operator drains or removed (see `lifecycle.rs`), by id.
    states: Mutex<HashMap<NodeId, messages::MemberState>>,
    /// One save of `states` at a time.
    states_saving: futures_util::lock::Mutex<()>,
    /// Pins peers' uploads and downloads hold here.
    leases: Leases,
    health: Arc<Health>,
    started: Instant,
    /// Bounds unauthenticated handshakes, in total and per source.
    handshakes: Arc<handshakes::Handshakes>,
    /// This node's space figures as pongs carry them.
    space: space::LocalSpace,
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
            known: Mutex::new(HashMap::new()),
            repair_wake,
            repair_woken,
            repair_report: Mutex::new(RepairReport::default()),
            states: Mutex::new(HashMap::new()),
            states_saving: futures_util::lock::Mutex::new(()),
            handshakes: Arc::default(),
            space: Default::default(),
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

    pub fn repair_rate(&self) -> u32 {
        self.config.repair_rate
    }

    pub fn repair_report(&self) -> RepairReport {
        *lock(&self.repair_report)
    }

    /// Unauthenticated peer handshakes refused so far (over the total or a source's bound).
    pub fn handshakes_refused(&self) -> u64 {
        self.handshakes.refused()
    }

    /// Leases peers hold on this node now (uploads and downloads in flight).
    pub fn leases_held(&self) -> usize {
        self.leases.count()
    }
}
