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

use super::connection::{self, LinkError, Outbox};
use super::messages::{MAX_MESSAGE, Message, PeerStats, Request, Response};
use super::space::PeerSpace;
use super::{Cluster, HANDLERS_PER_LINK};
use crate::clock::unix_ms;
use crate::content::NodeId;
use crate::runtime;

const HEARTBEAT: Duration = Duration::from_secs(1);
/// An inbound link silent this long (its dialer pings every second) has a dead or stalled
/// peer, possibly mid-message: the accepting side drops it.
pub const INBOUND_SILENCE: Duration = Duration::from_secs(15);
/// A peer from which no frame at all (a pong, or any response) arrived for this long, five
/// heartbeats, is down. One late pong on a busy machine is not a dead peer: declaring it
/// down starts repair traffic that makes the machine busier still.
const DOWN_AFTER: Duration = Duration::from_secs(5);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
const BACKOFF_MIN: Duration = Duration::from_millis(200);
/// A member that restarts is dialled again within this long.
const BACKOFF_MAX: Duration = Duration::from_secs(1);

pub fn ws_config() -> WebSocketConfig {
    WebSocketConfig::default().max_message_size(Some(MAX_MESSAGE + 64)).max_frame_size(Some(MAX_MESSAGE + 64))
}

#[derive(Debug, Clone, Default)]
pub struct LinkState {
    pub node: Option<NodeId>,
    pub up: bool,
    pub last_seen_ms: Option<u64>,
    pub stats: PeerStats,
    /// Space figures from its last pong that carried them; kept while it is down, with
    /// their date, so the status page can say how old they are.
    pub space: Option<PeerSpace>,
    /// Why the last attempt to reach it failed, while it is down.
    pub error: Option<String>,
    /// A pong (with the peer's members and their states) arrived since the link came up.
    pub gossiped: bool,
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
    outgoing: Mutex<Option<Outbox>>,
    /// Requests in flight on this link, other than heartbeats: bounded to what the peer serves
    /// at once, so the peer never has to stop reading (and miss a ping) to hold them back.
    slots: (async_channel::Sender<()>, async_channel::Receiver<()>),
    pending: Mutex<HashMap<u64, async_channel::Sender<Response>>>,
    next_id: AtomicU64,
    stopped: AtomicBool,
    /// An anti-entropy exchange with this peer is running: at most one at a time, so a peer
    /// coming up during a periodic pass is not walked twice at once.
    pub(super) exchanging: AtomicBool,
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
            slots: async_channel::bounded(HANDLERS_PER_LINK),
            pending: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
            stopped: AtomicBool::new(false),
            exchanging: AtomicBool::new(false),
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

    /// Sends a request and waits (at most `limit`) for its response.
    pub async fn request(&self, body: Request, limit: Duration) -> Result<Response, LinkError> {
        let tx = lock(&self.outgoing).clone().ok_or(LinkError::Closed)?;
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let msg = Message::Request { id, body };
        let _slot = if msg.is_control() {
            None
        } else {
            runtime::timeout(limit, self.slots.0.send(())).await.ok_or(LinkError::Timeout)?.ok();
            Some(Slot(&self.slots.1))
        };
        let (reply_tx, reply_rx) = async_channel::bounded(1);
        lock(&self.pending).insert(id, reply_tx);
        let result = async {
            tx.send(msg).await?;
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
                    lock(&self.state).error = None;
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
                        Err(e) => {
                            log::warn!("peer {}: handshake failed: {e}", self.url);
                            lock(&self.state).error = Some(format!("handshake failed: {e}"));
                        }
                    }
                }
                Err(e) => {
                    log::debug!("peer {}: cannot connect: {e}", self.url);
                    lock(&self.state).error = Some(format!("cannot connect: {e}"));
                }
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
        let (outbox, queue) = connection::outbox(64);
        *lock(&self.outgoing) = Some(outbox);
        {
            let mut st = lock(&self.state);
            st.node = Some(peer);
            st.up = true;
            st.last_seen_ms = Some(unix_ms());
            st.error = None;
            st.gossiped = false;
        }
        log::info!("peer {peer} at {} is up", self.url);
        cluster.peer_up(self.clone());

        let write = writer.drain(queue);
        let read = async {
            loop {
                match reader.recv().await {
                    Ok(Message::Response { id, body }) => {
                        // Any frame is a sign of life, not only a pong.
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
                let ping = Request::Ping {
                    members: cluster.members(),
                    stats: cluster.local_stats().await,
                    states: cluster.wire_states(),
                };
                match self.request(ping, DOWN_AFTER).await {
                    Ok(Response::Pong { members, stats, space, states }) => {
                        cluster.merge_states(states);
                        cluster.learn(members);
                        let mut st = lock(&self.state);
                        st.stats = stats;
                        if let Some(space) = space {
                            st.space = Some(PeerSpace::received(space));
                        }
                        st.gossiped = true;
                        drop(st);
                    }
                    Ok(_) => return LinkError::Unexpected,
                    // A late pong alone is not a dead peer; silence on the whole link is.
                    Err(LinkError::Timeout) => {}
                    Err(e) => return e,
                }
                let last = lock(&self.state).last_seen_ms.unwrap_or(0);
                if unix_ms().saturating_sub(last) > DOWN_AFTER.as_millis() as u64 {
                    return LinkError::Silent(DOWN_AFTER);
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

/// A request slot on a link, given back when the request ends however it ends.
struct Slot<'a>(&'a async_channel::Receiver<()>);

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        let _ = self.0.try_recv();
    }
}
