//! Ordered schema upgrades, run inside the opening write transaction, so an upgrade either
//! completes or leaves the old database untouched.
//!
//! Each step is a file named `v{N}_to_v{N+1}.rs` that names the frozen table definitions of
//! both versions. `fixtures/` holds databases written by older versions; the tests open them.

pub mod v1_to_v2;
pub mod v2_to_v3;
pub mod v3_to_v4;
pub mod v4_to_v5;

use redb::WriteTransaction;

use super::{Result, StorageError};

/// Runs every step from `from` up to the current schema.
pub fn upgrade(txn: &WriteTransaction, from: u64) -> Result<()> {
    let mut version = from;
    while version < super::SCHEMA_VERSION {
        match version {
            1 => v1_to_v2::upgrade(txn)?,
            2 => v2_to_v3::upgrade(txn)?,
            3 => v3_to_v4::upgrade(txn)?,
            4 => v4_to_v5::upgrade(txn)?,
            other => {
                return Err(StorageError::Corrupt(format!("no upgrade known from schema {other}")));
            }
        }
        version += 1;
    }
    Ok(())
}
