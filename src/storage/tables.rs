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
/// again at each doubling.
///
/// With a length (a download knows each chunk's from its manifest, and an id has exactly one
/// right length) the segments that length needs are fetched by key, and nothing else is read:
/// a range over the chunk's keys, to learn that it has ended, went on into the next leaf,
/// which holds another chunk's segment: a page of up to 256 KiB zero-filled and read from
/// disk for nothing, once per chunk (2,322 pages, 483 MB, read for a 256 MiB download; 1,474
/// and 275 MB now). A stored chunk of another length is wrong for its id and fails the
/// caller's verification either way. Without a length (`0`), the range finds the end.
pub(crate) fn read_sealed_sized(
    table: &impl ReadableTable<([u8; 32], u32), &'static [u8]>,
    id: &ChunkId,
    expected: usize,
) -> Result<Option<Vec<u8>>> {
    let key = *id.as_bytes();
    if expected > 0 {
        let mut buf = Vec::with_capacity(expected.min(MAX_SEALED));
        for index in 0..expected.div_ceil(SEGMENT) {
            match table.get((key, index as u32))? {
                Some(segment) => buf.extend_from_slice(segment.value()),
                None if index == 0 => return Ok(None),
                None => return Err(StorageError::Corrupt(format!("chunk {id} has a missing segment"))),
            }
        }
        return Ok(Some(buf));
    }
    let mut out: Option<Vec<u8>> = None;
    for item in table.range((key, 0)..=(key, u32::MAX))? {
        let (k, v) = item?;
        let buf = out.get_or_insert_with(Vec::new);
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A sized read takes exactly the segments its length needs and agrees with the unsized
    /// one; a segment missing inside that length is corruption, a chunk not stored is `None`.
    #[test]
    fn sized_reads_take_the_segments_they_need() {
        let dir = tempfile::tempdir().unwrap();
        let db = Database::create(dir.path().join("t.redb")).unwrap();
        let sealed: Vec<u8> = (0..2 * SEGMENT + 1000).map(|i| (i % 251) as u8).collect();
        let (id, gappy, next) = (ChunkId::of(b"a"), ChunkId::of(b"b"), ChunkId::of(b"c"));
        let txn = db.begin_write().unwrap();
        {
            let mut table = txn.open_table(CHUNKS).unwrap();
            for (i, segment) in sealed.chunks(SEGMENT).enumerate() {
                table.insert((*id.as_bytes(), i as u32), segment).unwrap();
                // Segment 1 left out: a hole inside the chunk.
                if i != 1 {
                    table.insert((*gappy.as_bytes(), i as u32), segment).unwrap();
                }
                table.insert((*next.as_bytes(), i as u32), segment).unwrap();
            }
        }
        txn.commit().unwrap();
        let txn = db.begin_read().unwrap();
        let table = txn.open_table(CHUNKS).unwrap();
        assert_eq!(read_sealed_sized(&table, &id, sealed.len()).unwrap().as_deref(), Some(&sealed[..]));
        assert_eq!(read_sealed(&table, &id).unwrap().as_deref(), Some(&sealed[..]));
        assert!(matches!(read_sealed_sized(&table, &gappy, sealed.len()), Err(StorageError::Corrupt(_))));
        assert!(matches!(read_sealed(&table, &gappy), Err(StorageError::Corrupt(_))));
        assert_eq!(read_sealed_sized(&table, &ChunkId::of(b"none"), 10).unwrap(), None);
        // A shorter length reads a prefix, which the caller's verification then refuses.
        assert_eq!(read_sealed_sized(&table, &id, 10).unwrap().unwrap(), &sealed[..SEGMENT]);
    }
}
