//! Failure injection: a redb storage backend over an in-memory disk that fails one chosen call
//! (a read, write, resize or sync, with an error or a panic) and can "crash", losing every byte not synced; and a
//! property test of the store against a model under those faults.
//!
//! Each case runs random puts and deletes through the real store (writer, batches, reopening)
//! with one injected failure at a random backend call of a random operation, crashes at random
//! points, and checks after every step that:
//! - an operation that returned success is visible, and stays so across crashes;
//! - one that failed is applied wholly or not at all, and the next read settles which: a
//!   failure before redb's commit point changes nothing, one after it (the header written, a
//!   later write or the sync failing) may leave the operation in place, as an fsync failure
//!   leaves a write's fate unknown on any file system. The test counts both;
//! - the failure is reported as what it was: `NoSpace` for `ENOSPC`, `Io` with the OS error
//!   otherwise, damaged data for a panic inside redb (never "the writer has stopped"), and
//!   reads work right after it;
//! - the database opens again after each crash.
//!
//! `DISTSTORE_FAULT_CASES` sets the number of cases (default 2000), `DISTSTORE_FAULT_SEED` the
//! first seed; a failure names its seed.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use super::{Expect, NameRecord, Stamp, StorageError, Store};
use crate::content::{ChunkId, ChunkRef, FileId, FileName, Manifest};
use crate::runtime;

/// What the disk does on its next calls.
#[derive(Debug, Default)]
struct DiskState {
    /// The bytes as the database sees them (written, maybe not synced).
    live: Vec<u8>,
    /// The bytes that survive a crash (as of the last successful sync).
    synced: Vec<u8>,
    /// Calls to let through before failing one; `None`: no failure armed.
    countdown: Option<u64>,
    /// The error the armed failure gives: `ENOSPC` or `EIO`; 0: the call panics instead, as
    /// redb does on some damaged pages.
    errno: i32,
    /// The kind of call that failed, once one did.
    failed: Option<&'static str>,
    /// Every call fails (a crashed machine); no byte changes.
    frozen: bool,
}

#[derive(Debug, Clone, Default)]
struct FaultDisk(Arc<Mutex<DiskState>>);

impl FaultDisk {
    fn state(&self) -> std::sync::MutexGuard<'_, DiskState> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Fails the call after `after` more calls, with `errno`.
    fn arm(&self, after: u64, errno: i32) {
        let mut s = self.state();
        (s.countdown, s.errno, s.failed) = (Some(after), errno, None);
    }

    /// Disarms; returns which kind of call failed, if one did.
    fn disarm(&self) -> Option<&'static str> {
        let mut s = self.state();
        s.countdown = None;
        s.failed.take()
    }

    /// Whether this call fails.
    fn check(&self, call: &'static str) -> std::io::Result<()> {
        let mut s = self.state();
        if s.frozen {
            return Err(std::io::Error::from_raw_os_error(libc::EIO));
        }
        match s.countdown {
            Some(0) => {
                s.countdown = None;
                s.failed = Some(call);
                if s.errno == 0 {
                    drop(s);
                    panic!("injected panic in {call}");
                }
                // No space is what writes and resizes meet; reads and syncs fail with EIO.
                let errno = if matches!(call, "write" | "set_len") { s.errno } else { libc::EIO };
                Err(std::io::Error::from_raw_os_error(errno))
            }
            Some(n) => {
                s.countdown = Some(n - 1);
                Ok(())
            }
            None => Ok(()),
        }
    }
}

impl redb::StorageBackend for FaultDisk {
    fn len(&self) -> std::io::Result<u64> {
        Ok(self.state().live.len() as u64)
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> std::io::Result<()> {
        self.check("read")?;
        let s = self.state();
        let start = offset as usize;
        let src = s
            .live
            .get(start..start + out.len())
            .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "read past the end"))?;
        out.copy_from_slice(src);
        Ok(())
    }

    fn set_len(&self, len: u64) -> std::io::Result<()> {
        self.check("set_len")?;
        self.state().live.resize(len as usize, 0);
        Ok(())
    }

    fn sync_data(&self) -> std::io::Result<()> {
        self.check("sync")?;
        let mut s = self.state();
        s.synced = s.live.clone();
        Ok(())
    }

    fn write(&self, offset: u64, data: &[u8]) -> std::io::Result<()> {
        self.check("write")?;
        let mut s = self.state();
        let end = offset as usize + data.len();
        if s.live.len() < end {
            s.live.resize(end, 0);
        }
        s.live[offset as usize..end].copy_from_slice(data);
        Ok(())
    }
}

/// xorshift: small, seeded, reproducible.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// A one-chunk file of `len` bytes of `fill`, with the chunk's stored bytes (stand-ins for
/// sealed ones: the store does not open them).
fn file(fill: u8, len: usize) -> (Manifest, ChunkId, Vec<u8>) {
    let bytes = vec![fill; len];
    let id = ChunkId::of(&bytes);
    let manifest = Manifest {
        id: FileId::from_bytes(*ChunkId::of(id.as_bytes()).as_bytes()),
        size: len as u64,
        chunker: 1,
        chunks: vec![ChunkRef { id, len: len as u32 }],
        created_ms: 1,
    };
    (manifest, id, bytes)
}

fn record(manifest: Option<&Manifest>, wall_ms: u64) -> NameRecord {
    NameRecord {
        file: manifest.map(|m| *m.id.as_bytes()),
        size: manifest.map_or(0, |m| m.size),
        content_type: String::new(),
        modified_ms: wall_ms,
        stamp: Stamp { wall_ms, counter: 0, node: [7; 16] },
        etag: None,
        headers: Vec::new(),
    }
}

/// Name → (fill byte, length) of its content.
type Model = BTreeMap<String, (u8, usize)>;

/// Whether the store shows exactly `model`: each name with its content, no other name.
fn matches(store: &Store, model: &Model, names: &[String]) -> Result<bool, StorageError> {
    runtime::block_on(async {
        for name in names {
            let found = store.lookup(&FileName::new(name).unwrap()).await?;
            match (found, model.get(name)) {
                (None, None) => {}
                (Some((_, manifest)), Some(&(fill, len))) => {
                    let (want, id, bytes) = file(fill, len);
                    if manifest.id != want.id {
                        return Ok(false);
                    }
                    let store = store.clone();
                    let stored = runtime::blocking(move || store.chunk_blocking(id)).await?;
                    assert_eq!(
                        stored.as_deref(),
                        Some(bytes.as_slice()),
                        "{name}: its chunk is lost or wrong"
                    );
                }
                _ => return Ok(false),
            }
        }
        Ok(true)
    })
}

fn open(disk: &FaultDisk) -> Store {
    let tmp = std::env::temp_dir();
    let d = disk.clone();
    Store::open_on(&tmp.join("fault-disk"), move || d.clone()).expect("the database opens again")
}

/// Crashes: every call fails from now on, the store goes, and the disk keeps only what was
/// synced. Returns a store opened on what is left.
fn crash(store: Store, disk: &FaultDisk) -> Store {
    disk.state().frozen = true;
    // Its writer ends; dropping the database cannot write anything now.
    let _ = runtime::block_on(store.close());
    drop(store);
    {
        let mut s = disk.state();
        s.frozen = false;
        s.live = s.synced.clone();
    }
    open(disk)
}

/// How failed operations turned out, over all cases.
#[derive(Debug, Default)]
struct Tally {
    unchanged: u64,
    applied_anyway: u64,
    crashes: u64,
}

fn run_case(seed: u64, tally: &Mutex<Tally>) {
    let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let disk = FaultDisk::default();
    let mut store = open(&disk);
    let names: Vec<String> = (0..6).map(|i| format!("f{i}")).collect();
    let mut model = Model::new();
    for step in 0..24u64 {
        // Stamps grow with the steps: every write is newer than the last.
        let clock = step + 2;
        let name = names[rng.below(names.len() as u64) as usize].clone();
        let put = rng.below(3) != 0;
        let (fill, len) = ((rng.below(250) + 1) as u8, [100, 5_000, 262_000, 300_000][rng.below(4) as usize]);
        let inject = rng.below(2) == 0;
        if inject {
            let errno = match rng.below(8) {
                0 => 0,
                1..4 => libc::ENOSPC,
                _ => libc::EIO,
            };
            disk.arm(rng.below(40), errno);
        }
        let result = runtime::block_on(async {
            let fname = FileName::new(&name).unwrap();
            if put {
                let (manifest, id, bytes) = file(fill, len);
                let rec = record(Some(&manifest), clock);
                store
                    .commit_file(manifest, fname, rec, vec![(id, bytes)], true, Expect::default())
                    .await
                    .map(|_| ())
            } else {
                let stamp = Stamp { wall_ms: clock, counter: 0, node: [7; 16] };
                store.delete(&fname, stamp, Expect::default()).await.map(|_| ())
            }
        });
        let failed_call = disk.disarm();
        let mut after = model.clone();
        if put {
            after.insert(name.clone(), (fill, len));
        } else {
            after.remove(&name);
        }
        match (&result, failed_call) {
            (Ok(()), _) => model = after,
            (Err(e), Some(call)) => {
                let panicked = disk.state().errno == 0;
                match e {
                    StorageError::NoSpace(_) | StorageError::Io(_) if !panicked => {}
                    StorageError::Corrupt(m) if panicked && m.contains("injected panic") => {}
                    _ => panic!("seed {seed} step {step}: a failed {call} was reported as {e:?}"),
                }
                // Reads work right after the failure was reported, with nothing armed.
                let as_before = matches(&store, &model, &names)
                    .unwrap_or_else(|e| panic!("seed {seed} step {step}: reads fail after the failure: {e}"));
                if !as_before {
                    // The failure came after the commit point (the header was written): the
                    // operation is there, all of it.
                    let applied = matches(&store, &after, &names).unwrap();
                    assert!(applied, "seed {seed} step {step}: a failed {call} left half an operation");
                    model = after;
                    tally.lock().unwrap().applied_anyway += 1;
                } else {
                    tally.lock().unwrap().unchanged += 1;
                }
            }
            (Err(e), None) => panic!("seed {seed} step {step}: failed with nothing injected: {e}"),
        }
        assert!(store.writer_failure().is_none(), "seed {seed} step {step}: the writer stopped");
        if rng.below(6) == 0 {
            store = crash(store, &disk);
            tally.lock().unwrap().crashes += 1;
        }
        assert!(
            matches(&store, &model, &names).unwrap(),
            "seed {seed} step {step}: the store no longer shows what was acknowledged"
        );
    }
    runtime::block_on(store.close()).unwrap();
}

#[test]
fn acknowledged_writes_survive_injected_io_failures_and_crashes_and_failed_ones_change_nothing() {
    let cases: u64 = std::env::var("DISTSTORE_FAULT_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(2000);
    let first: u64 = std::env::var("DISTSTORE_FAULT_SEED").ok().and_then(|v| v.parse().ok()).unwrap_or(1);
    let tally = Mutex::new(Tally::default());
    for seed in first..first + cases {
        run_case(seed, &tally);
    }
    let tally = tally.into_inner().unwrap();
    eprintln!("{cases} cases: {tally:?}");
    assert!(tally.unchanged > 0 && tally.crashes > 0, "the cases injected nothing: {tally:?}");
}

#[test]
fn a_panic_in_the_database_becomes_a_damaged_data_error() {
    let e = super::guarded("reading chunk x", || -> super::Result<()> { panic!("index out of bounds") })
        .unwrap_err();
    assert!(matches!(&e, StorageError::Corrupt(m) if m.contains("index out of bounds")), "{e:?}");
    assert!(e.to_string().starts_with("damaged data: reading chunk x"), "{e}");
}

/// Measures how the database file grows under churn (uploads, deletes, collection), without
/// compaction (or with it, when `CHURN_COMPACT` is set). Run by hand:
/// `cargo test --lib churn -- --ignored --nocapture`.
#[test]
#[ignore]
fn churn_file_growth() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("db.redb");
    let store = Store::open(&path, 1 << 20).unwrap();
    let rounds: u64 = std::env::var("CHURN_ROUNDS").ok().and_then(|v| v.parse().ok()).unwrap_or(200);
    // Readers all along, as downloads and anti-entropy are: each read is short.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let readers: Vec<_> = (0..2)
        .map(|_| {
            let (store, stop) = (store.clone(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                    let ids = store.chunk_ids_after_blocking(None, 4).unwrap_or_default();
                    for id in ids {
                        let _ = store.chunk_blocking(id);
                    }
                }
            })
        })
        .collect();
    runtime::block_on(async {
        for round in 0..rounds {
            // Four live files at a time of 12 chunks each (~1 MiB chunks as uploads make them).
            let mut chunks = Vec::new();
            for c in 0..12u64 {
                let bytes = vec![(round * 13 + c) as u8; 1_000_000 + (c as usize * 7919) % 48_000];
                let id = ChunkId::of(&[bytes.as_slice(), &round.to_le_bytes()].concat());
                store.put_chunk(id, bytes.clone().into()).await.unwrap();
                chunks.push(ChunkRef { id, len: bytes.len() as u32 });
            }
            let size = chunks.iter().map(|c| u64::from(c.len)).sum();
            let manifest = Manifest {
                id: FileId::from_bytes(*ChunkId::of(&round.to_le_bytes()).as_bytes()),
                size,
                chunker: 1,
                chunks,
                created_ms: 1,
            };
            let name = FileName::new(format!("f{}", round % 4)).unwrap();
            store
                .commit_file(
                    manifest.clone(),
                    name,
                    record(Some(&manifest), round + 2),
                    Vec::new(),
                    true,
                    Expect::default(),
                )
                .await
                .unwrap();
            store.collect_garbage().await.unwrap();
            if std::env::var_os("CHURN_COMPACT").is_some() {
                let started = std::time::Instant::now();
                if let Some(shrunk) = store.compact_if_worthwhile().await.unwrap() {
                    eprintln!(
                        "round {round}: compaction returned {} MiB in {:?}",
                        shrunk >> 20,
                        started.elapsed()
                    );
                }
            }
            if round % 20 == 19 {
                let stats = store.stats().await.unwrap();
                eprintln!(
                    "round {round}: file {} MiB, stored {} MiB",
                    std::fs::metadata(&path).unwrap().len() >> 20,
                    stats.stored_bytes >> 20
                );
            }
        }
        stop.store(true, std::sync::atomic::Ordering::SeqCst);
        store.close().await.unwrap();
    });
    readers.into_iter().for_each(|r| r.join().unwrap());
}
