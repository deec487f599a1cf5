//! Schema 3 → 4.
//!
//! Schema 4 queues the chunks whose use count is zero (`gc_chunks_v1`), so that the collector
//! reads the queue instead of every chunk's count, and keeps the live names per folder
//! (`folders_v1`), so that a listing's total is one read, and anti-entropy's bucket digests
//! and an index of names by bucket (`name_digests_v1`, `bucket_names_v1`), so that a digest is
//! 256 reads and a bucket one range. All start from one scan of the old tables, once.

use redb::{ReadableTable, WriteTransaction};

use crate::storage::records::{NameRecordV3, decode};
use crate::storage::{
    BUCKET_NAMES, CHUNK_REFS, FOLDERS, GC_CHUNKS, HIDDEN_PREFIX, NAME_DIGESTS, NAMES, Result, folders,
    name_bucket, tables,
};

pub fn upgrade(txn: &WriteTransaction) -> Result<()> {
    let refs = txn.open_table(CHUNK_REFS)?;
    let mut queue = txn.open_table(GC_CHUNKS)?;
    for item in refs.iter()? {
        let (id, count) = item?;
        if count.value() == 0 {
            queue.insert(id.value(), ())?;
        }
    }
    let names = txn.open_table(NAMES)?;
    let mut counts = txn.open_table(FOLDERS)?;
    let mut digests = txn.open_table(NAME_DIGESTS)?;
    let mut buckets = txn.open_table(BUCKET_NAMES)?;
    for item in names.iter()? {
        let (name, raw) = item?;
        let name = name.value();
        let record = decode::<NameRecordV3>("name record", raw.value())?;
        if !name.starts_with(HIDDEN_PREFIX) && record.file.is_some() {
            folders::count(&mut counts, name, true)?;
        }
        tables::update_digest(&mut digests, name, None, &record.stamp)?;
        buckets.insert((name_bucket(name), name), ())?;
    }
    Ok(())
}
