//! The upload pipeline.
//!
//! The request task only puts body bytes into 1 MiB blocks (a native PUT reads the socket
//! straight into them, and reuses blocks the cutter is done with). Two blocking workers run
//! beside it: one hashes the whole stream (the file id), the other cuts chunks, hashes and
//! seals them and hands them on: to the storage writer on a single node, or to the cluster,
//! which stores each on its R holders. Queues between the stages are bounded, so memory stays
//! a few blocks per upload whatever the file size. On a single node, small bodies skip the
//! workers and go to the writer in one operation with their manifest.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use bytes::{Bytes, BytesMut};
use sha2::{Digest, Sha256};

use super::drain::InFlight;
use super::{NodeError, Result};
use crate::clock::unix_ms;
use crate::cluster::{self, Cluster};
use crate::content::chunker::{CHUNKER_VERSION, Chunker};
use crate::content::{ChunkId, ChunkRef, FileId, FileName, Manifest};
use crate::crypto::{Keys, TAG_LEN};
use crate::limits::Pass;
use crate::runtime::{self, JoinHandle};
use crate::storage::{Expect, NameRecord, PinSet, StorageError, Store};

const BLOCK: usize = 1024 * 1024;
/// Below this, hashing and sealing cost less than handing off to a thread.
const INLINE_MAX: usize = 64 * 1024;
const STAGE_QUEUE: usize = 4;
/// Blocks kept for reuse per upload: enough that the reader finds one waiting while the
/// chunker keeps up, few enough to add little to an upload's memory.
const RECYCLED: usize = 2;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PutOutcome {
    pub id: FileId,
    pub size: u64,
    pub chunks: usize,
    /// Stored bytes this upload added (chunks that were not stored before; the rest deduplicated).
    pub new_bytes: u64,
}

/// Content fully received, its chunks stored or queued, not yet named.
pub struct Staged {
    pub manifest: Manifest,
    /// MD5 of the bytes, when the upload was asked for it (S3 ETags).
    pub md5: Option<[u8; 16]>,
    new_bytes: u64,
    /// Small content rides along with the commit instead of going to the writer first.
    inline: Vec<(ChunkId, Vec<u8>)>,
    /// Whether every chunk went to this node's store (else the cluster confirmed its holders).
    local: bool,
    /// Keeps the chunks from the collector until the commit names them.
    _pins: Option<PinSet>,
    /// In a cluster, the holders' pins: kept until the manifest is committed and announced.
    pub(super) placed: Option<cluster::Placed>,
    /// The upload's place among those in flight, until it is named.
    _pass: Option<Pass>,
    /// Keeps a shutdown waiting until the commit is done.
    in_flight: Option<InFlight>,
}

impl Staged {
    /// Content already stored, to be named again; `pins` keep its chunks here meanwhile.
    /// `local`: a single node, where the commit checks every chunk is here.
    pub(super) fn existing(manifest: Manifest, local: bool, pins: PinSet) -> Self {
        Staged {
            manifest,
            md5: None,
            new_bytes: 0,
            inline: Vec::new(),
            local,
            _pins: Some(pins),
            placed: None,
            _pass: None,
            in_flight: None,
        }
    }

    pub(super) async fn commit(
        self,
        store: &Store,
        name: FileName,
        record: NameRecord,
        expect: Expect,
    ) -> Result<PutOutcome> {
        let outcome = PutOutcome {
            id: self.manifest.id,
            size: self.manifest.size,
            chunks: self.manifest.chunks.len(),
            new_bytes: self.new_bytes,
        };
        let committed =
            store.commit_file(self.manifest, name, record, self.inline, self.local, expect).await?;
        Ok(PutOutcome { new_bytes: outcome.new_bytes + committed.new_bytes, ..outcome })
    }
}

/// Where sealed chunks go.
#[derive(Clone)]
enum Sink {
    Local,
    /// To the cluster's replicator task.
    Cluster(async_channel::Sender<(ChunkId, Bytes)>),
}

struct Workers {
    hash_tx: async_channel::Sender<Bytes>,
    chunk_tx: async_channel::Sender<Bytes>,
    /// Blocks the chunker is done with, to be read into again (see [`Upload::next_block`]).
    recycled: async_channel::Receiver<Bytes>,
    hasher: runtime::Thread<(FileId, Option<[u8; 16]>)>,
    chunker: runtime::Thread<Result<Chunked>>,
    replicator: Option<JoinHandle<Result<(u64, cluster::Placed), cluster::ClusterError>>>,
}

/// What the chunking worker produced.
struct Chunked {
    chunks: Vec<ChunkRef>,
    new_bytes: u64,
    pins: PinSet,
}

pub struct Upload {
    store: Store,
    keys: Keys,
    /// Set when peers are up: chunks then go to their holders across the cluster.
    cluster: Option<Arc<Cluster>>,
    limit: u64,
    size: u64,
    block: BytesMut,
    workers: Option<Workers>,
    /// Whether to compute the MD5 of the bytes too (set before the first write).
    md5: bool,
    /// This upload's place among those in flight (`--max-uploads`), held until it is named.
    pass: Option<Pass>,
    /// Keeps a shutdown waiting for this upload (see `drain`).
    in_flight: Option<InFlight>,
}

impl Upload {
    pub(super) fn new(
        store: Store,
        keys: Keys,
        cluster: Option<Arc<Cluster>>,
        limit: u64,
        pass: Pass,
    ) -> Self {
        Self {
            pass: Some(pass),
            store,
            keys,
            cluster,
            limit,
            size: 0,
            block: BytesMut::with_capacity(BLOCK),
            workers: None,
            md5: false,
            in_flight: None,
        }
    }

    /// Makes a shutdown wait for this upload, up to its grace.
    pub(super) fn in_flight(mut self, mark: InFlight) -> Self {
        self.in_flight = Some(mark);
        self
    }

    /// Also computes the MD5 of the bytes (S3 ETags), beside the SHA-256, on the hashing thread.
    pub fn with_md5(mut self) -> Self {
        self.md5 = true;
        self
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    /// Reads a whole body straight into the upload's blocks, so its bytes are copied once
    /// (by the socket read) before the workers see them: reading into a buffer of its own and
    /// then [`Upload::write`] copied every byte again, 4 % of a large PUT's CPU. A block is
    /// zeroed when made (safe code cannot read into uninitialised memory), which costs less
    /// than that copy: zeroing only writes. `expected` (the declared length) sizes a small
    /// body's block to the body, so a 4 KiB PUT does not zero a megabyte. Fails once the total
    /// passes the limit.
    pub async fn read_from(
        &mut self,
        mut body: impl futures_util::AsyncRead + Unpin,
        expected: Option<u64>,
    ) -> Result<()> {
        use futures_util::AsyncReadExt;
        // What is left of the body, plus one byte for the read that sees its end (a body that
        // filled its block exactly would otherwise be dispatched to the workers).
        let block_for = |size: u64| {
            expected.map_or(BLOCK, |e| (e.saturating_sub(size).saturating_add(1)).min(BLOCK as u64) as usize)
        };
        // `self.block` is the filled part, `spare` the zeroed rest of the same allocation.
        let mut spare = if self.block.is_empty() {
            self.block = self.next_block(block_for(self.size));
            self.block.split_off(0)
        } else {
            BytesMut::zeroed(BLOCK.saturating_sub(self.block.len()).max(1))
        };
        loop {
            if spare.is_empty() {
                let next = self.next_block(block_for(self.size));
                let block = std::mem::replace(&mut self.block, next);
                spare = self.block.split_off(0);
                self.dispatch(block.freeze()).await?;
            }
            let n = body.read(&mut spare).await.map_err(NodeError::Body)?;
            if n == 0 {
                return Ok(());
            }
            self.size += n as u64;
            if self.size > self.limit {
                return Err(NodeError::TooLarge { limit: self.limit });
            }
            // The read bytes join the filled part: one allocation, so no bytes move.
            self.block.unsplit(spare.split_to(n));
        }
    }

    /// A block of `len` bytes to read into: a whole one the workers are done with when there is
    /// one (its old bytes are overwritten before anything sees them), else a new zeroed one.
    /// Reuse keeps a large upload from zeroing every block, which cost what the copy it
    /// replaced did.
    fn next_block(&mut self, len: usize) -> BytesMut {
        if len == BLOCK
            && let Some(workers) = &self.workers
        {
            // A block the hasher still holds is not ours to write: it is dropped instead.
            while let Ok(block) = workers.recycled.try_recv() {
                if let Ok(block) = block.try_into_mut()
                    && block.len() == BLOCK
                {
                    return block;
                }
            }
        }
        BytesMut::zeroed(len)
    }

    /// Adds body bytes. Fails once the total passes the limit.
    pub async fn write(&mut self, mut data: &[u8]) -> Result<()> {
        self.size += data.len() as u64;
        if self.size > self.limit {
            return Err(NodeError::TooLarge { limit: self.limit });
        }
        while !data.is_empty() {
            let take = (BLOCK - self.block.len()).min(data.len());
            self.block.extend_from_slice(&data[..take]);
            data = &data[take..];
            if self.block.len() == BLOCK {
                let block = std::mem::replace(&mut self.block, BytesMut::with_capacity(BLOCK)).freeze();
                self.dispatch(block).await?;
            }
        }
        Ok(())
    }

    fn workers(&mut self) -> Result<&mut Workers> {
        if self.workers.is_none() {
            let (store, keys, cluster) = (self.store.clone(), self.keys.clone(), self.cluster.clone());
            self.workers = Some(start_workers(store, keys, cluster, self.md5)?);
        }
        Ok(self.workers.as_mut().expect("started above"))
    }

    async fn dispatch(&mut self, block: Bytes) -> Result<()> {
        let workers = self.workers()?;
        // A send fails only when a worker stopped early; its result says why.
        if workers.hash_tx.send(block.clone()).await.is_err() || workers.chunk_tx.send(block).await.is_err() {
            let workers = self.workers.take().expect("workers were just started");
            drop((workers.hash_tx, workers.chunk_tx));
            // The replicator first: when it failed (a peer's error), the chunker stopped only
            // because it could no longer hand chunks on.
            if let Some(replicator) = workers.replicator {
                replicator.await?;
            }
            workers.chunker.join().await?;
            return Err(StorageError::WriterGone.into());
        }
        Ok(())
    }

    /// Ends the body: every chunk is stored or queued (or, in a cluster, durable on its
    /// holders), and the manifest is ready.
    pub async fn finish(mut self) -> Result<Staged> {
        let in_flight = self.in_flight.take();
        let pass = self.pass.take();
        let tail = std::mem::take(&mut self.block).freeze();
        let (size, want_md5) = (self.size, self.md5);
        let md5_of = move |data: &[u8]| want_md5.then(|| md5::Md5::digest(data).into());
        let mut staged = self.stage(tail, size, md5_of).await?;
        staged._pass = pass;
        staged.in_flight = in_flight;
        Ok(staged)
    }

    async fn stage(
        &mut self,
        tail: Bytes,
        size: u64,
        md5_of: impl Fn(&[u8]) -> Option<[u8; 16]> + Send + 'static,
    ) -> Result<Staged> {
        match self.workers.take() {
            None if self.cluster.is_none() && tail.len() <= INLINE_MAX => {
                Ok(Staged { md5: md5_of(&tail), ..stage_inline(&self.keys, &tail) })
            }
            None if self.cluster.is_none() => {
                let (store, keys) = (self.store.clone(), self.keys.clone());
                runtime::blocking(move || {
                    let id = FileId::from_bytes(Sha256::digest(&tail).into());
                    let md5 = md5_of(&tail);
                    let chunked = chunk_blocks(&store, &keys, &Sink::Local, std::iter::once(tail), drop)?;
                    Ok(staged((id, md5), size, chunked, 0, true))
                })
                .await
            }
            existing => {
                self.workers = existing;
                if !tail.is_empty() || self.workers.is_none() {
                    let workers = self.workers()?;
                    let _ = workers.hash_tx.send(tail.clone()).await;
                    let _ = workers.chunk_tx.send(tail).await;
                }
                let workers = self.workers.take().expect("workers started above");
                drop((workers.hash_tx, workers.chunk_tx));
                let chunked = workers.chunker.join().await;
                let id = workers.hasher.join().await;
                match workers.replicator {
                    Some(replicator) => {
                        // The replicator's error (no holders reachable) explains a chunker stop.
                        let (remote_new, placed) = replicator.await?;
                        let mut staged = staged(id, size, chunked?, remote_new, false);
                        staged.placed = Some(placed);
                        Ok(staged)
                    }
                    None => Ok(staged(id, size, chunked?, 0, true)),
                }
            }
        }
    }
}

fn staged(
    (id, md5): (FileId, Option<[u8; 16]>),
    size: u64,
    chunked: Chunked,
    extra_new: u64,
    local: bool,
) -> Staged {
    let manifest =
        Manifest { id, size, chunker: CHUNKER_VERSION, chunks: chunked.chunks, created_ms: unix_ms() };
    Staged {
        manifest,
        md5,
        new_bytes: chunked.new_bytes + extra_new,
        inline: Vec::new(),
        local,
        _pins: Some(chunked.pins),
        placed: None,
        _pass: None,
        in_flight: None,
    }
}

/// Content small enough to fit one chunk, hashed and sealed right here.
fn stage_inline(keys: &Keys, data: &[u8]) -> Staged {
    let id = FileId::from_bytes(Sha256::digest(data).into());
    let mut chunks = Vec::new();
    let mut inline = Vec::new();
    if !data.is_empty() {
        let chunk = ChunkId::of(data);
        chunks.push(ChunkRef { id: chunk, len: data.len() as u32 });
        inline.push((chunk, keys.seal_chunk(&chunk, data)));
    }
    let manifest =
        Manifest { id, size: data.len() as u64, chunker: CHUNKER_VERSION, chunks, created_ms: unix_ms() };
    // The writer stores the chunk with the commit and counts it if it was new.
    Staged {
        manifest,
        md5: None,
        new_bytes: 0,
        inline,
        local: true,
        _pins: None,
        placed: None,
        in_flight: None,
        _pass: None,
    }
}

fn start_workers(store: Store, keys: Keys, cluster: Option<Arc<Cluster>>, want_md5: bool) -> Result<Workers> {
    let (hash_tx, hash_rx) = async_channel::bounded::<Bytes>(STAGE_QUEUE);
    let (chunk_tx, chunk_rx) = async_channel::bounded::<Bytes>(STAGE_QUEUE);
    let (recycle_tx, recycled) = async_channel::bounded::<Bytes>(RECYCLED);
    // Threads of the upload's own, not the shared blocking pool: a stalled upload keeps its
    // threads waiting on its queues, and reads must never wait behind them. `--max-uploads`
    // bounds how many there are.
    let spawn_failed = |e: std::io::Error| NodeError::Busy(format!("could not start an upload thread: {e}"));
    let hasher = runtime::thread("upload-hash", move || {
        let mut hasher = Sha256::new();
        let mut md5 = want_md5.then(md5::Md5::new);
        while let Ok(block) = hash_rx.recv_blocking() {
            hasher.update(&block);
            if let Some(md5) = &mut md5 {
                md5.update(&block);
            }
        }
        (FileId::from_bytes(hasher.finalize().into()), md5.map(|m| m.finalize().into()))
    })
    .map_err(spawn_failed)?;
    let (sink, replicator) = match cluster {
        Some(cluster) => {
            // Room for a whole request's worth, so groups leave full.
            let (tx, rx) = async_channel::bounded(cluster::CHUNKS_PER_REQUEST);
            (Sink::Cluster(tx), Some(runtime::spawn(cluster::store_all(cluster, rx))))
        }
        None => (Sink::Local, None),
    };
    let chunker = runtime::thread("upload-cut", move || {
        let blocks = std::iter::from_fn(|| chunk_rx.recv_blocking().ok());
        // Handed back when there is room; a full queue means the reader has blocks enough.
        chunk_blocks(&store, &keys, &sink, blocks, |block| drop(recycle_tx.try_send(block)))
    })
    .map_err(spawn_failed)?;
    Ok(Workers { hash_tx, chunk_tx, recycled, hasher, chunker, replicator })
}

/// Threads hashing and sealing chunks beside the one cutting them: sealing costs about twice
/// what hashing does, and would otherwise cap an upload at one core.
const SEALERS: usize = 2;

/// Cuts chunks and has them hashed, sealed and handed on by [`SEALERS`] threads; each block
/// goes to `done` once cut (the chunks are copies). Blocking.
fn chunk_blocks(
    store: &Store,
    keys: &Keys,
    sink: &Sink,
    blocks: impl Iterator<Item = Bytes>,
    mut done: impl FnMut(Bytes),
) -> Result<Chunked> {
    let (seal_tx, seal_rx) = async_channel::bounded::<(usize, Vec<u8>)>(STAGE_QUEUE);
    let seen = &Mutex::new(HashSet::new());
    std::thread::scope(|scope| {
        let sealers: Vec<_> = (0..SEALERS)
            .map(|_| {
                let seal_rx = seal_rx.clone();
                scope.spawn(move || seal_chunks(store, keys, sink, &seal_rx, seen))
            })
            .collect();
        drop(seal_rx);
        let mut count = 0;
        let mut cut = |chunk: &[u8]| -> Result<()> {
            // The chunk's one copy, with room for the tag: it is sealed where it lies.
            let mut owned = Vec::with_capacity(chunk.len() + TAG_LEN);
            owned.extend_from_slice(chunk);
            // Fails only when every sealer stopped: stop cutting; their results say why.
            seal_tx.send_blocking((count, owned)).map_err(|_| StorageError::WriterGone)?;
            count += 1;
            Ok(())
        };
        let mut chunker = Chunker::new();
        let fed =
            blocks.into_iter().try_for_each(|block| chunker.push(&block, &mut cut).map(|()| done(block)));
        let fed = fed.and_then(|()| chunker.finish(&mut cut));
        drop(seal_tx);
        let mut out = Chunked { chunks: Vec::with_capacity(count), new_bytes: 0, pins: store.pins() };
        let mut numbered = Vec::with_capacity(count);
        for sealer in sealers {
            let sealed =
                sealer.join().map_err(|_| StorageError::Corrupt("a sealing thread panicked".into()))??;
            numbered.extend(sealed.chunks);
            out.new_bytes += sealed.new_bytes;
            out.pins.absorb(sealed.pins);
        }
        fed?;
        numbered.sort_unstable_by_key(|(i, _)| *i);
        if numbered.len() != count {
            return Err(StorageError::WriterGone.into());
        }
        out.chunks = numbered.into_iter().map(|(_, c)| c).collect();
        Ok(out)
    })
}

/// One sealer's share: its chunks (numbered in file order), new bytes and pins.
struct SealedShare {
    chunks: Vec<(usize, ChunkRef)>,
    new_bytes: u64,
    pins: PinSet,
}

fn seal_chunks(
    store: &Store,
    keys: &Keys,
    sink: &Sink,
    rx: &async_channel::Receiver<(usize, Vec<u8>)>,
    seen: &Mutex<HashSet<ChunkId>>,
) -> Result<SealedShare> {
    let mut out = SealedShare { chunks: Vec::new(), new_bytes: 0, pins: store.pins() };
    while let Ok((index, mut chunk)) = rx.recv_blocking() {
        let id = ChunkId::of(&chunk);
        out.chunks.push((index, ChunkRef { id, len: chunk.len() as u32 }));
        // A chunk repeated within the file is sealed, stored and counted once: an earlier
        // copy, pinned by whichever sealer saw it first, is already on its way.
        if !seen.lock().unwrap_or_else(|p| p.into_inner()).insert(id) {
            continue;
        }
        // Pin before looking: a chunk seen as stored must stay stored until the commit. One
        // a collection is removing right now is stored again.
        let kept = out.pins.pin(id);
        match sink {
            Sink::Local => {
                if !kept || !store.has_chunk_blocking(id)? {
                    keys.seal_chunk_in_place(&id, &mut chunk);
                    out.new_bytes += chunk.len() as u64;
                    store.put_chunk_blocking(id, chunk.into())?;
                }
            }
            Sink::Cluster(tx) => {
                keys.seal_chunk_in_place(&id, &mut chunk);
                // The replicator ended early: its result, awaited in `finish`, says why.
                if tx.send_blocking((id, Bytes::from(chunk))).is_err() {
                    return Err(StorageError::WriterGone.into());
                }
            }
        }
    }
    Ok(out)
}
