//! Opening the database: schema version check, migrations, node id, counters.

use std::path::Path;

use redb::{Builder, Database, ReadableTable, Table, TableHandle};

use super::{
    BUCKET_NAMES, CHUNK_INDEX, CHUNK_REFS, CHUNKS, FILE_REFS, FOLDERS, GC_CHUNKS, GC_FILES, MANIFESTS, META,
    NAME_DIGESTS, NAMES, RECEIVED, Result, SORTED, Stats, StorageError,
};
use crate::content::NodeId;

/// Version of the whole set of tables and records. Bump it with a step in `migrations/`.
pub const SCHEMA_VERSION: u64 = 5;

#[path = "../../migrations/mod.rs"]
mod migrations;

pub(super) const VERSION_KEY: &str = "schema_version";
const NODE_ID_KEY: &str = "node_id";
const STATS_KEY: &str = "stats_v1";
/// The newest stamp of any stored name record (a `StampV1`), kept by the writer so that the
/// clock's start needs no scan of every name. Absent in databases from before it was kept.
const NEWEST_STAMP_KEY: &str = "newest_stamp_v1";

/// Opens the database; also returns a second handle on its file, for starting writeback early.
pub(super) fn open(path: &Path, cache_bytes: usize) -> Result<(Database, NodeId, std::fs::File)> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    // Names, sizes and sealed chunks are nobody else's business: owner only, also for a file an
    // older version created readable by all.
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(path)
        .map_err(|e| io_at(&format!("opening {}", path.display()), e))?;
    file.set_permissions(std::fs::Permissions::from_mode(0o600))
        .map_err(|e| io_at(&format!("restricting {}", path.display()), e))?;
    let writeback = file.try_clone().map_err(|e| io_at("duplicating a file handle", e))?;
    let (db, node_id) = open_backend(redb::backends::FileBackend::new(file)?, cache_bytes)?;
    Ok((db, node_id, writeback))
}

/// Opens the database on `backend` (a file, or a test's faulty disk).
pub(super) fn open_backend(
    backend: impl redb::StorageBackend,
    cache_bytes: usize,
) -> Result<(Database, NodeId)> {
    let db = Builder::new()
        .set_cache_size(cache_bytes)
        .set_repair_callback(|session| {
            log::warn!("database was not closed cleanly; repairing ({:.0}%)", session.progress() * 100.0);
        })
        .create_with_backend(backend)?;
    // A current database opens without a write: a node reopening its database on a full disk
    // (after an I/O error) must not need space to do it.
    if let Some(node_id) = current(&db)? {
        return Ok((db, node_id));
    }
    let txn = db.begin_write()?;
    let node_id;
    {
        let meta = txn.open_table(META)?;
        let found = match meta.get(VERSION_KEY)? {
            Some(raw) => Some(read_u64(raw.value())?),
            None => None,
        };
        let version = match found {
            Some(v) => v,
            // No version recorded: schema 1 if its names table is there (a partial schema 1
            // file), else a new database.
            None if txn.list_tables()?.any(|t| t.name() == migrations::v1_to_v2::NAMES_V1) => 1,
            None => SCHEMA_VERSION,
        };
        if version > SCHEMA_VERSION {
            return Err(StorageError::NewerSchema { found: version, supported: SCHEMA_VERSION });
        }
        drop(meta);
        if version < SCHEMA_VERSION {
            log::info!("upgrading database schema from {version} to {SCHEMA_VERSION}");
            migrations::upgrade(&txn, version)?;
        }
        let mut meta = txn.open_table(META)?;
        meta.insert(VERSION_KEY, SCHEMA_VERSION.to_le_bytes().as_slice())?;
        node_id = match meta.get(NODE_ID_KEY)? {
            Some(raw) => NodeId::from_bytes(
                raw.value()
                    .try_into()
                    .map_err(|_| StorageError::Corrupt("node id is not 16 bytes".into()))?,
            ),
            None => {
                let mut bytes = [0u8; 16];
                getrandom::fill(&mut bytes)
                    .map_err(|e| StorageError::Corrupt(format!("no randomness: {e}")))?;
                NodeId::from_bytes(bytes)
            }
        };
        meta.insert(NODE_ID_KEY, node_id.as_bytes().as_slice())?;
        // Create every table so readers never meet a missing one.
        txn.open_table(NAMES)?;
        txn.open_table(MANIFESTS)?;
        txn.open_table(CHUNKS)?;
        txn.open_table(CHUNK_INDEX)?;
        txn.open_table(CHUNK_REFS)?;
        txn.open_table(FILE_REFS)?;
        txn.open_table(GC_FILES)?;
        txn.open_table(GC_CHUNKS)?;
        txn.open_table(FOLDERS)?;
        txn.open_table(NAME_DIGESTS)?;
        txn.open_table(BUCKET_NAMES)?;
        txn.open_table(SORTED)?;
        txn.open_table(RECEIVED)?;
    }
    txn.commit()?;
    Ok((db, node_id))
}

/// The node id, when the database is at the current schema with every table there.
fn current(db: &Database) -> Result<Option<NodeId>> {
    use redb::ReadableDatabase;
    let txn = db.begin_read()?;
    let tables: Vec<String> = txn.list_tables()?.map(|t| t.name().to_owned()).collect();
    let all = [
        META.name(),
        NAMES.name(),
        MANIFESTS.name(),
        CHUNKS.name(),
        CHUNK_INDEX.name(),
        CHUNK_REFS.name(),
        FILE_REFS.name(),
        GC_FILES.name(),
        GC_CHUNKS.name(),
        FOLDERS.name(),
        NAME_DIGESTS.name(),
        BUCKET_NAMES.name(),
        SORTED.name(),
        RECEIVED.name(),
    ];
    if !all.iter().all(|name| tables.iter().any(|t| t == name)) {
        return Ok(None);
    }
    let meta = txn.open_table(META)?;
    let version = match meta.get(VERSION_KEY)? {
        Some(raw) => read_u64(raw.value())?,
        None => return Ok(None),
    };
    if version != SCHEMA_VERSION {
        return Ok(None);
    }
    Ok(meta.get(NODE_ID_KEY)?.and_then(|raw| <[u8; 16]>::try_from(raw.value()).ok()).map(NodeId::from_bytes))
}

/// An I/O error with what was being done (no space stays no space).
fn io_at(what: &str, e: std::io::Error) -> StorageError {
    match StorageError::io(e) {
        StorageError::Io(e) => StorageError::Io(std::io::Error::new(e.kind(), format!("{what}: {e}"))),
        StorageError::NoSpace(m) => StorageError::NoSpace(format!("{what}: {m}")),
        other => other,
    }
}

pub(super) fn read_u64(bytes: &[u8]) -> Result<u64> {
    Ok(u64::from_le_bytes(
        bytes.try_into().map_err(|_| StorageError::Corrupt("meta counter is not 8 bytes".into()))?,
    ))
}

pub(super) fn read_stats(meta: &impl ReadableTable<&'static str, &'static [u8]>) -> Result<Stats> {
    let Some(raw) = meta.get(STATS_KEY)? else {
        return Ok(Stats::default());
    };
    let v = raw.value();
    if v.len() != 40 {
        return Err(StorageError::Corrupt("stats record is not 40 bytes".into()));
    }
    let at = |i: usize| read_u64(&v[i * 8..i * 8 + 8]);
    Ok(Stats {
        files: at(0)?,
        logical_bytes: at(1)?,
        unique_bytes: at(2)?,
        stored_bytes: at(3)?,
        chunks: at(4)?,
    })
}

pub(super) fn write_stats(meta: &mut Table<'_, &'static str, &'static [u8]>, s: &Stats) -> Result<()> {
    let mut v = Vec::with_capacity(40);
    for n in [s.files, s.logical_bytes, s.unique_bytes, s.stored_bytes, s.chunks] {
        v.extend_from_slice(&n.to_le_bytes());
    }
    meta.insert(STATS_KEY, v.as_slice())?;
    Ok(())
}

pub(super) fn read_newest_stamp(
    meta: &impl ReadableTable<&'static str, &'static [u8]>,
) -> Result<Option<super::Stamp>> {
    match meta.get(NEWEST_STAMP_KEY)? {
        Some(raw) => Ok(Some(super::records::decode("newest stamp", raw.value())?)),
        None => Ok(None),
    }
}

pub(super) fn write_newest_stamp(
    meta: &mut Table<'_, &'static str, &'static [u8]>,
    stamp: &super::Stamp,
) -> Result<()> {
    meta.insert(NEWEST_STAMP_KEY, super::records::encode(stamp).as_slice())?;
    Ok(())
}
