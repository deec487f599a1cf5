//! The storage writer against a plain in-memory model (redb's fuzzer vs a BTreeMap, in spirit).
//!
//! Random sequences of local puts (new and deduplicated content, overwrites, inline chunks, a
//! chunk left out), deletes, name records from a peer (older, equal and newer stamps, live or
//! deleted, with, without or with a wrong manifest), chunks received ahead of their manifest
//! (confirmed or not), conditional writes (`If-Match`, `If-None-Match`) and metadata-only
//! moves and copies (checked in the writer's transaction), pins taken and dropped, local
//! copies dropped, and collections run
//! against a real `Store` in a temporary database, and against the model. After every step
//! they must agree on: each name's record and manifest, what a read of it returns, which
//! chunks are stored, each chunk's use count, the newest stamp kept for the clock, the totals (files, logical, unique, stored
//! bytes, chunks), and the size and time index (every live name once, in order, page by page). A collection must never take a chunk that a named file uses or a pin
//! holds; at the end of each case, once the pins are gone and confirmations expired, every
//! chunk nobody uses must be gone.
//!
//! `DISTSTORE_MODEL_CASES=N` runs N cases (default 2000); proptest prints the failing
//! sequence, shrunk, and keeps its seed under `proptest-regressions/`.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use diststore::content::{ChunkId, ChunkRef, FileId, FileName, Manifest};
use diststore::crypto::Secret;
use diststore::runtime;
use diststore::storage::{
    Expect, HIDDEN_PREFIX, ListQuery, Match, NameRecord, PinSet, Relink, SortBy, Stamp, StorageError, Store,
    name_bucket, record_digest,
};
use proptest::prelude::*;

/// Plaintext sizes of the chunk pool: tiny ones, and one larger than a stored segment
/// (262,000 bytes), so multi-segment chunks are in play.
const CHUNK_SIZES: [usize; 8] = [1, 100, 1000, 4096, 10_000, 65_536, 300_000, 7];
/// One name is the node's own metadata: stored like any file, left out of the user totals.
const NAMES: [&str; 5] = ["a", "b", "dir/c", "dir/sub/d", ".diststore/meta"];
const LOCAL: [u8; 16] = [1; 16];
const PEER: [u8; 16] = [2; 16];
const LONG_GRACE: Duration = Duration::from_secs(3600);

/// A file's bytes and manifest.
type FileCache = std::cell::RefCell<std::collections::HashMap<Vec<usize>, std::rc::Rc<(Vec<u8>, Manifest)>>>;

struct Pool {
    plain: Vec<Vec<u8>>,
    ids: Vec<ChunkId>,
    sealed: Vec<bytes::Bytes>,
    /// Each file's bytes and manifest, made once: the checks after every step ask often.
    files: FileCache,
}

impl Pool {
    fn new() -> Self {
        let keys = Secret::new(b"model secret".to_vec()).keys();
        let plain: Vec<Vec<u8>> = CHUNK_SIZES
            .iter()
            .enumerate()
            .map(|(i, len)| {
                let mut x = (i as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
                (0..*len)
                    .map(|_| {
                        x ^= x << 13;
                        x ^= x >> 7;
                        x ^= x << 17;
                        x as u8
                    })
                    .collect()
            })
            .collect();
        let ids: Vec<ChunkId> = plain.iter().map(|p| ChunkId::of(p)).collect();
        let sealed = plain.iter().zip(&ids).map(|(p, id)| keys.seal_chunk(id, p).into()).collect();
        let sealed: Vec<bytes::Bytes> = sealed;
        for ((id, s), p) in ids.iter().zip(&sealed).zip(&plain) {
            assert_eq!(&keys.open_chunk(id, s.to_vec()).unwrap(), p);
        }
        Pool { plain, ids, sealed, files: Default::default() }
    }

    fn file(&self, file: &[usize]) -> std::rc::Rc<(Vec<u8>, Manifest)> {
        let mut files = self.files.borrow_mut();
        files
            .entry(file.to_vec())
            .or_insert_with(|| {
                let mut content = Vec::new();
                for c in file {
                    content.extend_from_slice(&self.plain[*c]);
                }
                let manifest = Manifest {
                    id: file_id(&content),
                    size: content.len() as u64,
                    chunker: 1,
                    chunks: file
                        .iter()
                        .map(|c| ChunkRef { id: self.ids[*c], len: CHUNK_SIZES[*c] as u32 })
                        .collect(),
                    created_ms: 1,
                };
                std::rc::Rc::new((content, manifest))
            })
            .clone()
    }

    fn manifest(&self, file: &[usize]) -> Manifest {
        self.file(file).1.clone()
    }

    fn size(&self, file: &[usize]) -> u64 {
        self.file(file).1.size
    }

    fn sealed_len(&self, c: usize) -> u64 {
        self.sealed[c].len() as u64
    }
}

fn file_id(content: &[u8]) -> FileId {
    use sha2::Digest;
    FileId::from_bytes(sha2::Sha256::digest(content).into())
}

/// How a peer's record's stamp relates to the stored one's.
#[derive(Debug, Clone, Copy)]
enum When {
    Older,
    Equal,
    Newer,
}

/// What rides along with a peer's live record.
#[derive(Debug, Clone, Copy)]
enum Carried {
    Manifest,
    Nothing,
    /// A manifest that does not match the record's size.
    WrongSize,
}

/// A write's condition on the name it writes, as a client states it.
#[derive(Debug, Clone, Copy)]
enum Cond {
    None,
    /// `If-None-Match: *`: create only.
    Absent,
    /// `If-Match` with the name's current content (fails when there is none).
    Current,
    /// `If-Match` with content the name does not have.
    Other,
}

fn cond() -> impl Strategy<Value = Cond> {
    prop_oneof![4 => Just(Cond::None), 1 => Just(Cond::Absent), 1 => Just(Cond::Current), 1 => Just(Cond::Other)]
}

#[derive(Debug, Clone)]
enum Op {
    /// A local upload: pins its chunks, queues them (or sends them inline with the commit),
    /// commits. `skip`: one chunk is never stored, so the commit must be refused.
    Put {
        name: usize,
        file: Vec<usize>,
        inline: bool,
        skip: Option<usize>,
        cond: Cond,
    },
    Delete {
        name: usize,
        cond: Cond,
    },
    /// A metadata-only move (`mv`) or copy of one name onto another, under a condition on the
    /// destination; `stale`: the caller read the source before it changed.
    Relink {
        from: usize,
        to: usize,
        mv: bool,
        cond: Cond,
        stale: bool,
    },
    /// A name record from a peer; `file: None` is a tombstone.
    Apply {
        name: usize,
        file: Option<Vec<usize>>,
        when: When,
        carried: Carried,
    },
    /// A peer's upload sends chunks ahead of its manifest, under its lease (a pin set kept
    /// until an `Unpin`), and may confirm them.
    Received {
        chunks: Vec<usize>,
        confirm: bool,
    },
    Pin {
        chunks: Vec<usize>,
    },
    Unpin {
        which: usize,
    },
    /// Repair drops local copies other holders confirmed.
    Drop {
        chunks: Vec<usize>,
    },
    Collect,
    /// Confirmations expire at the next collection (`true`), or outlive the case.
    Grace {
        zero: bool,
    },
}

fn chunk_list(max: usize) -> impl Strategy<Value = Vec<usize>> {
    prop::collection::vec(0..CHUNK_SIZES.len(), 1..=max)
}

fn op() -> impl Strategy<Value = Op> {
    let name = 0..NAMES.len();
    prop_oneof![
        6 => (name.clone(), chunk_list(3), any::<bool>(), prop::option::weighted(0.1, 0..3usize), cond())
            .prop_map(|(name, file, inline, skip, cond)| Op::Put { name, file, inline, skip, cond }),
        3 => (name.clone(), cond()).prop_map(|(name, cond)| Op::Delete { name, cond }),
        2 => (name.clone(), name.clone(), any::<bool>(), cond(), prop::bool::weighted(0.1))
            .prop_map(|(from, to, mv, cond, stale)| Op::Relink { from, to, mv, cond, stale }),
        4 => (
            name,
            prop::option::weighted(0.7, chunk_list(3)),
            prop_oneof![Just(When::Older), Just(When::Equal), Just(When::Newer)],
            prop_oneof![4 => Just(Carried::Manifest), 1 => Just(Carried::Nothing), 1 => Just(Carried::WrongSize)],
        )
            .prop_map(|(name, file, when, carried)| Op::Apply { name, file, when, carried }),
        2 => (chunk_list(3), any::<bool>()).prop_map(|(chunks, confirm)| Op::Received { chunks, confirm }),
        2 => chunk_list(2).prop_map(|chunks| Op::Pin { chunks }),
        2 => (0..4usize).prop_map(|which| Op::Unpin { which }),
        1 => chunk_list(2).prop_map(|chunks| Op::Drop { chunks }),
        4 => Just(Op::Collect),
        1 => any::<bool>().prop_map(|zero| Op::Grace { zero }),
    ]
}

#[derive(Debug, Clone)]
struct Rec {
    stamp: Stamp,
    /// The chunks of the live file; `None` for a tombstone.
    file: Option<Vec<usize>>,
}

/// What the store should hold.
#[derive(Default)]
struct Model {
    names: BTreeMap<usize, Rec>,
    /// Stored manifests, by their chunk lists (distinct lists have distinct ids here).
    manifests: BTreeSet<Vec<usize>>,
    stored: BTreeSet<usize>,
    /// Chunks confirmed to an uploader, awaiting their manifest.
    received: BTreeSet<usize>,
    pins: Vec<(PinSet, Vec<usize>)>,
    grace_zero: bool,
    wall: u64,
}

impl Model {
    fn tick(&mut self) -> u64 {
        self.wall += 1;
        self.wall
    }

    fn names_of(&self, file: &[usize]) -> usize {
        self.names.values().filter(|r| r.file.as_deref() == Some(file)).count()
    }

    fn live(&self, name: usize) -> Option<&Vec<usize>> {
        self.names.get(&name).and_then(|r| r.file.as_ref())
    }

    /// Whether `cond` holds for `name` now.
    fn holds(&self, name: usize, cond: Cond) -> bool {
        match cond {
            Cond::None => true,
            Cond::Absent => self.live(name).is_none(),
            Cond::Current => self.live(name).is_some(),
            Cond::Other => false,
        }
    }

    /// The `Expect` a client sends for `cond` on `name`.
    fn expect(&self, pool: &Pool, name: usize, cond: Cond) -> Expect {
        let other = file_id(b"content no name has");
        match (cond, self.live(name)) {
            (Cond::None, _) => Expect::default(),
            (Cond::Absent, _) => Expect::absent(),
            (Cond::Current, Some(f)) => {
                Expect { if_match: Some(Match::Files(vec![pool.manifest(f).id])), if_none_match: None }
            }
            (Cond::Current | Cond::Other, _) => {
                Expect { if_match: Some(Match::Files(vec![other])), if_none_match: None }
            }
        }
    }

    fn pinned(&self) -> BTreeSet<usize> {
        self.pins.iter().flat_map(|(_, c)| c.iter().copied()).collect()
    }

    /// The writer's rule for a name record: newer stamps win; a live record needs its
    /// manifest stored or carried (matching its size); a local commit needs its chunks here.
    /// `Err` is a refusal that changes nothing.
    fn apply(&mut self, name: usize, rec: Rec, carried: Carried, local: bool) -> Result<bool, &'static str> {
        if self.names.get(&name).is_some_and(|old| old.stamp >= rec.stamp) {
            return Ok(false);
        }
        if let Some(file) = &rec.file {
            let known = self.manifests.contains(file);
            if !known && !matches!(carried, Carried::Manifest) {
                return Err("no valid manifest");
            }
            if !known && local && file.iter().any(|c| !self.stored.contains(c)) {
                return Err("missing chunk");
            }
            if !known {
                self.manifests.insert(file.clone());
                for c in distinct(file) {
                    self.received.remove(&c);
                }
            }
        }
        self.names.insert(name, rec);
        Ok(true)
    }

    /// A collection: manifests nobody names go, expired confirmations go, then every stored
    /// chunk no stored manifest uses, unless pinned or confirmed. Returns (files, chunks, bytes).
    fn collect(&mut self, pool: &Pool) -> (u64, u64, u64) {
        let unnamed: Vec<Vec<usize>> =
            self.manifests.iter().filter(|m| self.names_of(m) == 0).cloned().collect();
        for m in &unnamed {
            self.manifests.remove(m);
        }
        if self.grace_zero {
            self.received.clear();
        }
        let used: BTreeSet<usize> = self.manifests.iter().flat_map(|m| m.iter().copied()).collect();
        let pinned = self.pinned();
        let gone: Vec<usize> = self
            .stored
            .iter()
            .copied()
            .filter(|c| !used.contains(c) && !pinned.contains(c) && !self.received.contains(c))
            .collect();
        let bytes = gone.iter().map(|c| pool.sealed_len(*c)).sum();
        for c in &gone {
            self.stored.remove(c);
        }
        (unnamed.len() as u64, gone.len() as u64, bytes)
    }
}

fn distinct(file: &[usize]) -> Vec<usize> {
    let mut seen = BTreeSet::new();
    file.iter().copied().filter(|c| seen.insert(*c)).collect()
}

fn record_of(pool: &Pool, file: Option<&[usize]>, stamp: Stamp) -> NameRecord {
    match file {
        Some(file) => {
            let m = pool.manifest(file);
            NameRecord {
                file: Some(*m.id.as_bytes()),
                size: m.size,
                content_type: String::new(),
                modified_ms: stamp.wall_ms,
                stamp,
                etag: None,
                headers: Vec::new(),
            }
        }
        None => NameRecord::tombstone(stamp),
    }
}

fn stamp(wall_ms: u64, node: [u8; 16]) -> Stamp {
    Stamp { wall_ms, counter: 0, node }
}

/// Applies one operation to the store and the model, checking what the store answers.
async fn step(store: &Store, pool: &Pool, model: &mut Model, op: &Op) -> Result<(), TestCaseError> {
    match op {
        Op::Put { name, file, inline, skip, cond } => {
            let manifest = pool.manifest(file);
            let mut pins = store.pins();
            let ids: Vec<ChunkId> = file.iter().map(|c| pool.ids[*c]).collect();
            pins.pin_all(&ids);
            let skipped = skip.and_then(|i| file.get(i).copied());
            let mut inline_chunks = Vec::new();
            for c in distinct(file) {
                if Some(c) == skipped {
                    continue;
                }
                if *inline {
                    inline_chunks.push((pool.ids[c], pool.sealed[c].to_vec()));
                } else {
                    store.put_chunk(pool.ids[c], pool.sealed[c].clone()).await.unwrap();
                }
            }
            let st = stamp(model.tick(), LOCAL);
            let record = record_of(pool, Some(file), st);
            let name_ok = FileName::new(NAMES[*name]).unwrap();
            let expect = model.expect(pool, *name, *cond);
            let got = store.commit_file(manifest, name_ok, record, inline_chunks, true, expect).await;
            if !model.holds(*name, *cond) {
                // Refused before anything is written: queued chunks were stored already,
                // inline ones never are.
                if !*inline {
                    model.stored.extend(distinct(file).into_iter().filter(|c| Some(*c) != skipped));
                }
                prop_assert!(matches!(got, Err(StorageError::PreconditionFailed)), "commit: {got:?}");
                return Ok(());
            }
            // Queued and inline chunks are stored whether or not the commit is refused.
            let before = model.stored.clone();
            model.stored.extend(distinct(file).into_iter().filter(|c| Some(*c) != skipped));
            let new_bytes: u64 =
                if *inline { model.stored.difference(&before).map(|c| pool.sealed_len(*c)).sum() } else { 0 };
            let want =
                model.apply(*name, Rec { stamp: st, file: Some(file.clone()) }, Carried::Manifest, true);
            match (got, want) {
                (Ok(c), Ok(applied)) => {
                    prop_assert_eq!(c.applied, applied);
                    prop_assert_eq!(c.new_bytes, new_bytes);
                }
                (Err(StorageError::MissingChunk(id)), Err("missing chunk")) => {
                    prop_assert!(skipped.is_some_and(|c| pool.ids[c] == id));
                }
                (got, want) => prop_assert!(false, "commit: store {got:?}, model {want:?}"),
            }
            drop(pins);
        }
        Op::Delete { name, cond } => {
            let st = stamp(model.tick(), LOCAL);
            let expect = model.expect(pool, *name, *cond);
            let got = store.delete(&FileName::new(NAMES[*name]).unwrap(), st, expect).await;
            if !model.holds(*name, *cond) {
                prop_assert!(matches!(got, Err(StorageError::PreconditionFailed)), "delete: {got:?}");
                return Ok(());
            }
            let got = got.unwrap();
            let live = model.names.get(name).is_some_and(|r| r.file.is_some());
            if live {
                model.apply(*name, Rec { stamp: st, file: None }, Carried::Nothing, false).unwrap();
            }
            prop_assert_eq!(got, live);
        }
        Op::Relink { from, to, mv, cond, stale } => {
            if from == to {
                return Ok(());
            }
            let source = model.live(*from).cloned();
            let named = match (&source, stale) {
                (Some(f), false) => pool.manifest(f).id,
                _ => file_id(b"what the source held before"),
            };
            let st = stamp(model.tick(), LOCAL);
            let tombstone = mv.then(|| stamp(model.tick(), LOCAL));
            let mut record = record_of(pool, source.as_deref(), st);
            if source.is_none() {
                record.file = Some(*named.as_bytes());
            }
            let expect = model.expect(pool, *to, *cond);
            let relink = Relink {
                from: NAMES[*from].into(),
                to: NAMES[*to].into(),
                file: named,
                record,
                tombstone,
                expect,
            };
            let got = store.relink(relink).await;
            match source {
                Some(f) if !*stale && model.holds(*to, *cond) => {
                    prop_assert!(got.is_ok(), "relink: {got:?}");
                    let applied =
                        model.apply(*to, Rec { stamp: st, file: Some(f) }, Carried::Nothing, false).unwrap();
                    prop_assert!(applied);
                    if let Some(t) = tombstone {
                        model.apply(*from, Rec { stamp: t, file: None }, Carried::Nothing, false).unwrap();
                    }
                }
                Some(_) if !*stale => {
                    prop_assert!(matches!(got, Err(StorageError::PreconditionFailed)), "relink: {got:?}");
                }
                _ => prop_assert!(matches!(got, Err(StorageError::SourceChanged)), "relink: {got:?}"),
            }
        }
        Op::Apply { name, file, when, carried } => {
            let st = match (model.names.get(name), when) {
                (Some(old), When::Older) => Stamp { wall_ms: old.stamp.wall_ms - 1, ..old.stamp },
                (Some(old), When::Equal) => old.stamp,
                _ => stamp(model.tick(), PEER),
            };
            let record = record_of(pool, file.as_deref(), st);
            let manifest = match (file, carried) {
                (Some(f), Carried::Manifest) => Some(pool.manifest(f)),
                (Some(f), Carried::WrongSize) => {
                    let mut m = pool.manifest(f);
                    m.size += 1;
                    Some(m)
                }
                _ => None,
            };
            let got = store.apply_names(vec![(NAMES[*name].to_string(), record, manifest)]).await.unwrap();
            let want = model.apply(*name, Rec { stamp: st, file: file.clone() }, *carried, false);
            prop_assert_eq!(got, vec![want.unwrap_or(false)]);
        }
        Op::Received { chunks, confirm } => {
            let ids: Vec<ChunkId> = chunks.iter().map(|c| pool.ids[*c]).collect();
            let mut pins = store.pins();
            pins.pin_all(&ids);
            let sent = distinct(chunks).into_iter().map(|c| (pool.ids[c], pool.sealed[c].clone())).collect();
            store.put_received_chunks(sent).await.unwrap();
            model.stored.extend(chunks.iter().copied());
            if !*confirm {
                // Received chunks are only queued; an empty confirmation waits for the writer
                // to have applied them, and records nothing.
                prop_assert_eq!(store.confirm_chunks(Vec::new()).await.unwrap(), Vec::<bool>::new());
            }
            if *confirm {
                let present = store.confirm_chunks(ids.clone()).await.unwrap();
                prop_assert!(present.iter().all(|p| *p), "received chunks not confirmed");
                model.received.extend(chunks.iter().copied());
            }
            model.pins.push((pins, chunks.clone()));
        }
        Op::Pin { chunks } => {
            let mut pins = store.pins();
            for c in chunks {
                pins.pin(pool.ids[*c]);
            }
            model.pins.push((pins, chunks.clone()));
        }
        Op::Unpin { which } => {
            if !model.pins.is_empty() {
                let i = which % model.pins.len();
                drop(model.pins.remove(i));
            }
        }
        Op::Drop { chunks } => {
            let ids: Vec<ChunkId> = distinct(chunks).iter().map(|c| pool.ids[*c]).collect();
            let freed = store.drop_chunks(ids).await.unwrap();
            let pinned = model.pinned();
            let gone: Vec<usize> = distinct(chunks)
                .into_iter()
                .filter(|c| !pinned.contains(c) && model.stored.contains(c))
                .collect();
            for c in &gone {
                model.stored.remove(c);
            }
            prop_assert_eq!(freed, gone.iter().map(|c| pool.sealed_len(*c)).sum::<u64>());
        }
        Op::Collect => {
            // Safety, stated on its own: what a named file uses or a pin holds stays.
            let protected: BTreeSet<usize> = model
                .names
                .values()
                .filter_map(|r| r.file.as_ref())
                .flatten()
                .copied()
                .chain(model.pinned())
                .filter(|c| model.stored.contains(c))
                .collect();
            let report = store.collect_garbage().await.unwrap();
            let (files, chunks, bytes) = model.collect(pool);
            prop_assert_eq!((report.files, report.chunks, report.bytes), (files, chunks, bytes));
            let ids: Vec<ChunkId> = protected.iter().map(|c| pool.ids[*c]).collect();
            prop_assert!(
                store.have_chunks(ids).await.unwrap().iter().all(|h| *h),
                "a protected chunk was collected"
            );
        }
        Op::Grace { zero } => {
            store.set_received_grace(if *zero { Duration::ZERO } else { LONG_GRACE });
            model.grace_zero = *zero;
        }
    }
    Ok(())
}

/// Compares everything observable with the model.
async fn agree(store: &Store, pool: &Pool, model: &Model) -> Result<(), TestCaseError> {
    // The newest stamp the clock starts after: what the writer keeps is every record's newest.
    let kept = {
        let store = store.clone();
        runtime::blocking(move || store.max_stamp_blocking()).await.unwrap()
    };
    prop_assert_eq!(kept, model.names.values().map(|r| r.stamp).max(), "newest stamp");
    let stored = store.have_chunks(pool.ids.clone()).await.unwrap();
    for (c, here) in stored.iter().enumerate() {
        prop_assert_eq!(*here, model.stored.contains(&c), "chunk {} stored", c);
    }
    let refs = store.chunk_refs(pool.ids.clone()).await.unwrap();
    for (c, n) in refs.iter().enumerate() {
        let want = model.manifests.iter().filter(|m| m.contains(&c)).count() as u32;
        prop_assert_eq!(*n, want, "use count of chunk {}", c);
    }
    let stats = store.stats().await.unwrap();
    let user = |i: &usize| !NAMES[*i].starts_with(".diststore/");
    let live: Vec<(&usize, &Vec<usize>)> =
        model.names.iter().filter_map(|(i, r)| r.file.as_ref().map(|f| (i, f))).collect();
    prop_assert_eq!(stats.files, live.iter().filter(|(i, _)| user(i)).count() as u64, "files");
    prop_assert_eq!(
        stats.logical_bytes,
        live.iter().filter(|(i, _)| user(i)).map(|(_, f)| pool.size(f)).sum::<u64>(),
        "logical bytes"
    );
    prop_assert_eq!(
        stats.unique_bytes,
        model.manifests.iter().map(|f| pool.size(f)).sum::<u64>(),
        "unique bytes"
    );
    prop_assert_eq!(
        stats.stored_bytes,
        model.stored.iter().map(|c| pool.sealed_len(*c)).sum::<u64>(),
        "stored bytes"
    );
    prop_assert_eq!(stats.chunks, model.stored.len() as u64, "chunks");
    // Anti-entropy's bucket digests and the names of each bucket, which the writer keeps: every
    // record, tombstones too.
    let mut digests = vec![[0u8; 32]; 256];
    for (i, r) in &model.names {
        let part = record_digest(NAMES[*i], &r.stamp);
        digests[usize::from(name_bucket(NAMES[*i]))].iter_mut().zip(part).for_each(|(a, b)| *a ^= b);
    }
    prop_assert_eq!(store.name_digest().await.unwrap(), digests, "bucket digests");
    for name in NAMES {
        let bucket = name_bucket(name);
        let mut got: Vec<(String, Stamp)> =
            store.records(Some(bucket)).await.unwrap().into_iter().map(|(n, r)| (n, r.stamp)).collect();
        got.sort();
        let mut want: Vec<(String, Stamp)> = model
            .names
            .iter()
            .filter(|(i, _)| name_bucket(NAMES[**i]) == bucket)
            .map(|(i, r)| (NAMES[*i].to_owned(), r.stamp))
            .collect();
        want.sort();
        prop_assert_eq!(got, want, "records of bucket {}", bucket);
    }
    // The totals of listings by folder, which the writer keeps rather than counts.
    for prefix in ["", "dir/", "dir/sub/", "other/"] {
        for delimiter in [false, true] {
            let under: Vec<&str> = live
                .iter()
                .filter(|(i, _)| user(i))
                .map(|(i, _)| NAMES[**i])
                .filter(|n| n.starts_with(prefix))
                .collect();
            let want = if delimiter {
                let items: BTreeSet<&str> = under
                    .iter()
                    .map(|n| &n[..n[prefix.len()..].find('/').map_or(n.len(), |i| prefix.len() + i + 1)])
                    .collect();
                items.len()
            } else {
                under.len()
            };
            let q = ListQuery {
                prefix: prefix.into(),
                limit: 1,
                count: true,
                delimiter,
                hidden: Some(HIDDEN_PREFIX),
                ..ListQuery::default()
            };
            let page = store.list(q).await.unwrap();
            prop_assert_eq!(page.total, want as u64, "total of {:?} (delimiter {})", prefix, delimiter);
        }
    }
    // The size and time index the writer keeps: a listing by size or time, in a folder
    // (`delimiter`) or of the whole store, read whole and page by page from its `next`, holds
    // every live users' name there once, with its size and time, in order, and nothing else.
    for (prefix, delimiter) in [("", true), ("dir/", true), ("dir/sub/", true), ("", false)] {
        for sort in [SortBy::Size, SortBy::Modified] {
            for descending in [false, true] {
                let mut want: Vec<(String, u64, u64)> = live
                    .iter()
                    .filter(|(i, _)| user(i))
                    .map(|(i, f)| (NAMES[**i], pool.size(f), model.names[*i].stamp.wall_ms))
                    .filter(|(n, _, _)| {
                        n.starts_with(prefix) && !(delimiter && n[prefix.len()..].contains('/'))
                    })
                    .map(|(n, size, ms)| (n.to_owned(), size, ms))
                    .collect();
                let key =
                    |e: &(String, u64, u64)| (if sort == SortBy::Size { e.1 } else { e.2 }, e.0.clone());
                want.sort_by_key(key);
                if descending {
                    want.reverse();
                }
                let q = ListQuery {
                    prefix: prefix.into(),
                    limit: 1,
                    count: true,
                    delimiter,
                    sort,
                    descending,
                    hidden: Some(HIDDEN_PREFIX),
                    ..ListQuery::default()
                };
                let mut got = Vec::new();
                let mut after = None;
                loop {
                    let page = store.list(ListQuery { after: after.clone(), ..q.clone() }).await.unwrap();
                    got.extend(
                        page.entries.iter().map(|e| (e.name.clone(), e.record.size, e.record.modified_ms)),
                    );
                    prop_assert!(got.len() <= want.len(), "{:?} {:?}: more than {:?}", prefix, sort, want);
                    match page.next {
                        Some(next) => after = Some(next),
                        None => break,
                    }
                }
                prop_assert_eq!(
                    &got,
                    &want,
                    "{:?} by {:?} (delimiter {}, descending {})",
                    prefix,
                    sort,
                    delimiter,
                    descending
                );
                let whole = store.list(ListQuery { limit: 10, ..q }).await.unwrap();
                let whole: Vec<_> = whole
                    .entries
                    .iter()
                    .map(|e| (e.name.clone(), e.record.size, e.record.modified_ms))
                    .collect();
                prop_assert_eq!(&whole, &want, "{:?} by {:?} in one page", prefix, sort);
            }
        }
    }
    // Descending names without a delimiter read backwards, page by page.
    for prefix in ["", "dir/"] {
        let mut want: Vec<&str> = live
            .iter()
            .filter(|(i, _)| user(i))
            .map(|(i, _)| NAMES[**i])
            .filter(|n| n.starts_with(prefix))
            .collect();
        want.sort();
        want.reverse();
        let mut got = Vec::new();
        let mut after = None;
        loop {
            let q = ListQuery {
                prefix: prefix.into(),
                after: after.take(),
                limit: 1,
                count: true,
                descending: true,
                hidden: Some(HIDDEN_PREFIX),
                ..ListQuery::default()
            };
            let page = store.list(q).await.unwrap();
            got.extend(page.entries.into_iter().map(|e| e.name));
            prop_assert!(got.len() <= want.len(), "{:?} descending: more than {:?}", prefix, want);
            match page.next {
                Some(next) => after = Some(next),
                None => break,
            }
        }
        prop_assert_eq!(got, want, "{:?} by name, descending", prefix);
    }
    for (i, name) in NAMES.iter().enumerate() {
        let found = store.lookup(&FileName::new(*name).unwrap()).await.unwrap();
        let want = model.names.get(&i).and_then(|r| r.file.as_ref().map(|f| (r, f)));
        match (found, want) {
            (None, None) => {}
            (Some((record, manifest)), Some((rec, file))) => {
                prop_assert_eq!(record.stamp, rec.stamp);
                prop_assert_eq!(
                    &manifest,
                    &Manifest { created_ms: manifest.created_ms, ..pool.manifest(file) }
                );
                // A read gets, for each chunk here, exactly the bytes sealed for it (the read
                // path opens and re-hashes them; byte equality is what the writer owes it).
                if file.iter().all(|c| model.stored.contains(c)) {
                    let (s, ids) = (store.clone(), manifest.chunks.clone());
                    let read = runtime::blocking(move || {
                        ids.iter().map(|c| s.chunk_blocking(c.id).unwrap()).collect::<Vec<_>>()
                    })
                    .await;
                    for (c, got) in file.iter().zip(read) {
                        prop_assert!(got.as_deref() == Some(&pool.sealed[*c][..]), "chunk {} of {}", c, name);
                    }
                }
            }
            (found, want) => prop_assert!(false, "{name}: store {found:?}, model {want:?}"),
        }
    }
    Ok(())
}

fn scratch_dir() -> tempfile::TempDir {
    // Each case commits dozens of times; on tmpfs an fsync costs nothing.
    match std::path::Path::new("/dev/shm") {
        shm if shm.is_dir() => tempfile::tempdir_in(shm).unwrap(),
        _ => tempfile::tempdir().unwrap(),
    }
}

fn run_case(pool: &Pool, ops: &[Op]) -> Result<(), TestCaseError> {
    let tmp = scratch_dir();
    let store = Store::open(&tmp.path().join("db.redb"), 4 << 20).unwrap();
    store.set_received_grace(LONG_GRACE);
    let mut model = Model::default();
    let result = runtime::block_on(async {
        for op in ops {
            step(&store, pool, &mut model, op).await?;
            agree(&store, pool, &model).await?;
        }
        // Liveness: with no pin and no pending confirmation, one collection takes every chunk
        // no named file uses, and every manifest no name points at.
        model.pins.clear();
        store.set_received_grace(Duration::ZERO);
        model.grace_zero = true;
        step(&store, pool, &mut model, &Op::Collect).await?;
        agree(&store, pool, &model).await?;
        let used: BTreeSet<usize> =
            model.names.values().filter_map(|r| r.file.as_ref()).flatten().copied().collect();
        prop_assert!(model.stored.is_subset(&used), "unused chunks outlived a collection");
        Ok(())
    });
    runtime::block_on(store.close()).unwrap();
    result
}

fn cases() -> u32 {
    std::env::var("DISTSTORE_MODEL_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(2000)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), ..ProptestConfig::default() })]

    #[test]
    fn the_writer_agrees_with_the_model(ops in prop::collection::vec(op(), 1..40)) {
        let pool = POOL.with(|p| p.clone());
        run_case(&pool, &ops)?;
    }
}

thread_local! {
    static POOL: std::rc::Rc<Pool> = std::rc::Rc::new(Pool::new());
}
