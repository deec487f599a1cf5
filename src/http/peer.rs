//! `/api/v1/peer`: the WebSocket endpoint peer links connect to. The HTTP upgrade happens
//! here; everything after it belongs to the cluster.

use async_tungstenite::WebSocketStream;
use async_tungstenite::tungstenite::handshake::derive_accept_key;
use async_tungstenite::tungstenite::protocol::Role;
use tide::Response;
use tide::http::StatusCode;

use super::{ApiError, Req};
use crate::cluster::ws_config;
use crate::runtime;

pub async fn upgrade(req: Req) -> Result<Response, ApiError> {
    let is_websocket = req.header("Upgrade").is_some_and(|v| v.as_str().eq_ignore_ascii_case("websocket"));
    let key = req.header("Sec-WebSocket-Key").map(|v| v.as_str().to_owned());
    let (true, Some(key)) = (is_websocket, key) else {
        return Err(ApiError::BadRequest("peer links must be WebSocket upgrades".into()));
    };
    let mut res = tide::http::Response::new(StatusCode::SwitchingProtocols);
    res.insert_header("Upgrade", "websocket");
    res.insert_header("Connection", "Upgrade");
    res.insert_header("Sec-WebSocket-Accept", derive_accept_key(key.as_bytes()));
    let upgraded = res.recv_upgrade().await;
    let cluster = req.state().node.cluster().clone();
    let remote = req.peer_addr().and_then(|a| a.parse::<std::net::SocketAddr>().ok()).map(|a| a.ip());
    runtime::spawn(async move {
        if let Some(connection) = upgraded.await {
            let ws = WebSocketStream::from_raw_socket(connection, Role::Server, Some(ws_config())).await;
            cluster.accept(ws, remote).await;
        }
    });
    Ok(res.into())
}
