//! Anti-entropy: nodes compare a digest of their names and exchange the records that differ,
//! so every node converges to the same names after missed messages, restarts and partitions.
//!
//! Names fall into 256 buckets (first byte of SHA-256 of the name); a bucket's digest is the
//! XOR of a hash of each of its (name, stamp) pairs, kept by the storage writer as records
//! change, so a digest costs 256 reads rather than a hash of every name. Only buckets whose
//! digests differ are listed, each from its own range of an index of names by bucket.
//! One exchange pulls the peer's newer records and pushes ours, each bucket's in batches that
//! the receiver applies in one durable commit; at most one exchange per peer runs at a time.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::messages::{NameUpdate, Request, Response};
use super::{Cluster, ClusterError, Link, NAMES_TIMEOUT};
use crate::content::FileId;
use crate::runtime;
use crate::storage::Stamp;

/// Records pushed per request, and their rough encoded size: far below a message's bound, and
/// many records per durable commit on the receiver.
const PUSH_RECORDS: usize = 512;
const PUSH_BYTES: usize = 4 << 20;

/// Clears a link's exchange mark when an exchange ends, however it ends.
struct Exchanging<'a>(&'a Link);

impl Drop for Exchanging<'_> {
    fn drop(&mut self) {
        self.0.exchanging.store(false, Ordering::Release);
    }
}

/// One exchange with one peer, unless one is already running with it. Returns how many records
/// moved (pulled, pushed).
pub async fn exchange(cluster: &Arc<Cluster>, link: &Link) -> Result<(usize, usize), ClusterError> {
    if link.exchanging.compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire).is_err() {
        return Ok((0, 0));
    }
    let _mark = Exchanging(link);
    let theirs = match link.request(Request::Digest, NAMES_TIMEOUT).await {
        Ok(Response::Digest(d)) if d.len() == 256 => d,
        Ok(_) => return Ok((0, 0)),
        Err(e) => {
            log::debug!("digest from {}: {e}", link.url);
            return Ok((0, 0));
        }
    };
    let ours = cluster.store.name_digest().await?;
    let (mut pulled, mut pushed) = (0, 0);
    for bucket in 0..=255u8 {
        if theirs[usize::from(bucket)] == ours[usize::from(bucket)] {
            continue;
        }
        let their_records = match link.request(Request::ListBucket { bucket }, NAMES_TIMEOUT).await {
            Ok(Response::Bucket(b)) => b,
            _ => continue,
        };
        let ours: HashMap<String, _> = cluster.store.records(Some(bucket)).await?.into_iter().collect();
        let theirs_by_name: HashMap<&str, _> =
            their_records.iter().map(|u| (u.name.as_str(), Stamp::from(u.record.stamp))).collect();
        let mut push = Vec::new();
        for (name, record) in &ours {
            if theirs_by_name.get(name.as_str()).is_none_or(|stamp| *stamp < record.stamp) {
                push.push(cluster.update_for(name.clone(), record.clone()).await?);
            }
        }
        let mut pull: Vec<_> = their_records
            .into_iter()
            .filter(|u| ours.get(&u.name).is_none_or(|r| r.stamp < Stamp::from(u.record.stamp)))
            .collect();
        // Manifests travel one per message: a bucket of large files would not fit in one.
        for update in &mut pull {
            let Some(file) = update.record.file.map(FileId::from_bytes) else { continue };
            if cluster.store.manifest(file).await?.is_none() {
                match link.request(Request::GetManifest { id: *file.as_bytes() }, NAMES_TIMEOUT).await {
                    Ok(Response::Manifest(m)) => update.manifest = m,
                    _ => continue, // applying it without its manifest is refused; next round
                }
            }
        }
        pulled += pull.len();
        pushed += push.len();
        if !pull.is_empty() {
            // Names missed while away: their chunks may be this node's to hold, and nobody
            // placed them here.
            let chunks = cluster.apply_updates(pull).await?;
            cluster.suspect(chunks).await;
        }
        for updates in batches(push) {
            if let Err(e) = link.request(Request::ApplyNames { updates }, NAMES_TIMEOUT).await {
                log::debug!("pushing names to {}: {e}", link.url);
                break;
            }
        }
    }
    if pulled + pushed > 0 {
        log::info!("anti-entropy with {}: pulled {pulled}, pushed {pushed} name records", link.url);
    }
    Ok((pulled, pushed))
}

/// Splits updates into requests of at most [`PUSH_RECORDS`] records and about [`PUSH_BYTES`].
fn batches(updates: Vec<NameUpdate>) -> Vec<Vec<NameUpdate>> {
    let mut out: Vec<Vec<NameUpdate>> = Vec::new();
    let mut bytes = 0;
    for u in updates {
        let size = u.name.len()
            + u.record.content_type.len()
            + u.record.headers.iter().map(|(k, v)| k.len() + v.len()).sum::<usize>()
            + u.manifest.as_ref().map_or(0, |m| m.chunks.len() * 40)
            + 96;
        match out.last_mut() {
            Some(batch) if batch.len() < PUSH_RECORDS && bytes + size <= PUSH_BYTES => {
                bytes += size;
                batch.push(u);
            }
            _ => {
                bytes = size;
                out.push(vec![u]);
            }
        }
    }
    out
}

/// The periodic loop: one exchange with every up peer each period, until shutdown.
pub async fn run(cluster: Arc<Cluster>, shutdown: async_channel::Receiver<()>) {
    loop {
        if runtime::timeout(cluster.config.timing.sync_period, shutdown.recv()).await.is_some() {
            return;
        }
        for (_, link) in cluster.up_links() {
            if let Err(e) = exchange(&cluster, &link).await {
                log::warn!("anti-entropy with {} failed: {e}", link.url);
            }
        }
    }
}
