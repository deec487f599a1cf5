//! The collector's algorithm, apart from the writer's batching: inside a write transaction,
//! manifests whose last name went away release their chunks, confirmations past their grace
//! expire, and chunks nobody uses, pins or awaits go, each marked doomed first so that a pin
//! taken meanwhile knows to store its chunk again.
//!
//! A pass works from queues (`gc_files_v1`, `gc_chunks_v1`) the writer fills as use counts
//! reach zero, never from a scan of every chunk, and takes at most [`BATCH`] entries of each,
//! so a delete costs what it released and one pass holds the writer for a bounded time.

use redb::ReadableTable;

use super::Tables;
use crate::content::{ChunkId, FileId};
use crate::storage::{GcReport, Pins, Result, StorageError, read_manifest};
use crate::time::unix_ms;

/// Entries of each queue one pass takes; the collector runs another pass when more are left.
pub(crate) const BATCH: usize = 4096;

impl Tables<'_> {
    pub(super) fn collect(&mut self, pins: &Pins) -> Result<GcReport> {
        let mut report = GcReport::default();
        let queued: Vec<[u8; 32]> = self
            .gc_files
            .iter()?
            .take(BATCH + 1)
            .map(|item| item.map(|(k, _)| k.value()))
            .collect::<Result<_, _>>()?;
        report.more = queued.len() > BATCH;
        for file in queued.into_iter().take(BATCH) {
            self.gc_files.remove(&file)?;
            if self.file_refs.get(&file)?.map_or(0, |v| v.value()) > 0 {
                continue; // named again since
            }
            let manifest = match read_manifest(&self.manifests, FileId::from_bytes(file)) {
                Ok(Some(m)) => m,
                Ok(None) => continue,
                // One bad record must not stop collection (or the writes batched with it).
                Err(e @ StorageError::Corrupt(_)) => {
                    log::error!("gc: skipping manifest {}: {e}", FileId::from_bytes(file));
                    continue;
                }
                Err(e) => return Err(e),
            };
            self.manifests.remove(&file)?;
            self.file_refs.remove(&file)?;
            self.stats.unique_bytes = self.stats.unique_bytes.saturating_sub(manifest.size);
            for chunk in manifest.distinct_chunks() {
                let k = chunk.id.as_bytes();
                let refs = self.chunk_refs.get(k)?.map_or(0, |v| v.value()).saturating_sub(1);
                self.chunk_refs.insert(k, refs)?;
                if refs == 0 {
                    self.gc_chunks.insert(k, ())?;
                }
            }
            report.files += 1;
        }
        // Confirmations whose manifest never came (the upload failed after confirming, or
        // its file was replaced before the manifest arrived) expire after the grace.
        let now = unix_ms();
        let expired: Vec<[u8; 32]> = self
            .received
            .iter()?
            .filter_map(|item| match item {
                Ok((k, at)) if now.saturating_sub(at.value()) >= self.grace_ms => Some(Ok(k.value())),
                Ok(_) => None,
                Err(e) => Some(Err(e)),
            })
            .collect::<Result<_, _>>()?;
        for key in &expired {
            self.received.remove(key)?;
        }
        // Chunks nobody uses: dropped by the manifests above, or left by an upload that
        // failed or crashed before its commit. Pinned ones belong to transfers in flight and
        // confirmed ones await their manifest: both stay queued for a later pass. The queue
        // is walked in chunk id order from where the last pass stopped, so entries that must
        // wait never hide the ones behind them.
        let queued: Vec<[u8; 32]> = {
            let from = self.gc_cursor;
            let after = self.gc_chunks.range(from..)?.take(BATCH);
            let before = self.gc_chunks.range(..from)?.take(BATCH);
            after
                .chain(before)
                .take(BATCH + 1)
                .map(|item| item.map(|(k, _)| k.value()))
                .collect::<Result<_, _>>()?
        };
        let full = queued.len() > BATCH;
        let mut unused = Vec::new();
        let mut settled = 0;
        for k in queued.into_iter().take(BATCH) {
            self.gc_cursor = next_key(k);
            match self.chunk_refs.get(&k)?.map(|v| v.value()) {
                Some(0) if self.received.get(&k)?.is_none() => unused.push(ChunkId::from_bytes(k)),
                Some(0) => {}
                // Used again, or gone: nothing to collect.
                _ => {
                    self.gc_chunks.remove(&k)?;
                    settled += 1;
                }
            }
        }
        let doomed = pins.doom(unused);
        // Entries that must wait (pinned, awaiting a manifest) do not call for another pass
        // at once: only a full batch that made headway does.
        report.more |= full && settled + doomed.len() > 0;
        for id in doomed {
            self.chunk_refs.remove(id.as_bytes())?;
            self.gc_chunks.remove(id.as_bytes())?;
            let len = self.remove_chunk(&id)?;
            if len > 0 {
                self.stats.stored_bytes = self.stats.stored_bytes.saturating_sub(len);
                report.chunks += 1;
                report.bytes += len;
            }
        }
        Ok(report)
    }
}

/// The smallest key after `k` (wrapping to zero past the last).
fn next_key(mut k: [u8; 32]) -> [u8; 32] {
    for byte in k.iter_mut().rev() {
        let (next, carry) = byte.overflowing_add(1);
        *byte = next;
        if !carry {
            break;
        }
    }
    k
}
