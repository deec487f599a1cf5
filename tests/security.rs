//! Attacks from a browser on a default node (no token, loopback): a page of another site
//! sending state-changing requests (CSRF) and a host name rebound to the node (DNS rebinding).
//! The requests are made here as the browser would send them, with its headers.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::*;

/// Sends a raw HTTP/1.1 request (any `Host`, any headers) and returns the status and body.
fn raw(base: &str, request: &str) -> (u16, String) {
    let addr = base.trim_start_matches("http://");
    let mut s = TcpStream::connect(addr).expect("connect");
    s.write_all(request.as_bytes()).unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let status = out.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    (status, out)
}

fn host_of(base: &str) -> &str {
    base.trim_start_matches("http://")
}

#[test]
fn a_cross_site_form_post_or_fetch_changes_nothing() {
    let node = TestNode::start();
    let host = host_of(&node.base).to_owned();
    // What a plain HTML form on another site posts: multipart, no token, its Origin.
    let body = "--B\r\nContent-Disposition: form-data; name=\"key\"\r\n\r\nvictim\r\n--B\r\nContent-Disposition: form-data; name=\"file\"\r\n\r\nowned\r\n--B--\r\n";
    let form = format!(
        "POST /api/store HTTP/1.1\r\nHost: {host}\r\nOrigin: http://evil.example\r\nSec-Fetch-Site: cross-site\r\n\
         Content-Type: multipart/form-data; boundary=B\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let (code, text) = raw(&node.base, &form);
    assert_eq!(code, 403, "{text}");
    // A no-cors fetch from another origin, without Sec-Fetch-Site (an older browser).
    let no_cors = format!(
        "PUT /api/v1/files/victim HTTP/1.1\r\nHost: {host}\r\nOrigin: http://127.0.0.1:1\r\nContent-Length: 5\r\nConnection: close\r\n\r\nowned"
    );
    assert_eq!(raw(&node.base, &no_cors).0, 403);
    let delete = format!(
        "DELETE /api/v1/files/victim HTTP/1.1\r\nHost: {host}\r\nSec-Fetch-Site: same-site\r\nConnection: close\r\n\r\n"
    );
    assert_eq!(raw(&node.base, &delete).0, 403);
    assert_eq!(get(&node.url("/api/v1/files/victim")).0, 404, "nothing was stored");
    // The node's own page (same origin) and clients that send no Origin still work.
    let own = format!(
        "PUT /api/v1/files/mine HTTP/1.1\r\nHost: {host}\r\nOrigin: http://{host}\r\nSec-Fetch-Site: same-origin\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"
    );
    assert_eq!(raw(&node.base, &own).0, 201);
    assert_eq!(put(&node.url("/api/v1/files/curl"), b"no origin").0, 201);
}

#[test]
fn a_rebound_host_name_is_refused_and_allowed_ones_answer() {
    let node = TestNode::start_with(&["--allowed-host", "nas.example"]);
    assert_eq!(put(&node.url("/api/v1/files/secret.txt"), b"secret").0, 201);
    let port = host_of(&node.base).rsplit(':').next().unwrap().to_owned();
    for path in ["/api/v1/files", "/api/v1/files/secret.txt", "/"] {
        let req = format!("GET {path} HTTP/1.1\r\nHost: evil.example:{port}\r\nConnection: close\r\n\r\n");
        let (code, text) = raw(&node.base, &req);
        assert_eq!(code, 421, "{path}: {text}");
        assert!(!text.contains("secret\""), "{text}");
    }
    let delete =
        "DELETE /api/v1/files/secret.txt HTTP/1.1\r\nHost: evil.example\r\nConnection: close\r\n\r\n"
            .to_string();
    assert_eq!(raw(&node.base, &delete).0, 421);
    assert_eq!(get(&node.url("/api/v1/files/secret.txt")).1, b"secret");
    for ok in ["localhost", "nas.example", "127.0.0.1"] {
        let req = format!(
            "GET /api/v1/files/secret.txt HTTP/1.1\r\nHost: {ok}:{port}\r\nConnection: close\r\n\r\n"
        );
        assert_eq!(raw(&node.base, &req).0, 200, "{ok}");
    }
}

#[test]
fn the_ui_page_cannot_be_framed() {
    let node = TestNode::start();
    let (code, head, _) = get_with(&node.url("/"), &[]);
    assert_eq!(code, 200);
    assert_eq!(head.get("content-security-policy").unwrap(), "frame-ancestors 'none'");
}

#[test]
fn the_data_directory_and_database_are_the_owner_s_alone() {
    use std::os::unix::fs::PermissionsExt;
    let node = TestNode::start();
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&node.dir), 0o700, "data directory");
    assert_eq!(mode(&node.dir.join("diststore.redb")), 0o600, "database");
}

#[test]
fn names_that_would_act_on_or_look_like_another_are_refused() {
    let node = TestNode::start();
    assert_eq!(put(&node.url("/api/v1/files/victim.txt"), b"keep me").0, 201);
    // What the UI sends for such a name: slashes encoded, so no browser resolves the dots.
    // The node must not resolve them either, nor store a look-alike.
    for (encoded, says) in [
        ("zz%2F..%2Fvictim.txt", "\"..\""),
        ("zz%2F.%2Fvictim.txt", "\".\""),
        ("a%5Cvictim.txt", "\\"),
        ("invoice%E2%80%AEtxt.exe", "U+202E"),
        ("vic%E2%80%8Btim.txt", "U+200B"),
    ] {
        let url = node.url(&format!("/api/v1/files/{encoded}"));
        let (code, body) = put(&url, b"owned");
        assert_eq!(code, 400, "{encoded}: {}", String::from_utf8_lossy(&body));
        assert!(error_of(&body).contains(says), "{encoded}: {}", error_of(&body));
        assert_eq!(delete(&url).0, 400, "{encoded}");
    }
    // Sent raw (as curl --path-as-is would), a dot segment is refused before any parser
    // resolves it to another name.
    let host = host_of(&node.base).to_owned();
    for target in ["zz/../victim.txt", "zz/%2e%2E/victim.txt", "./victim.txt"] {
        for method in ["DELETE", "PUT", "GET"] {
            let req = format!(
                "{method} /api/v1/files/{target} HTTP/1.1\r\nHost: {host}\r\nContent-Length: 5\r\nConnection: close\r\n\r\nowned"
            );
            let (code, text) = raw(&node.base, &req);
            assert_eq!(code, 400, "{method} {target}: {text}");
            assert!(text.contains("segment"), "{text}");
        }
    }
    assert_eq!(get(&node.url("/api/v1/files/victim.txt")).1, b"keep me");
    let listed = json(&get(&node.url("/api/v1/files")).1);
    assert_eq!(listed["files"].as_array().unwrap().len(), 1, "{listed}");

    // Two normal forms of "café" are one name, stored composed: the second upload replaces the
    // first, and either spelling reads it.
    assert_eq!(put(&node.url("/api/v1/files/caf%C3%A9.txt"), b"composed").0, 201);
    assert_eq!(put(&node.url("/api/v1/files/cafe%CC%81.txt"), b"decomposed").0, 201);
    assert_eq!(get(&node.url("/api/v1/files/caf%C3%A9.txt")).1, b"decomposed");
    let names: Vec<String> = json(&get(&node.url("/api/v1/files")).1)["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(names, ["caf\u{e9}.txt", "victim.txt"]);
}

#[test]
fn a_closed_output_never_stops_the_node() {
    use std::io::BufRead;
    use std::process::{Command, Stdio};
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(BIN)
        .args(["--listen", "127.0.0.1:0", "--s3-listen", "off", "--data-dir"])
        .arg(dir.path())
        .env_remove("DISTSTORE_API_TOKEN")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let base = lines
        .find_map(|l| l.ok()?.strip_prefix("diststore listening on ").map(|u| u.trim().to_owned()))
        .expect("a listening line");
    // Whoever read the node's output goes away (a closed terminal, a dead log pipe).
    drop(lines);
    drop(child.stderr.take());
    // Work that logs: a delete makes the collector remove content and say so.
    let data = random_bytes(300_000, 7);
    assert_eq!(put(&format!("{base}/api/v1/files/a"), &data).0, 201);
    assert_eq!(delete(&format!("{base}/api/v1/files/a")).0, 204);
    wait_for("the collector to remove the content", Duration::from_secs(20), || {
        let status = json(&get(&format!("{base}/api/v1/status")).1);
        (status["gc"]["chunks"].as_u64()? > 0).then_some(())
    });
    assert_eq!(get(&format!("{base}/health")).0, 200, "every loop still runs");
    assert_eq!(put(&format!("{base}/api/v1/files/b"), b"still writes").0, 201);
    // SIGTERM still shuts it down cleanly.
    // SAFETY: sending a signal to our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = wait_for("the node to exit", Duration::from_secs(20), || child.try_wait().unwrap());
    assert!(status.success(), "{status}");
}
