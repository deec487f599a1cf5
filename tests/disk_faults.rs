//! Storage faults against the real binary: a full data disk (a small tmpfs) and a database file
//! damaged while the node was stopped.
//!
//! The full-disk tests mount a tmpfs, which needs root. Without it they skip with the reason
//! printed, except under CI (`CI` set), where that is a failure. Mounts are undone even when a
//! test fails (the guard unmounts on drop).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::*;

/// A tmpfs mounted for one test, unmounted on drop.
struct Tmpfs {
    dir: PathBuf,
    _tmp: tempfile::TempDir,
}

impl Tmpfs {
    /// A tmpfs of `size` (e.g. "64m"), or `None` (the test skips) when it cannot be mounted
    /// outside CI.
    fn mount(size: &str) -> Option<Tmpfs> {
        let tmp = tempfile::tempdir().expect("temp dir");
        // The mount is the data directory itself, so the node's log (beside it) is not on it.
        let dir = tmp.path().join("data");
        std::fs::create_dir(&dir).unwrap();
        let mounted = is_root()
            && Command::new("mount")
                .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
                .arg(&dir)
                .status()
                .is_ok_and(|s| s.success());
        if !mounted {
            assert!(
                std::env::var_os("CI").is_none(),
                "cannot mount a tmpfs (needs root and mount(8)) but CI is set: the disk fault tests must run in CI"
            );
            eprintln!("skipping: cannot mount a tmpfs (needs root)");
            return None;
        }
        Some(Tmpfs { dir, _tmp: tmp })
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        // Lazy: a node killed a moment ago may still hold files open.
        let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
    }
}

const MIB: usize = 1 << 20;

/// Uploads 2 MiB files `fill/0`, `fill/1`, ... until one is refused; returns what was stored
/// (name, bytes) and the refusal's status and error text.
fn fill(node: &TestNode, seed: u64) -> (Vec<(String, Vec<u8>)>, u16, String) {
    let mut stored = Vec::new();
    for i in 0..200 {
        let name = format!("fill/{seed}-{i}");
        let data = random_bytes(2 * MIB, seed * 1000 + i);
        let (code, body) = put(&node.url(&format!("/api/v1/files/{name}")), &data);
        if code == 201 {
            stored.push((name, data));
            continue;
        }
        return (stored, code, error_of(&body));
    }
    panic!("200 uploads of 2 MiB fit on a 64 MiB disk");
}

/// Every stored file reads back whole and right.
fn assert_readable(node: &TestNode, stored: &[(String, Vec<u8>)]) {
    for (name, data) in stored {
        let (code, body) = get(&node.url(&format!("/api/v1/files/{name}")));
        assert_eq!(code, 200, "GET {name}: {}", String::from_utf8_lossy(&body[..body.len().min(300)]));
        assert!(body == *data, "GET {name} returned other bytes");
    }
}

/// Waits for `check` like `wait_for`, with the node's log in the failure.
fn wait_logged(node: &TestNode, what: &str, limit: Duration, mut check: impl FnMut() -> bool) {
    let start = std::time::Instant::now();
    while !check() {
        if start.elapsed() > limit {
            let log = node.log_text();
            panic!(
                "timed out after {limit:?} waiting for {what}; log:\n{}",
                &log[log.len().saturating_sub(6000)..]
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn health(node: &TestNode) -> (u16, String) {
    let (code, body) = get(&node.url("/health"));
    (code, String::from_utf8_lossy(&body).into_owned())
}

/// Regression (issue 12 item 3): a full disk wedged the node. Every read failed, writes and
/// deletes answered "the storage writer has stopped", /health said ok, and deletes freed no
/// space. Now uploads get 507 once free space falls below the reserve, reads go on, /health is
/// not ready until deletes (collected and compacted away) bring the space back, and a new upload
/// then fits.
#[test]
fn a_full_disk_refuses_uploads_with_507_keeps_serving_reads_and_recovers_after_deletes() {
    let Some(disk) = Tmpfs::mount("64m") else { return };
    let node = TestNode::start_in(&disk.dir, &["--disk-reserve", "8MiB", "--scrub-rate", "0"]);

    let (stored, code, error) = fill(&node, 1);
    assert_eq!(code, 507, "a full disk must answer 507, got {code}: {error}");
    assert!(error.contains("no space"), "the error must say what happened: {error}");
    assert!(stored.len() >= 10, "only {} files of 2 MiB fit on 64 MiB", stored.len());

    assert_readable(&node, &stored);
    let (code, text) = health(&node);
    assert_eq!(code, 503, "/health must report a disk below its reserve: {text}");
    assert!(text.contains("reserve"), "{text}");
    let status = node.status();
    assert!(status["disk_total_bytes"].as_u64().unwrap() >= 60 * MIB as u64, "{status}");
    assert!(status["disk_free_bytes"].as_u64().unwrap() < 8 * MIB as u64, "{status}");
    assert_eq!(status["disk_reserve_bytes"].as_u64(), Some(8 * MIB as u64));

    // Deletes work on the full disk, and the space they free comes back to it.
    let (gone, kept) = stored.split_at(stored.len() - 3);
    for (name, _) in gone {
        let (code, body) = delete(&node.url(&format!("/api/v1/files/{name}")));
        assert_eq!(code, 204, "DELETE {name}: {}", String::from_utf8_lossy(&body));
    }
    wait_logged(&node, "/health to be ready after the deletes", Duration::from_secs(60), || {
        health(&node).0 == 200
    });
    let status = node.status();
    assert!(status["compactions"].as_u64().unwrap() >= 1, "{status}");
    assert!(status["disk_free_bytes"].as_u64().unwrap() > 30 * MIB as u64, "{status}");
    let db_file = status["db_file_bytes"].as_u64().unwrap();
    assert!(db_file < 24 * MIB as u64, "the database file kept {db_file} bytes for 3 files of 2 MiB");

    let data = random_bytes(2 * MIB, 99);
    let (code, body) = put(&node.url("/api/v1/files/after"), &data);
    assert_eq!(code, 201, "an upload after the deletes: {}", String::from_utf8_lossy(&body));
    assert_readable(&node, &[("after".into(), data)]);
    assert_readable(&node, kept);
    let (_, metrics) = get(&node.url("/metrics"));
    let metrics = String::from_utf8(metrics).unwrap();
    for name in ["diststore_disk_free_bytes", "diststore_disk_total_bytes", "diststore_db_free_bytes"] {
        assert!(metrics.contains(name), "/metrics lacks {name}");
    }
    assert!(!node.log_text().contains("writer has stopped"), "{}", node.log_text());
}

/// Fills the file system holding `dir` with a ballast file, to the last byte.
fn fill_disk(dir: &Path) -> PathBuf {
    use std::io::Write;
    let path = dir.join("ballast");
    let mut f = std::fs::File::create(&path).unwrap();
    let block = vec![0u8; 64 * 1024];
    while f.write_all(&block).is_ok() {}
    let small = [0u8; 512];
    while f.write_all(&small).is_ok() {}
    path
}

/// Without a reserve, the disk fills under the database itself: redb's write fails with
/// `ENOSPC`, which spends its handle. The upload gets 507, the writer reopens the database
/// and reads go on, and once space is back deletes and uploads work again, with no restart.
#[test]
fn no_space_under_the_database_is_507_and_the_database_reopens_by_itself() {
    let Some(disk) = Tmpfs::mount("64m") else { return };
    let node = TestNode::start_in(&disk.dir, &["--disk-reserve", "0", "--scrub-rate", "0"]);
    let stored: Vec<(String, Vec<u8>)> =
        (0..3).map(|i| (format!("keep/{i}"), random_bytes(2 * MIB, 500 + i))).collect();
    for (name, data) in &stored {
        assert_eq!(put(&node.url(&format!("/api/v1/files/{name}")), data).0, 201);
    }
    let ballast = fill_disk(&disk.dir);

    let (more, code, error) = fill(&node, 2);
    assert_eq!(code, 507, "ENOSPC must answer 507, got {code}: {error}");
    assert!(error.contains("no space"), "{error}");
    assert!(!error.contains("writer has stopped"), "{error}");
    // Reads right after the refusal: the database was reopened before it was answered.
    assert_readable(&node, &stored);
    assert_readable(&node, &more);

    std::fs::remove_file(ballast).unwrap();
    wait_logged(&node, "/health to be ready", Duration::from_secs(30), || health(&node).0 == 200);
    assert_eq!(delete(&node.url("/api/v1/files/keep/0")).0, 204);
    let data = random_bytes(2 * MIB, 77);
    let (code, body) = put(&node.url("/api/v1/files/after"), &data);
    assert_eq!(code, 201, "{}", String::from_utf8_lossy(&body));
    assert_readable(&node, &[("after".into(), data)]);
    assert_readable(&node, &stored[1..]);
    assert!(node.log_text().contains("reopened the database"), "{}", node.log_text());
}

/// An agent whose requests give up after `secs`: a request that takes longer is a hang.
fn impatient(secs: u64) -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(secs)))
        .build()
        .into()
}

/// Overwrites 64 bytes in each of `pages` random pages (4 KiB-aligned, past the file's header)
/// with random bytes: in half of them the page header redb parses first.
fn damage_pages(db: &Path, pages: usize, seed: u64) {
    use std::io::{Seek, SeekFrom, Write};
    let len = std::fs::metadata(db).unwrap().len();
    let count = len / 4096;
    let mut f = std::fs::OpenOptions::new().write(true).open(db).unwrap();
    let noise = random_bytes(pages * 8 + 64 * pages, seed);
    for i in 0..pages {
        let pick = u64::from_le_bytes(noise[i * 8..i * 8 + 8].try_into().unwrap());
        let page = 2 + pick % (count - 2);
        // Every other one at the page's start (its header), the rest inside it.
        let within = if i % 2 == 0 { 0 } else { (pick >> 32) % (4096 - 64) };
        f.seek(SeekFrom::Start(page * 4096 + within)).unwrap();
        let start = pages * 8 + i * 64;
        f.write_all(&noise[start..start + 64]).unwrap();
    }
    f.sync_all().unwrap();
}

/// Regression (issue 12 item 9): a damaged database page made redb panic, so the node exited
/// at start, a download hung for ever, or the scrub died silently. Now the node either refuses
/// to start with an error (exit status 1, not a signal), or starts, and then every read of a
/// file either returns its bytes or fails with a JSON error before the first byte, in bounded
/// time; the process and its scrub keep running.
#[test]
fn a_damaged_database_page_is_an_error_never_a_panic_or_a_hang() {
    let tmp = tempfile::tempdir().unwrap();
    let pristine = tmp.path().join("pristine");
    let mut files = Vec::new();
    {
        let mut node = TestNode::start_in(&pristine, &[]);
        // Small files: each a single chunk, so any damage is met before the first byte.
        for i in 0..40u64 {
            let data = random_bytes(20_000 + (i as usize) * 1000, 700 + i);
            let name = format!("small/{i}");
            assert_eq!(put(&node.url(&format!("/api/v1/files/{name}")), &data).0, 201);
            files.push((name, data));
        }
        assert!(node.terminate().success());
    }
    let cases: u64 = std::env::var("DISTSTORE_DAMAGE_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(6);
    let (mut refused, mut served, mut failed_reads, mut caught) = (0, 0, 0, 0);
    for seed in 0..cases {
        let dir = tmp.path().join(format!("case{seed}"));
        std::fs::create_dir_all(&dir).unwrap();
        // The database and the secret (the resumable uploads' spool directory is empty).
        for entry in std::fs::read_dir(&pristine).unwrap() {
            let entry = entry.unwrap();
            if entry.file_type().unwrap().is_file() {
                std::fs::copy(entry.path(), dir.join(entry.file_name())).unwrap();
            }
        }
        damage_pages(&dir.join("diststore.redb"), 4, 1000 + seed);
        let log = tmp.path().join(format!("case{seed}.log"));
        // The scrub walks the damaged file too (a short period: a restart alone resumes the
        // pass in progress, and the pristine node's pass had ended).
        let args: Vec<String> =
            vec!["--scrub-rate".into(), "64MiB".into(), "--scrub-period".into(), "1s".into()];
        let (mut child, base) = match spawn_node(&dir, &args, &log, None) {
            Ok(started) => started,
            Err(text) => {
                // Refused at start: an error and exit status 1, not a panic's abort or a hang.
                assert!(text.contains("exit status: 1"), "case {seed}: {text}");
                assert!(text.contains("Error:"), "case {seed}: {text}");
                refused += 1;
                continue;
            }
        };
        let agent = impatient(30);
        for (name, data) in &files {
            let res = agent.get(&format!("{base}/api/v1/files/{name}")).call();
            let mut res = res.unwrap_or_else(|e| panic!("case {seed}: GET {name} failed or hung: {e}"));
            let code = res.status().as_u16();
            let body = res.body_mut().read_to_vec().unwrap_or_else(|e| {
                panic!("case {seed}: GET {name} answered {code}, then its body broke: {e}")
            });
            match code {
                200 => assert!(body == *data, "case {seed}: GET {name} returned other bytes"),
                // Damage under the names table may hide a name.
                404 => failed_reads += 1,
                500 | 503 => {
                    let error = error_of(&body);
                    assert!(!error.is_empty(), "case {seed}");
                    failed_reads += 1;
                }
                other => panic!("case {seed}: GET {name}: {other} {}", String::from_utf8_lossy(&body)),
            }
        }
        // Still running, still answering, with its scrub counted as running or failing.
        assert!(child.try_wait().unwrap().is_none(), "case {seed}: the node exited");
        let res = agent.get(&format!("{base}/health")).call().expect("health answers");
        let health = res.into_body().read_to_string().unwrap();
        assert!(!health.contains("scrub loop has stopped"), "case {seed}: {health}");
        served += 1;
        let _ = child.kill();
        let _ = child.wait();
        if std::fs::read_to_string(&log).unwrap_or_default().contains("panicked") {
            caught += 1;
        }
    }
    eprintln!(
        "{cases} damaged databases: {refused} refused at start, {served} served ({failed_reads} reads \
         failed cleanly, {caught} met a redb panic and went on)"
    );
}

/// `diststore compact` gives a stopped node's free pages back to the disk, and refuses (with
/// the reason, exit status non-zero) while a node runs on the directory.
#[test]
fn the_compact_command_shrinks_a_stopped_nodes_database_and_refuses_a_running_one() {
    let mut node = TestNode::start_with(&["--scrub-rate", "0"]);
    let files: Vec<(String, Vec<u8>)> =
        (0..6).map(|i| (format!("c/{i}"), random_bytes(MIB, 900 + i))).collect();
    for (name, data) in &files {
        assert_eq!(put(&node.url(&format!("/api/v1/files/{name}")), data).0, 201);
    }
    // The last one stays: it sits at the end of the file, so the freed pages are inside it,
    // where only compaction gives them back.
    // Few enough that the collector does not compact the file itself (see `Writer::compact`).
    for (name, _) in &files[..5] {
        assert_eq!(delete(&node.url(&format!("/api/v1/files/{name}"))).0, 204);
    }
    wait_for("the collector to remove the deleted files", Duration::from_secs(30), || {
        (node.status()["gc"]["files"].as_u64() >= Some(5)).then_some(())
    });
    assert_eq!(node.status()["compactions"].as_u64(), Some(0));
    let dir = node.dir.clone();
    let compact = || Command::new(BIN).arg("compact").arg("--data-dir").arg(&dir).output().unwrap();
    let running = compact();
    assert!(!running.status.success(), "compacting under a running node must fail");
    assert!(!String::from_utf8_lossy(&running.stderr).is_empty());

    assert!(node.terminate().success());
    let db = node.dir.join("diststore.redb");
    let before = std::fs::metadata(&db).unwrap().len();
    let out = compact();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let after = std::fs::metadata(&db).unwrap().len();
    assert!(String::from_utf8_lossy(&out.stdout).contains(&format!("{before} -> {after} bytes")));
    assert!(after + 4 * MIB as u64 <= before, "compaction took the file only from {before} to {after} bytes");

    node.start_again();
    assert_readable(&node, &files[5..]);
    assert_eq!(get(&node.url("/api/v1/files/c/0")).0, 404);
}
