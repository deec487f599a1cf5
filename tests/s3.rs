//! The S3 endpoint against the real binary, driven by the clients people use: aws-cli, boto3
//! (`tests/s3/boto3_checks.py`), s3cmd, rclone and restic, plus raw requests signed here for
//! the bad input no client sends. Each test asserts what a user relies on: bytes back intact,
//! ETags that are MD5s, S3 error codes and statuses, one namespace with the native API.
//!
//! The clients come from PATH (`.ci/run` installs them: rclone and restic from Debian, aws-cli,
//! boto3 and s3cmd into `.ci/venv`, whose `bin` it puts first on PATH). A missing client skips
//! its test with the reason printed, except under CI (`CI` set), where it is a failure.

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::cluster::Cluster;
use common::*;
use sha2::{Digest, Sha256};

const ACCESS_KEY: &str = "DSTESTROOTACCESSKEY1";
const SECRET_KEY: &str = "test-root-secret-key-0123456789abcdef";
const REGION: &str = "us-east-1";
const MIB: usize = 1024 * 1024;
/// Longest any one client command may take before the test calls it hung.
const COMMAND_LIMIT: Duration = Duration::from_secs(120);

// --- tools --------------------------------------------------------------------------------------

fn on_path(name: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?).map(|dir| dir.join(name)).find(|p| p.is_file())
}

/// The tool, or `None` (the test then skips) when it is missing outside CI. Under CI a missing
/// tool fails the test: a skipped client test there hides breakage.
fn tool_or_skip(name: &str, install: &str) -> Option<PathBuf> {
    let found = on_path(name).filter(|p| works(p, name));
    if found.is_some() {
        return found;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "{name} is not on PATH (or does not run) but CI is set: the S3 client tests must run in CI; \
         install it first ({install})"
    );
    eprintln!("skipping: {name} not on PATH or does not run ({install})");
    None
}

/// Whether the tool starts (a pyenv shim for an uninstalled version does not).
fn works(path: &Path, name: &str) -> bool {
    let mut cmd = Command::new(path);
    match name {
        "python3" => cmd.args(["-c", "import boto3"]),
        "restic" | "rclone" => cmd.arg("version"),
        _ => cmd.arg("--version"),
    };
    cmd.stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok_and(|s| s.success())
}

/// Python with boto3 (the venv's, first on PATH).
fn python_or_skip() -> Option<PathBuf> {
    tool_or_skip("python3", "python3 -m venv .ci/venv && .ci/venv/bin/pip install awscli boto3 s3cmd")
}

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/s3/boto3_checks.py")
}

/// Runs a command to its end (bounded), with its output captured.
fn run(cmd: &mut Command) -> Output {
    let what = format!("{cmd:?}");
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawning {what}: {e}"));
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let out_thread = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = out.read_to_end(&mut v);
        v
    });
    let err_thread = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = err.read_to_end(&mut v);
        v
    });
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if start.elapsed() > COMMAND_LIMIT {
            let _ = child.kill();
            let _ = child.wait();
            let stderr = err_thread.join().unwrap();
            panic!(
                "{what} still running after {COMMAND_LIMIT:?}; stderr:\n{}",
                String::from_utf8_lossy(&stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Output { status, stdout: out_thread.join().unwrap(), stderr: err_thread.join().unwrap() }
}

fn text(o: &Output) -> String {
    format!(
        "status {}\nstdout:\n{}\nstderr:\n{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Runs a command that must succeed; returns its stdout.
fn run_ok(cmd: &mut Command) -> String {
    let what = format!("{cmd:?}");
    let o = run(cmd);
    assert!(o.status.success(), "{what} failed: {}", text(&o));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// A temporary HOME so no user configuration of any client leaks into a test.
struct Home(tempfile::TempDir);

impl Home {
    fn new() -> Self {
        Home(tempfile::tempdir().unwrap())
    }

    fn path(&self) -> &Path {
        self.0.path()
    }

    /// A command with only this test's environment for the S3 clients.
    fn command(&self, program: &Path) -> Command {
        let mut cmd = Command::new(program);
        for (k, _) in std::env::vars_os() {
            let k = k.to_string_lossy().into_owned();
            if k.starts_with("AWS_")
                || k.starts_with("RCLONE_")
                || k.starts_with("RESTIC_")
                || k.starts_with("S3_")
            {
                cmd.env_remove(&k);
            }
        }
        let config = self.path().join("aws-config");
        let credentials = self.path().join("aws-credentials");
        if !config.exists() {
            std::fs::write(&config, "").unwrap();
            std::fs::write(&credentials, "").unwrap();
        }
        cmd.env("HOME", self.path())
            .env("XDG_CONFIG_HOME", self.path().join(".config"))
            .env("XDG_CACHE_HOME", self.path().join(".cache"))
            .env("AWS_CONFIG_FILE", config)
            .env("AWS_SHARED_CREDENTIALS_FILE", credentials)
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env("AWS_ACCESS_KEY_ID", ACCESS_KEY)
            .env("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
            .env("AWS_DEFAULT_REGION", REGION)
            .env("AWS_REGION", REGION);
        cmd
    }
}

// --- a node and requests signed here -------------------------------------------------------------

/// A node whose root S3 key is ours, ready to answer signed requests.
fn s3_node() -> TestNode {
    let node = TestNode::start_with(&[
        "--s3-listen",
        "127.0.0.1:0",
        "--s3-access-key",
        ACCESS_KEY,
        "--s3-secret-key",
        SECRET_KEY,
    ]);
    wait_s3_ready(&node);
    node
}

/// The root key is set up in the background after the listener is up: wait until it signs.
fn wait_s3_ready(node: &TestNode) {
    let s3 = Signer::root(&node.s3());
    wait_for("the S3 root key to be usable", Duration::from_secs(30), || {
        (s3.send("GET", "/", &[], &[], b"").status == 200).then_some(())
    });
}

struct Reply {
    status: u16,
    headers: ureq::http::HeaderMap,
    body: Vec<u8>,
}

impl Reply {
    /// The `<Code>` of an S3 XML error body.
    fn code(&self) -> String {
        let t = String::from_utf8_lossy(&self.body);
        match (t.find("<Code>"), t.find("</Code>")) {
            (Some(a), Some(b)) if b > a => t[a + 6..b].to_string(),
            _ => format!("(no Code; status {}; body {t:?})", self.status),
        }
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Signs requests with SigV4 (headers, signed payload), so the tests can send what no client
/// sends: broken XML, over-long keys, bad ranges, requests without a signature.
struct Signer {
    base: String,
    access_key: String,
    secret_key: String,
}

const URI_KEEP: &percent_encoding::AsciiSet =
    &percent_encoding::NON_ALPHANUMERIC.remove(b'-').remove(b'_').remove(b'.').remove(b'~');

fn uri_encode(s: &str, keep_slash: bool) -> String {
    if keep_slash {
        s.split('/').map(|seg| uri_encode(seg, false)).collect::<Vec<_>>().join("/")
    } else {
        percent_encoding::utf8_percent_encode(s, URI_KEEP).to_string()
    }
}

fn hmac(key: &[u8], data: &str) -> Vec<u8> {
    use hmac::{KeyInit as _, Mac};
    let mut mac = hmac::Hmac::<Sha256>::new_from_slice(key).expect("any key length");
    mac.update(data.as_bytes());
    mac.finalize().into_bytes().to_vec()
}

/// `YYYYMMDDTHHMMSSZ` for now (UTC).
fn amz_date() -> String {
    let secs = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}{month:02}{day:02}T{:02}{:02}{:02}Z", rem / 3600, rem % 3600 / 60, rem % 60)
}

impl Signer {
    fn root(base: &str) -> Self {
        Signer { base: base.to_string(), access_key: ACCESS_KEY.into(), secret_key: SECRET_KEY.into() }
    }

    /// A signed request; `path` is unencoded (`/bucket/key`), `query` pairs unencoded.
    fn send(
        &self,
        method: &str,
        path: &str,
        query: &[(&str, &str)],
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Reply {
        self.request(method, path, query, headers, body, true)
    }

    /// The same request with no signature at all.
    fn anonymous(&self, method: &str, path: &str, query: &[(&str, &str)], body: &[u8]) -> Reply {
        self.request(method, path, query, &[], body, false)
    }

    fn request(
        &self,
        method: &str,
        path: &str,
        query: &[(&str, &str)],
        headers: &[(&str, &str)],
        body: &[u8],
        sign: bool,
    ) -> Reply {
        let (url, all) = self.sign(method, path, query, headers, &hex::encode(Sha256::digest(body)), sign);
        let mut req = ureq::http::Request::builder().method(method).uri(&url);
        for (k, v) in &all {
            if k != "host" {
                req = req.header(k, v);
            }
        }
        let req = req.body(body.to_vec()).expect("a request");
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .allow_non_standard_methods(true)
            .timeout_global(Some(Duration::from_secs(60)))
            .build()
            .into();
        let mut res = agent.run(req).unwrap_or_else(|e| panic!("{method} {url}: {e}"));
        let status = res.status().as_u16();
        let headers = res.headers().clone();
        let body = res.body_mut().with_config().limit(u64::MAX).read_to_vec().unwrap_or_default();
        Reply { status, headers, body }
    }

    /// The URL and the headers (with `authorization` when `sign`) of a request.
    fn sign(
        &self,
        method: &str,
        path: &str,
        query: &[(&str, &str)],
        headers: &[(&str, &str)],
        payload: &str,
        sign: bool,
    ) -> (String, BTreeMap<String, String>) {
        let host = self.base.trim_start_matches("http://").to_string();
        let uri_path = uri_encode(path, true);
        let mut q: Vec<(String, String)> =
            query.iter().map(|(k, v)| (uri_encode(k, false), uri_encode(v, false))).collect();
        q.sort();
        let canonical_query = q.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("&");
        let date = amz_date();
        let mut all: BTreeMap<String, String> =
            headers.iter().map(|(k, v)| (k.to_ascii_lowercase(), v.trim().to_string())).collect();
        all.insert("host".into(), host.clone());
        all.insert("x-amz-date".into(), date.clone());
        all.insert("x-amz-content-sha256".into(), payload.to_string());
        if sign {
            let signed = all.keys().cloned().collect::<Vec<_>>().join(";");
            let canonical_headers: String = all.iter().map(|(k, v)| format!("{k}:{v}\n")).collect();
            let canonical =
                format!("{method}\n{uri_path}\n{canonical_query}\n{canonical_headers}\n{signed}\n{payload}");
            let scope = format!("{}/{REGION}/s3/aws4_request", &date[..8]);
            let to_sign = format!(
                "AWS4-HMAC-SHA256\n{date}\n{scope}\n{}",
                hex::encode(Sha256::digest(canonical.as_bytes()))
            );
            let mut key = hmac(format!("AWS4{}", self.secret_key).as_bytes(), &date[..8]);
            for part in [REGION, "s3", "aws4_request"] {
                key = hmac(&key, part);
            }
            let signature = hex::encode(hmac(&key, &to_sign));
            all.insert(
                "authorization".into(),
                format!(
                    "AWS4-HMAC-SHA256 Credential={}/{scope}, SignedHeaders={signed}, Signature={signature}",
                    self.access_key
                ),
            );
        }
        let url = if canonical_query.is_empty() {
            format!("{}{uri_path}", self.base)
        } else {
            format!("{}{uri_path}?{canonical_query}", self.base)
        };
        (url, all)
    }

    /// A signed PUT (`UNSIGNED-PAYLOAD`) that declares `declared` bytes, sends `sent` and
    /// closes its side: a client that died mid-upload. Returns the status line, if any.
    fn put_truncated(&self, path: &str, declared: usize, sent: &[u8]) -> String {
        use std::io::Write;
        let length = declared.to_string();
        let (url, headers) =
            self.sign("PUT", path, &[], &[("content-length", &length)], "UNSIGNED-PAYLOAD", true);
        let host = self.base.trim_start_matches("http://");
        let target = &url[self.base.len()..];
        let mut stream = std::net::TcpStream::connect(host).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let mut head = format!("PUT {target} HTTP/1.1\r\n");
        for (k, v) in &headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        head.push_str("\r\n");
        stream.write_all(head.as_bytes()).unwrap();
        stream.write_all(sent).unwrap();
        stream.shutdown(std::net::Shutdown::Write).unwrap();
        let mut answer = Vec::new();
        let _ = stream.read_to_end(&mut answer);
        String::from_utf8_lossy(&answer).lines().next().unwrap_or("").to_string()
    }

    fn put(&self, path: &str, body: &[u8]) -> Reply {
        self.send("PUT", path, &[], &[], body)
    }

    fn get(&self, path: &str) -> Reply {
        self.send("GET", path, &[], &[], b"")
    }

    fn ok(&self, method: &str, path: &str, body: &[u8]) -> Reply {
        let r = self.send(method, path, &[], &[], body);
        assert!((200..300).contains(&r.status), "{method} {path}: {} {}", r.status, r.text());
        r
    }

    /// The keys of a bucket (ListObjectsV2, one page).
    fn keys(&self, bucket: &str) -> Vec<String> {
        let r = self.send("GET", &format!("/{bucket}"), &[("list-type", "2")], &[], b"");
        assert_eq!(r.status, 200, "{}", r.text());
        let t = r.text();
        t.split("<Key>").skip(1).map(|s| s[..s.find("</Key>").unwrap()].to_string()).collect()
    }
}

fn md5_hex(data: &[u8]) -> String {
    hex::encode(md5::Md5::digest(data))
}

// --- aws-cli -------------------------------------------------------------------------------------

struct Aws {
    bin: PathBuf,
    home: Home,
    endpoint: String,
}

impl Aws {
    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = self.home.command(&self.bin);
        cmd.args(["--endpoint-url", &self.endpoint]).args(args);
        cmd
    }

    fn ok(&self, args: &[&str]) -> String {
        run_ok(&mut self.command(args))
    }

    fn fails(&self, args: &[&str]) -> String {
        let o = run(&mut self.command(args));
        assert!(!o.status.success(), "aws {args:?} should fail: {}", text(&o));
        String::from_utf8_lossy(&o.stderr).into_owned()
    }
}

fn aws_or_skip(node: &TestNode) -> Option<Aws> {
    let bin = tool_or_skip("aws", "pip install awscli (in .ci/venv)")?;
    Some(Aws { bin, home: Home::new(), endpoint: node.s3() })
}

fn write_tree(dir: &Path, files: &[(&str, Vec<u8>)]) {
    for (name, data) in files {
        let path = dir.join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, data).unwrap();
    }
}

/// Every file under `dir` by its path relative to `dir`, with its bytes.
fn read_tree(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    files_under(dir)
        .into_iter()
        .map(|p| (p.strip_prefix(dir).unwrap().to_string_lossy().into_owned(), std::fs::read(&p).unwrap()))
        .collect()
}

#[test]
fn aws_cli_mb_cp_ls_sync_rm_with_a_multipart_upload() {
    let node = s3_node();
    let Some(aws) = aws_or_skip(&node) else { return };
    let s3 = Signer::root(&node.s3());
    let work = tempfile::tempdir().unwrap();
    aws.ok(&["s3", "mb", "s3://clitest"]);
    assert!(aws.ok(&["s3", "ls"]).contains("clitest"));

    // 12 MiB: above aws-cli's 8 MiB threshold, so a multipart upload of two parts.
    let big = random_bytes(12 * MIB, 1);
    let big_path = work.path().join("big.bin");
    std::fs::write(&big_path, &big).unwrap();
    aws.ok(&["s3", "cp", big_path.to_str().unwrap(), "s3://clitest/dir/big.bin"]);
    let head = aws.ok(&["s3api", "head-object", "--bucket", "clitest", "--key", "dir/big.bin"]);
    let head = json(head.as_bytes());
    assert_eq!(head["ContentLength"], 12 * MIB);
    let part_md5s: Vec<u8> = big.chunks(8 * MIB).flat_map(|p| md5::Md5::digest(p).to_vec()).collect();
    assert_eq!(head["ETag"].as_str().unwrap().trim_matches('"'), format!("{}-2", md5_hex(&part_md5s)));
    let back = work.path().join("big.back");
    aws.ok(&["s3", "cp", "s3://clitest/dir/big.bin", back.to_str().unwrap()]);
    assert!(std::fs::read(&back).unwrap() == big, "the multipart object read back differs");

    // A small object: its ETag is the MD5 of its bytes.
    let small = b"hello from aws-cli\n".to_vec();
    let small_path = work.path().join("small.txt");
    std::fs::write(&small_path, &small).unwrap();
    aws.ok(&["s3", "cp", small_path.to_str().unwrap(), "s3://clitest/small.txt"]);
    let head =
        json(aws.ok(&["s3api", "head-object", "--bucket", "clitest", "--key", "small.txt"]).as_bytes());
    assert_eq!(head["ETag"].as_str().unwrap().trim_matches('"'), md5_hex(&small));
    let listing = aws.ok(&["s3", "ls", "s3://clitest/"]);
    assert!(listing.contains("PRE dir/") && listing.contains("small.txt"), "{listing}");
    let listing = aws.ok(&["s3", "ls", "--recursive", "s3://clitest"]);
    assert!(listing.contains(&format!("{} dir/big.bin", 12 * MIB)), "{listing}");

    // sync up, change the tree, sync again with --delete, sync down: the trees match.
    let tree = work.path().join("tree");
    write_tree(
        &tree,
        &[
            ("a.txt", b"a".to_vec()),
            ("sub/b.bin", random_bytes(70_000, 2)),
            ("sub/deep/c", random_bytes(10, 3)),
        ],
    );
    aws.ok(&["s3", "sync", tree.to_str().unwrap(), "s3://clitest/tree"]);
    std::fs::remove_file(tree.join("a.txt")).unwrap();
    std::fs::write(tree.join("sub/new.txt"), b"new file").unwrap();
    aws.ok(&["s3", "sync", "--delete", tree.to_str().unwrap(), "s3://clitest/tree"]);
    let down = work.path().join("down");
    aws.ok(&["s3", "sync", "s3://clitest/tree", down.to_str().unwrap()]);
    assert_eq!(read_tree(&down), read_tree(&tree));
    let mut keys = s3.keys("clitest");
    keys.sort();
    assert_eq!(keys, ["dir/big.bin", "small.txt", "tree/sub/b.bin", "tree/sub/deep/c", "tree/sub/new.txt"]);

    // rm, rm --recursive, rb.
    aws.ok(&["s3", "rm", "s3://clitest/small.txt"]);
    aws.fails(&["s3api", "head-object", "--bucket", "clitest", "--key", "small.txt"]);
    let err = aws.fails(&["s3", "rb", "s3://clitest"]);
    assert!(err.contains("BucketNotEmpty"), "{err}");
    aws.ok(&["s3", "rm", "--recursive", "s3://clitest/"]);
    assert!(s3.keys("clitest").is_empty());
    aws.ok(&["s3", "rb", "s3://clitest"]);
    assert!(!aws.ok(&["s3", "ls"]).contains("clitest"));
}

#[test]
fn aws_cli_put_object_content_md5_good_and_bad() {
    let node = s3_node();
    let Some(aws) = aws_or_skip(&node) else { return };
    let s3 = Signer::root(&node.s3());
    s3.ok("PUT", "/md5s", b"");
    let work = tempfile::tempdir().unwrap();
    let body = work.path().join("body");
    std::fs::write(&body, b"the right bytes").unwrap();
    let md5_b64 = |d: &[u8]| {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode(md5::Md5::digest(d))
    };
    let good = md5_b64(b"the right bytes");
    let out = aws.ok(&[
        "s3api",
        "put-object",
        "--bucket",
        "md5s",
        "--key",
        "good",
        "--body",
        body.to_str().unwrap(),
        "--content-md5",
        &good,
    ]);
    assert_eq!(json(out.as_bytes())["ETag"].as_str().unwrap().trim_matches('"'), md5_hex(b"the right bytes"));
    assert_eq!(s3.get("/md5s/good").body, b"the right bytes");

    let bad = md5_b64(b"other bytes");
    let err = aws.fails(&[
        "s3api",
        "put-object",
        "--bucket",
        "md5s",
        "--key",
        "bad",
        "--body",
        body.to_str().unwrap(),
        "--content-md5",
        &bad,
    ]);
    assert!(err.contains("BadDigest"), "{err}");
    assert_eq!(s3.get("/md5s/bad").code(), "NoSuchKey");
    // Nor does a bad digest replace an object that exists.
    let err = aws.fails(&[
        "s3api",
        "put-object",
        "--bucket",
        "md5s",
        "--key",
        "good",
        "--body",
        body.to_str().unwrap(),
        "--content-md5",
        &bad,
    ]);
    assert!(err.contains("BadDigest"), "{err}");
    assert_eq!(s3.get("/md5s/good").body, b"the right bytes");
    assert_eq!(s3.keys("md5s"), ["good"]);
}

// --- boto3 ---------------------------------------------------------------------------------------

/// Runs checks of `tests/s3/boto3_checks.py` against `node` with the root key (and `extra` env).
fn boto3(node: &TestNode, checks: &[&str], extra: &[(&str, &str)]) {
    let Some(python) = python_or_skip() else { return };
    let home = Home::new();
    let mut cmd = home.command(&python);
    cmd.arg(script())
        .args(checks)
        .env("S3_ENDPOINT", node.s3())
        .env("S3_ACCESS_KEY", ACCESS_KEY)
        .env("S3_SECRET_KEY", SECRET_KEY)
        .envs(extra.iter().copied());
    let out = run_ok(&mut cmd);
    for check in checks {
        assert!(out.contains(&format!("ok {check}")), "{check} did not report ok:\n{out}");
    }
}

#[test]
fn boto3_presigned_get_put_head_and_expiry() {
    boto3(&s3_node(), &["presigned"], &[]);
}

#[test]
fn boto3_put_object_with_every_checksum() {
    boto3(&s3_node(), &["checksums"], &[]);
}

#[test]
fn boto3_copy_object_copy_replace_and_onto_itself() {
    boto3(&s3_node(), &["copy"], &[]);
}

#[test]
fn boto3_list_objects_v2_delimiter_paging_start_after_encoding() {
    boto3(&s3_node(), &["listing"], &[]);
}

#[test]
fn boto3_delete_objects_and_quiet() {
    boto3(&s3_node(), &["delete_objects"], &[]);
}

#[test]
fn boto3_multipart_complete_errors_abort() {
    boto3(&s3_node(), &["multipart"], &[]);
}

#[test]
fn boto3_metadata_conditionals_and_ranges() {
    boto3(&s3_node(), &["metadata", "conditionals"], &[]);
}

#[test]
fn boto3_error_codes() {
    boto3(&s3_node(), &["errors"], &[]);
}

#[test]
fn boto3_second_key_sees_only_its_own_buckets() {
    let node = s3_node();
    let (code, body) = finish_post(&node.url("/api/v1/keys"), r#"{"name": "tenant"}"#);
    assert_eq!(code, 201, "{}", String::from_utf8_lossy(&body));
    let key = json(&body);
    let (ak, sk) = (key["access_key"].as_str().unwrap(), key["secret_key"].as_str().unwrap());
    // Listed without its secret.
    let (code, listed) = get(&node.url("/api/v1/keys"));
    assert_eq!(code, 200);
    assert!(!String::from_utf8_lossy(&listed).contains(sk), "GET /api/v1/keys shows a secret");
    boto3(&node, &["second_key"], &[("S3_ACCESS_KEY2", ak), ("S3_SECRET_KEY2", sk)]);
}

fn finish_post(url: &str, body: &str) -> (u16, Vec<u8>) {
    let mut res =
        agent().post(url).header("content-type", "application/json").send(body.as_bytes()).expect("POST");
    let code = res.status().as_u16();
    (code, res.body_mut().read_to_vec().unwrap())
}

// --- s3cmd, rclone, restic -----------------------------------------------------------------------

#[test]
fn s3cmd_put_get_with_md5_check_and_ls() {
    let Some(s3cmd) = tool_or_skip("s3cmd", "pip install s3cmd (in .ci/venv)") else { return };
    let node = s3_node();
    let home = Home::new();
    let host = node.s3().trim_start_matches("http://").to_string();
    let config = home.path().join("s3cfg");
    std::fs::write(
        &config,
        format!(
            "[default]\naccess_key = {ACCESS_KEY}\nsecret_key = {SECRET_KEY}\nhost_base = {host}\n\
             host_bucket = {host}\nuse_https = False\nsignature_v2 = False\nbucket_location = {REGION}\n\
             check_ssl_certificate = False\n"
        ),
    )
    .unwrap();
    let s3cmd = |args: &[&str]| {
        let mut cmd = home.command(&s3cmd);
        cmd.arg("-c").arg(&config).args(args);
        let out = run(&mut cmd);
        assert!(out.status.success(), "s3cmd {args:?}: {}", text(&out));
        // s3cmd compares the ETag with the MD5 it computed, and only warns when they differ.
        let all = text(&out);
        assert!(!all.contains("MD5") || !all.to_lowercase().contains("match"), "s3cmd {args:?}: {all}");
        all
    };
    let work = tempfile::tempdir().unwrap();
    s3cmd(&["mb", "s3://tools"]);
    let small = random_bytes(100_000, 5);
    // 7 MiB with 5 MiB chunks: a multipart upload, whose ETag s3cmd does not take for an MD5.
    let large = random_bytes(7 * MIB, 6);
    std::fs::write(work.path().join("small"), &small).unwrap();
    std::fs::write(work.path().join("large"), &large).unwrap();
    s3cmd(&["put", work.path().join("small").to_str().unwrap(), "s3://tools/small"]);
    s3cmd(&[
        "put",
        "--multipart-chunk-size-mb=5",
        work.path().join("large").to_str().unwrap(),
        "s3://tools/large",
    ]);
    let info = s3cmd(&["info", "s3://tools/small"]);
    assert!(info.contains(&md5_hex(&small)), "s3cmd info shows no MD5 of the bytes: {info}");
    for name in ["small", "large"] {
        let dest = work.path().join(format!("{name}.back"));
        s3cmd(&["get", "--force", &format!("s3://tools/{name}"), dest.to_str().unwrap()]);
        let want = if name == "small" { &small } else { &large };
        assert!(std::fs::read(&dest).unwrap() == *want, "{name} read back differs");
    }
    let ls = s3cmd(&["ls", "s3://tools"]);
    assert!(ls.contains("s3://tools/small") && ls.contains("s3://tools/large"), "{ls}");
    assert!(ls.contains(&small.len().to_string()), "{ls}");
    assert!(s3cmd(&["ls"]).contains("s3://tools"));
    s3cmd(&["del", "s3://tools/small"]);
    assert_eq!(Signer::root(&node.s3()).keys("tools"), ["large"]);
}

#[test]
fn rclone_sync_then_check() {
    let Some(rclone) = tool_or_skip("rclone", "apt-get install -y rclone") else { return };
    let node = s3_node();
    let home = Home::new();
    let rclone = |args: &[&str]| {
        let mut cmd = home.command(&rclone);
        cmd.env("RCLONE_CONFIG", home.path().join("rclone.conf"))
            .env("RCLONE_CONFIG_DS_TYPE", "s3")
            .env("RCLONE_CONFIG_DS_PROVIDER", "Other")
            .env("RCLONE_CONFIG_DS_ENV_AUTH", "false")
            .env("RCLONE_CONFIG_DS_ACCESS_KEY_ID", ACCESS_KEY)
            .env("RCLONE_CONFIG_DS_SECRET_ACCESS_KEY", SECRET_KEY)
            .env("RCLONE_CONFIG_DS_ENDPOINT", node.s3())
            .env("RCLONE_CONFIG_DS_REGION", REGION)
            .env("RCLONE_CONFIG_DS_FORCE_PATH_STYLE", "true")
            .args(["--retries", "1", "--low-level-retries", "2"])
            .args(args);
        run_ok(&mut cmd)
    };
    let work = tempfile::tempdir().unwrap();
    let tree = work.path().join("tree");
    let mut files: Vec<(String, Vec<u8>)> = (0..12)
        .map(|i| (format!("d{}/f{i}.bin", i % 3), random_bytes(1000 * i + 1, 100 + i as u64)))
        .collect();
    files.push(("top.txt".into(), b"top".to_vec()));
    files.push(("with space/and+plus.txt".into(), b"odd names".to_vec()));
    files.push(("big.bin".into(), random_bytes(6 * MIB, 99)));
    let files: Vec<(&str, Vec<u8>)> = files.iter().map(|(n, d)| (n.as_str(), d.clone())).collect();
    write_tree(&tree, &files);
    let t = tree.to_str().unwrap();
    rclone(&["mkdir", "ds:rcl"]);
    rclone(&["sync", t, "ds:rcl/backup"]);
    // `check` compares sizes and the MD5s the ETags carry.
    rclone(&["check", t, "ds:rcl/backup"]);
    rclone(&["check", "--download", t, "ds:rcl/backup"]);
    // Change, remove and add; sync again; check again.
    std::fs::write(tree.join("d0/f0.bin"), b"changed").unwrap();
    std::fs::remove_file(tree.join("d1/f1.bin")).unwrap();
    std::fs::write(tree.join("d2/added"), b"added").unwrap();
    rclone(&["sync", t, "ds:rcl/backup"]);
    rclone(&["check", t, "ds:rcl/backup"]);
    let mut keys = Signer::root(&node.s3()).keys("rcl");
    keys.sort();
    let mut want: Vec<String> = read_tree(&tree).into_keys().map(|k| format!("backup/{k}")).collect();
    want.sort();
    assert_eq!(keys, want);
}

#[test]
fn restic_init_backup_check_restore() {
    let Some(restic) = tool_or_skip("restic", "apt-get install -y restic") else { return };
    let node = s3_node();
    let home = Home::new();
    let restic = |args: &[&str]| {
        let mut cmd = home.command(&restic);
        cmd.env("RESTIC_REPOSITORY", format!("s3:{}/resticbucket/repo", node.s3()))
            .env("RESTIC_PASSWORD", "correct horse battery staple")
            .env("RESTIC_CACHE_DIR", home.path().join("restic-cache"))
            .args(args);
        run_ok(&mut cmd)
    };
    let work = tempfile::tempdir().unwrap();
    let data = work.path().join("data");
    write_tree(
        &data,
        &[
            ("docs/a.txt", b"first document".to_vec()),
            ("docs/b.bin", random_bytes(300_000, 7)),
            ("photos/p1.raw", random_bytes(3 * MIB, 8)),
            ("empty", Vec::new()),
        ],
    );
    restic(&["init"]);
    restic(&["backup", data.to_str().unwrap()]);
    // A second snapshot after a change: restic reads its index and packs back.
    std::fs::write(data.join("docs/a.txt"), b"first document, revised").unwrap();
    restic(&["backup", data.to_str().unwrap()]);
    let check = restic(&["check", "--read-data"]);
    assert!(check.contains("no errors were found"), "{check}");
    let target = work.path().join("restored");
    restic(&["restore", "latest", "--target", target.to_str().unwrap()]);
    // restic restores under the absolute path of what was backed up.
    let restored = target.join(data.strip_prefix("/").unwrap());
    assert_eq!(read_tree(&restored), read_tree(&data));
    let snapshots = restic(&["snapshots", "--json"]);
    assert_eq!(json(snapshots.as_bytes()).as_array().unwrap().len(), 2);
}

// --- one namespace with the native API -----------------------------------------------------------

#[test]
fn objects_and_native_files_are_the_same() {
    let node = s3_node();
    let s3 = Signer::root(&node.s3());
    s3.ok("PUT", "/shared", b"");
    let data = random_bytes(200_000, 9);
    let stored = s3.ok("PUT", "/shared/docs/report.bin", &data);
    assert_eq!(stored.header("etag").unwrap().trim_matches('"'), md5_hex(&data));

    // Through the native API: the file `bucket/key`, same bytes, its SHA-256 as id.
    let (code, body) = get(&node.url("/api/v1/files/shared/docs/report.bin"));
    assert_eq!(code, 200);
    assert!(body == data, "native read of an S3 object differs");
    let (code, list) = get(&node.url("/api/v1/files?prefix=shared/"));
    assert_eq!(code, 200);
    let list = json(&list);
    let entry = &list["files"][0];
    assert_eq!(entry["name"], "shared/docs/report.bin");
    assert_eq!(entry["id"].as_str().unwrap(), sha256_hex(&data));
    // And S3 keeps the file id beside the MD5.
    let head = s3.send("HEAD", "/shared/docs/report.bin", &[], &[], b"");
    assert_eq!(head.header("x-amz-meta-sha256"), Some(sha256_hex(&data).as_str()));

    // A file put through the native API under the bucket's folder is an object of the bucket.
    let native = random_bytes(5000, 10);
    let (code, body) = put(&node.url("/api/v1/files/shared/native/put.bin"), &native);
    assert_eq!(code, 201, "{}", String::from_utf8_lossy(&body));
    let mut keys = s3.keys("shared");
    keys.sort();
    assert_eq!(keys, ["docs/report.bin", "native/put.bin"]);
    let got = s3.get("/shared/native/put.bin");
    assert_eq!(got.status, 200);
    assert!(got.body == native, "S3 read of a native file differs");
    let ranged = s3.send("GET", "/shared/native/put.bin", &[], &[("range", "bytes=100-199")], b"");
    assert_eq!(ranged.status, 206);
    assert!(ranged.body == native[100..200]);

    // A delete through either side is seen by the other.
    let (code, _) = delete(&node.url("/api/v1/files/shared/docs/report.bin"));
    assert_eq!(code, 204);
    assert_eq!(s3.get("/shared/docs/report.bin").code(), "NoSuchKey");
    s3.ok("DELETE", "/shared/native/put.bin", b"");
    assert_eq!(get(&node.url("/api/v1/files/shared/native/put.bin")).0, 404);
}

// --- bad input -----------------------------------------------------------------------------------

#[test]
fn bad_input_gets_s3_errors_and_changes_nothing() {
    let node = s3_node();
    let s3 = Signer::root(&node.s3());
    s3.ok("PUT", "/badin", b"");
    let data = random_bytes(1000, 11);
    s3.ok("PUT", "/badin/keep", &data);
    let unchanged = |what: &str| {
        assert_eq!(s3.keys("badin"), ["keep"], "after {what}");
        assert!(s3.get("/badin/keep").body == data, "after {what}");
    };

    // Missing signature: AccessDenied, for reads and writes.
    for (method, path, body) in [
        ("GET", "/badin/keep", &b""[..]),
        ("PUT", "/badin/keep", b"overwrite"),
        ("DELETE", "/badin/keep", b""),
    ] {
        let r = s3.anonymous(method, path, &[], body);
        assert_eq!((r.status, r.code()), (403, "AccessDenied".into()), "anonymous {method} {path}");
    }
    unchanged("anonymous requests");

    // A signature by the wrong secret.
    let wrong = Signer { secret_key: "wrong-secret-wrong-secret".into(), ..Signer::root(&node.s3()) };
    let r = wrong.put("/badin/keep", b"overwrite");
    assert_eq!((r.status, r.code()), (403, "SignatureDoesNotMatch".into()));
    unchanged("a bad signature");

    // A key over 1024 bytes (and one of exactly 1024, which is fine).
    let long = "k".repeat(1025);
    let r = s3.put(&format!("/badin/{long}"), b"x");
    assert_eq!((r.status, r.code()), (400, "KeyTooLongError".into()), "{}", r.text());
    unchanged("a key too long");

    // Invalid bucket names.
    for name in ["Upper_Case", "ab", "-dash-first", "a..b"] {
        let r = s3.put(&format!("/{name}"), b"");
        assert_eq!((r.status, r.code()), (400, "InvalidBucketName".into()), "bucket {name:?}: {}", r.text());
    }
    let buckets = s3.get("/").text();
    assert!(!buckets.contains("Upper_Case") && !buckets.contains("<Name>ab</Name>"), "{buckets}");

    // A body shorter than its Content-Length, the client gone: nothing stored or replaced.
    let status = s3.put_truncated("/badin/short", 10_000, &[7u8; 4000]);
    assert!(!status.contains(" 200 "), "a truncated body was accepted: {status}");
    let status = s3.put_truncated("/badin/keep", 10_000, &[7u8; 4000]);
    assert!(!status.contains(" 200 "), "a truncated body was accepted: {status}");
    unchanged("bodies shorter than declared");

    // A part number out of range.
    let r = s3.send(
        "PUT",
        "/badin/x",
        &[("partNumber", "0"), ("uploadId", "0123456789abcdefghijklmnopqrstuv")],
        &[],
        b"x",
    );
    assert_eq!(r.status, 400, "part number 0: {}", r.text());

    // Unsatisfiable range.
    for range in ["bytes=1000-", "bytes=5000-6000"] {
        let r = s3.send("GET", "/badin/keep", &[], &[("range", range)], b"");
        assert_eq!((r.status, r.code()), (416, "InvalidRange".into()), "{range}: {}", r.text());
    }

    // XML that does not parse: DeleteObjects and CompleteMultipartUpload.
    let garbage = b"<Delete><Object><Key>keep</Key></Object";
    let md5 = {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode(md5::Md5::digest(garbage))
    };
    let r = s3.send("POST", "/badin", &[("delete", "")], &[("content-md5", &md5)], garbage);
    assert_eq!((r.status, r.code()), (400, "MalformedXML".into()), "{}", r.text());
    unchanged("a malformed DeleteObjects");
    let created = s3.send("POST", "/badin/mp", &[("uploads", "")], &[], b"");
    assert_eq!(created.status, 200, "{}", created.text());
    let t = created.text();
    let id = &t[t.find("<UploadId>").unwrap() + 10..t.find("</UploadId>").unwrap()];
    let part = s3.send("PUT", "/badin/mp", &[("partNumber", "1"), ("uploadId", id)], &[], b"part one");
    assert_eq!(part.status, 200, "{}", part.text());
    let r = s3.send("POST", "/badin/mp", &[("uploadId", id)], &[], b"<CompleteMultipartUpload><Part>");
    assert_eq!((r.status, r.code()), (400, "MalformedXML".into()), "{}", r.text());
    // The upload survives a malformed completion, and no object appears.
    let parts = s3.send("GET", "/badin/mp", &[("uploadId", id)], &[], b"");
    assert_eq!(parts.status, 200, "{}", parts.text());
    assert!(parts.text().contains("<PartNumber>1</PartNumber>"), "{}", parts.text());
    unchanged("a malformed CompleteMultipartUpload");

    // Errors are S3 XML with a request id, in the body and the header.
    let r = s3.get("/badin/nothing-here");
    assert_eq!((r.status, r.code()), (404, "NoSuchKey".into()));
    let id = r.header("x-amz-request-id").expect("x-amz-request-id").to_string();
    assert!(r.text().contains(&format!("<RequestId>{id}</RequestId>")), "{}", r.text());
    assert!(r.text().contains("<Message>"), "{}", r.text());
}

/// S3 allows keys up to 1024 bytes; the bucket's name in front of the key (the file is
/// `bucket/key`) must not take from that.
#[test]
fn a_key_of_1024_bytes_is_stored_and_listed() {
    let node = s3_node();
    let s3 = Signer::root(&node.s3());
    s3.ok("PUT", "/longkeys", b"");
    let max = "m".repeat(1024);
    let r = s3.put(&format!("/longkeys/{max}"), b"x");
    assert_eq!(r.status, 200, "a 1024-byte key: {} {}", r.code(), r.text());
    assert_eq!(s3.keys("longkeys"), vec![max.clone()]);
    assert_eq!(s3.get(&format!("/longkeys/{max}")).body, b"x");
}

/// Every S3 error is XML with `Code`, `Message`, `Resource` and the `RequestId` that the
/// `x-amz-request-id` header carries, whichever layer refused the request.
#[test]
fn errors_are_xml_with_code_message_resource_and_request_id() {
    let node = s3_node();
    let s3 = Signer::root(&node.s3());
    s3.ok("PUT", "/errfmt", b"");
    s3.ok("PUT", "/errfmt/k", b"abc");
    let wrong = Signer { secret_key: "wrong-secret-wrong-secret".into(), ..Signer::root(&node.s3()) };
    let long = format!("/errfmt/{}", "k".repeat(1025));
    let cases = [
        ("NoSuchKey", s3.get("/errfmt/missing")),
        ("NoSuchBucket", s3.get("/nosuchbucket/k")),
        ("AccessDenied", s3.anonymous("GET", "/errfmt/k", &[], b"")),
        ("SignatureDoesNotMatch", wrong.get("/errfmt/k")),
        ("KeyTooLongError", s3.put(&long, b"x")),
        ("InvalidBucketName", s3.put("/x", b"")),
        ("InvalidArgument", s3.send("GET", "/errfmt", &[("list-type", "2"), ("max-keys", "-1")], &[], b"")),
        ("InvalidRange", s3.send("GET", "/errfmt/k", &[], &[("range", "bytes=10-")], b"")),
    ];
    let mut wrong_ones = Vec::new();
    for (want, r) in cases {
        let body = r.text();
        let id = r.header("x-amz-request-id").unwrap_or("(no x-amz-request-id)").to_string();
        let fine = r.code() == want
            && body.contains("<Message>")
            && body.contains("<Resource>")
            && body.contains(&format!("<RequestId>{id}</RequestId>"));
        if !fine {
            wrong_ones.push(format!("{want}: {} {body}", r.status));
        }
    }
    assert!(wrong_ones.is_empty(), "errors missing parts:\n{}", wrong_ones.join("\n"));
}

// --- a cluster with a node killed mid-upload -----------------------------------------------------

#[test]
fn cluster_multipart_upload_survives_or_fails_clearly_when_a_node_dies() {
    let Some(python) = python_or_skip() else { return };
    let mut cluster = Cluster::start(
        3,
        &["--s3-listen", "127.0.0.1:0", "--s3-access-key", ACCESS_KEY, "--s3-secret-key", SECRET_KEY],
    );
    for node in &cluster.nodes {
        wait_s3_ready(node);
    }
    let via = Signer::root(&cluster.nodes[0].s3());
    via.ok("PUT", "/survive", b"");
    // Every node knows the bucket (cluster metadata) before the upload starts.
    for node in &cluster.nodes[1..] {
        let s3 = Signer::root(&node.s3());
        wait_for("the bucket on every node", Duration::from_secs(30), || {
            (s3.send("HEAD", "/survive", &[], &[], b"").status == 200).then_some(())
        });
    }
    let work = tempfile::tempdir().unwrap();
    let data = random_bytes(16 * MIB, 12);
    let file = work.path().join("upload.bin");
    std::fs::write(&file, &data).unwrap();

    let home = Home::new();
    let mut cmd = home.command(&python);
    cmd.arg(script())
        .arg("cluster_multipart")
        .env("S3_ENDPOINT", cluster.nodes[0].s3())
        .env("S3_ACCESS_KEY", ACCESS_KEY)
        .env("S3_SECRET_KEY", SECRET_KEY)
        .env("S3_BUCKET", "survive")
        .env("S3_KEY", "big.bin")
        .env("S3_FILE", &file)
        .env("PART_SIZE", (5 * MIB).to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("python");
    let stderr = child.stderr.take().unwrap();
    let err_thread = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = BufReader::new(stderr).read_to_string(&mut s);
        s
    });
    let mut lines = Vec::new();
    let mut killed = false;
    for line in BufReader::new(child.stdout.take().unwrap()).lines().map_while(Result::ok) {
        // After the first part is acknowledged, a node other than the one serving dies.
        if line == "part 1" && !killed {
            cluster.nodes[2].kill9();
            killed = true;
        }
        lines.push(line);
    }
    let status = wait_for("the upload to end", COMMAND_LIMIT, || child.try_wait().unwrap());
    let stderr = err_thread.join().unwrap();
    assert!(killed, "the upload never reported a part: {lines:?}\n{stderr}");
    let last = lines.last().cloned().unwrap_or_default();
    eprintln!("the upload with a node killed after part 1: {last}");
    if let Some(etag) = last.strip_prefix("completed ") {
        assert!(status.success(), "{lines:?}\n{stderr}");
        let md5s: Vec<u8> = data.chunks(5 * MIB).flat_map(|p| md5::Md5::digest(p).to_vec()).collect();
        assert_eq!(etag, format!("{}-4", md5_hex(&md5s)));
        for i in [0, 1] {
            let node = &cluster.nodes[i];
            let got = Signer::root(&node.s3()).get("/survive/big.bin");
            assert_eq!(got.status, 200, "node {i}: {}", got.code());
            assert!(got.body == data, "node {i} reads the object back differently through S3");
            let (code, body) = get(&node.url("/api/v1/files/survive/big.bin"));
            assert_eq!(code, 200);
            assert_eq!(sha256_hex(&body), sha256_hex(&data), "node {i}, native API");
        }
    } else {
        // A failure must be one the client saw and named; and it leaves no object behind.
        assert!(last.starts_with("failed "), "neither completed nor failed clearly: {lines:?}\n{stderr}");
        assert_eq!(status.code(), Some(3), "{lines:?}\n{stderr}");
        for i in [0, 1] {
            let r = Signer::root(&cluster.nodes[i].s3()).send("HEAD", "/survive/big.bin", &[], &[], b"");
            assert_eq!(r.status, 404, "node {i} has an object from a failed upload");
        }
    }
    drop(cluster);
}

// --- aws-chunked, as SDKs send it over TLS ----------------------------------------------------------

/// Signed aws-chunked bodies (each chunk's signature checked) and unsigned ones with a CRC32
/// trailer (checked against the bytes): intact they are stored, a tampered chunk or a wrong
/// trailer checksum stores nothing. The client is `tests/s3/aws_chunked.py` (standard library
/// only): boto3 and aws-cli send these forms only over HTTPS.
#[test]
fn aws_chunked_bodies_are_verified_chunk_by_chunk_and_by_trailer() {
    let Some(python) = tool_or_skip("python3", "apt-get install python3") else { return };
    let node = s3_node();
    assert_eq!(Signer::root(&node.s3()).send("PUT", "/chunked", &[], &[], b"").status, 200);
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/s3/aws_chunked.py");
    let host = node.s3().trim_start_matches("http://").to_owned();
    let out = run_ok(Command::new(python).args([script, &host, ACCESS_KEY, SECRET_KEY, "chunked"]));
    for line in [
        "signed 200 stored",
        "signed-tampered 403 absent(404)",
        "trailer 200 stored",
        "trailer-bad-crc 400 absent(404)",
    ] {
        assert!(out.contains(line), "expected {line:?} in:\n{out}");
    }
}
