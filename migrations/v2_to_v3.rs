//! Schema 2 → 3.
//!
//! Schema 3 gives each name record the S3 ETag and headers an object was written with
//! (`NameRecordV3` in `names_v3`). Every schema 2 record moves over with none of either: its
//! file id stands in for the ETag, as it does for files written through the native API.

use redb::{ReadableTable, WriteTransaction};

use super::v1_to_v2::NAMES_V2;
use crate::storage::records::{NameRecordV2, NameRecordV3, decode, encode};
use crate::storage::{NAMES, Result};

pub fn upgrade(txn: &WriteTransaction) -> Result<()> {
    {
        let old = txn.open_table(NAMES_V2)?;
        let mut names = txn.open_table(NAMES)?;
        for item in old.iter()? {
            let (name, raw) = item?;
            let record: NameRecordV3 = decode::<NameRecordV2>("name record", raw.value())?.into();
            names.insert(name.value(), encode(&record).as_slice())?;
        }
    }
    txn.delete_table(NAMES_V2)?;
    Ok(())
}
