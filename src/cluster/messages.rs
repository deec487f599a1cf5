//! Peer protocol messages. One postcard value per sealed frame; the chunk bytes a message
//! carries travel beside it as attachments (see [`Message::take_attachments`]).
//!
//! These bytes are an API between releases: `PROTOCOL_VERSION` is checked in the handshake,
//! and a change to any type here is a new version. So names and manifests travel as wire types
//! of their own ([`WireName`], [`WireManifest`]), converted from and to the disk records at the
//! edge: a change to the disk format cannot silently change the protocol, and the tests below
//! pin their bytes.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::storage::records::{ManifestRecordV1, NameRecordV3, StampV1};

/// 2: chunk bytes as attachments beside the sealed message instead of inside it.
/// 3: attachments sent as the sealed chunks they are, without a second link encryption.
/// 4: uploads and downloads hold leases (pins) on holders; `Confirm` checks presence after the
///    fsync instead of comparing epochs.
/// 5: name records carry the S3 ETag and headers (`NameRecordV3`).
/// 6: pongs carry the answering node's space figures ([`WireSpace`]).
/// 7: pings and pongs carry the members' lifecycle states ([`MemberState`]: draining, removed).
pub const PROTOCOL_VERSION: u16 = 7;

/// Largest message accepted from a peer, attachments excluded.
pub const MAX_MESSAGE: usize = 24 * 1024 * 1024;
/// Most attachments one message may carry (senders put up to `CHUNKS_PER_REQUEST` chunks in
/// one), and the largest one: a sealed chunk of the current chunker. A chunker with larger
/// chunks needs a new protocol version.
pub const MAX_ATTACHMENTS: usize = 8;
pub const MAX_ATTACHMENT: usize = crate::content::chunker::MAX_CHUNK + crate::crypto::TAG_LEN;

/// Sent in the clear before the link is authenticated. Nothing here reveals the secret:
/// the client proves knowledge of it first, and the server answers only a valid proof.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub enum Handshake {
    Hello { version: u16, node: [u8; 16], nonce: [u8; 32], url: String },
    Challenge { version: u16, node: [u8; 16], nonce: [u8; 32] },
    Proof { mac: [u8; 32] },
    Refused { reason: String },
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub node: [u8; 16],
    pub url: String,
}

/// A member an operator is draining or has removed, as heartbeats gossip it. States only
/// advance (draining, then removed) and merge by taking the larger `(state, stamp_ms, by)`, so
/// every node ends with the same view whatever order the gossip arrives in.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct MemberState {
    pub state: Lifecycle,
    pub stamp_ms: u64,
    /// The node that set it.
    pub by: [u8; 16],
    pub node: [u8; 16],
}

/// Declared in the order states advance: the derived order is the merge's.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Lifecycle {
    /// Placement no longer chooses it; its chunks are copied to the others, then it leaves.
    Draining,
    /// Out of the cluster: no placement, no link to it.
    Removed,
}

/// What a peer reports about itself with every heartbeat.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PeerStats {
    pub files: u64,
    pub stored_bytes: u64,
    pub chunks: u64,
}

/// A node's space figures as it sends them with every pong: its database file and the disk
/// it is on, measured `age_ms` before sending. An age rather than a time, so the receiver
/// dates it by its own clock and the two clocks need not agree.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WireSpace {
    pub age_ms: u64,
    pub db_file_bytes: u64,
    pub db_used_bytes: u64,
    pub db_free_bytes: u64,
    pub disk_free_bytes: u64,
    pub disk_total_bytes: u64,
    pub disk_reserve_bytes: u64,
    /// Nodes with the same id share one disk (see `storage::DiskSpace::id`).
    pub disk_id: u64,
}

/// A name's version stamp: hybrid clock reading, then the writing node (last writer wins).
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct WireStamp {
    pub wall_ms: u64,
    pub counter: u32,
    pub node: [u8; 16],
}

/// A name's state as peers exchange it. `file == None` is a deletion (a tombstone).
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct WireName {
    pub file: Option<[u8; 32]>,
    pub size: u64,
    pub content_type: String,
    pub modified_ms: u64,
    pub stamp: WireStamp,
    /// The S3 ETag, unquoted, when the file was written through S3.
    pub etag: Option<String>,
    /// Response headers the writer set, lower-case names.
    pub headers: Vec<(String, String)>,
}

/// A file's content as peers exchange it: its size, chunker version, creation time and chunks
/// (id, plain length) in order.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct WireManifest {
    pub size: u64,
    pub chunker: u8,
    pub created_ms: u64,
    pub chunks: Vec<([u8; 32], u32)>,
}

impl From<StampV1> for WireStamp {
    fn from(s: StampV1) -> Self {
        Self { wall_ms: s.wall_ms, counter: s.counter, node: s.node }
    }
}

impl From<WireStamp> for StampV1 {
    fn from(s: WireStamp) -> Self {
        Self { wall_ms: s.wall_ms, counter: s.counter, node: s.node }
    }
}

impl From<NameRecordV3> for WireName {
    fn from(r: NameRecordV3) -> Self {
        Self {
            file: r.file,
            size: r.size,
            content_type: r.content_type,
            modified_ms: r.modified_ms,
            stamp: r.stamp.into(),
            etag: r.etag,
            headers: r.headers,
        }
    }
}

impl From<WireName> for NameRecordV3 {
    fn from(w: WireName) -> Self {
        Self {
            file: w.file,
            size: w.size,
            content_type: w.content_type,
            modified_ms: w.modified_ms,
            stamp: w.stamp.into(),
            etag: w.etag,
            headers: w.headers,
        }
    }
}

impl From<ManifestRecordV1> for WireManifest {
    fn from(m: ManifestRecordV1) -> Self {
        Self { size: m.size, chunker: m.chunker, created_ms: m.created_ms, chunks: m.chunks }
    }
}

impl From<WireManifest> for ManifestRecordV1 {
    fn from(m: WireManifest) -> Self {
        Self { size: m.size, chunker: m.chunker, created_ms: m.created_ms, chunks: m.chunks }
    }
}

/// A name's record, with the manifest it points at (for live records).
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct NameUpdate {
    pub name: String,
    pub record: WireName,
    pub manifest: Option<WireManifest>,
}

impl NameUpdate {
    pub fn new(name: String, record: NameRecordV3, manifest: Option<ManifestRecordV1>) -> Self {
        Self { name, record: record.into(), manifest: manifest.map(Into::into) }
    }

    /// The records to store.
    pub fn into_records(self) -> (String, NameRecordV3, Option<ManifestRecordV1>) {
        (self.name, self.record.into(), self.manifest.map(Into::into))
    }
}

/// A sealed chunk in transit. On the wire `sealed` is an empty placeholder and the bytes
/// follow the message as an attachment.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct SealedChunk {
    pub id: [u8; 32],
    /// Shared, not copied, when one chunk goes to several holders.
    pub sealed: Bytes,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// Heartbeat and membership gossip.
    Ping {
        members: Vec<Member>,
        stats: PeerStats,
        states: Vec<MemberState>,
    },
    /// Store sealed chunks for the upload `lease`; answered once queued for writing. The
    /// holder pins them under the lease until `Release` (or until this link drops), so
    /// nothing collects them while the upload runs, however long it takes and whatever else
    /// uses them; durable only after a `Confirm`.
    PutChunks {
        lease: u64,
        chunks: Vec<SealedChunk>,
    },
    GetChunk {
        id: [u8; 32],
    },
    HasChunks {
        ids: Vec<[u8; 32]>,
    },
    /// Apply name records (last writer wins); answered once durable.
    ApplyNames {
        updates: Vec<NameUpdate>,
    },
    /// Anti-entropy: the hash of every name bucket.
    Digest,
    /// Anti-entropy: every record in one bucket.
    ListBucket {
        bucket: u8,
    },
    /// Make every chunk stored under the upload `lease` durable and say how many are present
    /// after the fsync; each is then spared by the collector until its manifest arrives.
    Confirm {
        lease: u64,
    },
    /// Pin chunks under `lease` (a download in flight), answering which are held here. At most
    /// [`MAX_PIN`] ids per request; several requests may add to one lease.
    Pin {
        lease: u64,
        ids: Vec<[u8; 32]>,
    },
    /// Drop the pins of `lease`: its upload committed (or failed), or its download ended.
    Release {
        lease: u64,
    },
    /// A stored manifest, for anti-entropy (buckets list records without them, so a bucket's
    /// answer stays small however large its files).
    GetManifest {
        id: [u8; 32],
    },
    /// Which of these chunks the node holds in a copy that opens and re-hashes to its id
    /// (at most [`MAX_VERIFY`]): asked before another node drops its own copy, so a damaged
    /// copy never stands in for the last good one.
    VerifyChunks {
        ids: Vec<[u8; 32]>,
    },
}

/// Most chunks one `VerifyChunks` may name: up to 64 MiB to read, decrypt and hash.
pub const MAX_VERIFY: usize = 64;
/// Most chunk ids one `Pin` may name (2 MiB of ids).
pub const MAX_PIN: usize = 65_536;

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub enum Response {
    Pong {
        members: Vec<Member>,
        stats: PeerStats,
        /// `None` until the node has measured its space once.
        space: Option<WireSpace>,
        states: Vec<MemberState>,
    },
    /// Queued.
    Stored {
        new_bytes: u64,
    },
    /// The sealed chunk, if held; an attachment on the wire like [`SealedChunk::sealed`].
    Chunk(Option<Bytes>),
    Have(Vec<bool>),
    Applied,
    Digest(Vec<[u8; 32]>),
    Bucket(Vec<NameUpdate>),
    Error(String),
    /// After the fsync: how many of the lease's chunks are stored here, and how many are not.
    Confirmed {
        present: u64,
        absent: u64,
    },
    Released,
    Manifest(Option<WireManifest>),
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub enum Message {
    Request { id: u64, body: Request },
    Response { id: u64, body: Response },
}

impl Message {
    /// Heartbeats: sent ahead of bulk data and read even while a peer's requests queue.
    pub fn is_control(&self) -> bool {
        matches!(
            self,
            Message::Request { body: Request::Ping { .. }, .. }
                | Message::Response { body: Response::Pong { .. }, .. }
        )
    }
    /// The chunk bytes this message carries, in wire order.
    fn attachment_slots(&mut self) -> Vec<&mut Bytes> {
        match self {
            Message::Request { body: Request::PutChunks { chunks, .. }, .. } => {
                chunks.iter_mut().map(|c| &mut c.sealed).collect()
            }
            Message::Response { body: Response::Chunk(Some(sealed)), .. } => vec![sealed],
            _ => Vec::new(),
        }
    }

    /// Moves the chunk bytes out, leaving empty placeholders, for sending beside the sealed
    /// message. They go on the wire as stored: sealed already under the data key with their
    /// chunk id bound in, and that id travels in the sealed message. So an observer reads
    /// nothing, and a changed, swapped or replayed attachment fails the receiver's check
    /// (which opens and re-hashes every chunk before storing or serving it).
    ///
    /// The link does not encrypt them a second time. All that would hide is whether two
    /// transfers carry the same chunk (equal chunks seal to equal bytes), and their lengths
    /// mostly tell that already: content-defined chunks vary in length byte by byte, all but
    /// those cut at the maximum size. A second pass per byte on both ends cost a twentieth of
    /// a cluster upload's CPU; sealing them inside the frame cost a fifth.
    pub fn take_attachments(&mut self) -> Vec<Bytes> {
        self.attachment_slots().into_iter().map(std::mem::take).collect()
    }

    /// How many attachments a received message expects.
    pub fn attachment_count(&mut self) -> usize {
        self.attachment_slots().len()
    }

    /// Puts received attachments back in their places. The placeholders must be empty and the
    /// count exact: nothing a peer sends is silently dropped or reinterpreted.
    pub fn put_attachments(&mut self, attachments: Vec<Bytes>) -> Result<(), DecodeError> {
        let slots = self.attachment_slots();
        if slots.len() != attachments.len() {
            return Err(DecodeError(format!("{} attachments for {} places", attachments.len(), slots.len())));
        }
        if slots.iter().any(|s| !s.is_empty()) {
            return Err(DecodeError("chunk bytes inside a message, not attached".into()));
        }
        for (slot, bytes) in slots.into_iter().zip(attachments) {
            *slot = bytes;
        }
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
#[error("undecodable peer message: {0}")]
pub struct DecodeError(String);

impl DecodeError {
    pub fn new(reason: impl Into<String>) -> Self {
        Self(reason.into())
    }
}

pub fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    postcard::to_allocvec(value).expect("serializing to a Vec cannot fail")
}

/// Decodes untrusted bytes: never panics, refuses oversized input and trailing garbage.
pub fn decode<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> Result<T, DecodeError> {
    if bytes.len() > MAX_MESSAGE {
        return Err(DecodeError(format!("{} bytes is over the limit", bytes.len())));
    }
    let (value, rest) = postcard::take_from_bytes(bytes).map_err(|e| DecodeError(e.to_string()))?;
    if !rest.is_empty() {
        return Err(DecodeError(format!("{} trailing bytes", rest.len())));
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn chunk_bytes_encode_as_a_byte_string() {
        let m = Request::PutChunks {
            lease: 5,
            chunks: vec![SealedChunk { id: [1; 32], sealed: vec![9, 8, 7].into() }],
        };
        let mut expected = vec![1, 5, 1];
        expected.extend([1; 32]);
        expected.extend([3, 9, 8, 7]);
        assert_eq!(encode(&m), expected);
        assert_eq!(decode::<Request>(&expected).unwrap(), m);
        let r = Response::Chunk(Some(vec![5; 300].into()));
        assert_eq!(decode::<Response>(&encode(&r)).unwrap(), r);
    }

    #[test]
    fn attachments_leave_and_return_in_order() {
        let chunks = (0..3u8).map(|i| SealedChunk { id: [i; 32], sealed: vec![i; 10 + i as usize].into() });
        let original =
            Message::Request { id: 4, body: Request::PutChunks { lease: 1, chunks: chunks.collect() } };
        let mut m = original.clone();
        let attachments = m.take_attachments();
        assert_eq!(attachments.iter().map(|a| a.len()).collect::<Vec<_>>(), [10, 11, 12]);
        // The message itself now carries only the ids.
        let mut received: Message = decode(&encode(&m)).unwrap();
        assert_eq!(received.attachment_count(), 3);
        assert!(received.clone().put_attachments(attachments[..2].to_vec()).is_err());
        received.put_attachments(attachments.clone()).unwrap();
        assert_eq!(received, original);
        // Bytes inside a message where an attachment belongs are refused.
        assert!(original.clone().put_attachments(attachments).is_err());
        let mut chunk = Message::Response { id: 1, body: Response::Chunk(Some(vec![1, 2].into())) };
        assert_eq!(chunk.take_attachments(), [Bytes::from(vec![1, 2])]);
        assert_eq!(Message::Response { id: 1, body: Response::Chunk(None) }.attachment_count(), 0);
    }

    fn sample_update() -> NameUpdate {
        NameUpdate::new(
            "a/b".into(),
            NameRecordV3 {
                file: Some([1; 32]),
                size: 5,
                content_type: "t".into(),
                modified_ms: 1,
                stamp: StampV1 { wall_ms: 1, counter: 0, node: [2; 16] },
                etag: Some("e".into()),
                headers: vec![("k".into(), "v".into())],
            },
            Some(ManifestRecordV1 { size: 5, chunker: 1, created_ms: 1, chunks: vec![([4; 32], 5)] }),
        )
    }

    /// The bytes a name update travels as, pinned: a change here is a protocol change (a new
    /// `PROTOCOL_VERSION`), whatever the disk records do.
    #[test]
    fn name_update_bytes_are_pinned() {
        let update = sample_update();
        let mut expected = vec![3, b'a', b'/', b'b'];
        // WireName: Some(file), size, content type, modified, stamp, Some(etag), headers.
        expected.push(1);
        expected.extend([1; 32]);
        expected.extend([5, 1, b't', 1]);
        expected.extend([1, 0]);
        expected.extend([2; 16]);
        expected.extend([1, 1, b'e', 1, 1, b'k', 1, b'v']);
        // WireManifest: Some, size, chunker, created, one chunk (id, length).
        expected.extend([1, 5, 1, 1, 1]);
        expected.extend([4; 32]);
        expected.push(5);
        assert_eq!(encode(&update), expected);
        assert_eq!(decode::<NameUpdate>(&expected).unwrap(), update);
        // And through the records they convert to and from, nothing is lost.
        let (name, record, manifest) = update.clone().into_records();
        assert_eq!(NameUpdate::new(name, record, manifest), update);
    }

    /// The bytes of a pong, pinned: a change here is a protocol change.
    #[test]
    fn pong_bytes_are_pinned() {
        let space = WireSpace {
            age_ms: 300,
            db_file_bytes: 1,
            db_used_bytes: 2,
            db_free_bytes: 3,
            disk_free_bytes: 4,
            disk_total_bytes: 5,
            disk_reserve_bytes: 6,
            disk_id: 7,
        };
        let pong = Response::Pong {
            members: vec![Member { node: [8; 16], url: "u".into() }],
            stats: PeerStats { files: 1, stored_bytes: 2, chunks: 3 },
            space: Some(space),
            states: vec![MemberState { state: Lifecycle::Removed, stamp_ms: 2, by: [3; 16], node: [4; 16] }],
        };
        let mut expected = vec![0, 1];
        expected.extend([8; 16]);
        expected.extend([1, b'u', 1, 2, 3]);
        // Some, then age 300 as a varint, then the figures in declaration order.
        expected.extend([1, 0xac, 0x02, 1, 2, 3, 4, 5, 6, 7]);
        // One state: removed (variant 1), stamp, setter, node.
        expected.extend([1, 1, 2]);
        expected.extend([3; 16]);
        expected.extend([4; 16]);
        assert_eq!(encode(&pong), expected);
        assert_eq!(decode::<Response>(&expected).unwrap(), pong);
        let unmeasured =
            Response::Pong { members: vec![], stats: PeerStats::default(), space: None, states: vec![] };
        assert_eq!(encode(&unmeasured), [0, 0, 0, 0, 0, 0, 0]);
    }

    #[test]
    fn stamps_order_as_the_disk_records_do() {
        let a = StampV1 { wall_ms: 5, counter: 1, node: [9; 16] };
        let b = StampV1 { wall_ms: 5, counter: 2, node: [1; 16] };
        assert_eq!(a < b, WireStamp::from(a) < WireStamp::from(b));
        assert_eq!(encode(&WireStamp::from(b)), [5, 2, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1]);
    }

    #[test]
    fn round_trip_and_refuse_trailing_bytes() {
        let m = Message::Request { id: 7, body: Request::GetChunk { id: [3; 32] } };
        let bytes = encode(&m);
        assert_eq!(decode::<Message>(&bytes).unwrap(), m);
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(decode::<Message>(&longer).is_err());
        assert!(decode::<Message>(&bytes[..bytes.len() - 1]).is_err());
        // An unknown message kind.
        assert!(decode::<Message>(&[9, 0]).is_err());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        // Random bytes never panic the decoder.
        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = decode::<Message>(&bytes);
            let _ = decode::<Handshake>(&bytes);
        }

        // Valid messages with random corruption never panic either.
        #[test]
        fn corrupted_messages_never_panic(pos in any::<prop::sample::Index>(), byte: u8, n in 0usize..40) {
            let mut update = sample_update();
            update.name = "x".repeat(n);
            let m = Message::Response { id: 1, body: Response::Bucket(vec![update]) };
            let mut bytes = encode(&m);
            let i = pos.index(bytes.len());
            bytes[i] = byte;
            let _ = decode::<Message>(&bytes);
        }
    }
}
