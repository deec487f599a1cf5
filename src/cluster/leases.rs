//! Leases: pins one node holds on behalf of a transfer running on another.
//!
//! An upload stores its chunks on their holders before its manifest exists anywhere; a
//! download reads chunks from holders that may see the file deleted meanwhile. Either way the
//! holder's collector must leave those chunks alone for as long as the transfer runs, however
//! long that is and whatever else references them. The transfer names a random lease id in its
//! requests; the holder pins the chunks under (peer, lease) until the peer releases the lease or
//! its link drops (a peer that went away has no transfer left to protect).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::Cluster;
use super::messages::Request;
use crate::content::{ChunkId, NodeId};
use crate::runtime;
use crate::storage::{PinSet, Store};

/// How long a release may take before it is left to the link's end.
const RELEASE_TIMEOUT: Duration = Duration::from_secs(10);

/// The leases peers hold on this node.
pub(super) struct Leases {
    store: Store,
    held: Mutex<HashMap<(NodeId, u64), Held>>,
}

/// A lease's pins, with the inbound connection that opened it.
struct Held {
    connection: u64,
    pins: PinSet,
}

impl Leases {
    pub(super) fn new(store: Store) -> Self {
        Self { store, held: Mutex::new(HashMap::new()) }
    }

    fn held(&self) -> std::sync::MutexGuard<'_, HashMap<(NodeId, u64), Held>> {
        self.held.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Pins `ids` under the peer's lease, creating it on first use on `connection`.
    pub(super) fn pin(&self, peer: NodeId, connection: u64, lease: u64, ids: &[ChunkId]) {
        let mut held = self.held();
        let entry = held.entry((peer, lease)).or_insert_with(|| Held { connection, pins: self.store.pins() });
        entry.pins.pin_all(ids);
    }

    /// The distinct chunks pinned under a lease; `None` for a lease this node does not hold
    /// (it restarted since, or the link that carried it dropped).
    pub(super) fn chunks(&self, peer: NodeId, lease: u64) -> Option<Vec<ChunkId>> {
        let held = self.held();
        let mut ids = held.get(&(peer, lease))?.pins.ids().to_vec();
        drop(held);
        ids.sort_unstable();
        ids.dedup();
        Some(ids)
    }

    pub(super) fn release(&self, peer: NodeId, lease: u64) {
        let pins = self.held().remove(&(peer, lease));
        drop(pins);
    }

    /// Every lease opened on an inbound connection that ended.
    pub(super) fn release_connection(&self, connection: u64) {
        let mut held = self.held();
        let gone: Vec<_> = held.iter().filter(|(_, h)| h.connection == connection).map(|(k, _)| *k).collect();
        let pins: Vec<Held> = gone.iter().filter_map(|k| held.remove(k)).collect();
        drop(held);
        drop(pins);
    }

    pub(super) fn count(&self) -> usize {
        self.held().len()
    }
}

/// A new random lease id.
pub(super) fn new_lease_id() -> u64 {
    let mut b = [0u8; 8];
    getrandom::fill(&mut b).expect("the OS random source works");
    u64::from_le_bytes(b)
}

/// This node's side of a lease held on peers: releases it on every node that took it when
/// dropped (an upload after its commit and announce, a download when its stream ends).
pub struct RemoteLease {
    cluster: Arc<Cluster>,
    pub(super) id: u64,
    pub(super) nodes: Vec<NodeId>,
}

impl RemoteLease {
    pub(super) fn new(cluster: Arc<Cluster>) -> Self {
        Self { cluster, id: new_lease_id(), nodes: Vec::new() }
    }

    pub(super) fn add(&mut self, node: NodeId) {
        if node != self.cluster.me() && !self.nodes.contains(&node) {
            self.nodes.push(node);
        }
    }
}

impl Drop for RemoteLease {
    fn drop(&mut self) {
        if self.nodes.is_empty() {
            return;
        }
        let (cluster, lease, nodes) = (self.cluster.clone(), self.id, std::mem::take(&mut self.nodes));
        runtime::spawn(async move {
            for node in nodes {
                // A holder that went away released the lease with the link already.
                if let Some(link) = cluster.link_of(node)
                    && let Err(e) = link.request(Request::Release { lease }, RELEASE_TIMEOUT).await
                {
                    log::debug!("releasing lease {lease:x} on {node}: {e}");
                }
            }
        });
    }
}
