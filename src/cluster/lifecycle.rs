//! Node lifecycle: operators drain a live member (its chunks move to the others, then it
//! leaves) or remove a dead one (its share is re-replicated at once, without waiting out
//! `--down-out-after`). The states are persisted in `META` and gossiped with every heartbeat;
//! they only advance (draining, then removed), so merging is taking the larger.
//! `node list` is [`Cluster::nodes`]: every member with its state and space.

use std::sync::Arc;
use std::time::Duration;

use super::messages::{self, Lifecycle, MemberState};
use super::{Cluster, ClusterError, PeerSpace, PeerStats, lock};
use crate::clock::unix_ms;
use crate::content::NodeId;
use crate::events::Event;
use crate::runtime;

/// `META` key of the members' lifecycle states.
const STATES_KEY: &str = "member_states";

/// A member as `node list` shows it.
#[derive(Debug, Clone)]
pub struct NodeView {
    pub node: NodeId,
    pub url: String,
    pub me: bool,
    pub state: NodeState,
    /// Since when it is in that state (down: last heard from; draining, removed: when an
    /// operator asked), Unix ms.
    pub since_ms: Option<u64>,
    /// Whether a link to it is up now (a draining node is up or down too).
    pub up: bool,
    pub stats: Option<PeerStats>,
    pub space: Option<PeerSpace>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeState {
    Up,
    /// Down for less than `--down-out-after`: it keeps its share.
    Down,
    /// Down for longer: the others hold its share.
    Out,
    Draining,
    Removed,
}

impl NodeState {
    pub fn as_str(self) -> &'static str {
        match self {
            NodeState::Up => "up",
            NodeState::Down => "down",
            NodeState::Out => "out",
            NodeState::Draining => "draining",
            NodeState::Removed => "removed",
        }
    }
}

impl Cluster {
    /// Reads the persisted states (at start, before any link).
    pub(super) async fn load_states(&self) {
        match self.store.meta(STATES_KEY).await {
            Ok(Some(bytes)) => match messages::decode::<Vec<MemberState>>(&bytes) {
                Ok(states) => {
                    let mut map = lock(&self.states);
                    for s in states {
                        map.insert(NodeId::from_bytes(s.node), s);
                    }
                }
                Err(e) => log::warn!("ignoring the stored member states: {e}"),
            },
            Ok(None) => {}
            Err(e) => log::warn!("could not read the member states: {e}"),
        }
    }

    pub(super) fn lifecycle_of(&self, node: NodeId) -> Option<Lifecycle> {
        lock(&self.states).get(&node).map(|s| s.state)
    }

    /// Whether placement may choose `node` (not draining, not removed).
    pub(super) fn placeable(&self, node: NodeId) -> bool {
        self.lifecycle_of(node).is_none()
    }

    pub(super) fn is_removed(&self, node: NodeId) -> bool {
        self.lifecycle_of(node) == Some(Lifecycle::Removed)
    }

    pub(super) fn wire_states(&self) -> Vec<MemberState> {
        let mut out: Vec<MemberState> = lock(&self.states).values().copied().collect();
        out.sort_by_key(|s| s.node);
        out
    }

    /// Merges states a peer gossiped; what advanced is persisted and acted on.
    pub(super) fn merge_states(self: &Arc<Self>, states: Vec<MemberState>) {
        let mut changed = Vec::new();
        {
            let mut map = lock(&self.states);
            for s in states {
                let node = NodeId::from_bytes(s.node);
                if map.get(&node).is_none_or(|old| s > *old) {
                    map.insert(node, s);
                    changed.push(s);
                }
            }
        }
        if !changed.is_empty() {
            let me = self.clone();
            runtime::spawn(async move { me.states_changed(&changed).await });
        }
    }

    /// Sets `node`'s state as this node's operator asked, persists it, and acts on it; peers
    /// hear of it with the next heartbeat (every second).
    async fn set_state(self: &Arc<Self>, node: NodeId, state: Lifecycle) -> Result<(), ClusterError> {
        let s = MemberState { state, stamp_ms: unix_ms(), by: *self.me.as_bytes(), node: *node.as_bytes() };
        lock(&self.states).insert(node, s);
        self.save_states().await?;
        self.states_changed(&[s]).await;
        Ok(())
    }

    async fn save_states(&self) -> Result<(), ClusterError> {
        // One save at a time, each writing what is current when it starts: a slow save can
        // never land after a newer one.
        let _turn = self.states_saving.lock().await;
        let bytes = messages::encode(&self.wire_states());
        self.store.set_meta(STATES_KEY, bytes).await?;
        Ok(())
    }

    async fn states_changed(self: &Arc<Self>, changed: &[MemberState]) {
        if let Err(e) = self.save_states().await {
            log::warn!("could not store the member states: {e}");
        }
        for s in changed {
            let node = NodeId::from_bytes(s.node);
            log::info!("member {node} is {:?}", s.state);
            if s.state == Lifecycle::Removed && node != self.me {
                // No link to a removed member: it is not dialled, gossiped or counted.
                let urls: Vec<String> = lock(&self.links)
                    .iter()
                    .filter(|(_, l)| l.node() == Some(node))
                    .map(|(u, _)| u.clone())
                    .collect();
                urls.iter().for_each(|u| self.forget(u));
                let url = lock(&self.known).remove(&node);
                if let Some(url) = url {
                    self.forget(&url);
                }
            }
        }
        self.events.publish(Event::Membership);
        self.wake_repair();
    }

    /// Starts draining `node`: placement stops choosing it at once (here, and on every node
    /// as the state spreads), the others copy its chunks, and it leaves (removed) once none
    /// of its chunks needs it.
    pub async fn drain(self: &Arc<Self>, node: NodeId) -> Result<(), ClusterError> {
        match self.lifecycle_of(node) {
            Some(Lifecycle::Draining) => return Ok(()),
            Some(Lifecycle::Removed) => {
                return Err(ClusterError::Lifecycle(format!("node {node} is removed already")));
            }
            None => {}
        }
        self.check_members_left(node)?;
        self.set_state(node, Lifecycle::Draining).await
    }

    /// Removes a dead `node`: placement drops it now and the others re-replicate its share at
    /// once. A node that is up must be drained instead (removing it would throw away its
    /// copies before others have them).
    pub async fn remove(self: &Arc<Self>, node: NodeId) -> Result<(), ClusterError> {
        if self.is_removed(node) {
            return Ok(());
        }
        if node == self.me {
            return Err(ClusterError::Lifecycle(
                "a node cannot remove itself while it runs: drain it".into(),
            ));
        }
        if self.link_of(node).is_some() {
            return Err(ClusterError::Lifecycle(format!(
                "node {node} is up: drain it, or stop it before removing it"
            )));
        }
        self.check_members_left(node)?;
        self.set_state(node, Lifecycle::Removed).await
    }

    /// Refuses to take `node` out when fewer members than the replication factor would stay.
    fn check_members_left(&self, node: NodeId) -> Result<(), ClusterError> {
        let mut members: Vec<NodeId> = lock(&self.known).keys().copied().collect();
        members.push(self.me);
        members.sort();
        members.dedup();
        if !members.contains(&node) {
            return Err(ClusterError::UnknownNode(node));
        }
        let left = members.iter().filter(|n| **n != node && self.placeable(**n)).count();
        if left < self.config.replication {
            return Err(ClusterError::Lifecycle(format!(
                "only {left} member(s) would hold chunks for {} copies",
                self.config.replication
            )));
        }
        Ok(())
    }

    /// Called by repair when a pass over the current placement has ended and its queue is
    /// empty: a draining node then holds nothing the others lack, and leaves.
    pub(super) async fn leave_if_drained(self: &Arc<Self>) {
        if self.lifecycle_of(self.me) != Some(Lifecycle::Draining) {
            return;
        }
        log::info!("drained: every chunk this node held has its copies elsewhere; leaving the cluster");
        if let Err(e) = self.set_state(self.me, Lifecycle::Removed).await {
            log::warn!("could not record leaving the cluster: {e}");
        }
    }

    /// Every member this node knows, itself first, with its state.
    pub fn nodes(&self) -> Vec<NodeView> {
        let grace = self.config.timing.down_out_after;
        let now = unix_ms();
        let states = lock(&self.states).clone();
        let lifecycle = |node: NodeId, fallback: NodeState, since: Option<u64>| match states.get(&node) {
            Some(s) if s.state == Lifecycle::Draining => (NodeState::Draining, Some(s.stamp_ms)),
            Some(s) => (NodeState::Removed, Some(s.stamp_ms)),
            None => (fallback, since),
        };
        let (state, since_ms) = lifecycle(self.me, NodeState::Up, None);
        let mut out = vec![NodeView {
            node: self.me,
            url: self.url(),
            me: true,
            state,
            since_ms,
            up: true,
            stats: None,
            space: None,
        }];
        let links = lock(&self.links).clone();
        let known = lock(&self.known).clone();
        let mut seen = vec![self.me];
        for (node, url) in known
            .iter()
            .map(|(n, u)| (*n, u.clone()))
            .chain(links.values().filter_map(|l| l.node().map(|n| (n, l.url.clone()))))
        {
            if seen.contains(&node) {
                continue;
            }
            seen.push(node);
            let link = links.values().find(|l| l.node() == Some(node)).or_else(|| links.get(&url));
            let st = link.map(|l| l.state()).unwrap_or_default();
            let up = st.up && st.node == Some(node);
            let down_for = Duration::from_millis(now.saturating_sub(st.last_seen_ms.unwrap_or(0)));
            let fallback = if up {
                NodeState::Up
            } else if st.last_seen_ms.is_some() && down_for < grace {
                NodeState::Down
            } else {
                NodeState::Out
            };
            let (state, since_ms) = lifecycle(node, fallback, if up { None } else { st.last_seen_ms });
            out.push(NodeView {
                node,
                url,
                me: false,
                state,
                since_ms,
                up,
                stats: link.map(|_| st.stats),
                space: st.space,
            });
        }
        // Removed members whose address this node never knew.
        for (node, s) in &states {
            if !seen.contains(node) {
                out.push(NodeView {
                    node: *node,
                    url: String::new(),
                    me: false,
                    state: if s.state == Lifecycle::Draining {
                        NodeState::Draining
                    } else {
                        NodeState::Removed
                    },
                    since_ms: Some(s.stamp_ms),
                    up: false,
                    stats: None,
                    space: None,
                });
            }
        }
        out
    }
}
