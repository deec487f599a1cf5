//! Schema 1 → 2.
//!
//! Schema 1 mapped a name straight to a file id (`names_v1`: name → 32 bytes), stored each
//! sealed chunk as one value (`chunks_v1`) and kept no totals. Schema 2 gives every name a
//! record (content type, modified time, version stamp, tombstones for deletes) in `names_v2`,
//! cuts chunks into fixed segments (`chunks_v2`) indexed by `chunk_index_v1`, and keeps
//! running totals in `meta`.
//! Manifests and reference counts kept their formats.

use redb::{ReadableTable, TableDefinition, WriteTransaction};

use crate::storage::records::{ManifestRecordV1, NameRecordV2, StampV1, decode, encode};
use crate::storage::{CHUNK_INDEX, CHUNKS, MANIFESTS, META, Result, SEGMENT, Stats, schema};

pub const NAMES_V1: &str = "names_v1";
/// Frozen: schema 2's names table (schema 3 moves it to `names_v3`).
pub const NAMES_V2: TableDefinition<&str, &[u8]> = TableDefinition::new("names_v2");
const NAMES_V1_TABLE: TableDefinition<&str, [u8; 32]> = TableDefinition::new(NAMES_V1);
const CHUNKS_V1: TableDefinition<[u8; 32], &[u8]> = TableDefinition::new("chunks_v1");

pub fn upgrade(txn: &WriteTransaction) -> Result<()> {
    let mut stats = Stats::default();
    {
        let old = txn.open_table(NAMES_V1_TABLE)?;
        let mut names = txn.open_table(NAMES_V2)?;
        let manifests = txn.open_table(MANIFESTS)?;
        for item in old.iter()? {
            let (name, file) = item?;
            let file = file.value();
            let Some(raw) = manifests.get(&file)? else {
                log::warn!("schema 1 name {:?} points at a missing manifest; dropped", name.value());
                continue;
            };
            let manifest: ManifestRecordV1 = decode("manifest", raw.value())?;
            // Schema 1 had no stamps: the manifest's creation time is the best version.
            let record = NameRecordV2 {
                file: Some(file),
                size: manifest.size,
                content_type: "application/octet-stream".into(),
                modified_ms: manifest.created_ms,
                stamp: StampV1 { wall_ms: manifest.created_ms, counter: 0, node: [0; 16] },
            };
            names.insert(name.value(), encode(&record).as_slice())?;
            stats.files += 1;
            stats.logical_bytes += manifest.size;
        }
        for item in manifests.iter()? {
            let (_, raw) = item?;
            stats.unique_bytes += decode::<ManifestRecordV1>("manifest", raw.value())?.size;
        }
        let old_chunks = txn.open_table(CHUNKS_V1)?;
        let mut chunks = txn.open_table(CHUNKS)?;
        let mut index = txn.open_table(CHUNK_INDEX)?;
        for item in old_chunks.iter()? {
            let (id, sealed) = item?;
            let sealed = sealed.value();
            for (i, segment) in sealed.chunks(SEGMENT).enumerate() {
                chunks.insert((id.value(), i as u32), segment)?;
            }
            index.insert(id.value(), sealed.len() as u32)?;
            stats.stored_bytes += sealed.len() as u64;
            stats.chunks += 1;
        }
        let mut meta = txn.open_table(META)?;
        schema::write_stats(&mut meta, &stats)?;
    }
    txn.delete_table(NAMES_V1_TABLE)?;
    txn.delete_table(CHUNKS_V1)?;
    Ok(())
}
