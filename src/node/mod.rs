//! Use cases: put, get, delete, list, status. The one place storage, crypto and the cluster
//! are composed; HTTP handlers call only this.

mod gc;
mod read;
pub mod registry;
mod scrub;
mod upload;

use std::sync::Arc;
use std::time::Instant;

pub use gc::{Collector, GcTotals, PERIOD as GC_PERIOD};
pub use read::{ByteStream, Pieces};
pub use scrub::{ScrubReport, Scrubber};
pub use upload::{PutOutcome, Staged, Upload};

use crate::clock::{Clock, unix_ms};
use crate::cluster::{Cluster, ClusterConfig, ClusterError, PeerView, RepairReport};
use crate::content::{ChunkId, FileId, FileName, Manifest, NameError, NodeId};
use crate::crypto::{CryptoError, Keys};
pub use crate::events::{Event, Events};
use crate::health::Health;
use crate::runtime;
use crate::storage::{ListPage, ListQuery, NameRecord, Stats, StorageError, Store};

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
    pub db_file_bytes: u64,
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
            scrubber: Scrubber::new(store.clone(), keys.clone(), config.scrub_rate),
            store,
            keys,
            clock,
            config,
            events,
            cluster,
            health,
            registry: Default::default(),
            started: Instant::now(),
        })
    }

    /// Marks a background loop as running until the mark drops (see [`Health`]).
    pub fn running(&self, name: &'static str) -> crate::health::Running {
        self.health.running(name)
    }

    /// What keeps this node from working, if anything: a stopped storage writer or a
    /// background loop that ended.
    pub fn problems(&self) -> Vec<String> {
        let mut out: Vec<String> = self.store.writer_failure().into_iter().map(String::from).collect();
        out.extend(self.health.stopped().into_iter().map(|name| format!("the {name} loop has stopped")));
        out
    }

    pub fn node_id(&self) -> NodeId {
        self.store.node_id()
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
        self.cluster.wait_settled().await;
        self.cluster.check_writable()?;
        Ok(Upload::new(
            self.store.clone(),
            self.keys.clone(),
            self.with_peers().cloned(),
            self.config.max_upload_bytes,
        ))
    }

    /// Names staged content, durably, and tells the cluster. The holders keep the upload's
    /// chunks pinned until the announcement is done; after that the manifest (or, where the
    /// announcement did not arrive, the confirmation record until anti-entropy brings it)
    /// keeps them.
    pub async fn commit(&self, mut staged: Staged, name: FileName, attrs: Attrs) -> Result<PutOutcome> {
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
        let outcome = staged.commit(&self.store, name.clone(), record).await?;
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
        let stamp = self.clock.now();
        let removed = self.store.delete(name, stamp).await?;
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
            db_file_bytes: self.store.file_bytes().await,
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

    /// Finishes queued writes and closes the database cleanly.
    pub async fn shutdown(&self) -> Result<()> {
        self.health.shut_down();
        Ok(self.store.close().await?)
    }
}
