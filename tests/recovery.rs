//! Offline recovery: `diststore check` and `diststore export` on a real data directory, with
//! stored chunks damaged on purpose in the database file, as a bad disk would.

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, Output};

use common::*;
use diststore::content::{ChunkId, FileId};
use diststore::storage::snapshot::Snapshot;

fn run(args: &[&str], dir: &Path) -> Output {
    Command::new(BIN)
        .args(args)
        .arg("--data-dir")
        .arg(dir)
        .env_remove("DISTSTORE_SECRET")
        .env_remove("DISTSTORE_DATA_DIR")
        .output()
        .expect("running diststore")
}

fn json_of(out: &Output) -> Value {
    json(&out.stdout)
}

fn names(list: &Value) -> BTreeSet<String> {
    list.as_array().expect("a list").iter().map(|p| p["what"].as_str().unwrap().to_string()).collect()
}

fn file_id(data: &[u8]) -> FileId {
    sha256_hex(data).parse().expect("a file id")
}

/// Flips one byte in every copy, in the database file, of a window of `chunk`'s sealed bytes:
/// the chunk's stored value is damaged without going through the database.
fn damage_chunk_bytes(dir: &Path, chunk: ChunkId) {
    let path = dir.join("diststore.redb");
    let sealed = {
        let snapshot = Snapshot::open(&path, 1 << 20).expect("open read-only");
        snapshot.chunk_reader().unwrap().sealed(&chunk).unwrap().expect("the chunk is stored")
    };
    let window = &sealed[1000..1064];
    let mut file = std::fs::read(&path).unwrap();
    let found: Vec<usize> =
        file.windows(window.len()).enumerate().filter(|(_, w)| w == &window).map(|(i, _)| i).collect();
    assert!(!found.is_empty(), "the chunk's sealed bytes are not in the file as stored");
    for at in found {
        file[at + 10] ^= 0x40;
    }
    std::fs::write(&path, file).unwrap();
}

#[test]
fn check_names_exactly_the_damaged_files_and_export_writes_every_other_one() {
    let mut node = TestNode::start();
    let shared = random_bytes(3 << 20, 2);
    let mut longer = shared.clone();
    longer.extend(random_bytes(1 << 20, 3));
    let files: Vec<(&str, Vec<u8>)> = vec![
        ("docs/shared.bin", shared.clone()),
        ("docs/longer.bin", longer.clone()),
        ("dup.bin", shared.clone()),
        ("big.bin", random_bytes(3 << 20, 1)),
        ("photos/ok.jpg", random_bytes(2 << 20, 4)),
        ("small.txt", b"hello, recovery".to_vec()),
        ("gone.txt", b"deleted before the damage".to_vec()),
    ];
    for (name, data) in &files {
        let (code, body) = put(&node.url(&format!("/api/v1/files/{name}")), data);
        assert_eq!(code, 201, "{name}: {}", String::from_utf8_lossy(&body));
    }
    assert_eq!(delete(&node.url("/api/v1/files/gone.txt")).0, 204);

    // A running node's database is refused, clearly.
    let out = run(&["check"], &node.dir);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("a node is running"), "{out:?}");

    assert!(node.terminate().success());
    let out = run(&["check", "--json"], &node.dir);
    let report = json_of(&out);
    assert_eq!(out.status.code(), Some(0), "a healthy store: {report:#}");
    assert_eq!(report["files"], 6);
    assert_eq!(report["ok"], true);

    // Damage the first chunk of `shared`: the three files using it become unreadable.
    let chunk = {
        let snapshot = Snapshot::open(&node.dir.join("diststore.redb"), 1 << 20).unwrap();
        let manifests = snapshot.manifests().unwrap();
        let of = |data: &[u8]| {
            let id = file_id(data);
            manifests.iter().find(|(m, _)| *m == id).unwrap().1.as_ref().unwrap().clone()
        };
        let (a, b) = (of(&shared), of(&longer));
        assert!(a.chunks.len() > 1, "the shared file should span several chunks");
        assert_eq!(a.chunks[0].id, b.chunks[0].id, "the longer file should start with the same chunk");
        a.chunks[0].id
    };
    damage_chunk_bytes(&node.dir, chunk);

    let out = run(&["check", "--json"], &node.dir);
    let report = json_of(&out);
    assert_eq!(out.status.code(), Some(1), "{report:#}");
    assert_eq!(report["ok"], false);
    let expected: BTreeSet<String> =
        ["docs/shared.bin", "docs/longer.bin", "dup.bin"].iter().map(|s| s.to_string()).collect();
    assert_eq!(names(&report["unreadable_files"]), expected, "{report:#}");
    assert_eq!(names(&report["damaged_chunks"]), BTreeSet::from([chunk.to_string()]));
    // The text report names them too.
    let text = String::from_utf8_lossy(&run(&["check"], &node.dir).stdout).into_owned();
    for name in &expected {
        assert!(text.contains(&format!("{name}: chunk {chunk} is damaged")), "{text}");
    }
    assert!(text.contains("PROBLEMS FOUND"), "{text}");

    // Export everything: the undamaged files byte-identical, the damaged ones listed, not
    // written, and no temporary file left behind.
    let dest = tempfile::tempdir().unwrap();
    let out = run(&["export", "--json", "", dest.path().to_str().unwrap()], &node.dir);
    let report = json_of(&out);
    assert_eq!(out.status.code(), Some(1), "{report:#}");
    assert_eq!(names(&report["skipped"]), expected, "{report:#}");
    assert_eq!(report["exported"], 3);
    let written: BTreeSet<String> = files_under(dest.path())
        .iter()
        .map(|p| p.strip_prefix(dest.path()).unwrap().to_string_lossy().into_owned())
        .collect();
    let intact: BTreeSet<String> =
        ["big.bin", "photos/ok.jpg", "small.txt"].iter().map(|s| s.to_string()).collect();
    assert_eq!(written, intact, "only the intact files, under their names");
    for (name, data) in files.iter().filter(|(n, _)| intact.contains(*n)) {
        assert!(std::fs::read(dest.path().join(name)).unwrap() == *data, "{name} differs");
    }

    // A prefix selects; a wrong secret is refused.
    let only = tempfile::tempdir().unwrap();
    let out = run(&["export", "photos/", only.path().to_str().unwrap()], &node.dir);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(files_under(only.path()), vec![only.path().join("photos/ok.jpg")]);
    let out = run(&["check", "--secret", "not the secret"], &node.dir);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("different secret"), "{out:?}");
}

#[test]
fn export_never_writes_outside_dest() {
    let mut node = TestNode::start();
    // Names with `..` segments the node refuses (see tests/security.rs); an older node may
    // hold some, which export's own unit test covers. What it still accepts and that has no
    // plain place under DEST: an absolute name, an empty part, a path through a symlink.
    for name in ["%2Fabsolute.txt", "a%2F%2Fempty-part.txt", "ok%2Fin.txt", "link%2Fthrough.txt"] {
        let (code, body) = put(&node.url(&format!("/api/v1/files/{name}")), b"payload");
        assert_eq!(code, 201, "{name}: {}", String::from_utf8_lossy(&body));
    }
    assert!(node.terminate().success());
    let root = tempfile::tempdir().unwrap();
    let dest = root.path().join("dest");
    let outside = root.path().join("outside");
    std::fs::create_dir_all(&dest).unwrap();
    std::fs::create_dir_all(&outside).unwrap();
    // A symlink already in DEST is not followed.
    std::os::unix::fs::symlink(&outside, dest.join("link")).unwrap();
    let out = run(&["export", "--json", "", dest.to_str().unwrap()], &node.dir);
    let report = json_of(&out);
    assert_eq!(out.status.code(), Some(1), "{report:#}");
    let skipped = names(&report["skipped"]);
    let expected: BTreeSet<String> =
        ["/absolute.txt", "a//empty-part.txt", "link/through.txt"].iter().map(|s| s.to_string()).collect();
    assert_eq!(skipped, expected, "{report:#}");
    assert_eq!(std::fs::read(dest.join("ok/in.txt")).unwrap(), b"payload");
    assert!(files_under(&outside).is_empty(), "something was written outside DEST");
    let mut everything = files_under(root.path());
    everything.sort();
    assert_eq!(everything, vec![dest.join("ok/in.txt")]);
}

/// A client body sent in pieces with a pause between them (a slow uploader); says on
/// `started` once the first piece went out.
struct Paced {
    data: Vec<u8>,
    at: usize,
    piece: usize,
    pause: std::time::Duration,
    started: Option<std::sync::mpsc::Sender<()>>,
}

impl std::io::Read for Paced {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.at > 0 {
            if let Some(tx) = self.started.take() {
                let _ = tx.send(());
            }
            std::thread::sleep(self.pause);
        }
        let n = buf.len().min(self.piece).min(self.data.len() - self.at);
        buf[..n].copy_from_slice(&self.data[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

/// Starts a slow upload of `data` as `name`; returns its status (or the error) when it ends,
/// once the first piece has gone out.
fn slow_upload(
    node: &TestNode,
    name: &str,
    data: &[u8],
    pause: std::time::Duration,
) -> std::thread::JoinHandle<Result<u16, String>> {
    let (tx, rx) = std::sync::mpsc::channel();
    let url = node.url(&format!("/api/v1/files/{name}"));
    let body = Paced { data: data.to_vec(), at: 0, piece: 128 << 10, pause, started: Some(tx) };
    let len = data.len();
    let uploader = std::thread::spawn(move || {
        agent()
            .put(&url)
            .header("Content-Length", &len.to_string())
            .send(ureq::SendBody::from_owned_reader(body))
            .map(|r| r.status().as_u16())
            .map_err(|e| e.to_string())
    });
    rx.recv_timeout(std::time::Duration::from_secs(30)).expect("the upload to start");
    uploader
}

/// Sends a raw HTTP/1.1 request and returns the response's head and as much of its body as
/// its Content-Length says.
fn exchange(stream: &mut std::net::TcpStream, request: &str) -> String {
    use std::io::{Read, Write};
    stream.write_all(request.as_bytes()).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let text = String::from_utf8_lossy(&got).into_owned();
        if let Some(end) = text.find("\r\n\r\n") {
            let len = text[..end]
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().to_string())
                })
                .and_then(|v| v.parse::<usize>().ok())
                .unwrap_or(0);
            if got.len() >= end + 4 + len {
                return text;
            }
        }
        let n = stream.read(&mut buf).expect("a response");
        assert!(n > 0, "connection closed after {:?}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
    }
}

/// SIGTERM from another thread (it waits for the exit); the node comes back with the result.
fn terminate_in_background(
    mut node: TestNode,
) -> std::thread::JoinHandle<(TestNode, std::process::ExitStatus)> {
    std::thread::spawn(move || {
        let status = node.terminate();
        (node, status)
    })
}

#[test]
fn sigterm_stops_accepting_and_lets_an_upload_in_flight_finish() {
    let node = TestNode::start_with(&["--shutdown-grace", "60s"]);
    let acked = random_bytes(1 << 20, 5);
    assert_eq!(put(&node.url("/api/v1/files/acked"), &acked).0, 201);
    // About 3 s of upload: 24 pieces of 128 KiB, 120 ms apart.
    let data = random_bytes(3 << 20, 6);
    let uploader = slow_upload(&node, "slow", &data, std::time::Duration::from_millis(120));
    let addr = node.base.trim_start_matches("http://").to_string();
    // A client with a connection open from before the signal.
    let mut early = std::net::TcpStream::connect(&addr).unwrap();
    early.set_read_timeout(Some(std::time::Duration::from_secs(20))).unwrap();
    assert!(
        exchange(&mut early, "GET /health HTTP/1.1\r\nHost: localhost\r\n\r\n").starts_with("HTTP/1.1 200")
    );
    let stopping = terminate_in_background(node);
    wait_for("the listener to close", std::time::Duration::from_secs(20), || {
        std::net::TcpStream::connect(&addr).is_err().then_some(())
    });
    // A new upload on that connection is refused while the one in flight goes on.
    let refused = exchange(
        &mut early,
        "PUT /api/v1/files/late HTTP/1.1\r\nHost: localhost\r\nContent-Length: 4\r\n\r\nlate",
    );
    assert!(refused.starts_with("HTTP/1.1 503"), "{refused}");
    assert_eq!(uploader.join().unwrap(), Ok(201), "the upload in flight must finish");
    let (mut node, status) = stopping.join().unwrap();
    assert!(status.success(), "exit status {status}");
    // Closed cleanly: the offline check opens it read-only (no repair needed) and finds it whole.
    let out = run(&["check"], &node.dir);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stdout));
    node.start_again();
    assert!(get(&node.url("/api/v1/files/slow")).1 == data);
    assert_eq!(get(&node.url("/api/v1/files/late")).0, 404);
    assert!(get(&node.url("/api/v1/files/acked")).1 == acked);
}

#[test]
fn an_upload_still_running_when_the_grace_ends_is_whole_or_absent() {
    let node = TestNode::start_with(&["--shutdown-grace", "1s"]);
    let acked = random_bytes(1 << 20, 7);
    assert_eq!(put(&node.url("/api/v1/files/acked"), &acked).0, 201);
    // About 10 s of upload: far past the grace.
    let data = random_bytes(5 << 20, 8);
    let uploader = slow_upload(&node, "cut", &data, std::time::Duration::from_millis(250));
    let started = std::time::Instant::now();
    let (mut node, status) = terminate_in_background(node).join().unwrap();
    assert!(status.success(), "exit status {status}");
    assert!(started.elapsed() < std::time::Duration::from_secs(8), "the grace was not honoured");
    let outcome = uploader.join().unwrap();
    assert_ne!(outcome, Ok(201), "acknowledged after the node stopped?");
    let out = run(&["check"], &node.dir);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stdout));
    node.start_again();
    let (code, body) = get(&node.url("/api/v1/files/cut"));
    assert!(code == 404 || (code == 200 && body == data), "a partial file: {code}, {} bytes", body.len());
    assert!(get(&node.url("/api/v1/files/acked")).1 == acked);
}
