//! Restarts, crashes and schema upgrades: what was acknowledged survives.

mod common;

use std::time::Duration;

use common::*;

#[test]
fn files_survive_a_restart() {
    let mut node = TestNode::start();
    let files: Vec<(String, Vec<u8>)> =
        (0..20).map(|i| (format!("keep/{i}"), random_bytes(i * 37_000 + 1, i as u64))).collect();
    for (name, data) in &files {
        assert_eq!(put(&node.url(&format!("/api/v1/files/{name}")), data).0, 201);
    }
    let before = node.status();
    node.restart();
    let after = node.status();
    assert_eq!(before["node_id"], after["node_id"], "node id must persist");
    for key in ["files", "logical_bytes", "stored_bytes", "chunks"] {
        assert_eq!(before[key], after[key], "{key}");
    }
    for (name, data) in &files {
        let (code, body) = get(&node.url(&format!("/api/v1/files/{name}")));
        assert_eq!(code, 200);
        assert!(body == *data, "{name} changed across a restart");
    }
}

#[test]
fn sigterm_closes_the_database_cleanly() {
    let mut node = TestNode::start();
    let data = random_bytes(3 << 20, 21);
    assert_eq!(put(&node.url("/api/v1/files/kept"), &data).0, 201);
    let status = node.terminate();
    assert!(status.success(), "exit status {status}");
    node.start_again();
    assert!(!node.log_text().contains("repairing"), "a clean shutdown needed repair:\n{}", node.log_text());
    assert!(get(&node.url("/api/v1/files/kept")).1 == data);
}

#[test]
fn kill_9_during_a_large_upload_loses_nothing_acknowledged() {
    let mut node = TestNode::start();
    // Acknowledged before the crash.
    let acked: Vec<(String, Vec<u8>)> =
        (0..10).map(|i| (format!("acked/{i}"), random_bytes(100_000 * i + 10, 100 + i as u64))).collect();
    for (name, data) in &acked {
        assert_eq!(put(&node.url(&format!("/api/v1/files/{name}")), data).0, 201);
    }
    let baseline = node.status();

    // A large upload in flight, killed once the node has stored some of it.
    let url = node.url("/api/v1/files/interrupted.bin");
    let uploader = std::thread::spawn(move || {
        let size: u64 = 2 << 30;
        agent()
            .put(&url)
            .header("Content-Length", &size.to_string())
            .send(ureq::SendBody::from_owned_reader(RandomReader::new(size, 77)))
            .map(|r| r.status().as_u16())
    });
    let base_stored = baseline["stored_bytes"].as_u64().unwrap();
    wait_for("the upload to be under way", Duration::from_secs(60), || {
        (node.status()["stored_bytes"].as_u64().unwrap() > base_stored + (20 << 20)).then_some(())
    });
    node.kill9();
    let outcome = uploader.join().unwrap();
    assert!(outcome.is_err() || outcome.as_ref().is_ok_and(|c| *c != 201), "{outcome:?}");

    // It starts again by itself, with every acknowledged file and no trace of the partial one.
    node.restart();
    for (name, data) in &acked {
        let (code, body) = get(&node.url(&format!("/api/v1/files/{name}")));
        assert_eq!(code, 200, "{name}");
        assert!(body == *data, "{name} damaged by the crash");
    }
    assert_eq!(get(&node.url("/api/v1/files/interrupted.bin")).0, 404);
    let (_, body) = get(&node.url("/api/v1/files?prefix=interrupted"));
    assert_eq!(json(&body)["total"], 0);
    // Whatever of the partial upload reached the disk is garbage, and is collected.
    wait_for("orphaned chunks to be collected", Duration::from_secs(120), || {
        let s = node.status();
        (s["stored_bytes"] == baseline["stored_bytes"]).then_some(())
    });
    // And it keeps working.
    assert_eq!(put(&node.url("/api/v1/files/after-crash"), b"still here").0, 201);
}

/// A data directory holding a copy of `migrations/fixtures/<fixture>`, and the file of the
/// secret the fixtures were written under.
fn fixture_dir(fixture: &str) -> (tempfile::TempDir, std::path::PathBuf, std::path::PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    std::fs::create_dir_all(&dir).unwrap();
    let from = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations/fixtures").join(fixture);
    std::fs::copy(from, dir.join("diststore.redb")).unwrap();
    let secret = tmp.path().join("secret");
    std::fs::write(&secret, "fixture-secret\n").unwrap();
    (tmp, dir, secret)
}

#[test]
fn a_schema_1_database_is_upgraded_on_open() {
    let (_tmp, dir, secret) = fixture_dir("v1.redb");
    let secret_arg = secret.to_str().unwrap();

    let node = TestNode::start_in(&dir, &["--secret-file", secret_arg]);
    assert!(node.log_text().contains("upgrading database schema from 1 to 5"), "{}", node.log_text());
    let big: Vec<u8> = (0..300_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    for (name, data) in [
        ("hello.txt", b"hello from schema 1\n".to_vec()),
        ("copy-of-hello.txt", b"hello from schema 1\n".to_vec()),
        ("dir/big.bin", big),
    ] {
        let (code, body) = get(&node.url(&format!("/api/v1/files/{name}")));
        assert_eq!(code, 200, "{name}");
        assert!(body == data, "{name} differs after the upgrade");
    }
    let s = node.status();
    assert_eq!(s["files"], 3);
    assert_eq!(s["logical_bytes"], 300_000 + 40);
    assert_eq!(s["unique_bytes"], 300_000 + 20);
    // Schema 2 features work on upgraded data: delete, and the shared content survives.
    assert_eq!(delete(&node.url("/api/v1/files/hello.txt")).0, 204);
    assert_eq!(get(&node.url("/api/v1/files/copy-of-hello.txt")).1, b"hello from schema 1\n");
    drop(node);

    // Opening again does not upgrade twice.
    let node = TestNode::start_in(&dir, &["--secret-file", secret_arg]);
    assert_eq!(node.status()["files"], 2);
}

#[test]
fn a_schema_2_database_is_upgraded_on_open() {
    let (_tmp, dir, secret) = fixture_dir("v2.redb");
    let node = TestNode::start_in(&dir, &["--secret-file", secret.to_str().unwrap()]);
    assert!(node.log_text().contains("upgrading database schema from 2 to 5"), "{}", node.log_text());
    let (code, head, body) = get_with(&node.url("/api/v1/files/docs/a.txt"), &[]);
    assert_eq!((code, body.as_slice()), (200, b"schema two, text".as_slice()));
    assert_eq!(head.get("content-type").unwrap(), "text/plain");
    assert!(get(&node.url("/api/v1/files/big.bin")).1 == vec![b'z'; 400_000]);
    // The delete is still a delete: its tombstone moved over too.
    assert_eq!(get(&node.url("/api/v1/files/deleted")).0, 404);
    assert_eq!(node.status()["files"], 2);
    assert_eq!(put(&node.url("/api/v1/files/docs/b.txt"), b"schema three").0, 201);
}

#[test]
fn a_schema_3_database_is_upgraded_and_its_collector_works_from_the_queue() {
    let (_tmp, dir, secret) = fixture_dir("v3.redb");
    let node = TestNode::start_in(&dir, &["--secret-file", secret.to_str().unwrap()]);
    assert!(node.log_text().contains("upgrading database schema from 3 to 5"), "{}", node.log_text());
    assert_eq!(get(&node.url("/api/v1/files/docs/a.txt")).1, b"schema three, text");
    assert!(get(&node.url("/api/v1/files/big.bin")).1 == vec![b'z'; 400_000]);
    assert_eq!(get(&node.url("/api/v1/files/deleted")).0, 404);
    assert_eq!(node.status()["files"], 2);
    // Content stored before the upgrade is collected from the queue once its name goes.
    let before = node.status()["chunks"].as_u64().unwrap();
    assert_eq!(delete(&node.url("/api/v1/files/big.bin")).0, 204);
    wait_for("the deleted file's chunks to be collected", Duration::from_secs(30), || {
        (node.status()["chunks"].as_u64().unwrap() < before).then_some(())
    });
    assert_eq!(get(&node.url("/api/v1/files/docs/a.txt")).1, b"schema three, text");
}

#[test]
fn a_schema_4_database_is_upgraded_and_lists_by_size_and_time_from_its_index() {
    let (_tmp, dir, secret) = fixture_dir("v4.redb");
    let mut node = TestNode::start_in(&dir, &["--secret-file", secret.to_str().unwrap()]);
    assert!(node.log_text().contains("upgrading database schema from 4 to 5"), "{}", node.log_text());
    assert_eq!(get(&node.url("/api/v1/files/docs/a.txt")).1, b"schema four, text");
    assert_eq!(get(&node.url("/api/v1/files/deleted")).0, 404);
    // The names from before the upgrade are in the size index (the deleted one is not), and
    // new writes join them; each order in both directions, at the root and in a folder.
    assert_eq!(put(&node.url("/api/v1/files/mid.txt"), &[b'm'; 1000]).0, 201);
    let names = |node: &TestNode, query: &str| -> Vec<String> {
        let page = json(&get(&node.url(&format!("/api/v1/files?{query}"))).1);
        page["files"].as_array().unwrap().iter().map(|f| f["name"].as_str().unwrap().to_owned()).collect()
    };
    assert_eq!(names(&node, "sort=size"), ["docs/a.txt", "mid.txt", "big.bin"]);
    assert_eq!(names(&node, "sort=size&order=desc"), ["big.bin", "mid.txt", "docs/a.txt"]);
    assert_eq!(names(&node, "sort=size&delimiter=/"), ["mid.txt", "big.bin"]);
    assert_eq!(names(&node, "sort=modified&order=desc&delimiter=/&prefix=docs/"), ["docs/a.txt"]);
    assert_eq!(names(&node, "sort=modified&order=desc")[0], "mid.txt");
    // The index is durable like the names: the same after a restart.
    node.restart();
    assert_eq!(names(&node, "sort=size"), ["docs/a.txt", "mid.txt", "big.bin"]);
}

#[test]
fn a_database_from_a_newer_version_is_refused_clearly() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    drop(TestNode::start_in(&dir, &[]));
    {
        let db = redb::Database::open(dir.join("diststore.redb")).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let mut meta = txn.open_table(redb::TableDefinition::<&str, &[u8]>::new("meta")).unwrap();
            meta.insert("schema_version", 99u64.to_le_bytes().as_slice()).unwrap();
        }
        txn.commit().unwrap();
    }
    let err = spawn_node(&dir, &[], &tmp.path().join("log"), None).expect_err("must refuse");
    assert!(err.contains("newer DistStore (schema 99"), "{err}");
}

/// Stores a file in a fresh data dir, lets `alter` change the stopped database, then checks
/// that a start under another secret is refused and one under its own serves the file whole.
fn refused_under_another_secret_and_served_under_its_own(alter: impl FnOnce(&std::path::Path)) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let data = random_bytes(300_000, 9);
    drop({
        let node = TestNode::start_in(&dir, &[]);
        assert_eq!(put(&node.url("/api/v1/files/x"), &data).0, 201);
        node
    });
    alter(&dir);
    let other = tmp.path().join("other-secret");
    std::fs::write(&other, "not the secret").unwrap();
    let args = ["--secret-file".to_string(), other.to_str().unwrap().to_string()];
    let err = spawn_node(&dir, &args, &tmp.path().join("log"), None).expect_err("must refuse");
    assert!(err.contains("sealed under a different cluster secret"), "{err}");

    // Nothing was served or stored: with its own secret the node serves the file as before.
    let node = TestNode::start_in(&dir, &[]);
    assert_eq!(get(&node.url("/api/v1/files/x")), (200, data));
}

#[test]
fn a_node_refuses_a_data_dir_sealed_under_another_secret() {
    refused_under_another_secret_and_served_under_its_own(|_| {});
}

#[test]
fn a_database_from_before_the_key_check_is_refused_under_another_secret() {
    // As a database written before the check was kept: the key must open its chunks.
    refused_under_another_secret_and_served_under_its_own(|dir| {
        let db = redb::Database::open(dir.join("diststore.redb")).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let mut meta = txn.open_table(redb::TableDefinition::<&str, &[u8]>::new("meta")).unwrap();
            assert!(meta.remove("key_check").unwrap().is_some());
        }
        txn.commit().unwrap();
    });
}

#[test]
fn a_corrupt_chunk_reads_as_an_error_and_the_scrub_drops_it() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    // Under the smallest chunk size: one chunk, so the damaged one is the first the read meets
    // (damage further in shows as a body cut short after the 200).
    let data = random_bytes(60_000, 6);
    drop({
        let node = TestNode::start_in(&dir, &[]);
        assert_eq!(put(&node.url("/api/v1/files/x"), &data).0, 201);
        node
    });
    damage_a_stored_chunk(&dir);

    // Scrub off: a read meets the damaged copy and refuses it.
    let chunks_before = {
        let node = TestNode::start_in(&dir, &["--scrub-rate", "0"]);
        let (code, body) = get(&node.url("/api/v1/files/x"));
        assert_eq!(code, 500);
        assert!(error_of(&body).contains("failed verification"), "{}", error_of(&body));
        node.status()["chunks"].as_u64().unwrap()
    };

    // Scrub on: its next pass finds the damaged copy and drops it (a short period: a restart
    // resumes a pass in progress, not a new one, and the first start's pass had ended)...
    let node = TestNode::start_in(&dir, &["--scrub-period", "1s"]);
    wait_for("the scrub to drop the damaged copy", Duration::from_secs(30), || {
        let s = node.status();
        (s["scrub"]["passes"].as_u64() >= Some(1)).then_some(s)
    });
    let s = node.status();
    assert_eq!(s["scrub"]["corrupt"], 1, "{s}");
    assert_eq!(s["chunks"].as_u64().unwrap(), chunks_before - 1, "{s}");
    // The node's output reaches the test through copier threads: wait for it, bounded.
    wait_for("the scrub's log line", Duration::from_secs(10), || {
        node.log_text().contains("scrub: chunk").then_some(())
    });
    // ...so it no longer stands in for that chunk: uploading the file again stores it afresh.
    let (code, body) = put(&node.url("/api/v1/files/x"), &data);
    assert_eq!(code, 201);
    assert!(json(&body)["new_bytes"].as_u64().unwrap() > 0, "{}", String::from_utf8_lossy(&body));
    assert_eq!(get(&node.url("/api/v1/files/x")), (200, data));
}

/// A restart resumes the scrub's pass where it stopped, and a pass that ended is not done
/// again until its period is up: a large store is not walked again on every restart.
#[test]
fn a_restart_resumes_the_scrub_and_does_not_repeat_a_finished_pass() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let total = {
        let node = TestNode::start_in(&dir, &["--scrub-rate", "0"]);
        for i in 0..200u64 {
            let name = format!("/api/v1/files/s/{i}");
            assert_eq!(put(&node.url(&name), &random_bytes(20_000, 900 + i)).0, 201);
        }
        node.status()["chunks"].as_u64().unwrap()
    };
    let checked = |node: &TestNode| node.status()["scrub"]["checked"].as_u64().unwrap();
    // Slowly (about 50 chunks a second, so three quarters take over two seconds): stopped
    // part-way, after its position was saved (at least once a second, before it is counted).
    let first = {
        let mut node = TestNode::start_in(&dir, &["--scrub-rate", "1MiB"]);
        // One status for both figures: the pass may end soon after.
        let (seen, progress) = wait_for("the scrub to get part-way", Duration::from_secs(60), || {
            let scrub = &node.status()["scrub"];
            let n = scrub["checked"].as_u64().unwrap();
            (n >= total * 3 / 4).then(|| (n, scrub["pass_progress"].as_f64().unwrap()))
        });
        assert!(seen < total, "the pass ended before the node was stopped ({seen} of {total})");
        // The status says how far the pass has got, from the position in the id space (ids
        // are SHA-256, so about the share checked; the UI shows it).
        assert!((0.5..1.0).contains(&progress), "pass_progress {progress} with {seen} of {total} checked");
        assert!(node.terminate().success());
        seen
    };
    // Restarted: the pass goes on after where it was, not from the start.
    let mut node = TestNode::start_in(&dir, &["--scrub-rate", "64MiB"]);
    let s = wait_for("the resumed pass to end", Duration::from_secs(60), || {
        let s = node.status();
        (s["scrub"]["passes"].as_u64() >= Some(1)).then_some(s)
    });
    let resumed = s["scrub"]["checked"].as_u64().unwrap();
    assert_eq!(s["scrub"]["pass_progress"], 0.0, "no pass under way after it ended: {s}");
    assert!(resumed < total && resumed + first >= total, "resumed {resumed}, first {first}, total {total}");
    wait_for("the resume to be logged", Duration::from_secs(10), || {
        node.log_text().contains("scrub: resuming").then_some(())
    });
    // Restarted after a pass that ended: the scrub waits out the day from that pass's end
    // instead of starting another.
    let ended = now_ms();
    node.restart();
    let next = wait_for("the scrub to schedule its next pass", Duration::from_secs(30), || {
        node.status()["scrub"]["next_pass_at_ms"].as_u64()
    });
    // The pass ended before `ended` and less than a minute before it.
    let day = 86_400_000;
    assert!(
        (ended + day - 60_000..=ended + day).contains(&next),
        "next pass at {next}: a day after the last pass ended (before {ended}) expected"
    );
    assert_eq!(checked(&node), 0, "a finished pass was done again after a restart");
}

/// Unix milliseconds now, as the node reckons them.
fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}
