//! The redb owner. Only this module (and the migrations it runs) names redb.
//!
//! Reads open their own read transactions on blocking threads. Every write goes through one
//! writer thread ([`writer`]) that batches queued operations into a single transaction and a
//! single fsync, so many small uploads share a commit.

#[cfg(test)]
mod faults;
pub(crate) mod folders;
mod list;
pub mod records;
mod repair_queue;
mod schema;
pub mod snapshot;
pub(crate) mod sorted;
mod tables;
mod writer;

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use redb::{Database, ReadableDatabase, ReadableTable};

use crate::content::{ChunkId, FileId, FileName, Manifest, NodeId};
use crate::runtime;
use list::list_names;
use records::decode;
pub use records::{NameRecordV3 as NameRecord, StampV1 as Stamp};
pub use repair_queue::{QueuePage, Queued};
pub use schema::SCHEMA_VERSION;
use tables::have_chunks_in;
pub(crate) use tables::{
    BUCKET_NAMES, CHUNK_INDEX, CHUNK_REFS, CHUNKS, FILE_REFS, FOLDERS, GC_CHUNKS, GC_FILES, KEY_CHECK,
    MANIFESTS, META, NAME_DIGESTS, NAMES, RECEIVED, SEGMENT, SORTED, has_sealed, read_manifest, read_sealed,
    read_sealed_sized,
};
pub use tables::{HIDDEN_PREFIX, RECEIVED_GRACE, record_digest};
use writer::Op;
pub use writer::{Committed, Relink};

/// What went wrong in storage, as callers branch on it: `http::error` maps each kind to a
/// status once (no space 507, damage 500, recovering 503).
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// The disk refused a read or write; carries the OS error.
    #[error("disk I/O failed: {0}")]
    Io(std::io::Error),
    /// The data disk is full, or below the space kept in reserve for deletes and the collector.
    #[error("no space left for data: {0}")]
    NoSpace(String),
    /// Bytes on disk are not what was written: what was met, and where.
    #[error("damaged data: {0}")]
    Corrupt(String),
    /// The database failed and is being reopened; the operation can be retried shortly.
    #[error("the database is recovering from an earlier failure ({0}); try again shortly")]
    Recovering(String),
    /// The store was closed (the node is shutting down).
    #[error("the database is closed")]
    Closed,
    /// Anything else the database reports (a bug rather than the disk's doing).
    #[error("database error: {0}")]
    Db(String),
    #[error(
        "the database was written by a newer DistStore (schema {found}, this build reads up to {supported}); upgrade the binary"
    )]
    NewerSchema { found: u64, supported: u64 },
    #[error("chunk {0} is missing")]
    MissingChunk(ChunkId),
    #[error("the storage writer has stopped")]
    WriterGone,
    /// A conditional write found the name other than it expected; nothing changed.
    #[error("the precondition failed: the name's current content is not what the request expected")]
    PreconditionFailed,
    /// A move or copy found its source gone or changed when it came to write.
    #[error("the source changed during the request")]
    SourceChanged,
    /// A listing's `after` cursor names nothing the listing can go on from.
    #[error("{0}")]
    StaleCursor(String),
}

impl StorageError {
    /// Whether the database handle is spent after this error and must be reopened: redb
    /// latches every I/O failure and then fails every later call, reads included.
    pub(crate) fn needs_reopen(&self) -> bool {
        matches!(self, StorageError::Io(_) | StorageError::NoSpace(_) | StorageError::Recovering(_))
    }

    /// The same error again, for answering every operation of a failed batch with it.
    pub(crate) fn duplicate(&self) -> StorageError {
        match self {
            StorageError::Io(e) => StorageError::Io(match e.raw_os_error() {
                Some(code) => std::io::Error::from_raw_os_error(code),
                None => std::io::Error::new(e.kind(), e.to_string()),
            }),
            StorageError::NoSpace(m) => StorageError::NoSpace(m.clone()),
            StorageError::Corrupt(m) => StorageError::Corrupt(m.clone()),
            StorageError::Recovering(m) => StorageError::Recovering(m.clone()),
            StorageError::Closed => StorageError::Closed,
            StorageError::Db(m) => StorageError::Db(m.clone()),
            StorageError::NewerSchema { found, supported } => {
                StorageError::NewerSchema { found: *found, supported: *supported }
            }
            StorageError::MissingChunk(id) => StorageError::MissingChunk(*id),
            StorageError::WriterGone => StorageError::WriterGone,
            StorageError::PreconditionFailed => StorageError::PreconditionFailed,
            StorageError::SourceChanged => StorageError::SourceChanged,
            StorageError::StaleCursor(m) => StorageError::StaleCursor(m.clone()),
        }
    }

    /// An I/O error, as no space when the disk is full.
    pub(crate) fn io(e: std::io::Error) -> StorageError {
        if is_no_space(&e) { StorageError::NoSpace(e.to_string()) } else { StorageError::Io(e) }
    }
}

fn is_no_space(e: &std::io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ENOSPC | libc::EDQUOT))
        || matches!(e.kind(), std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded)
}

impl From<redb::Error> for StorageError {
    fn from(e: redb::Error) -> Self {
        match e {
            redb::Error::Io(e) => StorageError::io(e),
            redb::Error::Corrupted(m) => StorageError::Corrupt(format!("the database file: {m}")),
            redb::Error::PreviousIo => {
                StorageError::Recovering("an earlier disk I/O error stopped the database".into())
            }
            redb::Error::LockPoisoned(at) => {
                StorageError::Recovering(format!("the database failed inside ({at})"))
            }
            redb::Error::DatabaseClosed => StorageError::Closed,
            other => StorageError::Db(other.to_string()),
        }
    }
}

macro_rules! redb_from {
    ($($t:ty),*) => {$(
        impl From<$t> for StorageError {
            fn from(e: $t) -> Self {
                redb::Error::from(e).into()
            }
        }
    )*};
}
redb_from!(
    redb::StorageError,
    redb::TransactionError,
    redb::TableError,
    redb::CommitError,
    redb::DatabaseError,
    redb::SetDurabilityError,
    redb::CompactionError
);

/// Runs `f`, turning a panic into an error. redb asserts on what it reads from disk (debug
/// builds panic on a damaged page, and some checks panic in any build): a damaged page must
/// fail the request that met it, not kill its thread or hang whoever waits on that thread.
pub(crate) fn guarded<T>(what: &str, f: impl FnOnce() -> Result<T>) -> Result<T> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(payload) => {
            let msg = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "no message".into());
            Err(StorageError::Corrupt(format!("{what}: the database failed on a damaged page ({msg})")))
        }
    }
}

pub type Result<T, E = StorageError> = std::result::Result<T, E>;

/// Totals kept up to date by every write.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Live names.
    pub files: u64,
    /// Sum of the sizes of all live names (what users think they stored).
    pub logical_bytes: u64,
    /// Sum of the sizes of distinct stored files.
    pub unique_bytes: u64,
    /// Ciphertext bytes of stored chunks (what the disk holds, before database overhead).
    pub stored_bytes: u64,
    pub chunks: u64,
}

/// Chunks uploads, downloads and peers' uploads in flight depend on. The collector never
/// removes a pinned chunk.
///
/// The lock is only ever held for a few map operations, never across a transaction: a
/// collection marks the chunks it is about to remove as doomed (skipping pinned ones) and
/// clears the mark once its transaction ends. A pin taken meanwhile on a doomed chunk
/// reports it, and its taker stores the chunk again rather than relying on a copy about to
/// go (the writer applies that store after the removal).
#[derive(Default)]
pub(crate) struct Pins(Mutex<PinState>);

#[derive(Default)]
pub(crate) struct PinState {
    counts: HashMap<ChunkId, usize>,
    doomed: HashSet<ChunkId>,
}

impl Pins {
    fn lock(&self) -> std::sync::MutexGuard<'_, PinState> {
        // A panic while holding this lock cannot leave the maps half-updated.
        self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Marks the unpinned of `candidates` as doomed and returns them: the collector removes
    /// exactly these, then calls [`Pins::clear_doomed`].
    pub(crate) fn doom(&self, candidates: Vec<ChunkId>) -> Vec<ChunkId> {
        let mut state = self.lock();
        let doomed: Vec<ChunkId> =
            candidates.into_iter().filter(|id| !state.counts.contains_key(id)).collect();
        state.doomed.extend(doomed.iter().copied());
        doomed
    }

    pub(crate) fn clear_doomed(&self) {
        self.lock().doomed.clear();
    }

    /// Which of `ids` are pinned now.
    pub(crate) fn pinned(&self, ids: &[ChunkId]) -> Vec<bool> {
        let state = self.lock();
        ids.iter().map(|id| state.counts.contains_key(id)).collect()
    }
}

/// Pins held by one upload, download or peer's upload; released when dropped.
pub struct PinSet {
    store: Store,
    ids: Vec<ChunkId>,
}

impl PinSet {
    /// Pins `id`. False when a collection is removing it right now: a copy seen as stored
    /// must then be stored again.
    pub fn pin(&mut self, id: ChunkId) -> bool {
        self.ids.push(id);
        let mut state = self.store.shared.pins.lock();
        *state.counts.entry(id).or_default() += 1;
        !state.doomed.contains(&id)
    }

    /// Pins every one of `ids` under one lock.
    pub fn pin_all(&mut self, ids: &[ChunkId]) {
        let mut state = self.store.shared.pins.lock();
        for id in ids {
            *state.counts.entry(*id).or_default() += 1;
        }
        drop(state);
        self.ids.extend_from_slice(ids);
    }

    /// Takes over another set's pins.
    pub fn absorb(&mut self, mut other: PinSet) {
        self.ids.append(&mut other.ids);
    }

    pub fn ids(&self) -> &[ChunkId] {
        &self.ids
    }
}

impl Drop for PinSet {
    fn drop(&mut self) {
        if self.ids.is_empty() {
            return;
        }
        let mut state = self.store.shared.pins.lock();
        for id in &self.ids {
            if let Some(n) = state.counts.get_mut(id) {
                *n -= 1;
                if *n == 0 {
                    state.counts.remove(id);
                }
            }
        }
    }
}

/// What a conditional write expects of a name's current content (`If-Match`,
/// `If-None-Match`). The writer checks it in the transaction that writes, so two racing
/// writers cannot both pass a check made against the same state.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Expect {
    pub if_match: Option<Match>,
    pub if_none_match: Option<Match>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Match {
    /// `*`: any live content.
    Any,
    /// One of these files.
    Files(Vec<FileId>),
}

impl Match {
    fn hits(&self, current: Option<FileId>) -> bool {
        match self {
            Match::Any => current.is_some(),
            Match::Files(ids) => current.is_some_and(|c| ids.contains(&c)),
        }
    }
}

impl Expect {
    /// Create only: the name must not be live.
    pub fn absent() -> Self {
        Self { if_match: None, if_none_match: Some(Match::Any) }
    }

    /// Whether a name whose live content is `current` (`None`: absent) passes.
    pub fn holds(&self, current: Option<FileId>) -> bool {
        self.if_match.as_ref().is_none_or(|m| m.hits(current))
            && self.if_none_match.as_ref().is_none_or(|m| !m.hits(current))
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameEntry {
    pub name: String,
    pub record: NameRecord,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SortBy {
    #[default]
    Name,
    Size,
    Modified,
}

#[derive(Debug, Clone, Default)]
pub struct ListQuery {
    pub prefix: String,
    /// Start after this name (name order only).
    pub after: Option<String>,
    pub offset: usize,
    pub limit: usize,
    pub sort: SortBy,
    pub descending: bool,
    /// Names under this prefix are left out.
    pub hidden: Option<&'static str>,
    /// Count every matching name for `total`: a read of the kept count for a folder (or the
    /// whole store) of the users' names without `search`, else a scan of them all. Otherwise
    /// the scan stops once the page is full and `total` counts only what was scanned.
    pub count: bool,
    /// Group names below the next `/` after the prefix into [`ListPage::folders`].
    pub delimiter: bool,
    /// Only names containing this, ignoring case.
    pub search: Option<String>,
}

#[derive(Debug, Clone, Default)]
pub struct ListPage {
    pub entries: Vec<NameEntry>,
    /// With a delimiter: the folders (common prefixes ending in `/`), each once.
    pub folders: Vec<String>,
    /// The name to pass as `after` for the next page, when there is one (ascending name order).
    pub next: Option<String>,
    /// Live names matching the prefix.
    pub total: u64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GcReport {
    pub files: u64,
    pub chunks: u64,
    pub bytes: u64,
    /// The pass stopped at its batch bound with more queued: another should follow.
    pub more: bool,
}

struct Shared {
    slot: Arc<Slot>,
    ops: async_channel::Sender<Op>,
    pins: Arc<Pins>,
    node_id: NodeId,
    /// Shared with the writer thread.
    writer: Arc<WriterShared>,
}

/// The open database. The writer swaps it: it takes it out to reopen the file after an I/O
/// failure (readers get [`StorageError::Recovering`] meanwhile) and holds the lock while it
/// compacts (readers wait). Readers hold a clone only for one read, and for as long as its
/// read transaction lives: the writer counts clones to know that no transaction is open.
pub(crate) struct Slot {
    db: std::sync::RwLock<Option<Arc<Database>>>,
    path: std::path::PathBuf,
    /// Opens the database again (with a file handle for early writeback, when on a file).
    opener: Box<Opener>,
}

pub(crate) type Opener = dyn Fn() -> Result<(Database, NodeId, Option<std::fs::File>)> + Send + Sync;

impl Slot {
    fn lock(&self) -> std::sync::RwLockWriteGuard<'_, Option<Arc<Database>>> {
        self.db.write().unwrap_or_else(|p| p.into_inner())
    }
}

/// What the writer thread and the store's handles share.
pub(crate) struct WriterShared {
    /// Milliseconds the collector spares confirmed chunks awaiting their manifest.
    received_grace_ms: AtomicU64,
    /// Bytes of free disk space kept for deletes, the collector and recovery: writes that add
    /// data are refused below it (0: no reserve).
    reserve_bytes: AtomicU64,
    /// Set by the writer thread when it ends; `closing` says whether that was asked for.
    stopped: AtomicBool,
    closing: AtomicBool,
    /// Why the database is being reopened, while it is.
    recovering: Mutex<Option<String>>,
    /// The error of the last failed batch, for a caller whose operation was lost with it.
    last_failure: Mutex<Option<String>>,
    /// Chunk bytes removed since the database file was last compacted.
    freed_since_compact: AtomicU64,
    /// Compactions done since start.
    compactions: AtomicU64,
}

impl WriterShared {
    pub(crate) fn set_recovering(&self, why: Option<String>) {
        *self.recovering.lock().unwrap_or_else(|p| p.into_inner()) = why;
    }

    fn recovering(&self) -> Option<String> {
        self.recovering.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub(crate) fn set_last_failure(&self, e: &StorageError) {
        *self.last_failure.lock().unwrap_or_else(|p| p.into_inner()) = Some(e.to_string());
    }
}

/// Space on the file system holding the database.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DiskSpace {
    /// Bytes an unprivileged writer may still use.
    pub free: u64,
    pub total: u64,
    /// Which file system on which running machine this is (see [`disk_id`]): nodes that
    /// report the same id share one disk, so a cluster's capacity counts it once.
    pub id: u64,
}

/// The file system's id (`f_fsid`) is unique on one machine only, so it is mixed with the
/// kernel's boot id, unique per machine and boot: two nodes on one host (or in network
/// namespaces of it) sharing a disk get the same id, nodes on different hosts do not.
fn disk_id(fsid: u64) -> u64 {
    use sha2::Digest;
    static BOOT: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let boot = BOOT.get_or_init(|| {
        std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
            .map(|s| s.trim().to_owned())
            .unwrap_or_default()
    });
    let hash = sha2::Sha256::new().chain_update(boot.as_bytes()).chain_update(fsid.to_le_bytes()).finalize();
    u64::from_le_bytes(hash[..8].try_into().expect("a SHA-256 has 8 bytes"))
}

/// `statvfs` of the directory holding `path`.
pub(crate) fn disk_space(path: &Path) -> std::io::Result<DiskSpace> {
    use std::os::unix::ffi::OsStrExt;
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let c = std::ffi::CString::new(dir.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidInput, "a NUL in the data path"))?;
    let mut st = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: `c` is a valid C string and `st` a buffer statvfs fills when it returns 0.
    if unsafe { libc::statvfs(c.as_ptr(), st.as_mut_ptr()) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: statvfs returned 0, so it filled `st`.
    let st = unsafe { st.assume_init() };
    let frsize = st.f_frsize;
    Ok(DiskSpace {
        free: st.f_bavail.saturating_mul(frsize),
        total: st.f_blocks.saturating_mul(frsize),
        id: disk_id(st.f_fsid),
    })
}

/// Space figures for the status page.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SpaceReport {
    /// Size of the database file.
    pub db_file_bytes: u64,
    /// Estimate of the file's bytes in use: sealed chunk bytes rounded up to the pages redb
    /// stores them in, plus the other tables' share (see [`used_estimate`]).
    pub db_used_bytes: u64,
    /// The rest of the file: free pages, reused by later writes or returned by compaction.
    pub db_free_bytes: u64,
    pub disk: DiskSpace,
    /// Free disk space kept in reserve (uploads are refused below it).
    pub reserve_bytes: u64,
    pub compactions: u64,
}

/// Estimated bytes of the database file in use. A chunk of `n` sealed bytes is stored as full
/// 262,000-byte segments in 256 KiB pages and one last segment in a page of the next power of
/// two; on average that is about 1.13× the sealed bytes. The small tables add a few pages per
/// chunk (index, references) and per file.
pub fn used_estimate(stats: &Stats) -> u64 {
    stats.stored_bytes + stats.stored_bytes / 8 + stats.chunks * 512 + stats.files * 1024 + (1 << 20)
}

/// Handle to the store; cheap to clone.
#[derive(Clone)]
pub struct Store {
    shared: Arc<Shared>,
}

impl Store {
    /// Opens (or creates) the database at `path`, upgrading an older schema, and starts the
    /// writer thread. Blocking.
    pub fn open(path: &Path, cache_bytes: usize) -> Result<Store> {
        let owned = path.to_path_buf();
        let opener = move || schema::open(&owned, cache_bytes).map(|(db, id, file)| (db, id, Some(file)));
        Self::open_with(path, Box::new(opener))
    }

    /// Opens the database on a storage backend of the caller's (fault injection in tests);
    /// `path` is where disk space is measured.
    #[cfg(test)]
    pub(crate) fn open_on<B: redb::StorageBackend>(
        path: &Path,
        backend: impl Fn() -> B + Send + Sync + 'static,
    ) -> Result<Store> {
        let opener = move || schema::open_backend(backend(), 1 << 20).map(|(db, id)| (db, id, None));
        Self::open_with(path, Box::new(opener))
    }

    fn open_with(path: &Path, opener: Box<Opener>) -> Result<Store> {
        let (db, node_id, file) = guarded("opening", &*opener)?;
        let slot = Arc::new(Slot {
            db: std::sync::RwLock::new(Some(Arc::new(db))),
            path: path.to_path_buf(),
            opener,
        });
        let pins = Arc::new(Pins::default());
        let shared_with_writer = Arc::new(WriterShared {
            received_grace_ms: AtomicU64::new(RECEIVED_GRACE.as_millis() as u64),
            reserve_bytes: AtomicU64::new(0),
            stopped: AtomicBool::new(false),
            closing: AtomicBool::new(false),
            recovering: Mutex::new(None),
            last_failure: Mutex::new(None),
            freed_since_compact: AtomicU64::new(0),
            compactions: AtomicU64::new(0),
        });
        let ops = writer::start(slot.clone(), pins.clone(), file, shared_with_writer.clone());
        let shared = Shared { slot, ops, pins, node_id, writer: shared_with_writer };
        Ok(Store { shared: Arc::new(shared) })
    }

    /// Compacts the database file at `path` while no node runs on it, returning its size
    /// before and after. Blocking.
    pub fn compact_offline(path: &Path) -> Result<(u64, u64)> {
        let size = || std::fs::metadata(path).map(|m| m.len()).map_err(StorageError::io);
        let before = size()?;
        guarded("compacting", || {
            let mut db = redb::Builder::new().open(path)?;
            while db.compact()? {}
            Ok(())
        })?;
        Ok((before, size()?))
    }

    /// The open database. Blocking while the writer compacts: call from a blocking thread.
    fn db(&self) -> Result<Arc<Database>> {
        let db = self.shared.slot.db.read().unwrap_or_else(|p| p.into_inner());
        match &*db {
            Some(db) => Ok(db.clone()),
            None if self.shared.writer.closing.load(Ordering::SeqCst) => Err(StorageError::Closed),
            None => Err(StorageError::Recovering(
                self.shared.writer.recovering().unwrap_or_else(|| "the database is reopening".into()),
            )),
        }
    }

    /// Finishes queued writes and closes the database cleanly, so the next start needs no
    /// repair. Reads and writes after this fail.
    pub async fn close(&self) -> Result<()> {
        self.shared.writer.closing.store(true, Ordering::SeqCst);
        self.submit(|reply| Op::Close { reply }).await?;
        let Some(db) = self.shared.slot.lock().take() else {
            return Ok(());
        };
        // Reads in flight hold their own reference; let them finish (briefly) before closing.
        for _ in 0..500 {
            if Arc::strong_count(&db) == 1 {
                break;
            }
            runtime::sleep(std::time::Duration::from_millis(10)).await;
        }
        match Arc::try_unwrap(db) {
            Ok(db) => {
                // A database that panicked (a damaged page) panics again when closed.
                let closed = runtime::blocking(move || {
                    guarded("closing", || {
                        drop(db);
                        Ok(())
                    })
                });
                if let Err(e) = closed.await {
                    log::warn!("closing the database: {e}");
                }
            }
            Err(_) => log::warn!("reads still running at shutdown; the next start will check the database"),
        }
        Ok(())
    }

    pub fn node_id(&self) -> NodeId {
        self.shared.node_id
    }

    /// How long the collector spares chunks an uploader confirmed here before their manifest
    /// arrives (default [`RECEIVED_GRACE`]).
    pub fn set_received_grace(&self, grace: std::time::Duration) {
        self.shared.writer.received_grace_ms.store(grace.as_millis() as u64, Ordering::SeqCst);
    }

    /// Free disk space to keep for deletes, the collector and recovery (default 0: none).
    /// Writes that add data are refused with [`StorageError::NoSpace`] below it.
    pub fn set_disk_reserve(&self, bytes: u64) {
        self.shared.writer.reserve_bytes.store(bytes, Ordering::SeqCst);
    }

    /// Why the store cannot write, when its writer thread ended without being asked to.
    pub fn writer_failure(&self) -> Option<&'static str> {
        let w = &self.shared.writer;
        (w.stopped.load(Ordering::SeqCst) && !w.closing.load(Ordering::SeqCst))
            .then_some("the storage writer thread has stopped")
    }

    /// What keeps the store from taking writes now: a stopped writer, a database being
    /// reopened, or free disk space below the reserve. Blocking (a `statvfs`).
    pub fn problems_blocking(&self) -> Vec<String> {
        let mut out: Vec<String> = self.writer_failure().into_iter().map(String::from).collect();
        if let Some(why) = self.shared.writer.recovering() {
            out.push(format!("the database is being reopened after a failure: {why}"));
        }
        if let Err(e) = self.space_for(0) {
            out.push(e.to_string());
        }
        out
    }

    /// Refuses a write of `bytes` more data when it would leave less free disk space than the
    /// reserve. A disk whose space cannot be read is not refused for that.
    pub fn space_for(&self, bytes: u64) -> Result<()> {
        writer::check_space(&self.shared.slot.path, &self.shared.writer, bytes)
    }

    /// Space figures: the database file, its estimated use, and the disk. Reads the stats.
    pub async fn space(&self) -> Result<SpaceReport> {
        let stats = self.stats().await?;
        let path = self.shared.slot.path.clone();
        let reserve_bytes = self.shared.writer.reserve_bytes.load(Ordering::SeqCst);
        let compactions = self.shared.writer.compactions.load(Ordering::SeqCst);
        runtime::blocking(move || {
            let db_file_bytes = std::fs::metadata(&path).map_or(0, |m| m.len());
            let used = used_estimate(&stats).min(db_file_bytes);
            Ok(SpaceReport {
                db_file_bytes,
                db_used_bytes: used,
                db_free_bytes: db_file_bytes - used,
                disk: disk_space(&path).unwrap_or_default(),
                reserve_bytes,
                compactions,
            })
        })
        .await
    }

    /// Compacts the database file when enough was freed since the last compaction (or the
    /// disk is below its reserve and anything was): the file shrinks and the disk gets the
    /// space back. Reads wait meanwhile; run it when the node is quiet. Returns the bytes the
    /// file shrank by, `None` when there was nothing to do.
    pub async fn compact_if_worthwhile(&self) -> Result<Option<u64>> {
        self.submit(|reply| Op::Compact { force: false, reply }).await
    }

    /// Compacts the database file now.
    pub async fn compact(&self) -> Result<Option<u64>> {
        self.submit(|reply| Op::Compact { force: true, reply }).await
    }

    pub fn pins(&self) -> PinSet {
        PinSet { store: self.clone(), ids: Vec::new() }
    }

    async fn read<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Database) -> Result<T> + Send + 'static,
    {
        let store = self.clone();
        runtime::blocking(move || guarded("reading", || f(&*store.db()?))).await
    }

    /// The live record of `name` and its manifest, read in one transaction.
    pub async fn lookup(&self, name: &FileName) -> Result<Option<(NameRecord, Manifest)>> {
        let name = name.as_str().to_owned();
        self.read(move |db| {
            let txn = db.begin_read()?;
            let names = txn.open_table(NAMES)?;
            let Some(raw) = names.get(name.as_str())? else { return Ok(None) };
            let record: NameRecord = decode("name record", raw.value())?;
            let Some(id) = record.file_id() else { return Ok(None) };
            let manifest = read_manifest(&txn.open_table(MANIFESTS)?, id)?.ok_or_else(|| {
                StorageError::Corrupt(format!("name {name} points at missing manifest {id}"))
            })?;
            Ok(Some((record, manifest)))
        })
        .await
    }

    pub async fn manifest(&self, id: FileId) -> Result<Option<Manifest>> {
        self.read(move |db| {
            let txn = db.begin_read()?;
            read_manifest(&txn.open_table(MANIFESTS)?, id)
        })
        .await
    }

    /// Sealed bytes of a chunk. Blocking: call from a blocking thread.
    pub fn chunk_blocking(&self, id: ChunkId) -> Result<Option<Vec<u8>>> {
        self.chunk_sized_blocking(id, 0)
    }

    /// [`Store::chunk_blocking`] for a chunk whose sealed length is expected to be `expected`
    /// (from its manifest): read with one copy per segment. Blocking.
    pub fn chunk_sized_blocking(&self, id: ChunkId, expected: usize) -> Result<Option<Vec<u8>>> {
        guarded(&format!("reading chunk {id}"), || {
            let db = self.db()?;
            let txn = db.begin_read()?;
            read_sealed_sized(&txn.open_table(CHUNKS)?, &id, expected)
        })
    }

    /// Blocking: call from a blocking thread. Up to `limit` stored chunk ids after `after`
    /// (from the first when `None`), in id order: a walk over every stored chunk.
    pub fn chunk_ids_after_blocking(&self, after: Option<ChunkId>, limit: usize) -> Result<Vec<ChunkId>> {
        guarded("listing chunks", || self.chunk_ids_after_unguarded(after, limit))
    }

    fn chunk_ids_after_unguarded(&self, after: Option<ChunkId>, limit: usize) -> Result<Vec<ChunkId>> {
        let db = self.db()?;
        let txn = db.begin_read()?;
        let index = txn.open_table(CHUNK_INDEX)?;
        let mut range = match after {
            Some(id) => {
                index.range((std::ops::Bound::Excluded(*id.as_bytes()), std::ops::Bound::Unbounded))?
            }
            None => index.range::<[u8; 32]>(..)?,
        };
        let mut out = Vec::with_capacity(limit);
        while out.len() < limit {
            let Some(item) = range.next() else { break };
            out.push(ChunkId::from_bytes(item?.0.value()));
        }
        Ok(out)
    }

    /// Drops this node's copy of a chunk that failed verification, if it still holds the bytes
    /// that failed (`found`; `None` when they could not be read whole). Returns whether it did.
    pub async fn drop_corrupt_chunk(&self, id: ChunkId, found: Option<Vec<u8>>) -> Result<bool> {
        self.submit(|reply| Op::DropCorrupt { id, found, reply }).await
    }

    /// Blocking: call from a blocking thread.
    pub fn has_chunk_blocking(&self, id: ChunkId) -> Result<bool> {
        Ok(self.have_chunks_blocking(&[id])?[0])
    }

    /// Blocking: call from a blocking thread. One read transaction for all of `ids`.
    pub fn have_chunks_blocking(&self, ids: &[ChunkId]) -> Result<Vec<bool>> {
        guarded("looking up chunks", || have_chunks_in(&*self.db()?, ids))
    }

    /// How many stored files use each of `ids` (0 when unknown).
    pub async fn chunk_refs(&self, ids: Vec<ChunkId>) -> Result<Vec<u32>> {
        self.read(move |db| {
            let txn = db.begin_read()?;
            let refs = txn.open_table(CHUNK_REFS)?;
            ids.iter().map(|id| Ok(refs.get(id.as_bytes())?.map_or(0, |v| v.value()))).collect()
        })
        .await
    }

    pub async fn list(&self, mut query: ListQuery) -> Result<ListPage> {
        self.read(move |db| {
            let txn = db.begin_read()?;
            // The writer keeps the totals of folders and of the store (the users' names):
            // then the scan stops at the page instead of counting every match.
            let kept = query.count
                && query.search.is_none()
                && (query.prefix.is_empty() || query.prefix.ends_with('/'))
                && query.hidden == Some(HIDDEN_PREFIX);
            if !kept {
                return list_names(&txn.open_table(NAMES)?, &query);
            }
            let folder_counts = txn.open_table(FOLDERS)?;
            let counts = folders::read(&folder_counts, &query.prefix)?;
            query.count = false;
            let names = txn.open_table(NAMES)?;
            // Size and time orders read their page from the writer's index where it holds
            // what is asked (see `sorted::answers`).
            let mut page = if sorted::answers(&query) {
                sorted::list(&txn.open_table(SORTED)?, &names, &folder_counts, &query)?
            } else if list::descends(&query) {
                list::list_descending(&names, &query)?
            } else {
                list_names(&names, &query)?
            };
            page.total = if query.delimiter { counts.files + counts.folders } else { counts.below };
            Ok(page)
        })
        .await
    }

    pub async fn stats(&self) -> Result<Stats> {
        self.read(|db| {
            let txn = db.begin_read()?;
            schema::read_stats(&txn.open_table(META)?)
        })
        .await
    }

    async fn submit<T>(&self, make: impl FnOnce(async_channel::Sender<Result<T>>) -> Op) -> Result<T> {
        let (tx, rx) = async_channel::bounded(1);
        self.shared.ops.send(make(tx)).await.map_err(|_| StorageError::WriterGone)?;
        match rx.recv().await {
            Ok(answer) => answer,
            // The writer dropped the operation unanswered: it failed mid-batch (a damaged page)
            // and goes on, or it has stopped.
            Err(_) if self.writer_failure().is_some() => Err(StorageError::WriterGone),
            Err(_) => Err(StorageError::Recovering(
                self.shared
                    .writer
                    .last_failure
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .clone()
                    .unwrap_or_else(|| "a storage write failed".into()),
            )),
        }
    }

    /// Queues a sealed chunk for writing. Not durable by itself: the commit of the manifest
    /// that uses it is. Blocking: call from a blocking thread.
    pub fn put_chunk_blocking(&self, id: ChunkId, sealed: bytes::Bytes) -> Result<()> {
        self.shared.ops.send_blocking(Op::PutChunk { id, sealed }).map_err(|_| StorageError::WriterGone)
    }

    pub async fn put_chunk(&self, id: ChunkId, sealed: bytes::Bytes) -> Result<()> {
        self.shared.ops.send(Op::PutChunk { id, sealed }).await.map_err(|_| StorageError::WriterGone)
    }

    /// Stores chunks a peer sent ahead of their manifest; the peer's pins keep them until it
    /// confirms them ([`Store::confirm_chunks`]). Durable with that confirmation.
    pub async fn put_received_chunks(&self, chunks: Vec<(ChunkId, bytes::Bytes)>) -> Result<()> {
        self.shared.ops.send(Op::PutReceived { chunks }).await.map_err(|_| StorageError::WriterGone)
    }

    /// Stores `manifest` (if new) and points `name` at it, durably. Every chunk of the manifest
    /// must already be stored, queued, or in `inline`.
    pub async fn commit_file(
        &self,
        manifest: Manifest,
        name: FileName,
        record: NameRecord,
        inline: Vec<(ChunkId, Vec<u8>)>,
        local: bool,
        expect: Expect,
    ) -> Result<Committed> {
        let name = name.as_str().to_owned();
        let record = Box::new(record);
        self.submit(|reply| Op::CommitFile { manifest, name, record, inline, local, expect, reply }).await
    }

    /// Points `to` at the file `from` names now, in one transaction, and when `remove_source`
    /// replaces `from` with a tombstone stamped `tombstone` in the same one: a move or copy
    /// that adds no stored bytes. `file` is what `from` must still name (else
    /// [`StorageError::SourceChanged`]); `to` must pass `expect` (else
    /// [`StorageError::PreconditionFailed`]). Nothing changes when either fails.
    pub async fn relink(&self, relink: Relink) -> Result<()> {
        let relink = Box::new(relink);
        self.submit(|reply| Op::Relink { relink, reply }).await
    }

    /// The check value of the data key this database's chunks are sealed under; `None` until
    /// a node first records one. The store keeps it opaque: `crypto` makes and checks it.
    pub async fn key_check(&self) -> Result<Option<Vec<u8>>> {
        self.meta(KEY_CHECK).await
    }

    /// Records the key check value, durably.
    pub async fn set_key_check(&self, check: Vec<u8>) -> Result<()> {
        self.set_meta(KEY_CHECK, check).await
    }

    /// Makes every write queued so far durable, then answers which of `ids` are stored, and
    /// records those as confirmed (see [`RECEIVED`]) in the same durable commit. An upload asks
    /// this of every holder before it acknowledges: presence after the fsync, not a promise
    /// made when the chunks were queued. Chunks queued but lost to a failed batch, or removed
    /// meanwhile, answer false.
    pub async fn confirm_chunks(&self, ids: Vec<ChunkId>) -> Result<Vec<bool>> {
        self.submit(|reply| Op::Confirm { ids, reply }).await
    }

    /// A small value kept in the meta table (cluster members, for one), or `None`.
    pub async fn meta(&self, key: &'static str) -> Result<Option<Vec<u8>>> {
        self.read(move |db| {
            let txn = db.begin_read()?;
            let meta = txn.open_table(META)?;
            Ok(meta.get(key)?.map(|v| v.value().to_vec()))
        })
        .await
    }

    /// Stores a small meta value, durably.
    pub async fn set_meta(&self, key: &'static str, value: Vec<u8>) -> Result<()> {
        self.submit(|reply| Op::PutMeta { key, value, durable: true, reply }).await
    }

    /// Stores a value a crash may lose (it is durable with the next durable commit, or when
    /// the node closes): a background loop's position, saved often without an fsync each time.
    pub async fn set_meta_lazily(&self, key: &'static str, value: Vec<u8>) -> Result<()> {
        self.submit(|reply| Op::PutMeta { key, value, durable: false, reply }).await
    }

    /// Stores chunks and fsyncs before answering.
    pub async fn put_chunks_durable(&self, chunks: Vec<(ChunkId, bytes::Bytes)>) -> Result<()> {
        self.submit(|reply| Op::PutChunksDurable { chunks, reply }).await
    }

    /// Applies name records from peers (newer stamps win), durably. Returns which applied.
    pub async fn apply_names(
        &self,
        updates: Vec<(String, NameRecord, Option<Manifest>)>,
    ) -> Result<Vec<bool>> {
        self.submit(|reply| Op::ApplyNames { updates, reply }).await
    }

    /// Removes local copies of chunks (their references stay). Returns the bytes freed.
    pub async fn drop_chunks(&self, ids: Vec<ChunkId>) -> Result<u64> {
        self.submit(|reply| Op::DropChunks { ids, reply }).await
    }

    /// Every name record (tombstones included) in `bucket`, or in every bucket.
    pub async fn records(&self, bucket: Option<u8>) -> Result<Vec<(String, NameRecord)>> {
        self.read(move |db| {
            let txn = db.begin_read()?;
            let names = txn.open_table(NAMES)?;
            let mut out = Vec::new();
            let Some(bucket) = bucket else {
                for item in names.iter()? {
                    let (k, v) = item?;
                    out.push((k.value().to_owned(), decode("name record", v.value())?));
                }
                return Ok(out);
            };
            // The bucket's names are one range of the index; each record one lookup.
            let index = txn.open_table(BUCKET_NAMES)?;
            for item in index.range((bucket, "")..)? {
                let (k, _) = item?;
                let (b, name) = k.value();
                if b != bucket {
                    break;
                }
                let Some(raw) = names.get(name)? else {
                    return Err(StorageError::Corrupt(format!(
                        "bucket index names {name:?}, which is not stored"
                    )));
                };
                out.push((name.to_owned(), decode("name record", raw.value())?));
            }
            Ok(out)
        })
        .await
    }

    /// The largest stamp of any stored name record. Blocking (used once, at start): one read
    /// of what the writer keeps, or a scan of every name in a database from before it kept it.
    pub fn max_stamp_blocking(&self) -> Result<Option<Stamp>> {
        guarded("reading stamps", || self.max_stamp_unguarded())
    }

    fn max_stamp_unguarded(&self) -> Result<Option<Stamp>> {
        let db = self.db()?;
        let txn = db.begin_read()?;
        if let Some(kept) = schema::read_newest_stamp(&txn.open_table(META)?)? {
            return Ok(Some(kept));
        }
        let names = txn.open_table(NAMES)?;
        let mut max: Option<Stamp> = None;
        for item in names.iter()? {
            let (_, v) = item?;
            let stamp = decode::<NameRecord>("name record", v.value())?.stamp;
            max = max.max(Some(stamp));
        }
        Ok(max)
    }

    /// Anti-entropy digest: per bucket of names (see [`name_bucket`]), the SHA-256 of its
    /// (name, stamp) pairs in name order. Computed on a blocking thread in one read.
    /// The digest of each of the 256 name buckets, as the writer keeps them.
    pub async fn name_digest(&self) -> Result<Vec<[u8; 32]>> {
        self.read(|db| {
            let txn = db.begin_read()?;
            let digests = txn.open_table(NAME_DIGESTS)?;
            let mut out = vec![[0u8; 32]; 256];
            for item in digests.iter()? {
                let (k, v) = item?;
                out[usize::from(k.value())] = v.value();
            }
            Ok(out)
        })
        .await
    }

    /// Which of `ids` this node holds.
    pub async fn have_chunks(&self, ids: Vec<ChunkId>) -> Result<Vec<bool>> {
        self.read(move |db| have_chunks_in(db, &ids)).await
    }

    /// Replaces `name` with a tombstone stamped `stamp`, durably. Returns whether a live name
    /// was removed.
    pub async fn delete(&self, name: &FileName, stamp: Stamp, expect: Expect) -> Result<bool> {
        let name = name.as_str().to_owned();
        self.submit(|reply| Op::Delete { name, stamp, expect, reply }).await
    }

    /// Removes manifests nobody names and chunks nobody uses (and nobody is uploading).
    pub async fn collect_garbage(&self) -> Result<GcReport> {
        self.submit(|reply| Op::Collect { reply }).await
    }
}

/// The anti-entropy bucket of a name: the first byte of its SHA-256.
pub fn name_bucket(name: &str) -> u8 {
    use sha2::Digest;
    sha2::Sha256::digest(name.as_bytes())[0]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::content::ChunkRef;

    fn file_of(chunks: &[(ChunkId, u32)]) -> Manifest {
        let size = chunks.iter().map(|(_, len)| u64::from(*len)).sum();
        let mut seed = Vec::new();
        chunks.iter().for_each(|(id, _)| seed.extend_from_slice(id.as_bytes()));
        Manifest {
            id: FileId::from_bytes(*ChunkId::of(&seed).as_bytes()),
            size,
            chunker: 1,
            chunks: chunks.iter().map(|(id, len)| ChunkRef { id: *id, len: *len }).collect(),
            created_ms: 1,
        }
    }

    fn record(manifest: Option<&Manifest>, wall_ms: u64) -> NameRecord {
        NameRecord {
            file: manifest.map(|m| *m.id.as_bytes()),
            size: manifest.map_or(0, |m| m.size),
            content_type: String::new(),
            modified_ms: wall_ms,
            stamp: Stamp { wall_ms, counter: 0, node: [9; 16] },
            etag: None,
            headers: Vec::new(),
        }
    }

    /// Regression (cluster trust 1): a holder got an upload's chunk while another file used it,
    /// so nothing marked it as awaiting a manifest; that file's delete then made it garbage and
    /// the upload, acknowledged meanwhile, lost it. Now the upload's pins hold it while the
    /// upload runs, and its confirmation holds it until the manifest arrives.
    #[test]
    fn a_chunk_an_upload_confirmed_outlives_the_delete_of_the_file_that_shared_it() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::open(&tmp.path().join("db.redb"), 1 << 20).unwrap();
        let x = ChunkId::of(b"shared content");
        let g = file_of(&[(x, 1000)]);
        runtime::block_on(async {
            store.put_chunks_durable(vec![(x, vec![1u8; 1016].into())]).await.unwrap();
            store.apply_names(vec![("g".into(), record(Some(&g), 1), Some(g.clone()))]).await.unwrap();
            // The upload arrives: pinned, stored (already here), then `g` goes.
            let mut upload = store.pins();
            upload.pin_all(&[x]);
            store.put_received_chunks(vec![(x, vec![1u8; 1016].into())]).await.unwrap();
            store.apply_names(vec![("g".into(), record(None, 2), None)]).await.unwrap();
            store.collect_garbage().await.unwrap();
            assert!(store.have_chunks(vec![x]).await.unwrap()[0], "collected while the upload ran");
            assert_eq!(store.confirm_chunks(vec![x]).await.unwrap(), [true]);
            drop(upload);
            store.collect_garbage().await.unwrap();
            assert!(store.have_chunks(vec![x]).await.unwrap()[0], "collected before its manifest came");
            // The manifest arrives: the chunk is in use again.
            let f = file_of(&[(x, 1000), (x, 1000)]);
            store.apply_names(vec![("f".into(), record(Some(&f), 3), Some(f.clone()))]).await.unwrap();
            store.set_received_grace(std::time::Duration::ZERO);
            store.collect_garbage().await.unwrap();
            assert!(store.have_chunks(vec![x]).await.unwrap()[0]);
            // And once nothing names it and no confirmation waits, it goes.
            store.apply_names(vec![("f".into(), record(None, 4), None)]).await.unwrap();
            store.collect_garbage().await.unwrap();
            assert!(!store.have_chunks(vec![x]).await.unwrap()[0]);
            store.close().await.unwrap();
        });
    }

    /// Conditional commits and relinks are decided by the writer against what is stored when
    /// it writes; a refused one changes nothing, and a move keeps the file counted once.
    #[test]
    fn the_writer_checks_expectations_and_relinks_atomically() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::open(&tmp.path().join("db.redb"), 1 << 20).unwrap();
        let (x, y) = (ChunkId::of(b"x"), ChunkId::of(b"y"));
        let (fx, fy) = (file_of(&[(x, 10)]), file_of(&[(y, 20)]));
        let name = |n: &str| FileName::new(n).unwrap();
        runtime::block_on(async {
            let inline = |id: ChunkId| vec![(id, vec![0u8; 26])];
            let commit = |f: &Manifest, id, n: &str, wall, expect| {
                store.commit_file(f.clone(), name(n), record(Some(f), wall), inline(id), true, expect)
            };
            commit(&fx, x, "a", 1, Expect::absent()).await.unwrap();
            let again = commit(&fy, y, "a", 2, Expect::absent()).await;
            assert!(matches!(again, Err(StorageError::PreconditionFailed)), "{again:?}");
            let stale = Expect { if_match: Some(Match::Files(vec![fy.id])), if_none_match: None };
            assert!(matches!(commit(&fy, y, "a", 3, stale).await, Err(StorageError::PreconditionFailed)));
            let current = Expect { if_match: Some(Match::Files(vec![fx.id])), if_none_match: None };
            let wrong = Expect { if_match: Some(Match::Files(vec![fy.id])), if_none_match: None };
            assert!(matches!(
                store.delete(&name("a"), record(None, 4).stamp, wrong).await,
                Err(StorageError::PreconditionFailed)
            ));
            assert_eq!(store.lookup(&name("a")).await.unwrap().unwrap().1.id, fx.id);

            let relink = |to: &str, file, wall, tombstone: Option<u64>, expect| Relink {
                from: "a".into(),
                to: to.into(),
                file,
                record: record(Some(&fx), wall),
                tombstone: tombstone.map(|w| record(None, w).stamp),
                expect,
            };
            store.relink(relink("b", fx.id, 5, None, Expect::absent())).await.unwrap();
            let before = store.stats().await.unwrap();
            assert_eq!((before.files, before.unique_bytes), (2, 10), "a copy adds a name, not content");
            let refused = store.relink(relink("b", fx.id, 6, Some(7), Expect::absent())).await;
            assert!(matches!(refused, Err(StorageError::PreconditionFailed)));
            let changed = store.relink(relink("c", fy.id, 6, Some(7), current)).await;
            assert!(matches!(changed, Err(StorageError::SourceChanged)), "the source names another file");
            store.relink(relink("c", fx.id, 8, Some(9), Expect::default())).await.unwrap();
            assert!(store.lookup(&name("a")).await.unwrap().is_none());
            assert_eq!(store.lookup(&name("c")).await.unwrap().unwrap().1.id, fx.id);
            let after = store.stats().await.unwrap();
            assert_eq!((after.files, after.unique_bytes, after.stored_bytes), (2, 10, before.stored_bytes));
            store.close().await.unwrap();
        });
    }

    /// A confirmation whose manifest never comes (the upload failed after it) expires.
    #[test]
    fn a_confirmation_without_its_manifest_expires_after_the_grace() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::open(&tmp.path().join("db.redb"), 1 << 20).unwrap();
        let x = ChunkId::of(b"orphan");
        runtime::block_on(async {
            store.put_received_chunks(vec![(x, vec![2u8; 500].into())]).await.unwrap();
            assert_eq!(
                store.confirm_chunks(vec![x, ChunkId::of(b"never sent")]).await.unwrap(),
                [true, false]
            );
            store.collect_garbage().await.unwrap();
            assert!(store.have_chunks(vec![x]).await.unwrap()[0]);
            store.set_received_grace(std::time::Duration::ZERO);
            let report = store.collect_garbage().await.unwrap();
            assert_eq!((report.chunks, report.bytes), (1, 500));
            store.close().await.unwrap();
        });
    }

    /// Regression (cluster trust 7): the collector held the pin lock across its transaction
    /// and fsync. Now it marks what it removes as doomed; a pin taken meanwhile is told, so
    /// its taker stores the chunk again rather than relying on a copy about to go.
    #[test]
    fn a_pin_taken_while_a_collection_removes_the_chunk_reports_it() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::open(&tmp.path().join("db.redb"), 1 << 20).unwrap();
        let (a, b) = (ChunkId::of(b"a"), ChunkId::of(b"b"));
        let mut held = store.pins();
        held.pin_all(&[a]);
        // `a` is pinned, so only `b` is doomed.
        assert_eq!(store.shared.pins.doom(vec![a, b]), [b]);
        let mut late = store.pins();
        assert!(!late.pin(b), "a pin on a doomed chunk must say so");
        assert!(late.pin(a));
        store.shared.pins.clear_doomed();
        assert!(late.pin(b));
        drop((held, late));
        assert_eq!(store.shared.pins.pinned(&[a, b]), [false, false]);
        runtime::block_on(store.close()).unwrap();
    }

    /// The scrub found `found` damaged, but the copy may have been replaced since: only the
    /// bytes that failed are dropped.
    #[test]
    fn a_corrupt_copy_is_dropped_only_while_it_holds_the_bytes_that_failed() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::open(&tmp.path().join("db.redb"), 1 << 20).unwrap();
        let id = ChunkId::of(b"chunk");
        let stored = vec![7u8; 300_000];
        runtime::block_on(async {
            store.put_chunks_durable(vec![(id, stored.clone().into())]).await.unwrap();
            let other = vec![8u8; 300_000];
            assert!(!store.drop_corrupt_chunk(id, Some(other)).await.unwrap());
            assert!(!store.drop_corrupt_chunk(id, None).await.unwrap());
            assert_eq!(store.chunk_blocking(id).unwrap(), Some(stored.clone()));

            assert!(store.drop_corrupt_chunk(id, Some(stored)).await.unwrap());
            assert_eq!(store.chunk_blocking(id).unwrap(), None);
            let stats = store.stats().await.unwrap();
            assert_eq!((stats.chunks, stats.stored_bytes), (0, 0));
            store.close().await.unwrap();
        });
    }
}
