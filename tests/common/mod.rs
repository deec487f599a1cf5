//! Test harness: real `diststore` processes on port 0, real HTTP.
#![allow(dead_code)]

pub mod browser;
pub mod cluster;

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

pub mod net;

pub use serde_json::Value;

pub const BIN: &str = env!("CARGO_BIN_EXE_diststore");

/// Polls `check` until it returns `Some`, failing the test with `what` after `limit`.
pub fn wait_for<T>(what: &str, limit: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(start.elapsed() < limit, "timed out after {limit:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A running node with its own data directory, killed on drop.
pub struct TestNode {
    child: Option<Child>,
    pub base: String,
    pub dir: PathBuf,
    pub args: Vec<String>,
    pub log: PathBuf,
    _tmp: Option<tempfile::TempDir>,
}

impl TestNode {
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// Starts a node in a fresh temporary directory with extra command line arguments.
    pub fn start_with(args: &[&str]) -> Self {
        let tmp = tempfile::tempdir().expect("temp dir");
        let dir = tmp.path().join("data");
        let mut node = Self::start_in(&dir, args);
        node._tmp = Some(tmp);
        node
    }

    /// Starts a node on an existing (or new) data directory.
    pub fn start_in(dir: &Path, args: &[&str]) -> Self {
        let mut node = TestNode {
            child: None,
            base: String::new(),
            dir: dir.to_path_buf(),
            args: args.iter().map(|s| s.to_string()).collect(),
            log: dir.with_extension("log"),
            _tmp: None,
        };
        node.spawn();
        node
    }

    fn spawn(&mut self) {
        let (child, base) = spawn_node(&self.dir, &self.args, &self.log, None)
            .unwrap_or_else(|e| panic!("node failed to start: {e}"));
        self.child = Some(child);
        self.base = base;
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// The S3 endpoint's base URL, from the node's latest "s3 listening" line.
    pub fn s3(&self) -> String {
        let log = self.log_text();
        log.lines()
            .rev()
            .find_map(|l| l.strip_prefix("diststore s3 listening on "))
            .unwrap_or_else(|| panic!("no S3 endpoint in the log:\n{log}"))
            .trim()
            .to_string()
    }

    /// SIGKILL: no chance to flush or clean up.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM, then waits (bounded) for the process to exit; returns its exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("node is running");
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        wait_for("the node to exit after SIGTERM", Duration::from_secs(30), || child.try_wait().unwrap())
    }

    /// Starts the node again on the same directory and port after it stopped.
    pub fn start_again(&mut self) {
        assert!(self.child.is_none(), "node still running");
        self.restart();
    }

    /// Kills the node (SIGKILL) and starts it again on the same directory and port.
    pub fn restart(&mut self) {
        self.kill9();
        let port = self.base.rsplit(':').next().unwrap().to_string();
        let mut args = self.args.clone();
        if !args.iter().any(|a| a == "--listen") {
            args.extend(["--listen".into(), format!("127.0.0.1:{port}")]);
        }
        // A node serving S3 on a port it was given any (0) keeps the one it got.
        if let Some(i) = args.iter().position(|a| a == "--s3-listen")
            && args.get(i + 1).is_some_and(|a| a.ends_with(":0"))
        {
            let s3_port = self.s3().rsplit(':').next().unwrap().to_string();
            args[i + 1] = format!("127.0.0.1:{s3_port}");
        }
        let (child, base) = spawn_node(&self.dir, &args, &self.log, None).expect("restart");
        self.child = Some(child);
        self.base = base;
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn status(&self) -> Value {
        let (code, body) = get(&self.url("/api/v1/status"));
        assert_eq!(code, 200, "status: {}", String::from_utf8_lossy(&body));
        serde_json::from_slice(&body).expect("status json")
    }
}

impl Drop for TestNode {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Starts `diststore` and waits for its "listening on" line. Output goes to `log`.
/// Returns an error with the log when the process exits or never listens.
pub fn spawn_node(
    dir: &Path,
    args: &[String],
    log: &Path,
    netns: Option<&str>,
) -> Result<(Child, String), String> {
    let mut cmd = match netns {
        Some(ns) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns, BIN]);
            c
        }
        None => Command::new(BIN),
    };
    if !args.iter().any(|a| a == "--listen") {
        cmd.args(["--listen", "127.0.0.1:0"]);
    }
    // The S3 endpoint is off unless a test asks for it (`--s3-listen 127.0.0.1:0`): its root
    // key is a file of the node's own, which tests counting stored bytes would see.
    if !args.iter().any(|a| a == "--s3-listen") {
        cmd.args(["--s3-listen", "off"]);
    }
    cmd.arg("--data-dir").arg(dir).args(args);
    cmd.env_remove("DISTSTORE_SECRET").env_remove("PORT").env_remove("DISTSTORE_API_TOKEN");
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("spawning {BIN}: {e}"))?;
    let log_file = std::fs::OpenOptions::new().create(true).append(true).open(log).expect("log file");
    let (tx, rx) = mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    let mut out_log = log_file.try_clone().unwrap();
    let out_thread = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = writeln!(out_log, "{line}");
            if let Some(url) = line.strip_prefix("diststore listening on ") {
                let _ = tx.send(url.trim().to_string());
            }
        }
    });
    let mut stderr = child.stderr.take().unwrap();
    let mut err_log = log_file;
    let err_thread = std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = stderr.read(&mut buf) {
            if n == 0 {
                break;
            }
            let _ = err_log.write_all(&buf[..n]);
        }
    });
    // A node killed with a large database repairs it at start; long fault runs
    // (NEMESIS_SECS) grow it, and may set DISTSTORE_TEST_START_SECS to wait longer.
    let limit: u64 =
        std::env::var("DISTSTORE_TEST_START_SECS").ok().and_then(|v| v.parse().ok()).unwrap_or(60);
    let deadline = Instant::now() + Duration::from_secs(limit);
    loop {
        if let Ok(url) = rx.recv_timeout(Duration::from_millis(100)) {
            return Ok((child, url));
        }
        if let Ok(Some(status)) = child.try_wait() {
            // The copiers end at end of output: join them so the log is complete.
            let _ = out_thread.join();
            let _ = err_thread.join();
            let text = std::fs::read_to_string(log).unwrap_or_default();
            return Err(format!("exited with {status}:\n{text}"));
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            return Err(format!(
                "no 'listening' line within {limit} s:\n{}",
                std::fs::read_to_string(log).unwrap_or_default()
            ));
        }
    }
}

pub fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(300)))
        .build()
        .into()
}

fn finish(res: Result<ureq::http::Response<ureq::Body>, ureq::Error>) -> (u16, Vec<u8>) {
    let mut res = res.expect("request failed");
    let code = res.status().as_u16();
    let body = res.body_mut().with_config().limit(u64::MAX).read_to_vec().expect("read body");
    (code, body)
}

pub fn get(url: &str) -> (u16, Vec<u8>) {
    finish(agent().get(url).call())
}

pub fn get_with(url: &str, headers: &[(&str, &str)]) -> (u16, ureq::http::HeaderMap, Vec<u8>) {
    let mut req = agent().get(url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let mut res = req.call().expect("request failed");
    let code = res.status().as_u16();
    let head = res.headers().clone();
    let body = res.body_mut().with_config().limit(u64::MAX).read_to_vec().expect("read body");
    (code, head, body)
}

/// A request with any method, headers and an optional body: (status, headers, body).
pub fn call(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
) -> (u16, ureq::http::HeaderMap, Vec<u8>) {
    let mut req = ureq::http::Request::builder().method(method).uri(url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let res = match body {
        Some(b) => agent().run(req.body(b.to_vec()).unwrap()),
        None => agent().run(req.body(()).unwrap()),
    };
    let mut res = res.expect("request failed");
    let code = res.status().as_u16();
    let head = res.headers().clone();
    let body = res.body_mut().with_config().limit(u64::MAX).read_to_vec().expect("read body");
    (code, head, body)
}

pub fn put(url: &str, body: &[u8]) -> (u16, Vec<u8>) {
    finish(agent().put(url).send(body))
}

pub fn delete(url: &str) -> (u16, Vec<u8>) {
    finish(agent().delete(url).call())
}

pub fn json(body: &[u8]) -> Value {
    serde_json::from_slice(body)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(body)))
}

/// The `error` field of a JSON error body.
pub fn error_of(body: &[u8]) -> String {
    json(body)["error"].as_str().expect("an error field").to_string()
}

pub fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(data))
}

/// Deterministic pseudo-random bytes (xorshift), cheap to make in any amount.
pub fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut out = vec![0u8; len];
    fill_random(&mut out, seed);
    out
}

pub fn fill_random(buf: &mut [u8], seed: u64) {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    for chunk in buf.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let bytes = x.to_le_bytes();
        chunk.copy_from_slice(&bytes[..chunk.len()]);
    }
}

/// A reader producing `len` deterministic pseudo-random bytes without holding them.
pub struct RandomReader {
    pub remaining: u64,
    state: u64,
}

impl RandomReader {
    pub fn new(len: u64, seed: u64) -> Self {
        Self { remaining: len, state: seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1 }
    }
}

impl Read for RandomReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = (buf.len() as u64).min(self.remaining) as usize;
        let n = n - n % 8;
        let n = if n == 0 { self.remaining.min(buf.len() as u64) as usize } else { n };
        for chunk in buf[..n].chunks_mut(8) {
            self.state ^= self.state << 13;
            self.state ^= self.state >> 7;
            self.state ^= self.state << 17;
            let bytes = self.state.to_le_bytes();
            chunk.copy_from_slice(&bytes[..chunk.len()]);
        }
        self.remaining -= n as u64;
        Ok(n)
    }
}

/// SHA-256 of everything read from `r`.
pub fn sha256_reader(mut r: impl Read) -> (String, u64) {
    use sha2::Digest;
    let mut hasher = sha2::Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0u64;
    loop {
        let n = r.read(&mut buf).expect("read");
        if n == 0 {
            break;
        }
        total += n as u64;
        hasher.update(&buf[..n]);
    }
    (hex::encode(hasher.finalize()), total)
}

/// Every byte of every file under `dir`.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = entry.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out
}

/// Flips one bit of the first stored chunk segment (by chunk id) in a stopped node's database,
/// as a bad disk would.
pub fn damage_a_stored_chunk(dir: &Path) {
    let db = redb::Database::open(dir.join("diststore.redb")).unwrap();
    let chunks = redb::TableDefinition::<([u8; 32], u32), &[u8]>::new("chunks_v2");
    let txn = db.begin_write().unwrap();
    {
        let mut table = txn.open_table(chunks).unwrap();
        let (key, mut value) = {
            let (k, v) = redb::ReadableTable::first(&table).unwrap().expect("a stored segment");
            (k.value(), v.value().to_vec())
        };
        let middle = value.len() / 2;
        value[middle] ^= 1;
        table.insert(key, value.as_slice()).unwrap();
    }
    txn.commit().unwrap();
}

/// Whether the process runs as root (for network namespace tests).
pub fn is_root() -> bool {
    unsafe { libc::geteuid() == 0 }
}
