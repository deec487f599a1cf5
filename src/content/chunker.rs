//! Content-defined chunking, FastCDC 2020 with fixed parameters.
//!
//! The parameters are part of the stored format: changing them changes chunk ids and so
//! loses dedup against existing data. A new set gets a new `CHUNKER_VERSION`.

use fastcdc::v2020::FastCDC;

/// Version of the parameters below, recorded in every manifest.
pub const CHUNKER_VERSION: u8 = 1;
pub const MIN_CHUNK: usize = 64 * 1024;
pub const AVG_CHUNK: usize = 256 * 1024;
/// Kept under 1 MiB with room for the AEAD tag: a redb value of exactly a power of two
/// takes a double page.
pub const MAX_CHUNK: usize = 1024 * 1024 - 4096;

/// Splits a stream into chunks. Feed it bytes with [`Chunker::push`]; it hands back each
/// complete chunk. Cut points depend only on the bytes, never on how they were fed, so
/// the same content always yields the same chunks.
///
/// Chunks are cut straight out of the caller's buffer where they can be; only the bytes
/// around a buffer boundary are copied (into `pending`), so large pushes copy little.
#[derive(Default)]
pub struct Chunker {
    /// The start of the next chunk when it began in an earlier push; always under
    /// `MAX_CHUNK` bytes between pushes.
    pending: Vec<u8>,
}

impl Chunker {
    pub fn new() -> Self {
        Self { pending: Vec::with_capacity(MAX_CHUNK) }
    }

    /// Adds `bytes` and calls `emit` for every chunk that is now complete.
    pub fn push<E>(
        &mut self,
        mut bytes: &[u8],
        emit: &mut impl FnMut(&[u8]) -> Result<(), E>,
    ) -> Result<(), E> {
        // First finish what the last push left: fill `pending` up to one maximum chunk (a cut
        // within it is then final) and cut. Once a cut falls past the old pending bytes, the
        // rest is still in `bytes`: go on there and drop the copies.
        while !self.pending.is_empty() {
            let old = self.pending.len();
            let take = (MAX_CHUNK - old).min(bytes.len());
            self.pending.extend_from_slice(&bytes[..take]);
            if self.pending.len() < MAX_CHUNK {
                return Ok(()); // `bytes` is used up: wait for more
            }
            let end = cut_point(&self.pending);
            emit(&self.pending[..end])?;
            if end >= old {
                bytes = &bytes[end - old..];
                self.pending.clear();
            } else {
                self.pending.truncate(old);
                self.pending.drain(..end);
            }
        }
        while bytes.len() >= MAX_CHUNK {
            let end = cut_point(&bytes[..MAX_CHUNK]);
            emit(&bytes[..end])?;
            bytes = &bytes[end..];
        }
        self.pending.extend_from_slice(bytes);
        Ok(())
    }

    /// Ends the stream, emitting what is left.
    pub fn finish<E>(self, emit: &mut impl FnMut(&[u8]) -> Result<(), E>) -> Result<(), E> {
        let mut rest = self.pending.as_slice();
        while !rest.is_empty() {
            let end = cut_point(rest);
            emit(&rest[..end])?;
            rest = &rest[end..];
        }
        Ok(())
    }
}

/// Length of the first chunk of `data` (all of it when shorter than the minimum).
fn cut_point(data: &[u8]) -> usize {
    if data.len() <= MIN_CHUNK {
        return data.len();
    }
    let cdc = FastCDC::new(data, MIN_CHUNK, AVG_CHUNK, MAX_CHUNK);
    let (_, end) = cdc.cut(0, data.len());
    end.clamp(1, data.len())
}

/// Chunks a whole buffer at once; the streaming chunker must agree with it.
pub fn chunk_all(data: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    let mut rest = data;
    while !rest.is_empty() {
        let end = cut_point(&rest[..rest.len().min(MAX_CHUNK)]);
        out.push(&rest[..end]);
        rest = &rest[end..];
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rand::{Rng, SeedableRng, rngs::StdRng};

    fn random(len: usize, seed: u64) -> Vec<u8> {
        let mut data = vec![0u8; len];
        StdRng::seed_from_u64(seed).fill(&mut data[..]);
        data
    }

    fn stream_chunks(data: &[u8], feed: usize) -> Vec<Vec<u8>> {
        let mut chunker = Chunker::new();
        let mut out = Vec::new();
        let mut emit = |c: &[u8]| -> Result<(), ()> {
            out.push(c.to_vec());
            Ok(())
        };
        for piece in data.chunks(feed.max(1)) {
            chunker.push(piece, &mut emit).unwrap();
        }
        chunker.finish(&mut emit).unwrap();
        out
    }

    #[test]
    fn sizes_stay_within_bounds() {
        let data = random(8 * 1024 * 1024, 7);
        let chunks = chunk_all(&data);
        assert!(chunks.len() > 8, "{} chunks", chunks.len());
        for c in &chunks[..chunks.len() - 1] {
            assert!(c.len() >= MIN_CHUNK && c.len() <= MAX_CHUNK, "{}", c.len());
        }
        assert_eq!(chunks.concat(), data);
    }

    #[test]
    fn an_insertion_changes_only_nearby_chunks() {
        let data = random(16 * 1024 * 1024, 9);
        let mut edited = data.clone();
        let junk = random(100, 10);
        let mid = data.len() / 2;
        edited.splice(mid..mid, junk);
        let before: std::collections::HashSet<_> = chunk_all(&data).into_iter().collect();
        let after = chunk_all(&edited);
        let new = after.iter().filter(|c| !before.contains(*c)).count();
        assert!(new <= 3, "{new} new chunks of {}", after.len());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]

        // Same bytes, fed in any piece sizes, give the same chunks as one-shot chunking.
        #[test]
        fn feeding_does_not_change_cuts(len in 0usize..3_000_000, seed: u64, feed in 1usize..400_000) {
            let data = random(len, seed);
            let streamed = stream_chunks(&data, feed);
            let whole: Vec<Vec<u8>> = chunk_all(&data).into_iter().map(<[u8]>::to_vec).collect();
            prop_assert_eq!(streamed, whole);
        }

        // Appending bytes never moves cut points before the last chunk of the prefix.
        #[test]
        fn concatenation_keeps_earlier_chunks(len in 0usize..3_000_000, extra in 0usize..1_000_000, seed: u64) {
            let data = random(len + extra, seed);
            let prefix = chunk_all(&data[..len]);
            let full = chunk_all(&data);
            if prefix.len() > 1 {
                prop_assert_eq!(&prefix[..prefix.len() - 1], &full[..prefix.len() - 1]);
            }
        }
    }
}
