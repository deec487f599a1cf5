//! Read-only access to a stopped node's database, for the offline tools (`diststore check`,
//! `diststore export`). Nothing here writes: no migration, no repair, no writer thread.
//!
//! redb's read-only open takes a shared lock on the file, which a running node's exclusive
//! lock refuses: that is how the tools know a node is running on the directory.

use std::collections::HashMap;
use std::path::Path;

use redb::{Builder, ReadOnlyDatabase, ReadOnlyTable, ReadableDatabase, ReadableTable};

use super::records::{ManifestRecordV1, decode};
use super::{
    CHUNK_INDEX, CHUNK_REFS, CHUNKS, FILE_REFS, KEY_CHECK, MANIFESTS, META, NAMES, NameRecord, Result,
    SCHEMA_VERSION, Stats, StorageError, read_sealed, schema,
};
use crate::content::{ChunkId, FileId, Manifest};

/// Why a database cannot be opened for reading offline.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("no database at {0}")]
    Missing(String),
    #[error("a node is running on this data directory (the database is locked); stop it first")]
    InUse,
    #[error(
        "the database was not closed cleanly (a crash or kill -9); start the node once and stop it \
         (it repairs the file at start), then run this again"
    )]
    NeedsRepair,
    #[error(
        "the database has schema {found}, older than this build's {SCHEMA_VERSION}; start the node \
         once (it upgrades at start), then run this again"
    )]
    OlderSchema { found: u64 },
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// A read-only view of a stopped node's database.
pub struct Snapshot {
    db: ReadOnlyDatabase,
}

impl Snapshot {
    /// Opens the database read-only. Blocking. Refuses one a node has open, one that needs
    /// repair (a read-only open cannot repair), and any schema other than this build's.
    pub fn open(path: &Path, cache_bytes: usize) -> std::result::Result<Snapshot, SnapshotError> {
        if !path.exists() {
            return Err(SnapshotError::Missing(path.display().to_string()));
        }
        let db = Builder::new().set_cache_size(cache_bytes).open_read_only(path).map_err(|e| match e {
            redb::DatabaseError::DatabaseAlreadyOpen => SnapshotError::InUse,
            redb::DatabaseError::RepairAborted => SnapshotError::NeedsRepair,
            other => SnapshotError::Storage(other.into()),
        })?;
        let snapshot = Snapshot { db };
        let found = {
            let txn = snapshot.db.begin_read().map_err(StorageError::from)?;
            let meta = txn.open_table(META).map_err(StorageError::from)?;
            match meta.get(schema::VERSION_KEY).map_err(StorageError::from)? {
                Some(raw) => schema::read_u64(raw.value())?,
                None => 1,
            }
        };
        if found > SCHEMA_VERSION {
            return Err(StorageError::NewerSchema { found, supported: SCHEMA_VERSION }.into());
        }
        if found < SCHEMA_VERSION {
            return Err(SnapshotError::OlderSchema { found });
        }
        Ok(snapshot)
    }

    fn table<K: redb::Key + 'static, V: redb::Value + 'static>(
        &self,
        def: redb::TableDefinition<K, V>,
    ) -> Result<ReadOnlyTable<K, V>> {
        Ok(self.db.begin_read()?.open_table(def)?)
    }

    /// The data key's check value (see `Store::key_check`).
    pub fn key_check(&self) -> Result<Option<Vec<u8>>> {
        Ok(self.table(META)?.get(KEY_CHECK)?.map(|v| v.value().to_vec()))
    }

    /// The totals the writer keeps.
    pub fn stats(&self) -> Result<Stats> {
        schema::read_stats(&self.table(META)?)
    }

    /// Every name record in name order, tombstones included; a record that does not decode is
    /// returned as its error, so one bad record does not hide the others.
    pub fn names(&self) -> Result<Vec<(String, Result<NameRecord>)>> {
        let names = self.table(NAMES)?;
        let mut out = Vec::new();
        for item in names.iter()? {
            let (k, v) = item?;
            out.push((k.value().to_owned(), decode("name record", v.value())));
        }
        Ok(out)
    }

    /// Every stored manifest; one that does not decode or add up is returned as its error.
    pub fn manifests(&self) -> Result<Vec<(FileId, Result<Manifest>)>> {
        let table = self.table(MANIFESTS)?;
        let mut out = Vec::new();
        for item in table.iter()? {
            let (k, v) = item?;
            let id = FileId::from_bytes(k.value());
            let manifest = decode::<ManifestRecordV1>("manifest", v.value())
                .map(|r| r.into_manifest(id))
                .and_then(|m| {
                    if m.is_consistent() {
                        Ok(m)
                    } else {
                        Err(StorageError::Corrupt(format!("manifest {id} sizes do not add up")))
                    }
                });
            out.push((id, manifest));
        }
        Ok(out)
    }

    /// Every chunk this node holds, with its sealed length, in id order.
    pub fn chunk_index(&self) -> Result<Vec<(ChunkId, u32)>> {
        let index = self.table(CHUNK_INDEX)?;
        index
            .iter()?
            .map(|item| {
                let (k, v) = item?;
                Ok((ChunkId::from_bytes(k.value()), v.value()))
            })
            .collect()
    }

    /// The stored use counts of chunks (`chunk_refs_v1`) and of manifests (`file_refs_v1`).
    pub fn refcounts(&self) -> Result<(HashMap<ChunkId, u32>, HashMap<FileId, u32>)> {
        let mut chunks = HashMap::new();
        for item in self.table(CHUNK_REFS)?.iter()? {
            let (k, v) = item?;
            chunks.insert(ChunkId::from_bytes(k.value()), v.value());
        }
        let mut files = HashMap::new();
        for item in self.table(FILE_REFS)?.iter()? {
            let (k, v) = item?;
            files.insert(FileId::from_bytes(k.value()), v.value());
        }
        Ok((chunks, files))
    }

    /// A reader of sealed chunks for one thread (one read transaction).
    pub fn chunk_reader(&self) -> Result<ChunkReader> {
        Ok(ChunkReader { chunks: self.table(CHUNKS)? })
    }
}

pub struct ChunkReader {
    chunks: ReadOnlyTable<([u8; 32], u32), &'static [u8]>,
}

impl ChunkReader {
    /// The sealed bytes of a chunk, as stored (unverified).
    pub fn sealed(&self, id: &ChunkId) -> Result<Option<Vec<u8>>> {
        read_sealed(&self.chunks, id)
    }
}
