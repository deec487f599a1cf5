//! Space figures between nodes: this node measures its own at most every [`SPACE_REFRESH`]
//! and sends the last measurement, with its age, in every pong; a link keeps what its peer
//! sent, dated by this node's clock. A figure older than [`SPACE_CURRENT_FOR`] is not current
//! (the status page says so rather than showing it as the disk's state now).

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use super::messages::WireSpace;
use super::{Cluster, lock};
use crate::clock::unix_ms;
use crate::runtime;
use crate::storage::SpaceReport;

/// Pongs go out every second on every link; the disk is measured at most this often.
pub const SPACE_REFRESH: Duration = Duration::from_secs(5);
/// A peer's figures this old (or from a peer that is down) are reported as stale: a few
/// refresh periods, so one slow measurement or late pong does not flap it.
pub const SPACE_CURRENT_FOR: Duration = Duration::from_secs(20);

/// This node's last measurement, shared by every pong.
#[derive(Default)]
pub(super) struct LocalSpace {
    last: Mutex<Option<(Instant, SpaceReport)>>,
    /// A measurement is under way: at most one at a time, however many pongs ask.
    measuring: Arc<AtomicBool>,
}

/// What a peer last reported about its space, and when (this node's clock) it was measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerSpace {
    pub figures: WireSpace,
    pub measured_ms: u64,
}

impl PeerSpace {
    /// Dates figures just received: their age is counted back from now.
    pub(super) fn received(figures: WireSpace) -> Self {
        Self { figures, measured_ms: unix_ms().saturating_sub(figures.age_ms) }
    }

    pub fn age(&self) -> Duration {
        Duration::from_millis(unix_ms().saturating_sub(self.measured_ms))
    }
}

impl Cluster {
    /// The figures to send with a pong: the last measurement and its age. Never waits for the
    /// disk; when the measurement is due it starts one in the background for later pongs.
    pub(super) fn space_for_peers(self: &Arc<Self>) -> Option<WireSpace> {
        let last = *lock(&self.space.last);
        if last.is_none_or(|(at, _)| at.elapsed() >= SPACE_REFRESH)
            && !self.space.measuring.swap(true, Ordering::SeqCst)
        {
            let me = self.clone();
            runtime::spawn(async move {
                match me.store.space().await {
                    Ok(report) => *lock(&me.space.last) = Some((Instant::now(), report)),
                    Err(e) => log::debug!("could not measure the space to tell peers: {e}"),
                }
                me.space.measuring.store(false, Ordering::SeqCst);
            });
        }
        let (at, r) = last?;
        Some(WireSpace {
            age_ms: at.elapsed().as_millis().try_into().unwrap_or(u64::MAX),
            db_file_bytes: r.db_file_bytes,
            db_used_bytes: r.db_used_bytes,
            db_free_bytes: r.db_free_bytes,
            disk_free_bytes: r.disk.free,
            disk_total_bytes: r.disk.total,
            disk_reserve_bytes: r.reserve_bytes,
            disk_id: r.disk.id,
        })
    }
}

/// The cluster's disk capacity as this node sees it: this node and every peer that is up with
/// current figures, each disk counted once however many nodes share it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Capacity {
    /// Nodes whose figures are summed (this one included).
    pub nodes: usize,
    /// Peers that are up but whose figures are missing or not current: left out of the sums.
    pub nodes_unknown: usize,
    /// Distinct disks summed.
    pub disks: usize,
    pub disk_total_bytes: u64,
    pub disk_free_bytes: u64,
}

impl Capacity {
    /// `own` is this node's space; `peers` each up peer's node id and last figures.
    pub fn sum<'a>(
        own: &SpaceReport,
        peers: impl IntoIterator<Item = (Option<crate::content::NodeId>, bool, Option<&'a PeerSpace>)>,
    ) -> Capacity {
        let mut seen_disks = vec![own.disk.id];
        let mut seen_nodes = Vec::new();
        let mut out = Capacity {
            nodes: 1,
            nodes_unknown: 0,
            disks: 1,
            disk_total_bytes: own.disk.total,
            disk_free_bytes: own.disk.free,
        };
        for (node, up, space) in peers {
            if !up {
                continue;
            }
            // A node reached by two links (an address it was dialled at and the one it
            // gossips) is one node.
            if let Some(node) = node {
                if seen_nodes.contains(&node) {
                    continue;
                }
                seen_nodes.push(node);
            }
            let Some(space) = space.filter(|s| s.age() <= SPACE_CURRENT_FOR) else {
                out.nodes_unknown += 1;
                continue;
            };
            out.nodes += 1;
            if !seen_disks.contains(&space.figures.disk_id) {
                seen_disks.push(space.figures.disk_id);
                out.disks += 1;
                out.disk_total_bytes = out.disk_total_bytes.saturating_add(space.figures.disk_total_bytes);
                out.disk_free_bytes = out.disk_free_bytes.saturating_add(space.figures.disk_free_bytes);
            }
        }
        out
    }

    /// Not free to writers: other files, the database, and blocks the file system keeps for
    /// its superuser.
    pub fn disk_used_bytes(&self) -> u64 {
        self.disk_total_bytes.saturating_sub(self.disk_free_bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::content::NodeId;
    use crate::storage::DiskSpace;

    fn peer(disk_id: u64, total: u64, free: u64, age_ms: u64) -> PeerSpace {
        PeerSpace::received(WireSpace {
            age_ms,
            disk_total_bytes: total,
            disk_free_bytes: free,
            disk_id,
            ..Default::default()
        })
    }

    #[test]
    fn capacity_counts_each_disk_once_and_only_current_live_figures() {
        let own = SpaceReport { disk: DiskSpace { free: 10, total: 100, id: 1 }, ..Default::default() };
        let (a, b, c, d) = ([1; 16], [2; 16], [3; 16], [4; 16]);
        let shared = peer(1, 100, 10, 0);
        let other = peer(2, 50, 5, 1_000);
        let stale = peer(3, 1_000, 900, SPACE_CURRENT_FOR.as_millis() as u64 + 5_000);
        let down = peer(4, 7, 7, 0);
        let node = |b| Some(NodeId::from_bytes(b));
        let peers = [
            (node(a), true, Some(&shared)),
            (node(b), true, Some(&other)),
            (node(b), true, Some(&other)),
            (node(c), true, Some(&stale)),
            (node(d), false, Some(&down)),
            (None, true, None),
        ];
        let cap = Capacity::sum(&own, peers);
        assert_eq!(
            cap,
            Capacity { nodes: 3, nodes_unknown: 2, disks: 2, disk_total_bytes: 150, disk_free_bytes: 15 }
        );
        assert_eq!(cap.disk_used_bytes(), 135);
    }
}
