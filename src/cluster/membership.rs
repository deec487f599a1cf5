//! Membership: the links to every member this node knows, which of them are up, the member
//! list gossiped between nodes and persisted (so a restarted node dials them at once), and the
//! settle window after start.

use std::sync::Arc;
use std::time::Duration;

use super::link::Link;
use super::messages::{self, Member, PeerStats};
use super::{Cluster, ClusterError, PeerView, lock, repair, sync};
use crate::clock::{rfc3339, unix_ms};
use crate::content::NodeId;
use crate::events::Event;
use crate::runtime;
use crate::storage::StorageError;

/// `META` key of the members this node knows, dialled at start.
const MEMBERS_KEY: &str = "members";

impl Cluster {
    /// Starts the links to the seeds and the members this node knew before it stopped, and
    /// the background loops, once this node's URL is known.
    pub async fn start(self: &Arc<Self>, url: String, shutdown: async_channel::Receiver<()>) {
        *lock(&self.url) = url.trim_end_matches('/').to_owned();
        self.load_states().await;
        for seed in self.config.seeds.clone() {
            self.ensure_link(seed.trim_end_matches('/'));
        }
        match self.remembered().await {
            Ok(members) => {
                let members: Vec<Member> =
                    members.into_iter().filter(|m| !self.is_removed(NodeId::from_bytes(m.node))).collect();
                let mut known = lock(&self.known);
                for m in &members {
                    known.insert(NodeId::from_bytes(m.node), m.url.clone());
                }
                drop(known);
                members.iter().for_each(|m| self.ensure_link(&m.url));
            }
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

    pub(super) async fn remembered(&self) -> Result<Vec<Member>, StorageError> {
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
    pub(super) async fn remember(&self) {
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

    pub(super) fn ensure_link(self: &Arc<Self>, url: &str) {
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
    pub(super) fn claim(&self, peer: NodeId, link: &Arc<Link>) -> bool {
        let links = lock(&self.links);
        !links.values().any(|l| !Arc::ptr_eq(l, link) && l.is_up() && l.node() == Some(peer))
    }

    pub(super) fn forget(&self, url: &str) {
        if let Some(link) = lock(&self.links).remove(url) {
            link.stop();
        }
    }

    pub(super) fn peer_up(self: &Arc<Self>, link: Arc<Link>) {
        if let Some(node) = link.node() {
            if self.is_removed(node) {
                // Removed while this link was dialling: no link to it.
                self.forget(&link.url);
                return;
            }
            lock(&self.known).insert(node, link.url.clone());
        }
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

    pub(super) fn peer_down(&self) {
        self.events.publish(Event::Membership);
        self.wake_repair();
    }

    /// Wakes the repair loop: something it acts on changed (membership, its queue).
    pub fn wake_repair(&self) {
        let _ = self.repair_wake.try_send(());
    }

    /// Members this node knows (itself included) for gossip.
    pub(super) fn members(&self) -> Vec<Member> {
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
    pub(super) fn learn(self: &Arc<Self>, members: Vec<Member>) {
        for m in members {
            let removed = self.is_removed(NodeId::from_bytes(m.node));
            if m.node != *self.me.as_bytes() && !removed && !m.url.is_empty() && !unspecified_host(&m.url) {
                let known =
                    lock(&self.links).values().any(|l| l.node().is_some_and(|n| *n.as_bytes() == m.node));
                if !known {
                    self.ensure_link(&m.url);
                }
            }
        }
    }

    pub(super) async fn local_stats(&self) -> PeerStats {
        match self.store.stats().await {
            Ok(s) => PeerStats { files: s.files, stored_bytes: s.stored_bytes, chunks: s.chunks },
            Err(_) => PeerStats::default(),
        }
    }

    /// Up links with their node ids.
    pub(super) fn up_links(&self) -> Vec<(NodeId, Arc<Link>)> {
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

    /// The nodes chunks are placed over: this one, every live member, and every known member
    /// down for less than `--down-out-after`. A member inside that grace keeps its share: its
    /// chunks wait for it (one copy fewer meanwhile) instead of being copied to other nodes and
    /// deleted again when it returns. Writes still go to live nodes only, down each chunk's
    /// ranking, which keeps their relative order.
    pub(super) fn placement_nodes(&self) -> Vec<NodeId> {
        let grace = self.config.timing.down_out_after;
        let since_start = self.started.elapsed();
        let now = unix_ms();
        let links = lock(&self.links);
        let mut nodes = vec![self.me];
        for (node, url) in lock(&self.known).iter() {
            if !self.placeable(*node) {
                continue;
            }
            let link = links.values().find(|l| l.node() == Some(*node)).or_else(|| links.get(url));
            let Some(link) = link else { continue };
            let state = link.state();
            let down_for = state
                .last_seen_ms
                .map_or(since_start, |seen| Duration::from_millis(now.saturating_sub(seen)))
                .min(since_start);
            if (state.up && state.node == Some(*node)) || down_for < grace {
                nodes.push(*node);
            }
        }
        nodes.extend(links.values().filter(|l| l.is_up()).filter_map(|l| l.node()));
        drop(links);
        nodes.retain(|n| self.placeable(*n));
        nodes.sort();
        nodes.dedup();
        nodes
    }

    /// Live nodes that take new chunks: not draining, not removed.
    pub(super) fn writable_nodes(&self) -> Vec<NodeId> {
        let mut nodes = self.live_nodes();
        nodes.retain(|n| self.placeable(*n));
        nodes
    }

    /// Whether this node's view of the cluster is whole enough to rank chunks against: it has
    /// heard from every member it links to (or waited the settle bound), and every peer that
    /// is up has gossiped its members (so members it knows of are links here too).
    pub(super) fn view_settled(&self) -> bool {
        // A member heard from once counts, up or down since: its going down is news to act on.
        let waited = self.started.elapsed() >= self.config.timing.settle;
        lock(&self.links).values().all(|l| {
            let st = l.state();
            (waited || st.last_seen_ms.is_some()) && (!st.up || st.gossiped)
        })
    }

    /// When (Unix ms) the next known member that is down passes its grace, changing
    /// placement: the one moment a down member needs a repair pass without an event.
    pub(super) fn next_placement_change(&self) -> Option<u64> {
        let grace = self.config.timing.down_out_after.as_millis() as u64;
        let started = unix_ms().saturating_sub(self.started.elapsed().as_millis() as u64);
        let links = lock(&self.links);
        let now = unix_ms();
        lock(&self.known)
            .iter()
            .filter(|(node, _)| self.placeable(**node))
            .filter_map(|(node, url)| {
                let link = links.values().find(|l| l.node() == Some(*node)).or_else(|| links.get(url))?;
                let st = link.state();
                if st.up {
                    return None;
                }
                let since = st.last_seen_ms.unwrap_or(started).max(started);
                // A little past the edge, so the view seen then has it out.
                Some(since + grace + 50)
            })
            .filter(|at| *at > now)
            .min()
    }

    /// Live nodes, this one included.
    pub(super) fn live_nodes(&self) -> Vec<NodeId> {
        let mut nodes: Vec<NodeId> = self.up_links().into_iter().map(|(n, _)| n).collect();
        nodes.push(self.me);
        nodes.sort();
        nodes.dedup();
        nodes
    }

    pub(super) fn link_of(&self, node: NodeId) -> Option<Arc<Link>> {
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
                    last_seen_ms: st.last_seen_ms,
                    stats: st.stats,
                    space: st.space,
                    error: if st.up { None } else { st.error },
                }
            })
            .collect();
        out.sort_by(|a, b| a.url.cmp(&b.url));
        out
    }

    /// Whether enough nodes are live to accept a write: in a cluster, `--min-replicas`
    /// (by default the replication factor, so a `201` means R copies); alone, this node.
    pub fn check_writable(&self) -> Result<(), ClusterError> {
        if self.is_removed(self.me) {
            return Err(ClusterError::Removed);
        }
        // Draining members take no new chunks, so they do not count.
        let live = self.writable_nodes().len();
        let needed = if self.has_members() { self.config.min_replicas } else { 1 };
        if live < needed {
            return Err(ClusterError::Unavailable { live, needed });
        }
        Ok(())
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
