//! The only code that touches peer frames: the handshake and the sealed message transport
//! over a WebSocket.
//!
//! Handshake (client = the dialing node):
//! 1. client → `Hello { version, node, nonce_c, url }`
//! 2. server → `Challenge { version, node, nonce_s }` (or `Refused` on a version mismatch)
//! 3. client → `Proof { mac_c }`: HMAC(peer key, "client", transcript)
//! 4. server checks it (a wrong secret is refused and logged, having learned nothing), then
//!    → `Proof { mac_s }`: HMAC(peer key, "server", transcript); the client checks it.
//!
//! Both then derive one key per direction from the transcript; every later message is a
//! sealed, sequence-numbered frame ([`FrameCipher`]), followed by the chunk bytes it carries,
//! one binary WebSocket message each ([`Message::take_attachments`]). Those bytes are sealed
//! chunks, sent as stored: see there for why the link does not encrypt them again.

use std::time::Duration;

use async_tungstenite::tungstenite::Message as WsMessage;
use async_tungstenite::{WebSocketReceiver, WebSocketSender, WebSocketStream};
use bytes::Bytes;
use futures_util::{AsyncRead, AsyncWrite, SinkExt, Stream, StreamExt};

use super::messages::{
    DecodeError, Handshake, MAX_ATTACHMENT, MAX_ATTACHMENTS, Message, PROTOCOL_VERSION, decode, encode,
};
use crate::content::NodeId;
use crate::crypto::{FrameCipher, FrameError, Keys, macs_equal, peer_mac};
use crate::runtime;

const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Frames larger than this are sealed and opened on blocking threads.
const BLOCKING_FRAME: usize = 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error("websocket: {0}")]
    WebSocket(String),
    #[error(transparent)]
    Decode(#[from] DecodeError),
    #[error(transparent)]
    Frame(#[from] FrameError),
    #[error("refused by the peer: {0}")]
    Refused(String),
    #[error("peer speaks protocol version {0}, this node {PROTOCOL_VERSION}")]
    Version(u16),
    #[error("peer failed authentication (wrong cluster secret?)")]
    BadProof,
    #[error("unexpected handshake message")]
    Unexpected,
    #[error("timed out")]
    Timeout,
    #[error("link closed")]
    Closed,
    #[error("nothing heard from the peer for {0:?}")]
    Silent(Duration),
    #[error("peer is this node itself")]
    SelfLink,
}

impl From<async_tungstenite::tungstenite::Error> for LinkError {
    fn from(e: async_tungstenite::tungstenite::Error) -> Self {
        LinkError::WebSocket(e.to_string())
    }
}

/// Who is on the other end, and the keys for each direction.
pub struct Authenticated {
    pub peer: NodeId,
    pub peer_url: String,
    send: FrameCipher,
    recv: FrameCipher,
}

/// The next binary message of a socket or its receiving half; anything else but ping/pong
/// (which tungstenite answers) ends the link.
async fn next_binary<M>(messages: &mut M) -> Result<Bytes, LinkError>
where
    M: Stream<Item = Result<WsMessage, async_tungstenite::tungstenite::Error>> + Unpin,
{
    loop {
        match messages.next().await {
            None => return Err(LinkError::Closed),
            Some(Err(e)) => return Err(e.into()),
            Some(Ok(WsMessage::Binary(b))) => return Ok(b),
            Some(Ok(WsMessage::Close(_))) => return Err(LinkError::Closed),
            Some(Ok(WsMessage::Text(_))) => return Err(LinkError::Unexpected),
            Some(Ok(_)) => continue,
        }
    }
}

/// Runs `work` with the link direction's cipher: on a blocking thread when it has `size`
/// bytes or more to encrypt, else right here. The cipher travels with it and comes back.
async fn with_cipher<T: Send + 'static>(
    cipher: &mut FrameCipher,
    size: usize,
    work: impl FnOnce(&mut FrameCipher) -> T + Send + 'static,
) -> T {
    if size <= BLOCKING_FRAME {
        return work(cipher);
    }
    let mut away = std::mem::replace(cipher, FrameCipher::new([0; 32]));
    let (back, out) = runtime::blocking(move || {
        let out = work(&mut away);
        (away, out)
    })
    .await;
    *cipher = back;
    out
}

async fn send_handshake<S>(ws: &mut WebSocketStream<S>, msg: &Handshake) -> Result<(), LinkError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    ws.send(WsMessage::binary(encode(msg))).await?;
    Ok(())
}

async fn recv_handshake<S>(ws: &mut WebSocketStream<S>) -> Result<Handshake, LinkError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let bytes = runtime::timeout(HANDSHAKE_TIMEOUT, next_binary(ws)).await.ok_or(LinkError::Timeout)??;
    Ok(decode(&bytes)?)
}

fn random32() -> [u8; 32] {
    let mut b = [0u8; 32];
    getrandom::fill(&mut b).expect("the OS random source works");
    b
}

struct Transcript {
    client: [u8; 16],
    server: [u8; 16],
    nonce_c: [u8; 32],
    nonce_s: [u8; 32],
}

impl Transcript {
    fn mac(&self, key: &[u8; 32], label: &[u8]) -> [u8; 32] {
        peer_mac(key, &[label, &self.client, &self.server, &self.nonce_c, &self.nonce_s])
    }

    /// (client→server, server→client) frame keys.
    fn link_keys(&self, key: &[u8; 32]) -> ([u8; 32], [u8; 32]) {
        (self.mac(key, b"frames client to server"), self.mac(key, b"frames server to client"))
    }
}

pub async fn client_handshake<S>(
    ws: &mut WebSocketStream<S>,
    keys: &Keys,
    me: NodeId,
    my_url: &str,
) -> Result<Authenticated, LinkError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let nonce_c = random32();
    let hello = Handshake::Hello {
        version: PROTOCOL_VERSION,
        node: *me.as_bytes(),
        nonce: nonce_c,
        url: my_url.into(),
    };
    send_handshake(ws, &hello).await?;
    let (server, nonce_s) = match recv_handshake(ws).await? {
        Handshake::Challenge { version, .. } if version != PROTOCOL_VERSION => {
            return Err(LinkError::Version(version));
        }
        Handshake::Challenge { node, nonce, .. } => (node, nonce),
        Handshake::Refused { reason } => return Err(LinkError::Refused(reason)),
        _ => return Err(LinkError::Unexpected),
    };
    if server == *me.as_bytes() {
        return Err(LinkError::SelfLink);
    }
    let t = Transcript { client: *me.as_bytes(), server, nonce_c, nonce_s };
    send_handshake(ws, &Handshake::Proof { mac: t.mac(&keys.peer, b"client") }).await?;
    match recv_handshake(ws).await? {
        Handshake::Proof { mac } if macs_equal(&mac, &t.mac(&keys.peer, b"server")) => {}
        Handshake::Proof { .. } => return Err(LinkError::BadProof),
        Handshake::Refused { reason } => return Err(LinkError::Refused(reason)),
        _ => return Err(LinkError::Unexpected),
    }
    let (c2s, s2c) = t.link_keys(&keys.peer);
    Ok(Authenticated {
        peer: NodeId::from_bytes(server),
        peer_url: String::new(),
        send: FrameCipher::new(c2s),
        recv: FrameCipher::new(s2c),
    })
}

pub async fn server_handshake<S>(
    ws: &mut WebSocketStream<S>,
    keys: &Keys,
    me: NodeId,
) -> Result<Authenticated, LinkError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let (client, nonce_c, url) = match recv_handshake(ws).await? {
        Handshake::Hello { version, .. } if version != PROTOCOL_VERSION => {
            let reason =
                format!("protocol version {version} is not supported (this node speaks {PROTOCOL_VERSION})");
            let _ = send_handshake(ws, &Handshake::Refused { reason }).await;
            return Err(LinkError::Version(version));
        }
        Handshake::Hello { node, nonce, url, .. } => (node, nonce, url),
        _ => return Err(LinkError::Unexpected),
    };
    let nonce_s = random32();
    send_handshake(
        ws,
        &Handshake::Challenge { version: PROTOCOL_VERSION, node: *me.as_bytes(), nonce: nonce_s },
    )
    .await?;
    let t = Transcript { client, server: *me.as_bytes(), nonce_c, nonce_s };
    match recv_handshake(ws).await? {
        Handshake::Proof { mac } if macs_equal(&mac, &t.mac(&keys.peer, b"client")) => {}
        Handshake::Proof { .. } => {
            let _ = send_handshake(ws, &Handshake::Refused { reason: "authentication failed".into() }).await;
            return Err(LinkError::BadProof);
        }
        _ => return Err(LinkError::Unexpected),
    }
    send_handshake(ws, &Handshake::Proof { mac: t.mac(&keys.peer, b"server") }).await?;
    let (c2s, s2c) = t.link_keys(&keys.peer);
    Ok(Authenticated {
        peer: NodeId::from_bytes(client),
        peer_url: url,
        send: FrameCipher::new(s2c),
        recv: FrameCipher::new(c2s),
    })
}

pub struct FrameWriter<S> {
    sink: WebSocketSender<S>,
    cipher: FrameCipher,
}

pub struct FrameReader<S> {
    stream: WebSocketReceiver<S>,
    cipher: FrameCipher,
}

/// Splits an authenticated socket into its sealed halves.
pub fn split<S>(ws: WebSocketStream<S>, auth: Authenticated) -> (FrameWriter<S>, FrameReader<S>)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let (sink, stream) = ws.split();
    (FrameWriter { sink, cipher: auth.send }, FrameReader { stream, cipher: auth.recv })
}

/// Messages queued for one link's writer, in two lanes: heartbeats go ahead of bulk data, so a
/// ping never waits behind megabytes of chunks (which made a busy link look dead).
#[derive(Clone)]
pub struct Outbox {
    control: async_channel::Sender<Message>,
    bulk: async_channel::Sender<Message>,
}

pub struct OutboxQueue {
    control: async_channel::Receiver<Message>,
    bulk: async_channel::Receiver<Message>,
}

/// An outbox holding up to `bulk` queued bulk messages.
pub fn outbox(bulk: usize) -> (Outbox, OutboxQueue) {
    let (control_tx, control_rx) = async_channel::bounded(16);
    let (bulk_tx, bulk_rx) = async_channel::bounded(bulk);
    (Outbox { control: control_tx, bulk: bulk_tx }, OutboxQueue { control: control_rx, bulk: bulk_rx })
}

impl Outbox {
    /// Queues a message in its lane; fails once the link's writer has stopped.
    pub async fn send(&self, msg: Message) -> Result<(), LinkError> {
        let lane = if msg.is_control() { &self.control } else { &self.bulk };
        lane.send(msg).await.map_err(|_| LinkError::Closed)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> FrameWriter<S> {
    /// Sends what the outbox queues, control messages first, until it closes or a send fails.
    pub async fn drain(&mut self, queue: OutboxQueue) -> LinkError {
        loop {
            let next = match queue.control.try_recv() {
                Ok(msg) => Ok(msg),
                Err(_) => futures_lite::future::or(queue.control.recv(), queue.bulk.recv()).await,
            };
            let Ok(msg) = next else { return LinkError::Closed };
            if let Err(e) = self.send(msg).await {
                return e;
            }
        }
    }

    /// Sends a message and its attachments as one unit: the link's one writer owns the sink,
    /// so nothing interleaves.
    pub async fn send(&mut self, mut msg: Message) -> Result<(), LinkError> {
        let attachments = msg.take_attachments();
        // Encoded straight after room for the frame header, sealed in place: the payload is
        // written once here, with no copy before the socket's.
        let mut frame = postcard::to_extend(&msg, vec![0u8; FrameCipher::HEADER])
            .map_err(|e| LinkError::WebSocket(e.to_string()))?;
        let frame = with_cipher(&mut self.cipher, frame.len(), move |c| {
            c.seal_in_place(&mut frame);
            frame
        })
        .await;
        self.sink.feed(WsMessage::binary(frame)).await?;
        for bytes in attachments {
            self.sink.feed(WsMessage::binary(bytes)).await?;
        }
        self.sink.flush().await?;
        Ok(())
    }

    pub async fn close(&mut self) {
        let _ = self.sink.close(None).await;
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> FrameReader<S> {
    /// The next message, with its attachments. Any bad frame ends the link: the sequence can't
    /// be trusted after it. Not cancel-safe (the cipher is away while a large frame opens): a
    /// caller that gives up on it must drop the link.
    pub async fn recv(&mut self) -> Result<Message, LinkError> {
        let frame = next_binary(&mut self.stream).await?;
        // Large frames (name batches) are opened and decoded off the executor.
        let mut msg =
            with_cipher(&mut self.cipher, frame.len(), move |c| open_frame(c, frame.into())).await?;
        let count = msg.attachment_count();
        if count > MAX_ATTACHMENTS {
            return Err(DecodeError::new(format!("{count} attachments, at most {MAX_ATTACHMENTS}")).into());
        }
        let mut attachments = Vec::with_capacity(count);
        for _ in 0..count {
            let bytes = next_binary(&mut self.stream).await?;
            if bytes.len() > MAX_ATTACHMENT {
                return Err(DecodeError::new(format!("a {} byte attachment", bytes.len())).into());
            }
            attachments.push(bytes);
        }
        msg.put_attachments(attachments)?;
        Ok(msg)
    }
}

/// Opens and decodes a frame.
fn open_frame(cipher: &mut FrameCipher, mut frame: Vec<u8>) -> Result<Message, LinkError> {
    let body = cipher.open(&mut frame)?;
    Ok(decode(&frame[body])?)
}
