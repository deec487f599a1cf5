//! The `diststore` client commands against a real node: trees up and down byte-identical,
//! listings, deletes, resumed downloads, progress on a terminal and plain output when piped,
//! and one-line errors with a non-zero exit.
//!
//! `mv`, `cp`, `share` and modification times need the node's move/copy, share and mtime
//! support (another branch); their tests are here for when both are merged.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::*;

struct Cli {
    node: String,
    state: tempfile::TempDir,
    token: Option<String>,
}

impl Cli {
    fn new(node: &TestNode) -> Cli {
        Cli { node: node.base.clone(), state: tempfile::tempdir().unwrap(), token: None }
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(BIN);
        cmd.args(args)
            .env("DISTSTORE_NODE", &self.node)
            .env("XDG_STATE_HOME", self.state.path())
            .env_remove("DISTSTORE_API_TOKEN");
        if let Some(t) = &self.token {
            cmd.env("DISTSTORE_API_TOKEN", t);
        }
        cmd
    }

    fn run(&self, args: &[&str]) -> Output {
        self.cmd(args).output().expect("run the client")
    }

    /// Runs a command that must succeed; returns its stdout.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "{args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// Runs a command that must fail with one clear line; returns that line.
    fn fails(&self, args: &[&str]) -> String {
        let out = self.run(args);
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked") && !stderr.contains("RUST_BACKTRACE"), "{stderr}");
        assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
        assert!(stderr.starts_with("diststore: "), "{stderr}");
        stderr.trim().to_owned()
    }
}

/// Nodes refuse short API tokens.
const TOKEN: &str = "client-test-token-0123456789abcdef";

/// A tree with empty files, unicode, spaces, nesting and a file big enough to go resumable.
fn make_tree(root: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let files: Vec<(&str, Vec<u8>)> = vec![
        ("empty", Vec::new()),
        ("a b/c d.txt", b"spaces\n".to_vec()),
        ("a b/empty too", Vec::new()),
        ("ünï/çødé ✓.md", "ünïcødé\n".as_bytes().to_vec()),
        ("deep/er/still/x.bin", random_bytes(300_000, 1)),
        ("big.bin", random_bytes(3 * 1024 * 1024 + 7, 2)),
    ];
    let mut out = Vec::new();
    for (rel, data) in files {
        let path = root.join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, &data).unwrap();
        out.push((PathBuf::from(rel), data));
    }
    out
}

#[test]
fn a_tree_goes_up_and_comes_down_byte_identical() {
    let node = TestNode::start();
    let cli = Cli::new(&node);
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("tree");
    let files = make_tree(&src);

    // Files from 1 MiB on go through the resumable upload.
    let out = cli.ok(&["put", src.to_str().unwrap(), "--prefix", "backup", "--resumable-from", "1MiB"]);
    assert_eq!(out.lines().count(), files.len(), "{out}");
    assert!(out.lines().all(|l| l.starts_with("stored ")), "{out}");
    for (rel, data) in &files {
        let name = format!("backup/tree/{}", rel.display());
        assert!(out.contains(&name), "{name} in {out}");
        assert!(out.contains(&sha256_hex(data)), "{out}");
    }
    // Again: every file is already there.
    let again = cli.ok(&["put", src.to_str().unwrap(), "--prefix", "backup/"]);
    assert!(again.lines().all(|l| l.starts_with("unchanged ")), "{again}");

    let dest = tmp.path().join("down");
    let out = cli.ok(&["get", "backup/", dest.to_str().unwrap()]);
    assert_eq!(out.lines().count(), files.len(), "{out}");
    for (rel, data) in &files {
        let got =
            std::fs::read(dest.join("tree").join(rel)).unwrap_or_else(|e| panic!("{}: {e}", rel.display()));
        assert!(got == *data, "{} differs", rel.display());
    }
    assert_eq!(files_under(&dest).len(), files.len(), "no .part or extra files left");

    // One file to a chosen name, and into a directory.
    let one = tmp.path().join("one.md");
    cli.ok(&["get", "backup/tree/ünï/çødé ✓.md", one.to_str().unwrap()]);
    assert_eq!(std::fs::read(&one).unwrap(), "ünïcødé\n".as_bytes());
    cli.ok(&["get", "backup/tree/big.bin", tmp.path().to_str().unwrap()]);
    assert!(std::fs::read(tmp.path().join("big.bin")).unwrap() == files[5].1);
}

#[test]
fn ls_shows_folders_unless_recursive_and_rm_removes() {
    let node = TestNode::start();
    let cli = Cli::new(&node);
    for name in ["top.txt", "docs/a.txt", "docs/b.txt", "docs/sub/c.txt", "pics/x.jpg"] {
        assert_eq!(put(&node.url(&format!("/api/v1/files/{name}")), name.as_bytes()).0, 201);
    }
    assert_eq!(cli.ok(&["ls"]), "docs/\npics/\ntop.txt\n");
    assert_eq!(cli.ok(&["ls", "docs"]), "docs/sub/\ndocs/a.txt\ndocs/b.txt\n");
    assert_eq!(cli.ok(&["ls", "-r", "docs/"]), "docs/a.txt\ndocs/b.txt\ndocs/sub/c.txt\n");
    let long = cli.ok(&["ls", "-l", "docs/"]);
    let line = long.lines().find(|l| l.ends_with("docs/a.txt")).unwrap();
    assert!(line.trim_start().starts_with("10 "), "size first: {line}");
    let listing: serde_json::Value = serde_json::from_str(&cli.ok(&["ls", "--json", "docs/"])).unwrap();
    assert_eq!(listing["folders"], serde_json::json!(["docs/sub/"]));
    assert_eq!(listing["files"].as_array().unwrap().len(), 2);

    assert_eq!(cli.ok(&["rm", "top.txt"]), "deleted top.txt\n");
    let out = cli.ok(&["rm", "-r", "docs/"]);
    assert_eq!(out.lines().count(), 3, "{out}");
    assert_eq!(cli.ok(&["ls", "-r"]), "pics/x.jpg\n");
    assert_eq!(cli.fails(&["rm", "top.txt"]), "diststore: no such file: top.txt");
}

#[test]
fn errors_are_one_line_with_a_non_zero_exit() {
    let node = TestNode::start_with(&["--api-token", TOKEN]);
    let mut cli = Cli::new(&node);
    cli.token = Some("wrong".into());
    let line = cli.fails(&["ls"]);
    assert!(line.contains("refused the API token"), "{line}");
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("f.txt");
    std::fs::write(&file, b"x").unwrap();
    let out = cli.run(&["put", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("refused the API token"));

    cli.token = Some(TOKEN.into());
    cli.ok(&["put", file.to_str().unwrap()]);
    assert_eq!(
        cli.fails(&["get", "missing.txt", tmp.path().to_str().unwrap()]),
        "diststore: no such file: missing.txt"
    );
    assert!(!tmp.path().join("missing.txt").exists());
    // The token goes only in the header: without it, the same node refuses.
    cli.token = None;
    assert!(cli.fails(&["ls"]).contains("refused the API token"));

    // Unreachable: a port nothing listens on.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    cli.node = url.clone();
    // A transfer of many files says it once, too.
    let many = tmp.path().join("many");
    for i in 0..5 {
        std::fs::create_dir_all(&many).unwrap();
        std::fs::write(many.join(format!("{i}.txt")), b"x").unwrap();
    }
    let many = many.to_str().unwrap();
    for args in [&["ls"][..], &["status"], &["health"], &["get", "x"], &["put", many], &["get", "some/"]] {
        let line = cli.fails(args);
        assert!(line.starts_with(&format!("diststore: cannot reach the node at {url}")), "{line}");
    }
    cli.node = "not a url".into();
    assert!(cli.fails(&["ls"]).contains("is not a URL"));
}

#[test]
fn a_node_out_of_space_is_a_clear_error() {
    // The space set aside for resumable uploads stands in for a full disk: both are 507.
    let node = TestNode::start_with(&["--upload-spool-size", "1MiB"]);
    let cli = Cli::new(&node);
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("big.bin");
    std::fs::write(&file, random_bytes(2 << 20, 4)).unwrap();
    let out = cli.run(&["put", file.to_str().unwrap(), "--resumable-from", "1MiB"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("the node is out of space (507)"), "{stderr}");
}

#[test]
fn health_and_status() {
    let node = TestNode::start();
    let cli = Cli::new(&node);
    assert_eq!(cli.ok(&["health"]), "ok\n");
    assert!(cli.run(&["health", "--quiet"]).stdout.is_empty());
    let status: serde_json::Value = serde_json::from_str(&cli.ok(&["status", "--json"])).unwrap();
    assert_eq!(status["node_id"], node.status()["node_id"]);
    assert!(cli.ok(&["status"]).starts_with("node "));
}

#[test]
fn downloads_resume_from_a_part_file_and_never_leave_a_wrong_file() {
    let node = TestNode::start();
    let cli = Cli::new(&node);
    let data = random_bytes(2 * 1024 * 1024, 5);
    assert_eq!(put(&node.url("/api/v1/files/r.bin"), &data).0, 201);
    let tmp = tempfile::tempdir().unwrap();
    let target = tmp.path().join("r.bin");
    let part = tmp.path().join("r.bin.part");

    std::fs::write(&part, &data[..1_000_000]).unwrap();
    let out = cli.ok(&["get", "r.bin", target.to_str().unwrap()]);
    assert!(out.starts_with("resumed "), "{out}");
    assert!(std::fs::read(&target).unwrap() == data);
    assert!(!part.exists());

    // A part file that is not the start of the content: the result fails verification, the
    // final name is never written, and the bad part is dropped (the next run starts over).
    std::fs::remove_file(&target).unwrap();
    std::fs::write(&part, vec![0u8; 1_000_000]).unwrap();
    let line = cli.fails(&["get", "r.bin", target.to_str().unwrap()]);
    assert!(line.contains("SHA-256"), "{line}");
    assert!(!target.exists() && !part.exists());
    cli.ok(&["get", "r.bin", target.to_str().unwrap()]);
    assert!(std::fs::read(&target).unwrap() == data);
}

#[test]
fn get_refuses_names_that_escape_the_destination() {
    let node = TestNode::start();
    let cli = Cli::new(&node);
    // The node refuses `..` segments (tests/security.rs), but an older node may hold such
    // names, and `evil//escaped.txt` under the prefix `evil/` is `/escaped.txt`: absolute.
    // Stored through a resumable upload: the name travels in metadata, not in a URL path
    // that HTTP stacks normalise.
    use base64::Engine;
    let name = base64::engine::general_purpose::STANDARD.encode("evil//escaped.txt");
    let res = agent()
        .post(node.url("/api/v1/uploads"))
        .header("Tus-Resumable", "1.0.0")
        .header("Upload-Length", "6")
        .header("Upload-Metadata", format!("name {name}"))
        .send_empty()
        .unwrap();
    assert_eq!(res.status(), 201);
    let location = res.headers().get("Location").unwrap().to_str().unwrap().to_owned();
    let res = agent()
        .patch(node.url(&location))
        .header("Tus-Resumable", "1.0.0")
        .header("Upload-Offset", "0")
        .header("Content-Type", "application/offset+octet-stream")
        .send(&b"gotcha"[..])
        .unwrap();
    assert_eq!(res.status(), 204);
    assert_eq!(
        json(&get(&node.url("/api/v1/files?prefix=evil/")).1)["files"][0]["name"],
        "evil//escaped.txt"
    );
    let tmp = tempfile::tempdir().unwrap();
    let dest = tmp.path().join("a/b");
    std::fs::create_dir_all(&dest).unwrap();
    let line = cli.fails(&["get", "evil/", dest.to_str().unwrap()]);
    assert!(line.contains("outside"), "{line}");
    assert!(files_under(tmp.path()).is_empty(), "{:?}", files_under(tmp.path()));
}

#[test]
fn progress_bars_on_a_terminal_plain_lines_when_piped() {
    let script = std::process::Command::new("script").arg("--version").output();
    if script.is_err() {
        assert!(std::env::var_os("CI").is_none(), "`script` (util-linux) is needed for this test");
        eprintln!("skipping: `script` (util-linux) is not installed");
        return;
    }
    let node = TestNode::start();
    let cli = Cli::new(&node);
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("p.bin");
    std::fs::write(&file, random_bytes(6 * 1024 * 1024, 9)).unwrap();

    // Under a pseudo-terminal (script), with a rate cap so that bars get drawn.
    let line = format!("{BIN} put --limit-rate 4MiB '{}' --prefix tty", file.display());
    let tty = Command::new("script")
        .args(["-qec", &line, "/dev/null"])
        .env("DISTSTORE_NODE", &node.base)
        .env("XDG_STATE_HOME", cli.state.path())
        .env("TERM", "xterm")
        .env_remove("DISTSTORE_API_TOKEN")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&tty.stdout);
    assert!(tty.status.success(), "{text}");
    assert!(text.contains("put total"), "a total bar: {text}");
    assert!(text.contains("ETA"), "speed and ETA: {text}");
    assert!(text.contains("iB/s"), "a speed: {text}");
    assert!(text.contains("\u{1b}["), "drawn with terminal escapes: {text}");
    assert!(text.contains("stored    tty/p.bin"), "{text}");

    // Piped: one plain line per file, no bars, no escapes.
    std::fs::write(&file, random_bytes(6 * 1024 * 1024, 10)).unwrap();
    let piped = cli.ok(&["put", file.to_str().unwrap(), "--prefix", "pipe"]);
    assert!(piped.starts_with("stored    pipe/p.bin  6.0 MiB  "), "{piped}");
    assert_eq!(piped.lines().count(), 1);
    assert!(!piped.contains('\u{1b}') && !piped.contains("ETA"), "{piped}");
    // --json: one object per file.
    let j: serde_json::Value =
        serde_json::from_str(cli.ok(&["put", "--json", file.to_str().unwrap(), "--prefix", "pipe"]).trim())
            .unwrap();
    assert_eq!(j["result"], "unchanged");
    // --quiet: nothing.
    assert!(cli.ok(&["put", "-q", file.to_str().unwrap()]).is_empty());
}

// The next tests need the move/copy and share routes of the server branch.

#[test]
fn mv_and_cp_move_names_not_bytes() {
    let node = TestNode::start();
    let cli = Cli::new(&node);
    for name in ["src/a.txt", "src/b/c.txt"] {
        assert_eq!(put(&node.url(&format!("/api/v1/files/{name}")), name.as_bytes()).0, 201);
    }
    assert_eq!(cli.ok(&["cp", "src/a.txt", "copy.txt"]), "copied 1 file to copy.txt\n");
    assert_eq!(get(&node.url("/api/v1/files/copy.txt")).1, b"src/a.txt");
    assert_eq!(cli.ok(&["mv", "src/", "dst"]), "moved 2 files to dst/\n");
    assert_eq!(cli.ok(&["ls", "-r"]), "copy.txt\ndst/a.txt\ndst/b/c.txt\n");
    assert_eq!(cli.fails(&["mv", "nothing", "x"]), "diststore: no such file: nothing");
    let line = cli.fails(&["cp", "-n", "copy.txt", "dst/a.txt"]);
    assert!(line.contains("precondition"), "{line}");
}

#[test]
fn share_prints_a_link_that_serves_the_file() {
    let node = TestNode::start_with(&["--api-token", TOKEN]);
    let mut cli = Cli::new(&node);
    cli.token = Some(TOKEN.into());
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("s.txt");
    std::fs::write(&file, b"shared bytes").unwrap();
    cli.ok(&["put", file.to_str().unwrap()]);
    let link = cli.ok(&["share", "s.txt", "--expires", "1h"]);
    let link = link.trim();
    assert!(link.starts_with("http://") && link.contains("/share/"), "{link}");
    // No token needed for the link.
    let (code, body) = get(link);
    assert_eq!((code, body.as_slice()), (200, &b"shared bytes"[..]));
    assert_eq!(cli.fails(&["share", "nope.txt"]), "diststore: no such file: nope.txt");
}

#[test]
fn modification_times_go_up_and_come_back() {
    let node = TestNode::start();
    let cli = Cli::new(&node);
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("old.txt");
    std::fs::write(&file, b"from long ago").unwrap();
    let then = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_500_000_000);
    std::fs::File::options().write(true).open(&file).unwrap().set_modified(then).unwrap();
    let big = tmp.path().join("old.bin");
    std::fs::write(&big, random_bytes(2 << 20, 3)).unwrap();
    std::fs::File::options().write(true).open(&big).unwrap().set_modified(then).unwrap();
    // One plain PUT, one resumable upload.
    cli.ok(&[
        "put",
        file.to_str().unwrap(),
        big.to_str().unwrap(),
        "--prefix",
        "m",
        "--resumable-from",
        "1MiB",
    ]);
    let listing: serde_json::Value = serde_json::from_str(&cli.ok(&["ls", "--json", "m/"])).unwrap();
    for f in listing["files"].as_array().unwrap() {
        assert_eq!(f["mtime"], "2017-07-14T02:40:00.000Z", "{f}");
    }
    assert!(cli.ok(&["ls", "-l", "m/"]).contains("2017-07-14T02:40:00"));
    let dest = tmp.path().join("down");
    cli.ok(&["get", "m/", dest.to_str().unwrap()]);
    for name in ["old.txt", "old.bin"] {
        assert_eq!(std::fs::metadata(dest.join(name)).unwrap().modified().unwrap(), then, "{name}");
    }
}
