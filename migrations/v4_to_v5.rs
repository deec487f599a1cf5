//! Schema 4 → 5.
//!
//! Schema 5 keeps the live names by size and by modified time, per folder and for the whole
//! store (`sorted_names_v1`, see `storage::sorted`), so that a listing in those orders reads
//! one page instead of ranking every name. The index is built from the names table in batches
//! of [`BATCH`] names: each batch is read, then written, so memory stays one batch whatever the
//! store's size. All batches belong to the opening transaction: the upgrade completes, or the
//! database stays at schema 4.

use std::ops::Bound;

use redb::{ReadableTable, WriteTransaction};

use crate::storage::records::{NameRecordV3, decode};
use crate::storage::{HIDDEN_PREFIX, NAMES, Result, SORTED, sorted};

/// Names read per batch.
pub const BATCH: usize = 10_000;

pub fn upgrade(txn: &WriteTransaction) -> Result<()> {
    let names = txn.open_table(NAMES)?;
    let mut index = txn.open_table(SORTED)?;
    let mut last: Option<String> = None;
    loop {
        let from = match last.as_deref() {
            Some(name) => Bound::Excluded(name),
            None => Bound::Unbounded,
        };
        let mut batch = Vec::with_capacity(BATCH);
        let mut read = 0;
        for item in names.range::<&str>((from, Bound::Unbounded))?.take(BATCH) {
            let (name, raw) = item?;
            let name = name.value().to_owned();
            read += 1;
            let record = decode::<NameRecordV3>("name record", raw.value())?;
            if !name.starts_with(HIDDEN_PREFIX) && record.file.is_some() {
                batch.push((name.clone(), record));
            }
            last = Some(name);
        }
        for (name, record) in &batch {
            sorted::index(&mut index, name, record, true)?;
        }
        if read < BATCH {
            return Ok(());
        }
    }
}
