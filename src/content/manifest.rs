//! A file's manifest: its size and ordered chunks. Immutable once stored.

use super::ids::{ChunkId, FileId};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChunkRef {
    pub id: ChunkId,
    pub len: u32,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Manifest {
    pub id: FileId,
    pub size: u64,
    pub chunker: u8,
    pub chunks: Vec<ChunkRef>,
    /// Unix milliseconds when this content was first stored.
    pub created_ms: u64,
}

impl Manifest {
    /// Checks that the chunk lengths add up to the size: a manifest read from disk or a
    /// peer is untrusted.
    pub fn is_consistent(&self) -> bool {
        self.chunks.iter().map(|c| u64::from(c.len)).sum::<u64>() == self.size
    }

    /// The chunks covering bytes `start..end`, each with the offset of its first byte.
    pub fn chunks_in(&self, start: u64, end: u64) -> impl Iterator<Item = (u64, &ChunkRef)> {
        let mut offset = 0u64;
        self.chunks
            .iter()
            .map(move |c| {
                let at = offset;
                offset += u64::from(c.len);
                (at, c)
            })
            .skip_while(move |(at, c)| at + u64::from(c.len) <= start)
            .take_while(move |(at, _)| *at < end)
    }

    /// Distinct chunk ids, in first-seen order.
    pub fn distinct_chunks(&self) -> Vec<&ChunkRef> {
        let mut seen = std::collections::HashSet::with_capacity(self.chunks.len());
        self.chunks.iter().filter(|c| seen.insert(c.id)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_in_selects_overlapping_chunks() {
        let chunk = |n: u8, len| ChunkRef { id: ChunkId::of(&[n]), len };
        let m = Manifest {
            id: FileId::empty(),
            size: 30,
            chunker: 1,
            chunks: vec![chunk(1, 10), chunk(2, 10), chunk(3, 10)],
            created_ms: 0,
        };
        assert!(m.is_consistent());
        let picked: Vec<u64> = m.chunks_in(9, 11).map(|(at, _)| at).collect();
        assert_eq!(picked, vec![0, 10]);
        let picked: Vec<u64> = m.chunks_in(10, 20).map(|(at, _)| at).collect();
        assert_eq!(picked, vec![10]);
        assert_eq!(m.chunks_in(30, 30).count(), 0);
    }
}
