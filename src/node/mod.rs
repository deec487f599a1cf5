//! Use cases: put, get, delete, list, status. The one place storage, crypto and the cluster
//! are composed; HTTP handlers call only this.

mod drain;
mod gc;
mod read;
pub mod registry;
mod scrub;
mod upload;

use std::sync::Arc;
use std::time::Instant;

pub use gc::{Collector, GcTotals, PERIOD as GC_PERIOD};
pub use read::{ByteStream, Pieces};
pub use scrub::{PERIOD as SCRUB_PERIOD, ScrubReport, Scrubber};
pub use upload::{PutOutcome, Staged, Upload};

use crate::clock::{Clock, unix_ms};
use crate::cluster::{Cluster, ClusterConfig, ClusterError, PeerView, RepairReport};
use crate::content::{ChunkId, FileId, FileName, Manifest, NameError, NodeId};
use crate::crypto::{CryptoError, Keys};
pub use crate::events::{Event, Events};
use crate::health::Health;
use crate::runtime;
use crate::storage::{
    Expect, ListPage, ListQuery, NameRecord, Relink, SpaceReport, Stats, StorageError, Store,
};

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("{0}")]
    BadName(#[from] NameError),
    #[error("no such file")]
    NotFound,
    #[error("the upload is larger than the limit of {limit} bytes")]
    TooLarge { limit: u64 },
    #[error("reading the request body failed: {0}")]
    Body(std::io::Error),
    #[error("chunk {chunk} failed verification: {source}")]
    Integrity { chunk: ChunkId, source: CryptoError },
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    #[error("bad metadata: {0}")]
    BadMetadata(String),
    #[error("{0}")]
    Invalid(String),
    /// A bound on concurrent work is reached; the client may retry later.
    #[error("{0}")]
    Busy(String),
    /// A conditional request's precondition did not hold; nothing changed.
    #[error("{0}")]
    Precondition(String),
    #[error("the node is shutting down")]
    ShuttingDown,
}

pub type Result<T, E = NodeError> = std::result::Result<T, E>;

/// Why a node must not start on its data directory.
#[derive(Debug, thiserror::Error)]
pub enum DataKeyError {
    #[error(
        "the data directory's chunks are sealed under a different cluster secret; start this node \
         with the secret it was created with (--secret-file or DISTSTORE_SECRET)"
    )]
    WrongSecret,
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// A refused conditional write, in the words a client reads.
pub fn precondition_failed() -> NodeError {
    NodeError::Precondition(
        "the precondition failed: the name's current content is not what If-Match / If-None-Match expected"
            .into(),
    )
}

fn precondition(e: NodeError) -> NodeError {
    match e {
        NodeError::Storage(StorageError::PreconditionFailed) => precondition_failed(),
        other => other,
    }
}

/// Names a prefix move or copy relinks at once.
const RELOCATE_PARALLEL: usize = 32;

/// One page of the names under `prefix`, in name order.
fn prefix_page(prefix: &str, after: Option<String>) -> ListQuery {
    ListQuery { prefix: prefix.to_owned(), after, limit: 1000, ..Default::default() }
}

/// Refuses a data directory written under another secret. Started anyway, the node would fail
/// every read, seal new chunks under a second key while deduplicating against chunks it cannot
/// open, and its scrub would take every chunk for damaged. The first start records the check
/// value; a database from before the check was kept gets it only once some of its own chunks
/// open under this key.
pub async fn check_data_key(store: &Store, keys: &Keys) -> Result<(), DataKeyError> {
    match store.key_check().await? {
        Some(check) if keys.opens_key_check(&check) => Ok(()),
        Some(_) => Err(DataKeyError::WrongSecret),
        None => {
            let (sample, keys2) = (store.clone(), keys.clone());
            if !runtime::blocking(move || opens_stored_chunks(&sample, &keys2)).await? {
                return Err(DataKeyError::WrongSecret);
            }
            Ok(store.set_key_check(keys.key_check()).await?)
        }
    }
}

/// Blocking: whether the key opens stored chunks. True for an empty store; else true when any
/// of the first few opens (under a wrong key none can, while one damaged chunk must not make
/// the right key look wrong).
fn opens_stored_chunks(store: &Store, keys: &Keys) -> Result<bool, StorageError> {
    const SAMPLE: usize = 16;
    let ids = store.chunk_ids_after_blocking(None, SAMPLE)?;
    if ids.is_empty() {
        return Ok(true);
    }
    for id in ids {
        if let Ok(Some(sealed)) = store.chunk_blocking(id)
            && keys.verify_chunk(&id, &sealed).is_ok()
        {
            return Ok(true);
        }
    }
    Ok(false)
}

pub struct NodeConfig {
    pub max_upload_bytes: u64,
    /// Bytes per second the scrub re-verifies; 0 turns it off.
    pub scrub_rate: u64,
    /// How often the collector runs without being woken by a delete.
    pub gc_period: std::time::Duration,
    /// Time between scrub passes.
    pub scrub_period: std::time::Duration,
    /// Gates on connections and uploads, shared with the HTTP and S3 fronts.
    pub limits: Arc<crate::limits::Limits>,
}

/// What a writer says about a file beside its bytes: served back with it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Attrs {
    pub content_type: String,
    /// The S3 ETag (see [`NameRecord::etag`]); `None` for native uploads.
    pub etag: Option<String>,
    /// Response headers to serve the file with (see [`NameRecord::headers`]).
    pub headers: Vec<(String, String)>,
}

impl Attrs {
    pub fn typed(content_type: String) -> Self {
        Self { content_type, ..Self::default() }
    }

    /// Keeps the client's modification time of the file (unix ms), served back as
    /// [`MTIME_HEADER`] and in listings.
    pub fn with_mtime(mut self, mtime_ms: Option<u64>) -> Self {
        if let Some(ms) = mtime_ms {
            self.headers.retain(|(k, _)| k != MTIME_HEADER);
            self.headers.push((MTIME_HEADER.into(), format_mtime(ms)));
        }
        self
    }
}

/// The header a client's modification time travels in, both ways, and the key it is kept
/// under among a name's headers (which replicate with the name).
pub const MTIME_HEADER: &str = "x-diststore-mtime";

/// Unix seconds with up to millisecond decimals: `1700000000`, `1700000000.25`.
pub fn format_mtime(ms: u64) -> String {
    match ms % 1000 {
        0 => (ms / 1000).to_string(),
        frac => format!("{}.{}", ms / 1000, format!("{frac:03}").trim_end_matches('0')),
    }
}

/// The latest modification time kept: 9999-12-31T23:59:59Z, the last one RFC 3339 can state.
const MAX_MTIME_SECS: u64 = 253_402_300_799;

/// Parses unix seconds with optional decimals (sub-millisecond digits are dropped), up to
/// the end of year 9999.
pub fn parse_mtime(s: &str) -> Option<u64> {
    let s = s.trim();
    let (whole, frac) = s.split_once('.').unwrap_or((s, ""));
    if whole.is_empty() || whole.len() > 12 || !whole.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if frac.len() > 9 || !frac.bytes().all(|b| b.is_ascii_digit()) || (s.contains('.') && frac.is_empty()) {
        return None;
    }
    let ms: u64 = format!("{:0<3}", &frac[..frac.len().min(3)]).parse().ok()?;
    let secs = whole.parse::<u64>().ok().filter(|s| *s <= MAX_MTIME_SECS)?;
    Some(secs * 1000 + ms)
}

/// The client's modification time kept with a name, in unix ms.
pub fn mtime_of(record: &NameRecord) -> Option<u64> {
    record.headers.iter().find(|(k, _)| k == MTIME_HEADER).and_then(|(_, v)| parse_mtime(v))
}

#[cfg(test)]
mod mtime_tests {
    #[test]
    fn mtimes_parse_and_print_back() {
        use super::{format_mtime, parse_mtime};
        assert_eq!(parse_mtime("1700000000.25"), Some(1_700_000_000_250));
        assert_eq!(parse_mtime("1700000000.123456"), Some(1_700_000_000_123));
        assert_eq!(parse_mtime("0"), Some(0));
        assert_eq!(format_mtime(1_700_000_000_250), "1700000000.25");
        assert_eq!(format_mtime(1_700_000_000_000), "1700000000");
        assert_eq!(parse_mtime("253402300799"), Some(253_402_300_799_000));
        for bad in ["253402300800", "1.", ".5", "-1", "1e9", "", "1.2.3", "999999999999"] {
            assert_eq!(parse_mtime(bad), None, "{bad:?}");
        }
        assert_eq!(crate::clock::rfc3339(253_402_300_799_999), "9999-12-31T23:59:59.999Z");
    }
}

/// A move or copy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Relocate {
    Move,
    Copy,
}

/// A file as found by name.
#[derive(Debug, Clone)]
pub struct Found {
    pub record: NameRecord,
    pub manifest: Manifest,
}

/// What the details view shows about one file.
#[derive(Debug, Clone)]
pub struct FileInfo {
    pub found: Found,
    pub distinct_chunks: usize,
    /// Bytes of this file's chunks that other stored files use too: what dedup saved.
    pub shared_bytes: u64,
    /// Each live node holding some of the file's distinct chunks: (node, URL, how many).
    pub holders: Vec<(NodeId, String, usize)>,
}

#[derive(Debug, Clone)]
pub struct Status {
    pub node_id: NodeId,
    pub url: String,
    pub uptime_secs: u64,
    pub stats: Stats,
    /// The database file and the disk it is on.
    pub space: SpaceReport,
    pub max_upload_bytes: u64,
    pub replication: usize,
    pub peers: Vec<PeerView>,
    pub repair: RepairReport,
    pub scrub: ScrubReport,
    pub gc: GcTotals,
    /// Leases peers' uploads and downloads hold on this node now.
    pub leases: usize,
    pub handshakes_refused: u64,
}

pub struct Node {
    store: Store,
    keys: Keys,
    clock: Arc<Clock>,
    config: NodeConfig,
    events: Arc<Events>,
    collector: Collector,
    scrubber: Scrubber,
    cluster: Arc<Cluster>,
    health: Arc<Health>,
    registry: registry::Registry,
    started: Instant,
    drain: drain::Drain,
}

impl Node {
    pub fn new(store: Store, keys: Keys, config: NodeConfig, cluster: ClusterConfig) -> Arc<Node> {
        let clock = Arc::new(Clock::new(store.node_id()));
        // A write after a restart (or a clock step back) must still order after what is
        // stored, or last-writer-wins would drop it.
        match store.max_stamp_blocking() {
            Ok(Some(latest)) => clock.observe(&latest),
            Ok(None) => {}
            Err(e) => log::warn!("could not read the latest stamp: {e}"),
        }
        let events = Arc::new(Events::default());
        let health = Arc::new(Health::default());
        let cluster =
            Cluster::new(store.clone(), keys.clone(), clock.clone(), events.clone(), health.clone(), cluster);
        Arc::new(Node {
            collector: Collector::new(store.clone(), config.gc_period),
            scrubber: Scrubber::new(
                store.clone(),
                cluster.clone(),
                keys.clone(),
                config.scrub_rate,
                config.scrub_period,
            ),
            store,
            keys,
            clock,
            config,
            events,
            cluster,
            health,
            registry: Default::default(),
            started: Instant::now(),
            drain: Default::default(),
        })
    }

    /// Marks a background loop as running until the mark drops (see [`Health`]).
    pub fn running(&self, name: &'static str) -> crate::health::Running {
        self.health.running(name)
    }

    /// What keeps this node from working, if anything: a stopped storage writer, a database
    /// being reopened after a failure, a disk below its reserve, or a background loop that
    /// ended.
    pub async fn problems(&self) -> Vec<String> {
        let store = self.store.clone();
        let mut out = runtime::blocking(move || store.problems_blocking()).await;
        out.extend(self.health.stopped().into_iter().map(|name| format!("the {name} loop has stopped")));
        out
    }

    pub fn node_id(&self) -> NodeId {
        self.store.node_id()
    }

    pub fn limits(&self) -> &Arc<crate::limits::Limits> {
        &self.config.limits
    }

    pub fn max_upload_bytes(&self) -> u64 {
        self.config.max_upload_bytes
    }

    /// The cipher a resumable upload's spooled bytes are kept under (see `http::uploads`).
    pub fn spool_cipher(&self, upload: &str) -> crate::crypto::SpoolCipher {
        self.keys.spool_cipher(upload)
    }

    pub fn events(&self) -> &Events {
        &self.events
    }

    pub fn collector(&self) -> &Collector {
        &self.collector
    }

    pub fn scrubber(&self) -> &Scrubber {
        &self.scrubber
    }

    pub fn cluster(&self) -> &Arc<Cluster> {
        &self.cluster
    }

    /// The cluster, when some peer is up to share the work; else this node works alone.
    fn with_peers(&self) -> Option<&Arc<Cluster>> {
        (self.cluster.peers_up() > 0).then_some(&self.cluster)
    }

    /// Starts an upload of content whose name may not be known yet (multipart forms can send
    /// the file before its key). Refused up front when too few nodes are up to take it; a
    /// node that has not yet heard from its members since it started waits for them (bounded)
    /// rather than taking the write alone.
    pub async fn upload(self: &Arc<Self>) -> Result<Upload> {
        let in_flight = self.drain.enter().ok_or(NodeError::ShuttingDown)?;
        // Refused before anything waits, so a full node answers at once.
        let pass = self.config.limits.uploads.try_enter().ok_or_else(|| {
            NodeError::Busy(format!(
                "{} uploads are in flight, the most this node takes at once; retry later",
                self.config.limits.uploads.max()
            ))
        })?;
        self.cluster.wait_settled().await;
        self.cluster.check_writable()?;
        // A disk below its reserve refuses the upload before its body is read, not after.
        let store = self.store.clone();
        runtime::blocking(move || store.space_for(0)).await?;
        Ok(Upload::new(
            self.store.clone(),
            self.keys.clone(),
            self.with_peers().cloned(),
            self.config.max_upload_bytes,
            pass,
        )
        .in_flight(in_flight))
    }

    /// Names staged content, durably, and tells the cluster. The holders keep the upload's
    /// chunks pinned until the announcement is done; after that the manifest (or, where the
    /// announcement did not arrive, the confirmation record until anti-entropy brings it)
    /// keeps them.
    pub async fn commit(&self, staged: Staged, name: FileName, attrs: Attrs) -> Result<PutOutcome> {
        self.commit_if(staged, name, attrs, Expect::default()).await
    }

    /// As [`Node::commit`], when the name's current content passes `expect` at the moment
    /// of writing (checked by the writer, so racing writers cannot both pass).
    pub async fn commit_if(
        &self,
        mut staged: Staged,
        name: FileName,
        attrs: Attrs,
        expect: Expect,
    ) -> Result<PutOutcome> {
        let placed = staged.placed.take();
        let stamp = self.clock.now();
        let record = NameRecord {
            file: Some(*staged.manifest.id.as_bytes()),
            size: staged.manifest.size,
            content_type: attrs.content_type,
            modified_ms: unix_ms(),
            stamp,
            etag: attrs.etag,
            headers: attrs.headers,
        };
        let announce = self
            .with_peers()
            .map(|_| Cluster::update_with(name.to_string(), record.clone(), Some(&staged.manifest)));
        let outcome = staged.commit(&self.store, name.clone(), record, expect).await.map_err(precondition)?;
        self.events.publish(Event::Put { name: name.to_string() });
        if let Some(update) = announce {
            self.cluster.announce(update).await;
        }
        drop(placed);
        Ok(outcome)
    }

    pub async fn find(&self, name: &FileName) -> Result<Found> {
        let (record, manifest) = self.store.lookup(name).await?.ok_or(NodeError::NotFound)?;
        Ok(Found { record, manifest })
    }

    pub async fn find_blob(&self, id: FileId) -> Result<Manifest> {
        self.store.manifest(id).await?.ok_or(NodeError::NotFound)
    }

    /// Streams bytes `start..end` of a file, verifying every chunk. The first chunk is read
    /// before this returns, so a missing or corrupt start is an error, not a broken stream.
    pub async fn read(&self, manifest: &Manifest, start: u64, end: u64) -> Result<ByteStream> {
        Ok(self.read_pieces(manifest, start, end).await?.into())
    }

    /// As [`Node::read`], as a stream of verified byte buffers.
    pub async fn read_pieces(&self, manifest: &Manifest, start: u64, end: u64) -> Result<Pieces> {
        read::open(self.store.clone(), self.keys.clone(), self.cluster.clone(), manifest, start, end).await
    }

    /// Names content that is already stored (a copy: no bytes move). The content's chunks stay
    /// pinned here and on every peer until the new name is announced, so a delete of the
    /// source meanwhile cannot collect them; content no node holds any more is refused.
    pub async fn link(&self, manifest: Manifest, name: FileName, attrs: Attrs) -> Result<PutOutcome> {
        let ids: Vec<ChunkId> = manifest.distinct_chunks().iter().map(|c| c.id).collect();
        let held =
            read::hold(&self.store, &self.cluster, &ids).await?.map_err(ClusterError::ChunkUnavailable)?;
        let staged = Staged::existing(manifest, !self.cluster.has_members(), held.pins);
        let outcome = self.commit(staged, name, attrs).await;
        drop(held.lease);
        outcome
    }

    /// Reads a whole (small) file into memory.
    pub async fn read_all(&self, manifest: &Manifest) -> Result<Vec<u8>> {
        use futures_lite::AsyncReadExt;
        let mut out = Vec::with_capacity(manifest.size as usize);
        self.read(manifest, 0, manifest.size).await?.read_to_end(&mut out).await.map_err(NodeError::Body)?;
        Ok(out)
    }

    /// Stores `data` under `name` (for small files the node writes itself).
    pub async fn put_bytes(
        self: &Arc<Self>,
        name: FileName,
        data: &[u8],
        attrs: Attrs,
    ) -> Result<PutOutcome> {
        let mut upload = self.upload().await?;
        upload.write(data).await?;
        let staged = upload.finish().await?;
        self.commit(staged, name, attrs).await
    }

    pub async fn delete(&self, name: &FileName) -> Result<()> {
        self.delete_if(name, Expect::default()).await
    }

    /// Deletes a name whose current content passes `expect` (checked by the writer).
    pub async fn delete_if(&self, name: &FileName, expect: Expect) -> Result<()> {
        let stamp = self.clock.now();
        let removed =
            self.store.delete(name, stamp, expect).await.map_err(StorageError::into).map_err(precondition)?;
        if !removed {
            return Err(NodeError::NotFound);
        }
        self.events.publish(Event::Delete { name: name.to_string() });
        if self.with_peers().is_some() {
            let tombstone = NameRecord::tombstone(stamp);
            self.cluster.announce(Cluster::update_with(name.to_string(), tombstone, None)).await;
        }
        Ok(())
    }

    /// Moves or copies one name, metadata only: `to` names the same stored file as `from`
    /// did (content type, mtime and headers too), and a move removes `from` in the same
    /// transaction. No stored bytes are added. The file's chunks stay pinned here and on
    /// every peer until the change is announced, as for [`Node::link`]. `overwrite: false`
    /// refuses an existing `to` with [`NodeError::Precondition`].
    pub async fn relocate(
        &self,
        how: Relocate,
        from: &FileName,
        to: &FileName,
        overwrite: bool,
    ) -> Result<()> {
        if from == to {
            return Err(NodeError::Invalid("the source and the destination are the same name".into()));
        }
        // A source rewritten between the lookup and the write is looked up again.
        for _ in 0..3 {
            let found = self.find(from).await?;
            let ids: Vec<ChunkId> = found.manifest.distinct_chunks().iter().map(|c| c.id).collect();
            let held = read::hold(&self.store, &self.cluster, &ids)
                .await?
                .map_err(ClusterError::ChunkUnavailable)?;
            let mut record = found.record.clone();
            record.stamp = self.clock.now();
            if how == Relocate::Copy {
                record.modified_ms = unix_ms();
            }
            let tombstone = (how == Relocate::Move).then(|| self.clock.now());
            let expect = if overwrite { Expect::default() } else { Expect::absent() };
            let relink = Relink {
                from: from.to_string(),
                to: to.to_string(),
                file: found.manifest.id,
                record: record.clone(),
                tombstone,
                expect,
            };
            match self.store.relink(relink).await {
                Err(StorageError::SourceChanged) => continue,
                Err(StorageError::PreconditionFailed) => {
                    return Err(NodeError::Precondition(format!("{to} exists and overwrite is false")));
                }
                Err(e) => return Err(e.into()),
                Ok(()) => {}
            }
            self.events.publish(Event::Put { name: to.to_string() });
            if let Some(stamp) = tombstone {
                self.events.publish(Event::Delete { name: from.to_string() });
                if self.with_peers().is_some() {
                    let put = Cluster::update_with(to.to_string(), record, Some(&found.manifest));
                    let gone = Cluster::update_with(from.to_string(), NameRecord::tombstone(stamp), None);
                    self.cluster.announce_all(vec![put, gone]).await;
                }
            } else if self.with_peers().is_some() {
                self.cluster
                    .announce(Cluster::update_with(to.to_string(), record, Some(&found.manifest)))
                    .await;
            }
            drop(held);
            return Ok(());
        }
        Err(NodeError::Precondition(format!("{from} kept changing during the request; try again")))
    }

    /// Moves or copies every name under the prefix `from` to the same relative name under
    /// `to`, each name atomically (see [`Node::relocate`]). With `overwrite: false` every
    /// destination is checked first, so a refusal changes nothing (a destination created
    /// meanwhile is still refused, name by name). Returns how many names it moved.
    pub async fn relocate_prefix(&self, how: Relocate, from: &str, to: &str, overwrite: bool) -> Result<u64> {
        if to.starts_with(from) {
            return Err(NodeError::Invalid("the destination lies inside the source".into()));
        }
        let target = |name: &str| FileName::new(format!("{to}{}", &name[from.len()..]));
        if !overwrite {
            let mut after = None;
            loop {
                let page = self.list(prefix_page(from, after)).await?;
                for entry in &page.entries {
                    let dest = target(&entry.name)?;
                    if self.store.lookup(&dest).await?.is_some() {
                        return Err(NodeError::Precondition(format!("{dest} exists and overwrite is false")));
                    }
                }
                match page.next {
                    Some(next) => after = Some(next),
                    None => break,
                }
            }
        }
        use futures_util::StreamExt;
        let mut done = 0;
        let mut after = None;
        loop {
            let page = self.list(prefix_page(from, after)).await?;
            let mut pairs = Vec::with_capacity(page.entries.len());
            for entry in &page.entries {
                pairs.push((FileName::new(entry.name.clone())?, target(&entry.name)?));
            }
            // Several at once, so the writer commits them in shared transactions (one fsync
            // for many names); each name stays atomic on its own.
            let mut results = futures_util::stream::iter(pairs)
                .map(|(source, dest)| async move { self.relocate(how, &source, &dest, overwrite).await })
                .buffer_unordered(RELOCATE_PARALLEL);
            while let Some(result) = results.next().await {
                match result {
                    Ok(()) => done += 1,
                    // Deleted by someone else meanwhile: nothing to move.
                    Err(NodeError::NotFound) => {}
                    Err(e) => return Err(e),
                }
            }
            match page.next {
                Some(next) => after = Some(next),
                None => break,
            }
        }
        if done == 0 {
            return Err(NodeError::NotFound);
        }
        Ok(done)
    }

    /// Live names matching the query, without the node's own metadata.
    pub async fn list(&self, mut query: ListQuery) -> Result<ListPage> {
        query.hidden = Some(registry::SYSTEM_PREFIX);
        Ok(self.store.list(query).await?)
    }

    pub async fn info(&self, name: &FileName) -> Result<FileInfo> {
        let found = self.find(name).await?;
        let distinct: Vec<_> = found.manifest.distinct_chunks().into_iter().cloned().collect();
        let ids: Vec<ChunkId> = distinct.iter().map(|c| c.id).collect();
        let refs = self.store.chunk_refs(ids.clone()).await?;
        let shared_bytes =
            distinct.iter().zip(&refs).filter(|(_, r)| **r > 1).map(|(c, _)| u64::from(c.len)).sum();
        let holders = self.cluster.holders(ids).await;
        Ok(FileInfo { distinct_chunks: distinct.len(), shared_bytes, holders, found })
    }

    pub async fn status(&self) -> Result<Status> {
        Ok(Status {
            node_id: self.node_id(),
            url: self.cluster.url(),
            uptime_secs: self.started.elapsed().as_secs(),
            stats: self.store.stats().await?,
            space: self.store.space().await?,
            max_upload_bytes: self.config.max_upload_bytes,
            replication: self.cluster.replication(),
            peers: self.cluster.peers(),
            repair: self.cluster.repair_report(),
            scrub: self.scrubber.report(),
            gc: self.collector.totals(),
            leases: self.cluster.leases_held(),
            handshakes_refused: self.cluster.handshakes_refused(),
        })
    }

    /// Starts a shutdown: new uploads are refused (503) and [`Node::stopping`] resolves, so
    /// the listeners stop accepting. Loops ending from now on are not failures.
    pub fn begin_shutdown(&self) {
        self.health.shut_down();
        self.drain.begin();
    }

    /// Resolves once [`Node::begin_shutdown`] was called.
    pub async fn stopping(&self) {
        self.drain.stopping().await
    }

    /// Waits up to `grace` for the uploads in flight to commit or fail; returns how many
    /// were still running when it gave up.
    pub async fn drain_uploads(&self, grace: std::time::Duration) -> usize {
        let running = self.drain.in_flight();
        if running > 0 {
            log::info!("waiting up to {grace:?} for {running} uploads in flight");
        }
        if self.drain.drained(grace).await { 0 } else { self.drain.in_flight() }
    }

    /// Waits up to `limit` for the background loops to end once their shutdown signal closed
    /// (each ends after its current unit of work); returns how many still run.
    pub async fn wait_loops_stopped(&self, limit: std::time::Duration) -> usize {
        let deadline = Instant::now() + limit;
        while self.health.live() > 0 && Instant::now() < deadline {
            runtime::sleep(std::time::Duration::from_millis(10)).await;
        }
        self.health.live()
    }

    /// Finishes queued writes and closes the database cleanly.
    pub async fn shutdown(&self) -> Result<()> {
        self.health.shut_down();
        Ok(self.store.close().await?)
    }
}
