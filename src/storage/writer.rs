//! The single writer: owns every write transaction.
//!
//! It takes the first queued operation, drains whatever else is queued (up to a byte and
//! count budget), applies them all in one transaction and commits once. A batch holding only
//! chunk writes commits without fsync; any batch that acknowledges something to a client
//! (a file, a delete) commits with fsync, which also makes every earlier batch durable.
//! Each operation checks before it mutates, so one refused operation never spoils its batch.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use redb::{Database, Durability, ReadableTable, Table, WriteTransaction};

use super::records::{ManifestRecordV1, NameRecordV3, StampV1, decode, encode};
use super::{
    CHUNK_INDEX, CHUNK_REFS, CHUNKS, Expect, FILE_REFS, GC_FILES, GcReport, MANIFESTS, META, NAMES, Pins,
    RECEIVED, Result, SEGMENT, StorageError, WriterShared, has_sealed, read_manifest, read_sealed, schema,
};
use crate::clock::unix_ms;
use crate::content::{ChunkId, FileId, Manifest};

const MAX_BATCH_OPS: usize = 512;
const MAX_BATCH_BYTES: usize = 16 * 1024 * 1024;
/// Queue depth: bounds the sealed chunk bytes waiting for the writer.
const QUEUE: usize = 8;

type Reply<T> = async_channel::Sender<Result<T>>;

/// Answer to a file commit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Committed {
    /// False when a newer record of the name already existed and won.
    pub applied: bool,
    /// Sealed bytes of inline chunks that were not stored before.
    pub new_bytes: u64,
}

pub(crate) enum Op {
    PutChunk {
        id: ChunkId,
        sealed: bytes::Bytes,
    },
    /// `inline` chunks are stored in the same transaction (small files skip `PutChunk`).
    /// `local`: every chunk must be stored here (a single node); in a cluster the upload
    /// confirmed them on their holders instead.
    CommitFile {
        manifest: Manifest,
        name: String,
        record: Box<NameRecordV3>,
        inline: Vec<(ChunkId, Vec<u8>)>,
        local: bool,
        expect: Expect,
        reply: Reply<Committed>,
    },
    Delete {
        name: String,
        stamp: StampV1,
        expect: Expect,
        reply: Reply<bool>,
    },
    Relink {
        relink: Box<Relink>,
        reply: Reply<()>,
    },
    Collect {
        reply: Reply<GcReport>,
    },
    /// Chunks from a peer or from repair, acknowledged once fsynced.
    PutChunksDurable {
        chunks: Vec<(ChunkId, bytes::Bytes)>,
        reply: Reply<()>,
    },
    /// Name records from peers, last writer wins; manifests ride along with live records.
    ApplyNames {
        updates: Vec<(String, NameRecordV3, Option<Manifest>)>,
        reply: Reply<Vec<bool>>,
    },
    /// A chunk from a peer, ahead of its manifest (the peer's pins keep it meanwhile).
    PutReceived {
        chunks: Vec<(ChunkId, bytes::Bytes)>,
    },
    /// Answered once everything queued before it is durable: which of `ids` are stored. Those
    /// are recorded as confirmed, awaiting their manifest (see `RECEIVED`).
    Confirm {
        ids: Vec<ChunkId>,
        reply: Reply<Vec<bool>>,
    },
    /// Stop after everything queued before it; answered once the writer is done.
    Close {
        reply: Reply<()>,
    },
    /// A small value in the meta table.
    PutMeta {
        key: &'static str,
        value: Vec<u8>,
        reply: Reply<()>,
    },
    /// A local copy that failed verification, dropped only if it still holds the bytes that
    /// failed (`None`: it could not be read whole).
    DropCorrupt {
        id: ChunkId,
        found: Option<Vec<u8>>,
        reply: Reply<bool>,
    },
    /// Local copies this node no longer has to hold (their holders confirmed theirs).
    DropChunks {
        ids: Vec<ChunkId>,
        reply: Reply<u64>,
    },
}

impl Op {
    fn bytes(&self) -> usize {
        match self {
            Op::PutChunk { sealed, .. } => sealed.len(),
            Op::CommitFile { inline, .. } => 256 + inline.iter().map(|(_, s)| s.len()).sum::<usize>(),
            Op::PutChunksDurable { chunks, .. } | Op::PutReceived { chunks } => {
                chunks.iter().map(|(_, s)| s.len()).sum::<usize>()
            }
            _ => 256,
        }
    }

    fn acknowledges(&self) -> bool {
        !matches!(self, Op::PutChunk { .. } | Op::PutReceived { .. })
    }
}

/// A move or copy of one name (see [`super::Store::relink`]).
#[derive(Debug, Clone)]
pub struct Relink {
    pub from: String,
    pub to: String,
    /// What `from` must name still.
    pub file: FileId,
    /// The record `to` gets (the source's, freshly stamped).
    pub record: NameRecordV3,
    /// `Some(stamp)`: a move, `from` gets a tombstone with this stamp.
    pub tombstone: Option<StampV1>,
    pub expect: Expect,
}

/// What an applied operation answers, sent only once its transaction committed.
enum Outcome {
    None,
    Bool(Reply<bool>, Result<bool>),
    Commit(Reply<Committed>, Result<Committed>),
    Unit(Reply<()>, Result<()>),
    Bools(Reply<Vec<bool>>, Result<Vec<bool>>),
    Count(Reply<u64>, Result<u64>),
    Gc(Reply<GcReport>, Result<GcReport>),
}

pub(crate) fn start(
    db: Arc<Database>,
    pins: Arc<Pins>,
    file: std::fs::File,
    shared: Arc<WriterShared>,
) -> async_channel::Sender<Op> {
    let (tx, rx) = async_channel::bounded(QUEUE);
    std::thread::Builder::new()
        .name("storage-writer".into())
        .spawn(move || {
            // Marks the writer gone however the thread ends (a panic included), for /health.
            struct Stopped(Arc<WriterShared>);
            impl Drop for Stopped {
                fn drop(&mut self) {
                    self.0.stopped.store(true, Ordering::SeqCst);
                }
            }
            let _stopped = Stopped(shared.clone());
            run(&db, &pins, &rx, &file, &shared)
        })
        .expect("spawning the storage writer thread");
    tx
}

/// Asks the kernel to start writing the file's dirty pages now, without waiting. A large upload
/// commits its chunks without fsync and fsyncs once at the end; without this, the whole upload
/// would still be in the page cache then, and its disk writes would all happen in that fsync
/// instead of alongside the hashing and sealing.
fn start_writeback(file: &std::fs::File) {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        // SAFETY: a valid descriptor; the call only schedules I/O. Failure only loses the
        // head start, so it is ignored.
        unsafe {
            libc::sync_file_range(file.as_raw_fd(), 0, 0, libc::SYNC_FILE_RANGE_WRITE);
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = file;
}

fn run(
    db: &Database,
    pins: &Pins,
    rx: &async_channel::Receiver<Op>,
    file: &std::fs::File,
    shared: &WriterShared,
) {
    while let Ok(first) = rx.recv_blocking() {
        if let Op::Close { reply } = first {
            let _ = reply.try_send(Ok(()));
            break;
        }
        let mut bytes = first.bytes();
        let mut batch = vec![first];
        let mut closing = None;
        while batch.len() < MAX_BATCH_OPS && bytes < MAX_BATCH_BYTES {
            match rx.try_recv() {
                // Ends the loop once this batch is written.
                Ok(Op::Close { reply }) => {
                    closing = Some(reply);
                    break;
                }
                Ok(op) => {
                    bytes += op.bytes();
                    batch.push(op);
                }
                Err(_) => break,
            }
        }
        let durable = batch.iter().any(Op::acknowledges);
        let grace_ms = shared.received_grace_ms.load(Ordering::SeqCst);
        let result = apply_batch(db, pins, batch, durable, grace_ms);
        // A collection's doomed chunks are removed (or, on failure, kept) for good now.
        pins.clear_doomed();
        match result {
            Ok(outcomes) => outcomes.into_iter().for_each(|o| o.answer(None)),
            Err((e, outcomes)) => {
                log::error!("storage write failed: {e}");
                outcomes.into_iter().for_each(|o| o.answer(Some(&e)));
            }
        }
        if !durable {
            start_writeback(file);
        }
        if let Some(reply) = closing {
            let _ = reply.try_send(Ok(()));
            break;
        }
    }
    log::debug!("storage writer stopped");
}

fn clone_err(e: &StorageError) -> StorageError {
    StorageError::Corrupt(format!("write failed: {e}"))
}

impl Outcome {
    /// Sends the answer, or `failure` when the batch did not commit. A caller that went away
    /// (a client disconnected) no longer needs it.
    fn answer(self, failure: Option<&StorageError>) {
        fn pick<T>(r: Result<T>, failure: Option<&StorageError>) -> Result<T> {
            failure.map_or(r, |e| Err(clone_err(e)))
        }
        match self {
            Outcome::None => {}
            Outcome::Bool(reply, r) => drop(reply.try_send(pick(r, failure))),
            Outcome::Commit(reply, r) => drop(reply.try_send(pick(r, failure))),
            Outcome::Unit(reply, r) => drop(reply.try_send(pick(r, failure))),
            Outcome::Bools(reply, r) => drop(reply.try_send(pick(r, failure))),
            Outcome::Count(reply, r) => drop(reply.try_send(pick(r, failure))),
            Outcome::Gc(reply, r) => drop(reply.try_send(pick(r, failure))),
        }
    }
}

/// `grace_ms`: how long confirmed chunks awaiting their manifest are spared.
fn apply_batch(
    db: &Database,
    pins: &Pins,
    batch: Vec<Op>,
    durable: bool,
    grace_ms: u64,
) -> std::result::Result<Vec<Outcome>, (StorageError, Vec<Outcome>)> {
    let mut outcomes = Vec::with_capacity(batch.len());
    let result = (|| -> Result<()> {
        let mut txn = db.begin_write()?;
        txn.set_durability(if durable { Durability::Immediate } else { Durability::None })?;
        {
            let mut t = Tables::open(&txn)?;
            t.grace_ms = grace_ms;
            for op in batch {
                outcomes.push(t.apply(op, pins)?);
            }
            t.save_stats()?;
        }
        txn.commit()?;
        Ok(())
    })();
    match result {
        Ok(()) => Ok(outcomes),
        Err(e) => Err((e, outcomes)),
    }
}

struct Tables<'t> {
    meta: Table<'t, &'static str, &'static [u8]>,
    names: Table<'t, &'static str, &'static [u8]>,
    manifests: Table<'t, [u8; 32], &'static [u8]>,
    chunks: Table<'t, ([u8; 32], u32), &'static [u8]>,
    chunk_index: Table<'t, [u8; 32], u32>,
    chunk_refs: Table<'t, [u8; 32], u32>,
    file_refs: Table<'t, [u8; 32], u32>,
    gc_files: Table<'t, [u8; 32], ()>,
    received: Table<'t, [u8; 32], u64>,
    stats: super::Stats,
    /// How long confirmed chunks awaiting their manifest are spared (see `RECEIVED`).
    grace_ms: u64,
}

impl<'t> Tables<'t> {
    fn open(txn: &'t WriteTransaction) -> Result<Self> {
        let meta = txn.open_table(META)?;
        let stats = schema::read_stats(&meta)?;
        Ok(Self {
            meta,
            names: txn.open_table(NAMES)?,
            manifests: txn.open_table(MANIFESTS)?,
            chunks: txn.open_table(CHUNKS)?,
            chunk_index: txn.open_table(CHUNK_INDEX)?,
            chunk_refs: txn.open_table(CHUNK_REFS)?,
            file_refs: txn.open_table(FILE_REFS)?,
            gc_files: txn.open_table(GC_FILES)?,
            received: txn.open_table(RECEIVED)?,
            stats,
            grace_ms: 0,
        })
    }

    fn save_stats(&mut self) -> Result<()> {
        schema::write_stats(&mut self.meta, &self.stats)
    }

    /// Applies one operation. An `Err` here is a storage failure that aborts the batch;
    /// a refusal of this operation alone is carried in its outcome.
    fn apply(&mut self, op: Op, pins: &Pins) -> Result<Outcome> {
        Ok(match op {
            // `run` ends the loop at a close; one here has nothing left to do.
            Op::Close { reply } => {
                let _ = reply.try_send(Ok(()));
                Outcome::None
            }
            Op::PutChunk { id, sealed } => {
                self.put_chunk(id, &sealed)?;
                Outcome::None
            }
            Op::PutReceived { chunks } => {
                for (id, sealed) in &chunks {
                    self.put_chunk(*id, sealed)?;
                }
                Outcome::None
            }
            Op::Confirm { ids, reply } => {
                // Recorded whatever else uses the chunk now: that other file may be deleted
                // before this upload's manifest arrives.
                let now = unix_ms();
                let mut present = Vec::with_capacity(ids.len());
                for id in &ids {
                    let here = has_sealed(&self.chunk_index, id)?;
                    if here {
                        self.received.insert(id.as_bytes(), now)?;
                    }
                    present.push(here);
                }
                Outcome::Bools(reply, Ok(present))
            }
            Op::CommitFile { manifest, name, record, inline, local, expect, reply } => {
                // Checked before anything is written, so a refused commit changes nothing.
                if !expect.holds(self.live_file(&name)?) {
                    return Ok(Outcome::Commit(reply, Err(StorageError::PreconditionFailed)));
                }
                let mut new_bytes = 0;
                for (id, sealed) in &inline {
                    new_bytes += self.put_chunk(*id, sealed)?;
                }
                match self.apply_name(&name, *record, Some(&manifest), local) {
                    Err(e @ StorageError::MissingChunk(_)) => Outcome::Commit(reply, Err(e)),
                    other => Outcome::Commit(reply, Ok(Committed { applied: other?, new_bytes })),
                }
            }
            Op::Delete { name, stamp, expect, reply } => {
                if !expect.holds(self.live_file(&name)?) {
                    return Ok(Outcome::Bool(reply, Err(StorageError::PreconditionFailed)));
                }
                let removed = self.delete(&name, stamp)?;
                Outcome::Bool(reply, Ok(removed))
            }
            Op::Relink { relink, reply } => Outcome::Unit(reply, self.relink(*relink)?),
            Op::Collect { reply } => {
                let report = self.collect(pins)?;
                Outcome::Gc(reply, Ok(report))
            }
            Op::PutChunksDurable { chunks, reply } => {
                for (id, sealed) in &chunks {
                    self.put_chunk(*id, sealed)?;
                }
                Outcome::Unit(reply, Ok(()))
            }
            Op::ApplyNames { updates, reply } => {
                let mut applied = Vec::with_capacity(updates.len());
                for (name, record, manifest) in updates {
                    applied.push(match self.apply_name(&name, record, manifest.as_ref(), false) {
                        Err(StorageError::Corrupt(e)) => {
                            log::warn!("refused a name record for {name:?}: {e}");
                            false
                        }
                        other => other?,
                    });
                }
                Outcome::Bools(reply, Ok(applied))
            }
            Op::PutMeta { key, value, reply } => {
                self.meta.insert(key, value.as_slice())?;
                Outcome::Unit(reply, Ok(()))
            }
            Op::DropCorrupt { id, found, reply } => {
                // The copy may have been removed and stored afresh since it was checked.
                let same = match (read_sealed(&self.chunks, &id), found) {
                    (Ok(Some(now)), Some(found)) => now == found,
                    (Err(StorageError::Corrupt(_)), None) => true,
                    _ => false,
                };
                if same {
                    let freed = self.remove_chunk(&id)?;
                    self.stats.stored_bytes = self.stats.stored_bytes.saturating_sub(freed);
                }
                Outcome::Bool(reply, Ok(same))
            }
            Op::DropChunks { ids, reply } => {
                // An upload or download in flight may rely on a surplus copy: keep those.
                let pinned = pins.pinned(&ids);
                let mut freed = 0;
                for (id, pinned) in ids.into_iter().zip(pinned) {
                    if !pinned {
                        freed += self.remove_chunk(&id)?;
                    }
                }
                self.stats.stored_bytes = self.stats.stored_bytes.saturating_sub(freed);
                Outcome::Count(reply, Ok(freed))
            }
        })
    }

    /// Removes a chunk's segments; returns the sealed bytes freed (0 when it was not here).
    /// Counts the chunk out; the caller accounts the bytes.
    fn remove_chunk(&mut self, id: &ChunkId) -> Result<u64> {
        let Some(len) = self.chunk_index.remove(id.as_bytes())?.map(|v| v.value()) else { return Ok(0) };
        for i in 0..(len as usize).div_ceil(SEGMENT) {
            self.chunks.remove((*id.as_bytes(), i as u32))?;
        }
        self.stats.chunks = self.stats.chunks.saturating_sub(1);
        Ok(u64::from(len))
    }

    /// Stores a chunk unless present; returns the sealed bytes added.
    fn put_chunk(&mut self, id: ChunkId, sealed: &[u8]) -> Result<u64> {
        let key = id.as_bytes();
        if has_sealed(&self.chunk_index, &id)? {
            return Ok(0);
        }
        for (i, segment) in sealed.chunks(SEGMENT).enumerate() {
            self.chunks.insert((*key, i as u32), segment)?;
        }
        self.chunk_index.insert(key, sealed.len() as u32)?;
        // A chunk enters with no users; until its manifest commits, only a pin keeps it.
        if self.chunk_refs.get(key)?.is_none() {
            self.chunk_refs.insert(key, 0)?;
        }
        self.stats.stored_bytes += sealed.len() as u64;
        self.stats.chunks += 1;
        Ok(sealed.len() as u64)
    }

    fn live_record(&self, name: &str) -> Result<Option<NameRecordV3>> {
        match self.names.get(name)? {
            Some(raw) => Ok(Some(decode("name record", raw.value())?)),
            None => Ok(None),
        }
    }

    /// The file a name points at now; `None` when it is absent or deleted.
    fn live_file(&self, name: &str) -> Result<Option<FileId>> {
        Ok(self.live_record(name)?.and_then(|r| r.file_id()))
    }

    /// A move or copy: refusals (source changed, precondition) come back before any write;
    /// a storage failure aborts the batch as usual.
    fn relink(&mut self, r: Relink) -> Result<Result<()>> {
        if self.live_file(&r.from)? != Some(r.file) || r.record.file != Some(*r.file.as_bytes()) {
            return Ok(Err(StorageError::SourceChanged));
        }
        if !r.expect.holds(self.live_file(&r.to)?) {
            return Ok(Err(StorageError::PreconditionFailed));
        }
        // The source's name holds the manifest until the destination's is counted, so its
        // chunks are never unreferenced in between. A destination stamped later than this
        // write (only by a skewed peer: the clock observes every stamp it receives) keeps its
        // record, and then the source must stay too: nothing has changed yet at that point.
        if !self.apply_name(&r.to, r.record, None, false)? {
            return Ok(Err(StorageError::SourceChanged));
        }
        if let Some(stamp) = r.tombstone {
            self.apply_name(&r.from, NameRecordV3::tombstone(stamp), None, false)?;
        }
        Ok(Ok(()))
    }

    /// Applies a name record if it is newer than the one stored (last writer wins by stamp).
    /// A live record needs its manifest unless the manifest is already stored.
    fn apply_name(
        &mut self,
        name: &str,
        record: NameRecordV3,
        manifest: Option<&Manifest>,
        require_local_chunks: bool,
    ) -> Result<bool> {
        let old = self.live_record(name)?;
        if old.as_ref().is_some_and(|old| old.stamp >= record.stamp) {
            return Ok(false);
        }
        let mut link = None;
        if let Some(file) = record.file {
            let known = match self.manifests.get(&file)? {
                Some(raw) => Some(decode::<ManifestRecordV1>("manifest", raw.value())?.size),
                None => None,
            };
            if known.is_some_and(|size| size != record.size) {
                return Err(StorageError::Corrupt(format!(
                    "record of {name:?} disagrees with its manifest's size"
                )));
            }
            let known = known.is_some();
            let manifest = match manifest {
                _ if known => None,
                Some(m) if *m.id.as_bytes() == file && m.size == record.size && m.is_consistent() => Some(m),
                _ => return Err(StorageError::Corrupt(format!("no valid manifest for {name:?}"))),
            };
            if let (Some(m), true) = (manifest, require_local_chunks) {
                for chunk in m.distinct_chunks() {
                    if !has_sealed(&self.chunk_index, &chunk.id)? {
                        return Err(StorageError::MissingChunk(chunk.id));
                    }
                }
            }
            link = Some((file, manifest));
        }
        // The node's own metadata is not what users stored: their totals leave it out.
        let counted = !name.starts_with(super::HIDDEN_PREFIX);
        if let Some(old) = &old {
            self.unlink(old, counted)?;
        }
        if let Some((file, manifest)) = link {
            match manifest {
                Some(m) => self.link_new(m)?,
                None => self.link_known(&file)?,
            }
            if counted {
                self.stats.files += 1;
                self.stats.logical_bytes += record.size;
            }
        }
        self.names.insert(name, encode(&record).as_slice())?;
        Ok(true)
    }

    /// Counts one more name for a stored manifest.
    fn link_known(&mut self, file: &[u8; 32]) -> Result<()> {
        let refs = self.file_refs.get(file)?.map_or(0, |v| v.value());
        self.file_refs.insert(file, refs + 1)?;
        Ok(())
    }

    /// Stores a new manifest with one name, counting a use of each of its chunks.
    fn link_new(&mut self, manifest: &Manifest) -> Result<()> {
        let key = manifest.id.as_bytes();
        self.manifests.insert(key, encode(&ManifestRecordV1::from_manifest(manifest)).as_slice())?;
        self.file_refs.insert(key, 1)?;
        for chunk in manifest.distinct_chunks() {
            let k = chunk.id.as_bytes();
            let refs = self.chunk_refs.get(k)?.map_or(0, |v| v.value());
            self.chunk_refs.insert(k, refs + 1)?;
            // The manifest the confirmation awaited (or another) keeps the chunk now.
            self.received.remove(k)?;
        }
        self.stats.unique_bytes += manifest.size;
        Ok(())
    }

    /// Takes a live name's reference off its manifest (and, when `counted`, off the totals).
    fn unlink(&mut self, old: &NameRecordV3, counted: bool) -> Result<()> {
        if let Some(file) = old.file {
            let refs = self.file_refs.get(&file)?.map_or(0, |v| v.value());
            let refs = refs.saturating_sub(1);
            self.file_refs.insert(&file, refs)?;
            if refs == 0 {
                self.gc_files.insert(&file, ())?;
            }
            if counted {
                self.stats.files = self.stats.files.saturating_sub(1);
                self.stats.logical_bytes = self.stats.logical_bytes.saturating_sub(old.size);
            }
        }
        Ok(())
    }

    /// Deletes a live name (a tombstone replaces it). An unknown or already deleted name
    /// changes nothing.
    fn delete(&mut self, name: &str, stamp: StampV1) -> Result<bool> {
        let was_live = self.live_record(name)?.is_some_and(|o| o.file.is_some());
        if !was_live {
            return Ok(false);
        }
        Ok(self.apply_name(name, NameRecordV3::tombstone(stamp), None, false)? && was_live)
    }

    fn collect(&mut self, pins: &Pins) -> Result<GcReport> {
        let mut report = GcReport::default();
        let queued: Vec<[u8; 32]> =
            self.gc_files.iter()?.map(|item| item.map(|(k, _)| k.value())).collect::<Result<_, _>>()?;
        for file in queued {
            self.gc_files.remove(&file)?;
            if self.file_refs.get(&file)?.map_or(0, |v| v.value()) > 0 {
                continue; // named again since
            }
            let manifest = match read_manifest(&self.manifests, FileId::from_bytes(file)) {
                Ok(Some(m)) => m,
                Ok(None) => continue,
                // One bad record must not stop collection (or the writes batched with it).
                Err(e @ StorageError::Corrupt(_)) => {
                    log::error!("gc: skipping manifest {}: {e}", FileId::from_bytes(file));
                    continue;
                }
                Err(e) => return Err(e),
            };
            self.manifests.remove(&file)?;
            self.file_refs.remove(&file)?;
            self.stats.unique_bytes = self.stats.unique_bytes.saturating_sub(manifest.size);
            for chunk in manifest.distinct_chunks() {
                let k = chunk.id.as_bytes();
                let refs = self.chunk_refs.get(k)?.map_or(0, |v| v.value());
                self.chunk_refs.insert(k, refs.saturating_sub(1))?;
            }
            report.files += 1;
        }
        // Confirmations whose manifest never came (the upload failed after confirming, or
        // its file was replaced before the manifest arrived) expire after the grace.
        let now = unix_ms();
        let expired: Vec<[u8; 32]> = self
            .received
            .iter()?
            .filter_map(|item| match item {
                Ok((k, at)) if now.saturating_sub(at.value()) >= self.grace_ms => Some(Ok(k.value())),
                Ok(_) => None,
                Err(e) => Some(Err(e)),
            })
            .collect::<Result<_, _>>()?;
        for key in &expired {
            self.received.remove(key)?;
        }
        // Chunks nobody uses: dropped by the manifests above, or left by an upload that
        // failed or crashed before its commit. Pinned ones belong to transfers in flight,
        // confirmed ones await their manifest.
        let mut unused = Vec::new();
        for item in self.chunk_refs.iter()? {
            let (k, v) = item?;
            if v.value() == 0 && self.received.get(&k.value())?.is_none() {
                unused.push(ChunkId::from_bytes(k.value()));
            }
        }
        for id in pins.doom(unused) {
            self.chunk_refs.remove(id.as_bytes())?;
            let len = self.remove_chunk(&id)?;
            if len > 0 {
                self.stats.stored_bytes = self.stats.stored_bytes.saturating_sub(len);
                report.chunks += 1;
                report.bytes += len;
            }
        }
        Ok(report)
    }
}
