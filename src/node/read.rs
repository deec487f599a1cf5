//! The read path: chunks fetched, decrypted and verified on blocking threads, a few ahead
//! of the one being sent, into a bounded queue the HTTP body drains.
//!
//! A download that answered `200` is served to its end from the bytes it began with: its
//! chunks are pinned here and on every live peer for as long as it runs (a delete or overwrite
//! of its file meanwhile collects nothing it needs), and a chunk whose holder goes away is
//! fetched from another, retrying for a bounded time before the body is cut.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures_util::{AsyncBufRead, AsyncRead, StreamExt, TryStreamExt, stream};

use super::{NodeError, Result};
use crate::cluster::{Cluster, ClusterError, RemoteLease};
use crate::content::{ChunkId, ChunkRef, Manifest};
use crate::crypto::Keys;
use crate::runtime;
use crate::storage::{PinSet, StorageError, Store};

/// How long a download in progress keeps trying to reach some holder of its next chunk
/// (peers reconnecting, a restarted holder coming back) before it gives up and is cut.
const FAILOVER: Duration = Duration::from_secs(30);
const RETRY_EVERY: Duration = Duration::from_millis(250);

/// Chunks decrypted ahead of the reader: enough to keep both cores busy (4 read 1 GiB in
/// 1.2 s here where 2 took 1.4 s), few enough to bound
/// memory at a few MiB per download.
const READ_AHEAD: usize = 4;

type Piece = io::Result<bytes::Bytes>;

/// The verified pieces of a read, in order: a stream of byte buffers, `Send + Sync`.
pub type Pieces = async_channel::Receiver<Piece>;

/// A verified byte stream (`AsyncBufRead`), `Sync` as the HTTP layer needs.
pub struct ByteStream(stream::IntoAsyncRead<Pin<Box<Pieces>>>);

impl From<Pieces> for ByteStream {
    fn from(pieces: Pieces) -> Self {
        ByteStream(Box::pin(pieces).into_async_read())
    }
}

impl AsyncRead for ByteStream {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncBufRead for ByteStream {
    fn poll_fill_buf(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<&[u8]>> {
        Pin::new(&mut self.get_mut().0).poll_fill_buf(cx)
    }

    fn consume(mut self: Pin<&mut Self>, amt: usize) {
        Pin::new(&mut self.0).consume(amt)
    }
}

/// Reads, decrypts and verifies one local chunk; `None` when this node does not hold it.
/// Blocking.
fn fetch_local(store: &Store, keys: &Keys, chunk: &ChunkRef) -> Result<Option<Vec<u8>>> {
    let expected = chunk.len as usize + crate::crypto::TAG_LEN;
    let Some(sealed) = store.chunk_sized_blocking(chunk.id, expected)? else { return Ok(None) };
    let plain = keys
        .open_chunk(&chunk.id, sealed)
        .map_err(|source| NodeError::Integrity { chunk: chunk.id, source })?;
    Ok(Some(plain))
}

/// One chunk's plaintext: from this node, else from its holders in the cluster. Until
/// `deadline`, a chunk no reachable node holds is looked for again (a holder may be coming
/// back); a node that has not yet heard from its members waits for them first.
async fn fetch(
    store: Store,
    keys: Keys,
    cluster: Arc<Cluster>,
    chunk: ChunkRef,
    deadline: Instant,
) -> Result<Vec<u8>> {
    let id = chunk.id;
    let plain = loop {
        let local = {
            let (chunk, store, keys) = (chunk.clone(), store.clone(), keys.clone());
            runtime::blocking(move || fetch_local(&store, &keys, &chunk)).await?
        };
        let missing = match local {
            Some(plain) => break plain,
            None if cluster.peers_up() > 0 => match cluster.fetch_chunk(id).await {
                Ok((plain, _)) => break plain,
                Err(e) => e.into(),
            },
            // In a cluster, the holders are out of reach; alone, the store lost it.
            None if cluster.has_members() => NodeError::from(ClusterError::ChunkUnavailable(id)),
            None => NodeError::from(StorageError::MissingChunk(id)),
        };
        if !cluster.settled() {
            cluster.wait_settled().await;
        } else if Instant::now() < deadline && cluster.has_members() {
            runtime::sleep(RETRY_EVERY).await;
        } else {
            return Err(missing);
        }
    };
    if plain.len() != chunk.len as usize {
        return Err(StorageError::Corrupt(format!("chunk {id} has the wrong length")).into());
    }
    Ok(plain)
}

/// Chunks held for a transfer: pinned here and, by lease, on every live peer, until dropped.
pub(super) struct Held {
    pub(super) pins: PinSet,
    pub(super) lease: Option<RemoteLease>,
}

/// Pins `ids` here and on every live peer, then checks that each is held somewhere. What is
/// held now stays held until the returned pins drop. `Err` names a chunk no node holds.
pub(super) async fn hold(
    store: &Store,
    cluster: &Arc<Cluster>,
    ids: &[ChunkId],
) -> Result<Result<Held, ChunkId>> {
    let mut pins = store.pins();
    pins.pin_all(ids);
    let (lease, on_peers) = if cluster.peers_up() > 0 {
        let (lease, on_peers) = cluster.pin_for_read(ids).await;
        (Some(lease), on_peers)
    } else {
        (None, vec![false; ids.len()])
    };
    let here = store.have_chunks(ids.to_vec()).await?;
    let lost = ids.iter().zip(here.iter().zip(&on_peers)).find(|(_, (h, p))| !**h && !**p);
    Ok(match lost {
        Some((id, _)) => Err(*id),
        None => Ok(Held { pins, lease }),
    })
}

pub(super) async fn open(
    store: Store,
    keys: Keys,
    cluster: Arc<Cluster>,
    manifest: &Manifest,
    start: u64,
    end: u64,
) -> Result<Pieces> {
    if !cluster.settled() {
        cluster.wait_settled().await;
    }
    // Each piece: the chunk and the part of it inside the range.
    let plan: Vec<(ChunkRef, usize, usize)> = manifest
        .chunks_in(start, end)
        .map(|(at, c)| {
            let from = start.saturating_sub(at) as usize;
            let to = (end - at).min(u64::from(c.len)) as usize;
            (c.clone(), from, to)
        })
        .collect();
    let (tx, rx) = async_channel::bounded::<Piece>(READ_AHEAD);
    if let [(chunk, from, to)] = plan.as_slice() {
        // One piece (most small files), read whole before answering: no read-ahead task to
        // start and nothing to pin. Only a brief retry: the client is still waiting for a status.
        let plain = fetch(store, keys, cluster, chunk.clone(), Instant::now()).await?;
        tx.try_send(Ok(bytes::Bytes::from(plain).slice(*from..*to))).expect("a new queue has room");
        return Ok(rx);
    }
    // Pinned here and on every peer before anything is read.
    let mut ids: Vec<ChunkId> = plan.iter().map(|(c, _, _)| c.id).collect();
    ids.sort_unstable();
    ids.dedup();
    let held = match hold(&store, &cluster, &ids).await? {
        Ok(held) => held,
        Err(lost) if cluster.has_members() => return Err(ClusterError::ChunkUnavailable(lost).into()),
        Err(lost) => return Err(StorageError::MissingChunk(lost).into()),
    };
    let mut pieces = stream::iter(plan)
        .map(move |(chunk, from, to)| {
            let (store, keys, cluster) = (store.clone(), keys.clone(), cluster.clone());
            async move {
                let plain = fetch(store, keys, cluster, chunk, Instant::now() + FAILOVER).await?;
                Ok::<_, NodeError>(bytes::Bytes::from(plain).slice(from..to))
            }
        })
        .buffered(READ_AHEAD);
    // The first piece is read here so that a broken start is an error status, not a cut body.
    if let Some(first) = pieces.next().await {
        tx.try_send(Ok(first?)).expect("a new queue has room");
    }
    runtime::spawn(async move {
        // Held until the download ends, however it ends.
        let _held = held;
        while let Some(piece) = pieces.next().await {
            let piece = piece.map_err(|e| {
                log::error!("download cut after retrying for {FAILOVER:?}: {e}");
                io::Error::other(e.to_string())
            });
            let failed = piece.is_err();
            // The reader went away (client disconnected): stop reading.
            if tx.send(piece).await.is_err() || failed {
                break;
            }
        }
    });
    Ok(rx)
}
