//! `/api/v1/status` and the live event stream.

use std::time::Duration;

use serde_json::json;
use tide::{Response, StatusCode};

use super::{ApiError, Req, State, json};
use crate::clock::rfc3339;
use crate::cluster::{Capacity, PeerSpace, PeerView, SPACE_CURRENT_FOR};
use crate::node::Event;
use crate::runtime;

/// How often the event stream repeats the status even when nothing changed.
const STATUS_EVERY: Duration = Duration::from_secs(5);

async fn status_json(state: &State) -> Result<serde_json::Value, ApiError> {
    let s = state.node.status().await?;
    let peers: Vec<_> = s
        .peers
        .iter()
        .map(|p| {
            json!({
                "node_id": p.node.map(|n| n.to_string()),
                "url": p.url,
                "state": if p.up { "up" } else { "down" },
                "last_seen": p.last_seen,
                "files": p.stats.files,
                "stored_bytes": p.stats.stored_bytes,
                "chunks": p.stats.chunks,
                "space": p.space.map(|space| peer_space(p, &space)),
                "error": p.error,
            })
        })
        .collect();
    let capacity = Capacity::sum(&s.space, s.peers.iter().map(|p| (p.node, p.up, p.space.as_ref())));
    // What dedup saves: names' total size over distinct content (encryption overhead and
    // replication show in stored_bytes, not here).
    let dedup_ratio = if s.stats.unique_bytes == 0 {
        1.0
    } else {
        s.stats.logical_bytes as f64 / s.stats.unique_bytes as f64
    };
    Ok(json!({
        "node_id": s.node_id.to_string(),
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_secs": s.uptime_secs,
        "files": s.stats.files,
        "logical_bytes": s.stats.logical_bytes,
        "unique_bytes": s.stats.unique_bytes,
        "stored_bytes": s.stats.stored_bytes,
        "chunks": s.stats.chunks,
        "db_file_bytes": s.space.db_file_bytes,
        "db_used_bytes": s.space.db_used_bytes,
        "db_free_bytes": s.space.db_free_bytes,
        "disk_free_bytes": s.space.disk.free,
        "disk_total_bytes": s.space.disk.total,
        "disk_reserve_bytes": s.space.reserve_bytes,
        "disk_id": format!("{:016x}", s.space.disk.id),
        "compactions": s.space.compactions,
        "dedup_ratio": dedup_ratio,
        "max_upload_bytes": s.max_upload_bytes,
        "auth_required": state.api_token.is_some(),
        "replication": s.replication,
        "url": s.url,
        "peers": peers,
        "repair": {
            "passes": s.repair.passes,
            "pass_running": s.repair.pass_running,
            "pass_ranked": s.repair.pass_ranked,
            // The last pass's figures, and when it ended.
            "missing": s.repair.missing,
            "under_replicated": s.repair.under_replicated,
            "last_pass": s.repair.last_pass_ms.map(rfc3339),
            "queued": s.repair.queued,
            "fetched": s.repair.fetched,
            "fetched_bytes": s.repair.fetched_bytes,
            "dropped": s.repair.dropped,
            "rate": state.node.cluster().repair_rate(),
        },
        "nodes": state.node.cluster().nodes().iter().map(super::nodes::node_json).collect::<Vec<_>>(),
        "scrub": {
            "rate": s.scrub.rate,
            "passes": s.scrub.passes,
            "checked": s.scrub.checked,
            "corrupt": s.scrub.corrupt,
            "errors": s.scrub.errors,
            // Share of the stored chunks the pass under way has checked (0 between passes).
            "pass_progress": s.scrub.position as f64 / 2f64.powi(64),
            // When the next pass starts (Unix ms) while the scrub waits for it, else null.
            "next_pass_at_ms": (s.scrub.next_pass_ms > 0).then_some(s.scrub.next_pass_ms),
        },
        "gc": {
            "passes": s.gc.passes,
            "files": s.gc.files,
            "chunks": s.gc.chunks,
            "bytes": s.gc.bytes,
        },
        "leases": s.leases,
        "capacity": {
            "nodes": capacity.nodes,
            "nodes_unknown": capacity.nodes_unknown,
            "disks": capacity.disks,
            "disk_total_bytes": capacity.disk_total_bytes,
            "disk_free_bytes": capacity.disk_free_bytes,
            "disk_used_bytes": capacity.disk_used_bytes(),
        },
    }))
}

/// A peer's last space figures, the fields named as this node's own, with when they were
/// measured. `current` is false once they are older than the bound or the peer is down: the
/// disk may have changed since.
fn peer_space(peer: &PeerView, space: &PeerSpace) -> serde_json::Value {
    let f = &space.figures;
    let age = space.age();
    json!({
        "db_file_bytes": f.db_file_bytes,
        "db_used_bytes": f.db_used_bytes,
        "db_free_bytes": f.db_free_bytes,
        "disk_free_bytes": f.disk_free_bytes,
        "disk_total_bytes": f.disk_total_bytes,
        "disk_reserve_bytes": f.disk_reserve_bytes,
        "disk_id": format!("{:016x}", f.disk_id),
        "measured_at": rfc3339(space.measured_ms),
        "age_secs": age.as_secs(),
        "current": peer.up && age <= SPACE_CURRENT_FOR,
    })
}

pub async fn status(req: Req) -> Result<Response, ApiError> {
    Ok(json(StatusCode::Ok, &status_json(req.state()).await?))
}

/// Server-sent events: `file` on every put and delete, `status` on changes and periodically.
/// A client that goes away (a closed tab) ends the stream at the next send; that is how every
/// stream ends, so it is logged at debug, not returned as the error tide would log.
pub async fn events(req: tide::Request<State>, sender: tide::sse::Sender) -> tide::Result<()> {
    match stream_events(req, sender).await {
        Err(Ended::ClientGone(e)) => {
            log::debug!("event stream closed by the client: {e}");
            Ok(())
        }
        Err(Ended::Failed(e)) => Err(tide::Error::from_str(500, e.to_string())),
        Ok(never) => match never {},
    }
}

enum Ended {
    ClientGone(std::io::Error),
    Failed(ApiError),
}

async fn stream_events(
    req: tide::Request<State>,
    sender: tide::sse::Sender,
) -> Result<std::convert::Infallible, Ended> {
    let state = req.state().clone();
    let changes = state.node.events().subscribe();
    loop {
        let status = status_json(&state).await.map_err(Ended::Failed)?;
        sender.send("status", status.to_string(), None).await.map_err(Ended::ClientGone)?;
        // Wait for a change or the period, then send what happened.
        if let Some(Ok(event)) = runtime::timeout(STATUS_EVERY, changes.recv()).await {
            let mut pending = vec![event];
            while let Ok(more) = changes.try_recv() {
                pending.push(more);
            }
            for event in pending {
                let data = match event {
                    Event::Put { name } => json!({ "op": "put", "name": name }),
                    Event::Delete { name } => json!({ "op": "delete", "name": name }),
                    // The status sent at the top of the loop shows it.
                    Event::Membership => continue,
                };
                sender.send("file", data.to_string(), None).await.map_err(Ended::ClientGone)?;
            }
        }
    }
}
