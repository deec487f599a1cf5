//! The single writer: owns every write transaction.
//!
//! It takes the first queued operation, drains whatever else is queued (up to a byte and
//! count budget), applies them all in one transaction and commits once. A batch holding only
//! chunk writes commits without fsync; any batch that acknowledges something to a client
//! (a file, a delete) commits with fsync, which also makes every earlier batch durable.
//! Each operation checks before it mutates, so one refused operation never spoils its batch.

mod collect;

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use redb::{Database, Durability, ReadableDatabase, ReadableTable, Table, WriteTransaction};

use super::records::{ManifestRecordV1, NameRecordV3, StampV1, decode, encode};
use super::{
    BUCKET_NAMES, CHUNK_INDEX, CHUNK_REFS, CHUNKS, Expect, FILE_REFS, FOLDERS, GC_CHUNKS, GC_FILES, GcReport,
    MANIFESTS, META, NAME_DIGESTS, NAMES, Pins, RECEIVED, Result, SEGMENT, SORTED, Slot, StorageError,
    WriterShared, disk_space, guarded, has_sealed, read_sealed, schema,
};
use crate::content::{ChunkId, FileId, Manifest};
use crate::time::unix_ms;

const MAX_BATCH_OPS: usize = 512;
const MAX_BATCH_BYTES: usize = 16 * 1024 * 1024;
/// Queue depth: bounds the sealed chunk bytes waiting for the writer.
const QUEUE: usize = 8;

type Reply<T> = async_channel::Sender<Result<T>>;
/// A compaction asked for: `force`, and where to answer.
type CompactRequest = (bool, Reply<Option<u64>>);

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
        /// False for bookkeeping a crash may lose (a background loop's position): it rides
        /// the next durable commit (or the clean close) instead of paying an fsync of its own.
        durable: bool,
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
    /// Changes to repair's queue of chunks found missing or damaged.
    RepairQueue {
        change: super::repair_queue::QueueChange,
        reply: Reply<()>,
    },
    /// Compacts the file (when worthwhile, or always with `force`); answers the bytes it shrank.
    Compact {
        force: bool,
        reply: Reply<Option<u64>>,
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
        !matches!(self, Op::PutChunk { .. } | Op::PutReceived { .. } | Op::PutMeta { durable: false, .. })
    }

    /// Bytes of new data this operation may add to the file: what the disk reserve guards.
    /// Deletes, the collector, name records and confirmations pass below the reserve.
    fn adds_data(&self) -> Option<usize> {
        match self {
            Op::PutChunk { .. }
            | Op::PutReceived { .. }
            | Op::PutChunksDurable { .. }
            | Op::CommitFile { .. } => Some(self.bytes()),
            _ => None,
        }
    }

    /// Answers this operation with `e` without applying it. Chunks (which have no reply) are
    /// remembered when refused for want of space, so that their file's commit says so.
    fn refuse(self, e: &StorageError, refused: &mut HashSet<ChunkId>) {
        let no_space = matches!(e, StorageError::NoSpace(_));
        match self {
            Op::PutChunk { id, .. } if no_space => drop(refused.insert(id)),
            Op::PutReceived { chunks } if no_space => refused.extend(chunks.iter().map(|(id, _)| *id)),
            op => op.outcome_of_failure().answer(Some(e)),
        }
    }

    /// An outcome carrying only (a clone of) the reply, for answering an operation that was
    /// not applied, or failed while being applied, with the batch's error.
    fn outcome_of_failure(&self) -> Outcome {
        // Always replaced by the batch's error when answered.
        fn failed<T>() -> Result<T> {
            Err(StorageError::WriterGone)
        }
        match self {
            Op::PutChunk { .. } | Op::PutReceived { .. } => Outcome::None,
            Op::Close { reply }
            | Op::PutChunksDurable { reply, .. }
            | Op::PutMeta { reply, .. }
            | Op::RepairQueue { reply, .. }
            | Op::Relink { reply, .. } => Outcome::Unit(reply.clone(), failed()),
            Op::CommitFile { reply, .. } => Outcome::Commit(reply.clone(), failed()),
            Op::Delete { reply, .. } | Op::DropCorrupt { reply, .. } => {
                Outcome::Bool(reply.clone(), failed())
            }
            Op::Collect { reply } => Outcome::Gc(reply.clone(), failed()),
            Op::ApplyNames { reply, .. } | Op::Confirm { reply, .. } => {
                Outcome::Bools(reply.clone(), failed())
            }
            Op::DropChunks { reply, .. } => Outcome::Count(reply.clone(), failed()),
            Op::Compact { reply, .. } => Outcome::Compact(reply.clone(), failed()),
        }
    }
}

/// Refuses `bytes` more data when the disk holding `path` would keep less than the reserve.
pub(super) fn check_space(path: &Path, shared: &WriterShared, bytes: u64) -> Result<()> {
    let reserve = shared.reserve_bytes.load(Ordering::SeqCst);
    if reserve == 0 {
        return Ok(());
    }
    match disk_space(path) {
        Ok(space) if space.free < reserve.saturating_add(bytes) => Err(StorageError::NoSpace(format!(
            "the data disk has {} MiB free, and {} MiB are kept in reserve for deletes and the \
             collector; delete files to make room",
            space.free >> 20,
            reserve >> 20
        ))),
        Ok(_) => Ok(()),
        Err(e) => {
            log::warn!("reading the free space of {}: {e}", path.display());
            Ok(())
        }
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
    Compact(Reply<Option<u64>>, Result<Option<u64>>),
}

pub(crate) fn start(
    slot: Arc<Slot>,
    pins: Arc<Pins>,
    file: Option<std::fs::File>,
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
            Writer { slot, pins, file, shared, refused: HashSet::new(), gc_cursor: [0; 32] }.run(&rx)
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

struct Writer {
    slot: Arc<Slot>,
    pins: Arc<Pins>,
    /// The database file, for starting writeback early.
    file: Option<std::fs::File>,
    shared: Arc<WriterShared>,
    /// Chunks refused for want of space: a commit that needs one fails with no space too,
    /// rather than with a missing chunk. Cleared when the chunk is stored or the set grows.
    refused: HashSet<ChunkId>,
    /// Where the next collection goes on in `gc_chunks_v1` (see `collect`).
    gc_cursor: [u8; 32],
}

/// How long a reopen or compaction waits for reads in flight to let go of the database.
const READERS_WAIT: Duration = Duration::from_secs(30);
/// How long a compaction waits for reads in flight, while new ones wait for it.
const COMPACT_READERS_WAIT: Duration = Duration::from_secs(5);
/// Compact once half of the file is free, and at least this much: each compaction costs
/// about the file's size and holds reads meanwhile.
const COMPACT_AFTER: u64 = 16 << 20;

impl Writer {
    fn db(&self) -> Option<Arc<Database>> {
        self.slot.db.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn run(mut self, rx: &async_channel::Receiver<Op>) {
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
            self.write(batch);
            if let Some(reply) = closing {
                let _ = reply.try_send(Ok(()));
                break;
            }
        }
        log::debug!("storage writer stopped");
    }

    /// Applies one batch, answering each of its operations; reopens the database when the
    /// batch failed in a way that spends it.
    fn write(&mut self, batch: Vec<Op>) {
        let Some(db) = self.db().or_else(|| self.reopen("the database was not open")) else {
            let e = StorageError::Recovering("the database could not be reopened yet".into());
            let refused = &mut self.refused;
            batch.into_iter().for_each(|op| op.refuse(&e, refused));
            return;
        };
        let (batch, compactions) = self.split_off_compactions(batch);
        // A compaction needs the only reference: this one goes before it, whatever the batch.
        let mut db = Some(db);
        let batch = self.refuse_without_space(batch);
        if !batch.is_empty() {
            let durable = batch.iter().any(Op::acknowledges);
            let mut gc = GcState {
                grace_ms: self.shared.received_grace_ms.load(Ordering::SeqCst),
                cursor: self.gc_cursor,
            };
            let mut outcomes = Vec::with_capacity(batch.len());
            let handle = db.take().expect("taken only here");
            let result = guarded("writing", || {
                apply_batch(&handle, &self.pins, batch, durable, &mut gc, &mut outcomes, &mut self.refused)
            });
            self.gc_cursor = gc.cursor;
            drop(handle);
            // A collection's doomed chunks are removed (or, on failure, kept) for good now.
            self.pins.clear_doomed();
            match result {
                Ok(freed) => {
                    self.shared.freed_since_compact.fetch_add(freed, Ordering::SeqCst);
                    outcomes.into_iter().for_each(|o| o.answer(None))
                }
                Err(e) => {
                    log::error!("storage write failed: {e}");
                    self.shared.set_last_failure(&e);
                    // A panic inside redb may leave its state half-updated: start afresh too.
                    // Reopened before answering, so that a client told of the failure finds
                    // reads working again.
                    let panicked = matches!(&e, StorageError::Corrupt(m) if m.starts_with("writing:"));
                    if e.needs_reopen() || panicked {
                        self.reopen(&e.to_string());
                    }
                    outcomes.into_iter().for_each(|o| o.answer(Some(&e)));
                }
            }
            if let (false, Some(file)) = (durable, &self.file) {
                start_writeback(file);
            }
        }
        drop(db);
        for (force, reply) in compactions {
            let _ = reply.try_send(self.compact(force));
        }
    }

    fn split_off_compactions(&self, batch: Vec<Op>) -> (Vec<Op>, Vec<CompactRequest>) {
        let mut compactions = Vec::new();
        let mut rest = Vec::with_capacity(batch.len());
        for op in batch {
            match op {
                Op::Compact { force, reply } => compactions.push((force, reply)),
                op => rest.push(op),
            }
        }
        (rest, compactions)
    }

    /// Refuses the operations that add data when the disk is below its reserve. The rest
    /// (deletes, the collector, name records) run: they are what makes room.
    fn refuse_without_space(&mut self, batch: Vec<Op>) -> Vec<Op> {
        let adding: usize = batch.iter().filter_map(Op::adds_data).sum();
        if adding == 0 {
            return batch;
        }
        let Err(e) = check_space(&self.slot.path, &self.shared, adding as u64) else { return batch };
        if self.refused.len() > 100_000 {
            self.refused.clear();
        }
        let mut kept = Vec::with_capacity(batch.len());
        for op in batch {
            if op.adds_data().is_some() {
                op.refuse(&e, &mut self.refused);
            } else {
                kept.push(op);
            }
        }
        kept
    }

    /// Closes the spent database and opens the file again: redb fails every call after an I/O
    /// error until then. Reads get [`StorageError::Recovering`] meanwhile, and `/health` says
    /// why. Tries a few times with a pause between; gives up for now when it still fails (the
    /// next batch tries again). Returns the new database.
    fn reopen(&mut self, why: &str) -> Option<Arc<Database>> {
        self.shared.set_recovering(Some(why.to_owned()));
        let old = self.slot.lock().take();
        if let Some(old) = old {
            let started = Instant::now();
            while Arc::strong_count(&old) > 1 && started.elapsed() < READERS_WAIT {
                std::thread::sleep(Duration::from_millis(5));
            }
            // Dropping it closes the file (its clean-shutdown write may fail; the next open
            // repairs). A read still holding it keeps the file locked: the open below fails
            // until it lets go, and is retried. After a panic inside redb its locks are
            // poisoned and closing panics too: caught, the file closes all the same.
            let _ = guarded("closing", || {
                drop(old);
                Ok(())
            });
        }
        for attempt in 0..5u32 {
            match guarded("reopening", &*self.slot.opener) {
                Ok((db, _, file)) => {
                    let db = Arc::new(db);
                    *self.slot.lock() = Some(db.clone());
                    self.file = file;
                    self.shared.set_recovering(None);
                    log::warn!("reopened the database after: {why}");
                    return Some(db);
                }
                Err(e) => {
                    log::error!("reopening the database failed (attempt {}): {e}", attempt + 1);
                    std::thread::sleep(Duration::from_millis(200 << attempt));
                }
            }
        }
        None
    }

    /// Compacts the file when `force`, or when about half of it is free (estimated from the
    /// stored bytes), or when the disk is below its reserve and anything was freed. Pages freed
    /// by deletes are reused by later writes anyway; compaction is for giving space back, and
    /// compacting at every quarter freed made a churning file shrink and grow again (measured:
    /// 48 ↔ 96 MiB every three rounds). Reads wait for it (they take the slot's lock), so the
    /// collector asks for it after a pass, not in the middle of traffic.
    fn compact(&mut self, force: bool) -> Result<Option<u64>> {
        let freed = self.shared.freed_since_compact.load(Ordering::SeqCst);
        let size = || std::fs::metadata(&self.slot.path).map_or(0, |m| m.len());
        let before = size();
        let low = check_space(&self.slot.path, &self.shared, 0).is_err();
        let used = match self.db() {
            Some(db) => guarded("reading the stats", || {
                let txn = db.begin_read()?;
                schema::read_stats(&txn.open_table(META)?)
            })
            .map(|stats| super::used_estimate(&stats))?,
            None => return Err(StorageError::Recovering("the database is reopening".into())),
        };
        let free = before.saturating_sub(used);
        let worthwhile = (free >= COMPACT_AFTER && free >= before / 2) || (low && freed > 0);
        if !force && !worthwhile {
            return Ok(None);
        }
        let mut guard = self.slot.lock();
        let Some(mut db) = guard.take() else {
            return Err(StorageError::Recovering("the database is reopening".into()));
        };
        // New reads wait on the lock meanwhile: a short wait, then try another time.
        let started = Instant::now();
        while Arc::strong_count(&db) > 1 && started.elapsed() < COMPACT_READERS_WAIT {
            std::thread::sleep(Duration::from_millis(5));
        }
        let result = match Arc::get_mut(&mut db) {
            Some(db) => guarded("compacting", || {
                while db.compact()? {}
                Ok(())
            }),
            None => Err(StorageError::Db(
                "reads held the database too long to compact; compaction skipped".into(),
            )),
        };
        *guard = Some(db);
        drop(guard);
        match result {
            Ok(()) => {
                self.shared.freed_since_compact.fetch_sub(freed, Ordering::SeqCst);
                self.shared.compactions.fetch_add(1, Ordering::SeqCst);
                let after = size();
                log::info!("compacted the database file from {before} to {after} bytes");
                Ok(Some(before.saturating_sub(after)))
            }
            Err(e) => {
                log::error!("compacting the database failed: {e}");
                self.shared.set_last_failure(&e);
                let panicked = matches!(&e, StorageError::Corrupt(m) if m.starts_with("compacting:"));
                if e.needs_reopen() || panicked {
                    self.reopen(&e.to_string());
                }
                Err(e)
            }
        }
    }
}

impl Outcome {
    /// Sends the answer, or `failure` when the batch did not commit. A caller that went away
    /// (a client disconnected) no longer needs it.
    fn answer(self, failure: Option<&StorageError>) {
        fn pick<T>(r: Result<T>, failure: Option<&StorageError>) -> Result<T> {
            failure.map_or(r, |e| Err(e.duplicate()))
        }
        match self {
            Outcome::None => {}
            Outcome::Bool(reply, r) => drop(reply.try_send(pick(r, failure))),
            Outcome::Commit(reply, r) => drop(reply.try_send(pick(r, failure))),
            Outcome::Unit(reply, r) => drop(reply.try_send(pick(r, failure))),
            Outcome::Bools(reply, r) => drop(reply.try_send(pick(r, failure))),
            Outcome::Count(reply, r) => drop(reply.try_send(pick(r, failure))),
            Outcome::Gc(reply, r) => drop(reply.try_send(pick(r, failure))),
            Outcome::Compact(reply, r) => drop(reply.try_send(pick(r, failure))),
        }
    }
}

/// What a collection in the batch goes by, kept by the writer between batches.
struct GcState {
    /// How long confirmed chunks awaiting their manifest are spared (see `RECEIVED`).
    grace_ms: u64,
    /// Where the walk of `gc_chunks_v1` goes on (a hint: any key is correct).
    cursor: [u8; 32],
}

/// Each operation's outcome goes to `outcomes` as it is applied, so that a failure answers all
/// of them. Returns the chunk bytes it removed.
fn apply_batch(
    db: &Database,
    pins: &Pins,
    batch: Vec<Op>,
    durable: bool,
    gc: &mut GcState,
    outcomes: &mut Vec<Outcome>,
    refused: &mut HashSet<ChunkId>,
) -> Result<u64> {
    let mut txn = db.begin_write()?;
    txn.set_durability(if durable { Durability::Immediate } else { Durability::None })?;
    let mut ops = batch.into_iter();
    let mut done = (0, Vec::new());
    let applied = (|| -> Result<()> {
        let mut t = Tables::open(&txn)?;
        t.grace_ms = gc.grace_ms;
        t.gc_cursor = gc.cursor;
        for op in ops.by_ref() {
            // Stands for the operation until it is applied: one that fails midway (or panics
            // inside redb) is answered with the batch's error too.
            outcomes.push(op.outcome_of_failure());
            let outcome = t.apply(op, pins, refused)?;
            *outcomes.last_mut().expect("pushed above") = outcome;
        }
        t.save_stats()?;
        gc.cursor = t.gc_cursor;
        done = (t.freed, std::mem::take(&mut t.refused_now_stored));
        Ok(())
    })();
    // Operations not reached are answered with the batch's error too.
    outcomes.extend(ops.map(|op| op.outcome_of_failure()));
    applied?;
    txn.commit()?;
    for id in &done.1 {
        refused.remove(id);
    }
    Ok(done.0)
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
    gc_chunks: Table<'t, [u8; 32], ()>,
    folders: Table<'t, &'static str, (u64, u64, u64)>,
    sorted: Table<'t, super::sorted::SortedKey<'static>, ()>,
    name_digests: Table<'t, u8, [u8; 32]>,
    bucket_names: Table<'t, (u8, &'static str), ()>,
    received: Table<'t, [u8; 32], u64>,
    repair_queue: Table<'t, [u8; 32], (u64, u32)>,
    stats: super::Stats,
    /// How long confirmed chunks awaiting their manifest are spared (see `RECEIVED`).
    grace_ms: u64,
    /// Where the collector's walk of `gc_chunks` goes on.
    gc_cursor: [u8; 32],
    /// Sealed chunk bytes removed (pages to reuse, or to return by compaction).
    freed: u64,
    /// Chunks stored (or found stored): no longer refused, once the batch commits.
    refused_now_stored: Vec<ChunkId>,
    /// The newest stamp of any stored name record, as `META` keeps it (`None`: not kept yet).
    newest: Option<StampV1>,
    newest_dirty: bool,
}

impl<'t> Tables<'t> {
    fn open(txn: &'t WriteTransaction) -> Result<Self> {
        let meta = txn.open_table(META)?;
        let stats = schema::read_stats(&meta)?;
        let newest = schema::read_newest_stamp(&meta)?;
        Ok(Self {
            meta,
            names: txn.open_table(NAMES)?,
            manifests: txn.open_table(MANIFESTS)?,
            chunks: txn.open_table(CHUNKS)?,
            chunk_index: txn.open_table(CHUNK_INDEX)?,
            chunk_refs: txn.open_table(CHUNK_REFS)?,
            file_refs: txn.open_table(FILE_REFS)?,
            gc_files: txn.open_table(GC_FILES)?,
            gc_chunks: txn.open_table(GC_CHUNKS)?,
            folders: txn.open_table(FOLDERS)?,
            sorted: txn.open_table(SORTED)?,
            name_digests: txn.open_table(NAME_DIGESTS)?,
            bucket_names: txn.open_table(BUCKET_NAMES)?,
            received: txn.open_table(RECEIVED)?,
            repair_queue: txn.open_table(super::repair_queue::REPAIR_QUEUE)?,
            stats,
            grace_ms: 0,
            gc_cursor: [0; 32],
            freed: 0,
            refused_now_stored: Vec::new(),
            newest,
            newest_dirty: false,
        })
    }

    fn save_stats(&mut self) -> Result<()> {
        if let (true, Some(newest)) = (self.newest_dirty, self.newest) {
            schema::write_newest_stamp(&mut self.meta, &newest)?;
        }
        schema::write_stats(&mut self.meta, &self.stats)
    }

    /// Applies one operation. An `Err` here is a storage failure that aborts the batch;
    /// a refusal of this operation alone is carried in its outcome.
    fn apply(&mut self, op: Op, pins: &Pins, refused: &mut HashSet<ChunkId>) -> Result<Outcome> {
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
            // `Writer::write` takes these out of the batch.
            Op::Compact { reply, .. } => Outcome::Compact(reply, Ok(None)),
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
                    // Its chunk was refused for want of space, not lost.
                    Err(StorageError::MissingChunk(id)) if refused.contains(&id) => Outcome::Commit(
                        reply,
                        Err(StorageError::NoSpace(format!(
                            "chunk {id} of this upload was refused: the data disk is below its reserve"
                        ))),
                    ),
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
            Op::PutMeta { key, value, reply, .. } => {
                self.meta.insert(key, value.as_slice())?;
                Outcome::Unit(reply, Ok(()))
            }
            Op::RepairQueue { change, reply } => {
                super::repair_queue::apply(&mut self.repair_queue, change, unix_ms())?;
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
                    // In the same commit as the drop: repair fetches a good copy back even
                    // if the node stops before it hears of this.
                    let add = super::repair_queue::QueueChange { add: vec![id], ..Default::default() };
                    super::repair_queue::apply(&mut self.repair_queue, add, unix_ms())?;
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
        self.freed += u64::from(len);
        Ok(u64::from(len))
    }

    /// Stores a chunk unless present; returns the sealed bytes added.
    fn put_chunk(&mut self, id: ChunkId, sealed: &[u8]) -> Result<u64> {
        let key = id.as_bytes();
        self.refused_now_stored.push(id);
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
            self.gc_chunks.insert(key, ())?;
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
        let was_live = old.as_ref().is_some_and(|o| o.file.is_some());
        if counted && was_live != link.is_some() {
            super::folders::count(&mut self.folders, name, link.is_some())?;
        }
        // The size and time index follows the record: out with the keys of the one replaced,
        // in with the new one's (a live record of another size or time moves).
        if counted {
            if let Some(old) = old.as_ref().filter(|o| o.file.is_some()) {
                super::sorted::index(&mut self.sorted, name, old, false)?;
            }
            if link.is_some() {
                super::sorted::index(&mut self.sorted, name, &record, true)?;
            }
        }
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
        let stamp = record.stamp;
        super::tables::update_digest(&mut self.name_digests, name, old.as_ref().map(|o| &o.stamp), &stamp)?;
        if old.is_none() {
            self.bucket_names.insert((super::name_bucket(name), name), ())?;
        }
        self.names.insert(name, encode(&record).as_slice())?;
        self.saw_stamp(stamp)?;
        Ok(true)
    }

    /// Keeps the newest stamp of any stored record in `META`, so a start reads it rather than
    /// every name. A database without it (written before it was kept) gets it from one scan,
    /// in the first batch that stores a record.
    fn saw_stamp(&mut self, stamp: StampV1) -> Result<()> {
        if self.newest.is_none() {
            let mut newest = stamp;
            for item in self.names.iter()? {
                let (_, v) = item?;
                newest = newest.max(decode::<NameRecordV3>("name record", v.value())?.stamp);
            }
            self.newest = Some(newest);
            self.newest_dirty = true;
        } else if self.newest.is_some_and(|n| stamp > n) {
            self.newest = Some(stamp);
            self.newest_dirty = true;
        }
        Ok(())
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
            if refs == 0 {
                self.gc_chunks.remove(k)?;
            }
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
}
