//! `/api/v1/nodes`: the members and their lifecycle (behind the API token like the rest):
//! `GET` lists them, `POST /api/v1/nodes/{id}/drain` and `/remove` start those operations,
//! whose progress shows here, in the status and in `/metrics`.

use serde_json::json;
use tide::{Response, StatusCode};

use super::{ApiError, Req, json};
use crate::clock::rfc3339;
use crate::cluster::NodeView;
use crate::content::NodeId;
use crate::node::NodeError;

pub(super) fn node_json(n: &NodeView) -> serde_json::Value {
    json!({
        "node_id": n.node.to_string(),
        "url": n.url,
        "me": n.me,
        "state": n.state.as_str(),
        "since": n.since_ms.map(rfc3339),
        "up": n.up,
        "chunks": n.stats.map(|s| s.chunks),
        "stored_bytes": n.stats.map(|s| s.stored_bytes),
        "disk_free_bytes": n.space.map(|s| s.figures.disk_free_bytes),
        "disk_total_bytes": n.space.map(|s| s.figures.disk_total_bytes),
        "db_file_bytes": n.space.map(|s| s.figures.db_file_bytes),
    })
}

/// `GET /api/v1/nodes`: every member this node knows, itself first. This node's own chunk
/// and space figures are in `/api/v1/status`; a peer's are its last heartbeat's.
pub async fn list(req: Req) -> Result<Response, ApiError> {
    let node = &req.state().node;
    let s = node.status().await?;
    let mut nodes: Vec<serde_json::Value> = node.cluster().nodes().iter().map(node_json).collect();
    if let Some(me) = nodes.first_mut() {
        me["chunks"] = json!(s.stats.chunks);
        me["stored_bytes"] = json!(s.stats.stored_bytes);
        me["disk_free_bytes"] = json!(s.space.disk.free);
        me["disk_total_bytes"] = json!(s.space.disk.total);
        me["db_file_bytes"] = json!(s.space.db_file_bytes);
    }
    Ok(json(StatusCode::Ok, &json!({ "nodes": nodes, "replication": s.replication })))
}

/// The node id in `/api/v1/nodes/{id}/...`.
fn node_id(req: &Req) -> Result<NodeId, ApiError> {
    let raw = req.param("id").unwrap_or_default();
    raw.parse().map_err(|_| ApiError::BadRequest(format!("{raw:?} is not a node id (32 hex digits)")))
}

/// `POST /api/v1/nodes/{id}/drain`: `202` once the draining state is stored here; it spreads
/// to the others with the next heartbeat.
pub async fn drain(req: Req) -> Result<Response, ApiError> {
    let id = node_id(&req)?;
    req.state().node.cluster().drain(id).await.map_err(NodeError::from)?;
    Ok(json(StatusCode::Accepted, &json!({ "node_id": id.to_string(), "state": "draining" })))
}

/// `POST /api/v1/nodes/{id}/remove`: for a member that is down; re-replication of its share
/// starts at once.
pub async fn remove(req: Req) -> Result<Response, ApiError> {
    let id = node_id(&req)?;
    req.state().node.cluster().remove(id).await.map_err(NodeError::from)?;
    Ok(json(StatusCode::Accepted, &json!({ "node_id": id.to_string(), "state": "removed" })))
}
