//! `/api/v1/status`, `/metrics` and the live event stream.

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
            "missing": s.repair.missing,
            "fetched": s.repair.fetched,
            "dropped": s.repair.dropped,
        },
        "scrub": {
            "rate": s.scrub.rate,
            "passes": s.scrub.passes,
            "checked": s.scrub.checked,
            "corrupt": s.scrub.corrupt,
            "errors": s.scrub.errors,
            // Share of the stored chunks the pass under way has checked (0 between passes).
            "pass_progress": s.scrub.position as f64 / 2f64.powi(64),
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

pub async fn metrics(req: Req) -> Result<Response, ApiError> {
    let s = req.state().node.status().await?;
    let mut out = String::new();
    let mut metric = |kind: &str, name: &str, help: &str, value: u64| {
        out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}\n"));
    };
    metric("gauge", "diststore_files", "Live names.", s.stats.files);
    metric("gauge", "diststore_logical_bytes", "Sum of the sizes of all live names.", s.stats.logical_bytes);
    metric(
        "gauge",
        "diststore_unique_bytes",
        "Sum of the sizes of distinct stored files.",
        s.stats.unique_bytes,
    );
    metric("gauge", "diststore_stored_bytes", "Ciphertext bytes of stored chunks.", s.stats.stored_bytes);
    metric("gauge", "diststore_chunks", "Stored chunks.", s.stats.chunks);
    metric("gauge", "diststore_db_file_bytes", "Size of the database file.", s.space.db_file_bytes);
    metric(
        "gauge",
        "diststore_db_used_bytes",
        "Estimated bytes of the database file in use.",
        s.space.db_used_bytes,
    );
    metric(
        "gauge",
        "diststore_db_free_bytes",
        "Estimated free bytes inside the database file (reused by writes, returned by compaction).",
        s.space.db_free_bytes,
    );
    metric("gauge", "diststore_disk_free_bytes", "Free bytes on the data disk.", s.space.disk.free);
    metric("gauge", "diststore_disk_total_bytes", "Size of the data disk.", s.space.disk.total);
    metric(
        "gauge",
        "diststore_disk_reserve_bytes",
        "Free disk space kept for deletes and the collector; uploads are refused below it.",
        s.space.reserve_bytes,
    );
    metric(
        "counter",
        "diststore_compactions_total",
        "Database compactions since start.",
        s.space.compactions,
    );
    metric("gauge", "diststore_uptime_seconds", "Seconds since the node started.", s.uptime_secs);
    metric(
        "counter",
        "diststore_scrub_checked_chunks_total",
        "Chunks the scrub verified since start.",
        s.scrub.checked,
    );
    metric(
        "counter",
        "diststore_scrub_corrupt_chunks_total",
        "Damaged chunk copies the scrub dropped since start.",
        s.scrub.corrupt,
    );
    metric(
        "counter",
        "diststore_scrub_errors_total",
        "Chunks the scrub could not read or drop, and passes it had to stop, since start.",
        s.scrub.errors,
    );
    metric("counter", "diststore_gc_passes_total", "Collector passes since start.", s.gc.passes);
    metric(
        "counter",
        "diststore_gc_bytes_total",
        "Chunk bytes the collector removed since start.",
        s.gc.bytes,
    );
    metric("gauge", "diststore_leases", "Leases peers' transfers hold on this node.", s.leases as u64);
    metric(
        "counter",
        "diststore_peer_handshakes_refused_total",
        "Unauthenticated peer handshakes refused (over the total or one source's bound).",
        s.handshakes_refused,
    );
    let limits = req.state().node.limits();
    let read = crate::limits::Limits::read;
    for (gate, what, name) in [
        (&limits.http_connections, "HTTP connections", "http_connections"),
        (&limits.s3_connections, "S3 connections", "s3_connections"),
        (&limits.uploads, "Uploads", "uploads"),
    ] {
        metric("gauge", &format!("diststore_{name}"), &format!("{what} in progress."), gate.in_use() as u64);
        metric(
            "gauge",
            &format!("diststore_{name}_max"),
            &format!("Most {what} at once."),
            gate.max() as u64,
        );
        metric(
            "counter",
            &format!("diststore_{name}_refused_total"),
            &format!("{what} refused because the most were open, since start."),
            gate.refused(),
        );
    }
    metric(
        "counter",
        "diststore_http_heads_refused_total",
        "Request heads (or multipart preambles and part headers) refused for their length.",
        read(&limits.heads_refused),
    );
    metric(
        "counter",
        "diststore_http_header_timeouts_total",
        "Connections closed because a request head did not arrive in time.",
        read(&limits.header_timeouts),
    );
    metric(
        "counter",
        "diststore_http_body_timeouts_total",
        "Requests failed because their body sent nothing for the idle timeout.",
        read(&limits.body_timeouts),
    );
    Ok(Response::builder(StatusCode::Ok).content_type("text/plain; version=0.0.4").body(out).build())
}

/// Server-sent events: `file` on every put and delete, `status` on changes and periodically.
pub async fn events(req: tide::Request<State>, sender: tide::sse::Sender) -> tide::Result<()> {
    let state = req.state().clone();
    let changes = state.node.events().subscribe();
    loop {
        let status = status_json(&state).await.map_err(|e| tide::Error::from_str(500, e.to_string()))?;
        sender.send("status", status.to_string(), None).await?;
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
                sender.send("file", data.to_string(), None).await?;
            }
        }
    }
}
