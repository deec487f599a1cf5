//! Persisted record formats. These bytes are an API: a record type, once released, is frozen;
//! a change is a new type and a migration (see `migrations/`). Layouts are in docs/format.md.

use serde::{Deserialize, Serialize};

use crate::content::{ChunkId, ChunkRef, FileId, Manifest, NodeId};

/// A file's manifest, value of `manifests_v1` keyed by file id.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct ManifestRecordV1 {
    pub size: u64,
    pub chunker: u8,
    pub created_ms: u64,
    pub chunks: Vec<([u8; 32], u32)>,
}

impl ManifestRecordV1 {
    pub fn from_manifest(m: &Manifest) -> Self {
        Self {
            size: m.size,
            chunker: m.chunker,
            created_ms: m.created_ms,
            chunks: m.chunks.iter().map(|c| (*c.id.as_bytes(), c.len)).collect(),
        }
    }

    pub fn into_manifest(self, id: FileId) -> Manifest {
        Manifest {
            id,
            size: self.size,
            chunker: self.chunker,
            created_ms: self.created_ms,
            chunks: self
                .chunks
                .into_iter()
                .map(|(id, len)| ChunkRef { id: ChunkId::from_bytes(id), len })
                .collect(),
        }
    }
}

/// Version stamp of a name: a hybrid logical clock reading and the writing node. The larger
/// stamp wins when two writes to one name meet.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct StampV1 {
    pub wall_ms: u64,
    pub counter: u32,
    pub node: [u8; 16],
}

impl StampV1 {
    pub fn node_id(&self) -> NodeId {
        NodeId::from_bytes(self.node)
    }
}

/// Value of `names_v2` keyed by the name. `file == None` is a tombstone: the name was
/// deleted at `stamp`, kept so that an older write arriving late cannot revive it.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct NameRecordV2 {
    pub file: Option<[u8; 32]>,
    pub size: u64,
    pub content_type: String,
    pub modified_ms: u64,
    pub stamp: StampV1,
}

/// Value of `names_v3` keyed by the name: [`NameRecordV2`] plus what S3 clients set on an
/// object and expect back. `file == None` is a tombstone.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct NameRecordV3 {
    pub file: Option<[u8; 32]>,
    pub size: u64,
    pub content_type: String,
    pub modified_ms: u64,
    pub stamp: StampV1,
    /// The S3 ETag, unquoted, of an object written through S3: the hex MD5 of its bytes, or
    /// `md5(part md5s)-N` for a multipart upload. `None`: the file id stands in.
    pub etag: Option<String>,
    /// Response headers the writer set (`content-disposition`, `cache-control`,
    /// `content-encoding`, `content-language`, `expires`, `x-amz-meta-*`), lower-case names.
    pub headers: Vec<(String, String)>,
}

impl NameRecordV3 {
    pub fn file_id(&self) -> Option<FileId> {
        self.file.map(FileId::from_bytes)
    }

    /// The record of a name deleted at `stamp`.
    pub fn tombstone(stamp: StampV1) -> Self {
        Self {
            file: None,
            size: 0,
            content_type: String::new(),
            modified_ms: stamp.wall_ms,
            stamp,
            etag: None,
            headers: Vec::new(),
        }
    }
}

impl From<NameRecordV2> for NameRecordV3 {
    fn from(r: NameRecordV2) -> Self {
        Self {
            file: r.file,
            size: r.size,
            content_type: r.content_type,
            modified_ms: r.modified_ms,
            stamp: r.stamp,
            etag: None,
            headers: Vec::new(),
        }
    }
}

pub fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    postcard::to_allocvec(value).expect("serializing to a Vec cannot fail")
}

pub fn decode<'a, T: Deserialize<'a>>(what: &'static str, bytes: &'a [u8]) -> Result<T, super::StorageError> {
    postcard::from_bytes(bytes).map_err(|e| super::StorageError::Corrupt(format!("{what}: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    // Test vectors: these bytes are on disk in every deployed database.
    #[test]
    fn name_record_bytes_are_stable() {
        let record = NameRecordV2 {
            file: Some([7; 32]),
            size: 300,
            content_type: "text/plain".into(),
            modified_ms: 1,
            stamp: StampV1 { wall_ms: 2, counter: 3, node: [9; 16] },
        };
        let bytes = encode(&record);
        let mut expected = vec![1];
        expected.extend([7; 32]);
        expected.extend([0xac, 0x02, 10]);
        expected.extend(b"text/plain");
        expected.extend([1, 2, 3]);
        expected.extend([9; 16]);
        assert_eq!(bytes, expected);
        assert_eq!(decode::<NameRecordV2>("name", &bytes).unwrap(), record);
        assert!(decode::<NameRecordV2>("name", &bytes[..10]).is_err());
    }

    #[test]
    fn name_record_v3_bytes_are_stable() {
        let record = NameRecordV3 {
            file: None,
            size: 0,
            content_type: String::new(),
            modified_ms: 1,
            stamp: StampV1 { wall_ms: 2, counter: 3, node: [9; 16] },
            etag: Some("ab".into()),
            headers: vec![("x-amz-meta-a".into(), "b".into())],
        };
        let mut expected = vec![0, 0, 0, 1, 2, 3];
        expected.extend([9; 16]);
        expected.extend([1, 2]);
        expected.extend(b"ab");
        expected.extend([1, 12]);
        expected.extend(b"x-amz-meta-a");
        expected.extend([1]);
        expected.extend(b"b");
        assert_eq!(encode(&record), expected);
        assert_eq!(decode::<NameRecordV3>("name", &expected).unwrap(), record);
    }

    #[test]
    fn manifest_record_bytes_are_stable() {
        let record = ManifestRecordV1 { size: 5, chunker: 1, created_ms: 4, chunks: vec![([1; 32], 5)] };
        let mut expected = vec![5, 1, 4, 1];
        expected.extend([1; 32]);
        expected.push(5);
        assert_eq!(encode(&record), expected);
    }
}
