//! The collector's algorithm, apart from the writer's batching: inside a write transaction,
//! manifests whose last name went away release their chunks, confirmations past their grace
//! expire, and chunks nobody uses, pins or awaits go, each marked doomed first so that a pin
//! taken meanwhile knows to store its chunk again.

use redb::ReadableTable;

use super::Tables;
use crate::content::{ChunkId, FileId};
use crate::storage::{GcReport, Pins, Result, StorageError, read_manifest};
use crate::time::unix_ms;

impl Tables<'_> {
    pub(super) fn collect(&mut self, pins: &Pins) -> Result<GcReport> {
        let mut report = GcReport::default();
        let queued: Vec<[u8; 32]> =
            self.gc_files.iter()?.map(|item| item.map(|(k, _)| k.value())).collect::<Result<_, _>>()?;
        for file in queued {
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
                let refs = self.chunk_refs.get(k)?.map_or(0, |v| v.value());
                self.chunk_refs.insert(k, refs.saturating_sub(1))?;
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
        // failed or crashed before its commit. Pinned ones belong to transfers in flight,
        // confirmed ones await their manifest.
        let mut unused = Vec::new();
        for item in self.chunk_refs.iter()? {
            let (k, v) = item?;
            if v.value() == 0 && self.received.get(&k.value())?.is_none() {
                unused.push(ChunkId::from_bytes(k.value()));
            }
        }
        for id in pins.doom(unused) {
            self.chunk_refs.remove(id.as_bytes())?;
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
