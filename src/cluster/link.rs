//! An outbound link to one peer: the one owner of that connection. It dials, authenticates,
//! sends heartbeats, carries this node's requests and matches their responses, and redials
//! with backoff when the connection drops.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_tungstenite::WebSocketStream;
use async_tungstenite::tungstenite::protocol::WebSocketConfig;

use crate::runtime::net as async_std_tcp;

use super::Cluster;
use super::connection::{self, LinkError};
use super::messages::{MAX_MESSAGE, Message, PeerStats, Request, Response};
use crate::clock::unix_ms;
use crate::content::NodeId;
use crate::runtime;

const HEARTBEAT: Duration = Duration::from_secs(1);
/// An inbound link silent this long (its dialer pings every second) has a dead or stalled
/// peer, possibly mid-message: the accepting side drops it.
pub const INBOUND_SILENCE: Duration = Duration::from_secs(15);
/// A peer silent this long is down.
const HEARTBEAT_TIMEOUT: Duration = Duration::from_secs(3);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
const BACKOFF_MIN: Duration = Duration::from_millis(200);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

pub fn ws_config() -> WebSocketConfig {
    WebSocketConfig::default().max_message_size(Some(MAX_MESSAGE + 64)).max_frame_size(Some(MAX_MESSAGE + 64))
}

#[derive(Debug, Clone, Default)]
pub struct LinkState {
    pub node: Option<NodeId>,
    pub up: bool,
    pub last_seen_ms: Option<u64>,
    pub stats: PeerStats,
}

async fn dial(ws_url: &str) -> Result<WebSocketStream<async_std_tcp::TcpStream>, LinkError> {
    let url =
        url::Url::parse(ws_url).map_err(|e| LinkError::WebSocket(format!("bad peer URL {ws_url}: {e}")))?;
    let host = url.host_str().ok_or_else(|| LinkError::WebSocket(format!("no host in {ws_url}")))?;
    let port = url.port_or_known_default().unwrap_or(80);
    // Bounded: during a partition the kernel would retry a SYN for two minutes, and the link
    // would stay stuck in that attempt long after the network healed.
    let connect = async {
        let tcp = runtime::connect_tcp(host, port).await.map_err(|e| LinkError::WebSocket(e.to_string()))?;
        let (ws, _) = async_tungstenite::client_async_with_config(ws_url, tcp, Some(ws_config())).await?;
        Ok(ws)
    };
    runtime::timeout(CONNECT_TIMEOUT, connect).await.ok_or(LinkError::Timeout)?
}

pub struct Link {
    pub url: String,
    state: Mutex<LinkState>,
    outgoing: Mutex<Option<async_channel::Sender<Message>>>,
    pending: Mutex<HashMap<u64, async_channel::Sender<Response>>>,
    next_id: AtomicU64,
    stopped: AtomicBool,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Link {
    pub fn new(url: String) -> Arc<Link> {
        Arc::new(Link {
            url,
            state: Mutex::new(LinkState::default()),
            outgoing: Mutex::new(None),
            pending: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
            stopped: AtomicBool::new(false),
        })
    }

    pub fn state(&self) -> LinkState {
        lock(&self.state).clone()
    }

    pub fn node(&self) -> Option<NodeId> {
        lock(&self.state).node
    }

    pub fn is_up(&self) -> bool {
        lock(&self.state).up
    }

    pub fn stop(&self) {
        self.stopped.store(true, Ordering::Relaxed);
        *lock(&self.outgoing) = None;
    }

    /// Sends a request and waits for its response.
    pub async fn request(&self, body: Request, limit: Duration) -> Result<Response, LinkError> {
        let tx = lock(&self.outgoing).clone().ok_or(LinkError::Closed)?;
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (reply_tx, reply_rx) = async_channel::bounded(1);
        lock(&self.pending).insert(id, reply_tx);
        let result = async {
            tx.send(Message::Request { id, body }).await.map_err(|_| LinkError::Closed)?;
            runtime::timeout(limit, reply_rx.recv())
                .await
                .ok_or(LinkError::Timeout)?
                .map_err(|_| LinkError::Closed)
        }
        .await;
        lock(&self.pending).remove(&id);
        match result {
            Ok(Response::Error(e)) => Err(LinkError::Refused(e)),
            other => other,
        }
    }

    /// Dials until stopped.
    pub async fn run(self: Arc<Self>, cluster: Arc<Cluster>) {
        let mut backoff = BACKOFF_MIN;
        let ws_url = format!("{}/api/v1/peer", self.url.replacen("http", "ws", 1));
        while !self.stopped.load(Ordering::Relaxed) {
            match dial(&ws_url).await {
                Ok(mut ws) => {
                    match connection::client_handshake(&mut ws, cluster.keys(), cluster.me(), &cluster.url())
                        .await
                    {
                        Ok(auth) => {
                            let peer = auth.peer;
                            if !cluster.claim(peer, &self) {
                                log::debug!("{} is node {peer} already linked; dropping this link", self.url);
                                cluster.forget(&self.url);
                                return;
                            }
                            backoff = BACKOFF_MIN;
                            let (writer, reader) = connection::split(ws, auth);
                            self.session(&cluster, peer, writer, reader).await;
                        }
                        Err(LinkError::SelfLink) => {
                            cluster.forget(&self.url);
                            return;
                        }
                        Err(e) => log::warn!("peer {}: handshake failed: {e}", self.url),
                    }
                }
                Err(e) => log::debug!("peer {}: cannot connect: {e}", self.url),
            }
            runtime::sleep(backoff).await;
            backoff = (backoff * 2).min(BACKOFF_MAX);
        }
    }

    async fn session<S>(
        self: &Arc<Self>,
        cluster: &Arc<Cluster>,
        peer: NodeId,
        mut writer: connection::FrameWriter<S>,
        mut reader: connection::FrameReader<S>,
    ) where
        S: futures_util::AsyncRead + futures_util::AsyncWrite + Unpin + Send,
    {
        let (tx, rx) = async_channel::bounded::<Message>(64);
        *lock(&self.outgoing) = Some(tx);
        {
            let mut st = lock(&self.state);
            st.node = Some(peer);
            st.up = true;
            st.last_seen_ms = Some(unix_ms());
        }
        log::info!("peer {peer} at {} is up", self.url);
        cluster.peer_up(self.clone());

        let write = async {
            while let Ok(msg) = rx.recv().await {
                if let Err(e) = writer.send(msg).await {
                    return e;
                }
            }
            LinkError::Closed
        };
        let read = async {
            loop {
                match reader.recv().await {
                    Ok(Message::Response { id, body }) => {
                        lock(&self.state).last_seen_ms = Some(unix_ms());
                        if let Some(waiter) = lock(&self.pending).remove(&id) {
                            let _ = waiter.try_send(body);
                        }
                    }
                    // Requests travel only on the requester's own outbound link.
                    Ok(Message::Request { .. }) => return LinkError::Unexpected,
                    Err(e) => return e,
                }
            }
        };
        let heartbeat = async {
            loop {
                runtime::sleep(HEARTBEAT).await;
                let ping = Request::Ping { members: cluster.members(), stats: cluster.local_stats().await };
                match self.request(ping, HEARTBEAT_TIMEOUT).await {
                    Ok(Response::Pong { members, stats }) => {
                        lock(&self.state).stats = stats;
                        cluster.learn(members);
                    }
                    Ok(_) => return LinkError::Unexpected,
                    Err(e) => return e,
                }
            }
        };
        let reason = futures_lite::future::race(write, futures_lite::future::race(read, heartbeat)).await;
        *lock(&self.outgoing) = None;
        lock(&self.pending).clear();
        lock(&self.state).up = false;
        writer.close().await;
        log::warn!("peer {peer} at {} is down: {reason}", self.url);
        cluster.peer_down();
    }
}
