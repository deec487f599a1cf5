//! Schema 3 → 4.
//!
//! Schema 4 queues the chunks whose use count is zero (`gc_chunks_v1`), so that the collector
//! reads the queue instead of every chunk's count, and keeps the live names per folder
//! (`folders_v1`), so that a listing's total is one read. Both start from one scan of the old
//! tables, once.

use redb::{ReadableTable, WriteTransaction};

use crate::storage::records::{NameRecordV3, decode};
use crate::storage::{CHUNK_REFS, FOLDERS, GC_CHUNKS, HIDDEN_PREFIX, NAMES, Result, folders};

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
    for item in names.iter()? {
        let (name, raw) = item?;
        let name = name.value();
        if !name.starts_with(HIDDEN_PREFIX)
            && decode::<NameRecordV3>("name record", raw.value())?.file.is_some()
        {
            folders::count(&mut counts, name, true)?;
        }
    }
    Ok(())
}
