//! Offline tools over a stopped node's data directory: `diststore check` verifies everything
//! stored, `diststore export` writes files out of it. Both read the database read-only (see
//! `storage::snapshot`) and need only the secret; neither needs the node, the network or the
//! cluster.

pub mod check;
pub mod export;

use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::config::OfflineArgs;
use crate::content::ChunkId;
use crate::crypto::{Keys, Secret};
use crate::storage::StorageError;
use crate::storage::snapshot::{Snapshot, SnapshotError};

/// The database file in a data directory (as `main` names it).
pub const DB_FILE: &str = "diststore.redb";

/// Exit statuses: all well, problems found, or the tool could not run.
pub const EXIT_OK: i32 = 0;
pub const EXIT_PROBLEMS: i32 = 1;
pub const EXIT_CANNOT_RUN: i32 = 2;

/// The page cache for a read-only pass: each page is read once, so a large cache buys nothing.
const CACHE_BYTES: usize = 16 << 20;

#[derive(Debug, thiserror::Error)]
pub enum OfflineError {
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error("loading the secret: {0}")]
    Secret(std::io::Error),
    #[error("{}: {source}", path.display())]
    Open { path: PathBuf, source: SnapshotError },
    #[error(
        "the database's chunks are sealed under a different secret; give the one the node ran with \
         (--secret-file or DISTSTORE_SECRET)"
    )]
    WrongSecret,
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("{0}")]
    Io(String),
}

/// A stopped node's database, opened read-only, with the keys that open its chunks.
pub struct Opened {
    pub path: PathBuf,
    pub snapshot: Snapshot,
    pub keys: Keys,
    pub threads: usize,
}

/// Opens the data directory named by `args`: refuses a running node's, and a secret that does
/// not open the database's key check value.
pub fn open(args: &OfflineArgs) -> Result<Opened, OfflineError> {
    let path = args.data_dir.join(DB_FILE);
    let snapshot = Snapshot::open(&path, CACHE_BYTES)
        .map_err(|source| OfflineError::Open { path: path.clone(), source })?;
    let secret = args.secret_source()?.load().map_err(OfflineError::Secret)?;
    let keys = Secret::new(secret).keys();
    // A database from before the check value was kept has none; its chunks then show a wrong
    // secret as every chunk failing, which the report says.
    if let Some(check) = snapshot.key_check()?
        && !keys.opens_key_check(&check)
    {
        return Err(OfflineError::WrongSecret);
    }
    Ok(Opened { path, snapshot, keys, threads: args.threads() })
}

/// Runs `work` on each of `items` from `threads` threads, each with its own chunk reader;
/// returns what the calls returned, in `items` order.
pub(crate) fn parallel<T: Sync, R: Send>(
    opened: &Opened,
    items: &[T],
    work: impl Fn(&crate::storage::snapshot::ChunkReader, &T) -> R + Sync,
) -> Result<Vec<R>, OfflineError> {
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<(usize, R)>> = Mutex::new(Vec::with_capacity(items.len()));
    let threads = opened.threads.clamp(1, items.len().max(1));
    std::thread::scope(|scope| -> Result<(), OfflineError> {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                scope.spawn(|| -> Result<(), OfflineError> {
                    let reader = opened.snapshot.chunk_reader()?;
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(item) = items.get(i) else { return Ok(()) };
                        let r = work(&reader, item);
                        results.lock().unwrap_or_else(|p| p.into_inner()).push((i, r));
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().map_err(|_| OfflineError::Io("a worker thread panicked".into()))??;
        }
        Ok(())
    })?;
    let mut results = results.into_inner().unwrap_or_else(|p| p.into_inner());
    results.sort_unstable_by_key(|(i, _)| *i);
    Ok(results.into_iter().map(|(_, r)| r).collect())
}

/// Reads a chunk and opens it (decrypt, authenticate, re-hash): its plaintext, or why not.
pub(crate) fn read_chunk(
    reader: &crate::storage::snapshot::ChunkReader,
    keys: &Keys,
    id: &ChunkId,
) -> Result<Vec<u8>, String> {
    match reader.sealed(id) {
        Ok(Some(sealed)) => keys.open_chunk(id, sealed).map_err(|e| format!("chunk {id} {e}")),
        Ok(None) => Err(format!("chunk {id} is not stored here")),
        Err(e) => Err(format!("chunk {id}: {e}")),
    }
}
