//! The tables of the database and the reads every part of storage shares: what is stored
//! where, in which record version (see docs/format.md). Queries over them live beside
//! ([`super::list`], the `Store` methods); the writer's changes in [`super::writer`].

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

use super::records::{ManifestRecordV1, decode};
use super::{Result, StorageError};
use crate::content::{ChunkId, FileId, Manifest};

// Table names carry their record version; see docs/format.md.
pub(crate) const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
/// `META` key of the data key's check value, written at the first start.
pub(crate) const KEY_CHECK: &str = "key_check";
pub(crate) const NAMES: TableDefinition<&str, &[u8]> = TableDefinition::new("names_v3");
pub(crate) const MANIFESTS: TableDefinition<[u8; 32], &[u8]> = TableDefinition::new("manifests_v1");
/// Sealed chunks, cut into segments of [`SEGMENT`] bytes keyed (chunk id, index).
pub(crate) const CHUNKS: TableDefinition<([u8; 32], u32), &[u8]> = TableDefinition::new("chunks_v2");

/// Segment size. redb gives each large value a page of the next power of two: variable-size
/// chunks as single values left half the file empty (2.1× the data, measured). Segments that
/// just fit a 256 KiB page, with only each chunk's last one smaller, bring it to 1.13×.
pub(crate) const SEGMENT: usize = 262_000;
/// The largest sealed chunk: a bound on what a size guess may allocate.
const MAX_SEALED: usize = crate::content::chunker::MAX_CHUNK + crate::crypto::TAG_LEN;

/// Reads a whole sealed chunk from its segments.
pub(crate) fn read_sealed(
    table: &impl ReadableTable<([u8; 32], u32), &'static [u8]>,
    id: &ChunkId,
) -> Result<Option<Vec<u8>>> {
    read_sealed_sized(table, id, 0)
}

/// [`read_sealed`] into a buffer made for `expected` bytes (the caller's idea of the sealed
/// length), so each segment is copied once: growing from empty copied a multi-segment chunk
/// again at each doubling. A wrong guess costs only that growth.
pub(crate) fn read_sealed_sized(
    table: &impl ReadableTable<([u8; 32], u32), &'static [u8]>,
    id: &ChunkId,
    expected: usize,
) -> Result<Option<Vec<u8>>> {
    let key = *id.as_bytes();
    let mut out: Option<Vec<u8>> = None;
    for item in table.range((key, 0)..=(key, u32::MAX))? {
        let (k, v) = item?;
        let buf = out.get_or_insert_with(|| Vec::with_capacity(expected.min(MAX_SEALED)));
        if k.value().1 as usize * SEGMENT != buf.len() {
            return Err(StorageError::Corrupt(format!("chunk {id} has a missing segment")));
        }
        buf.extend_from_slice(v.value());
    }
    Ok(out)
}

/// Which chunks this node holds, with their sealed length. Tiny values: checking for a chunk
/// here reads a small, cached page, where probing `chunks_v2` read a 256 KiB segment page.
pub(crate) const CHUNK_INDEX: TableDefinition<[u8; 32], u32> = TableDefinition::new("chunk_index_v1");

pub(crate) fn has_sealed(index: &impl ReadableTable<[u8; 32], u32>, id: &ChunkId) -> Result<bool> {
    Ok(index.get(id.as_bytes())?.is_some())
}

pub(super) fn have_chunks_in(db: &Database, ids: &[ChunkId]) -> Result<Vec<bool>> {
    let txn = db.begin_read()?;
    let index = txn.open_table(CHUNK_INDEX)?;
    ids.iter().map(|id| has_sealed(&index, id)).collect()
}
/// How many manifests use each stored chunk. Zero means collectable (unless pinned).
pub(crate) const CHUNK_REFS: TableDefinition<[u8; 32], u32> = TableDefinition::new("chunk_refs_v1");
/// How many live names point at each manifest.
pub(crate) const FILE_REFS: TableDefinition<[u8; 32], u32> = TableDefinition::new("file_refs_v1");
/// Chunks an uploader confirmed on this node (see [`Store::confirm_chunks`]) whose manifest
/// may not have arrived yet, with when (unix ms). Until the manifest links them, the
/// collector leaves them for the grace ([`Store::set_received_grace`]): the upload holds pins
/// while it runs, and this entry covers the time from its acknowledgement until anti-entropy
/// delivers the manifest, across restarts too.
pub(crate) const RECEIVED: TableDefinition<[u8; 32], u64> = TableDefinition::new("received_v1");
/// Default grace for confirmed chunks awaiting their manifest: anti-entropy runs every few
/// seconds, so this is a wide margin for partitions and restarts.
pub const RECEIVED_GRACE: std::time::Duration = std::time::Duration::from_secs(15 * 60);
/// Names under this prefix are the node's own metadata (see `node::registry`): stored like any
/// file, but left out of the users' totals (`files`, `logical_bytes`).
pub const HIDDEN_PREFIX: &str = ".diststore/";
/// Manifests whose last name went away, for the collector.
pub(crate) const GC_FILES: TableDefinition<[u8; 32], ()> = TableDefinition::new("gc_files_v1");
/// Chunks whose use count is zero (stored with none yet, or released by a manifest), for the
/// collector: a pass looks at these rather than at every chunk, so a delete costs what it
/// released. An entry leaves when its chunk goes or is used again.
/// Anti-entropy's digest of each of the 256 name buckets (see [`super::name_bucket`]): the XOR
/// of [`record_digest`] over the bucket's records, tombstones included, kept by the writer as
/// records change, so a digest is 256 small reads instead of a hash of every name.
pub(crate) const NAME_DIGESTS: TableDefinition<u8, [u8; 32]> = TableDefinition::new("name_digests_v1");
/// Every stored name (live or tombstone) under its bucket, so one bucket's records are one
/// range scan.
pub(crate) const BUCKET_NAMES: TableDefinition<(u8, &str), ()> = TableDefinition::new("bucket_names_v1");

/// One record's part of its bucket's digest: SHA-256 of the name (length-prefixed) and stamp.
pub fn record_digest(name: &str, stamp: &super::Stamp) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update((name.len() as u64).to_le_bytes());
    h.update(name.as_bytes());
    h.update(stamp.wall_ms.to_le_bytes());
    h.update(stamp.counter.to_le_bytes());
    h.update(stamp.node);
    h.finalize().into()
}

/// Changes a bucket's digest for a record replaced (`old`) by another (`new`).
pub(crate) fn update_digest(
    digests: &mut redb::Table<'_, u8, [u8; 32]>,
    name: &str,
    old: Option<&super::Stamp>,
    new: &super::Stamp,
) -> Result<()> {
    let bucket = super::name_bucket(name);
    let mut d = digests.get(bucket)?.map_or([0; 32], |v| v.value());
    for part in old.map(|s| record_digest(name, s)).into_iter().chain([record_digest(name, new)]) {
        d.iter_mut().zip(part).for_each(|(a, b)| *a ^= b);
    }
    digests.insert(bucket, d)?;
    Ok(())
}

/// Live names per folder (see [`super::folders`]): (below, direct files, direct folders).
pub(crate) const FOLDERS: TableDefinition<&str, (u64, u64, u64)> = TableDefinition::new("folders_v1");
pub(crate) const GC_CHUNKS: TableDefinition<[u8; 32], ()> = TableDefinition::new("gc_chunks_v1");
/// Live names by size and by modified time, per folder and for the whole store (see
/// [`super::sorted`]).
pub(crate) const SORTED: TableDefinition<super::sorted::SortedKey<'static>, ()> =
    TableDefinition::new("sorted_names_v1");

pub(crate) fn read_manifest(
    table: &impl ReadableTable<[u8; 32], &'static [u8]>,
    id: FileId,
) -> Result<Option<Manifest>> {
    let Some(raw) = table.get(id.as_bytes())? else {
        return Ok(None);
    };
    let record: ManifestRecordV1 = decode("manifest", raw.value())?;
    let manifest = record.into_manifest(id);
    if !manifest.is_consistent() {
        return Err(StorageError::Corrupt(format!("manifest {id} sizes do not add up")));
    }
    Ok(Some(manifest))
}
