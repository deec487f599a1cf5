//! Resumable uploads (tus 1.0.0 at /api/v1/uploads) against the real binary: the protocol by
//! raw HTTP, limits, expiry, and uploads that survive a killed client or a killed node.

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use base64::Engine;
use common::*;

fn b64(s: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(s)
}

/// A tus request with the protocol header; returns status, headers and body.
fn tus(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
) -> (u16, ureq::http::HeaderMap, Vec<u8>) {
    let mut all = vec![("Tus-Resumable", "1.0.0")];
    all.extend_from_slice(headers);
    call(method, url, &all, body)
}

fn header(h: &ureq::http::HeaderMap, name: &str) -> String {
    h.get(name).map(|v| v.to_str().unwrap().to_string()).unwrap_or_default()
}

fn create(node: &TestNode, name: &str, length: usize) -> String {
    let meta = format!("name {}", b64(name));
    let len = length.to_string();
    let (code, h, body) = tus(
        "POST",
        &node.url("/api/v1/uploads"),
        &[("Upload-Length", &len), ("Upload-Metadata", &meta)],
        None,
    );
    assert_eq!(code, 201, "create: {}", String::from_utf8_lossy(&body));
    assert_eq!(header(&h, "Tus-Resumable"), "1.0.0");
    let location = header(&h, "Location");
    assert!(location.starts_with("/api/v1/uploads/"), "{location}");
    node.url(&location)
}

fn patch(url: &str, offset: usize, data: &[u8]) -> (u16, ureq::http::HeaderMap, Vec<u8>) {
    let off = offset.to_string();
    tus(
        "PATCH",
        url,
        &[("Upload-Offset", &off), ("Content-Type", "application/offset+octet-stream")],
        Some(data),
    )
}

fn offset_of(url: &str) -> Option<u64> {
    let (code, h, _) = tus("HEAD", url, &[], None);
    (code == 200).then(|| header(&h, "Upload-Offset").parse().unwrap())
}

/// Files in the node's upload spool.
fn spool_files(node: &TestNode) -> Vec<String> {
    std::fs::read_dir(node.dir.join("uploads"))
        .map(|d| d.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default()
}

#[test]
fn tus_upload_by_raw_http_stores_what_a_plain_put_stores() {
    let node = TestNode::start();
    let data = random_bytes(3 * 1024 * 1024 + 123, 7);
    let half = data.len() / 2;

    let (code, h, _) = tus("OPTIONS", &node.url("/api/v1/uploads"), &[], None);
    assert_eq!(code, 204);
    assert_eq!(header(&h, "Tus-Version"), "1.0.0");
    let extensions = header(&h, "Tus-Extension");
    for ext in ["creation", "termination", "expiration"] {
        assert!(extensions.contains(ext), "{extensions}");
    }

    // Without the protocol version: 412, and nothing created.
    let res = agent().post(node.url("/api/v1/uploads")).header("Upload-Length", "5").send_empty().unwrap();
    assert_eq!(res.status(), 412);

    let url = create(&node, "docs/résumé 1.bin", data.len());
    let (code, h, body) = patch(&url, 0, &data[..half]);
    assert_eq!(code, 204, "{}", String::from_utf8_lossy(&body));
    assert_eq!(header(&h, "Upload-Offset"), half.to_string());
    assert!(!header(&h, "Upload-Expires").is_empty(), "expiration extension");
    assert_eq!(offset_of(&url), Some(half as u64));
    // Not stored under its name before the last byte.
    assert_eq!(get(&node.url("/api/v1/files/docs/r%C3%A9sum%C3%A9%201.bin")).0, 404);

    // A wrong offset is a conflict; a wrong content type is refused; neither changes anything.
    assert_eq!(patch(&url, 0, &data[..10]).0, 409);
    let (code, _, _) = tus("PATCH", &url, &[("Upload-Offset", &half.to_string())], Some(&data[half..]));
    assert_eq!(code, 415);
    // More than the declared length is refused.
    let mut too_long = data[half..].to_vec();
    too_long.push(0);
    assert_eq!(patch(&url, half, &too_long).0, 400);
    assert_eq!(offset_of(&url), Some(half as u64));

    let (code, h, _) = patch(&url, half, &data[half..]);
    assert_eq!(code, 204);
    assert_eq!(header(&h, "Upload-Offset"), data.len().to_string());
    let id = header(&h, "X-DistStore-Id");
    assert_eq!(id, sha256_hex(&data));

    let (code, h, body) = get_with(&node.url("/api/v1/files/docs/r%C3%A9sum%C3%A9%201.bin"), &[]);
    assert_eq!(code, 200);
    assert_eq!(body, data);
    assert_eq!(header(&h, "ETag"), format!("\"{id}\""));
    // Exactly what a plain PUT stores: the same id and chunks, fully deduplicated.
    let (code, body) = put(&node.url("/api/v1/files/plain.bin"), &data);
    assert_eq!(code, 201);
    let plain = json(&body);
    assert_eq!(plain["id"], id.as_str());
    assert_eq!(plain["new_bytes"], 0, "the tus upload stored the same chunks");
    let info = json(&get(&node.url("/api/v1/info/docs/r%C3%A9sum%C3%A9%201.bin")).1);
    assert_eq!(info["chunks"], plain["chunks"]);

    // A finished upload still answers (a client that lost the last answer learns the id),
    // and its bytes are no longer spooled.
    assert_eq!(offset_of(&url), Some(data.len() as u64));
    let (code, h, _) = patch(&url, data.len(), &[]);
    assert_eq!((code, header(&h, "X-DistStore-Id")), (204, id.clone()));
    assert!(spool_files(&node).iter().all(|f| !f.ends_with(".data")), "{:?}", spool_files(&node));
}

#[test]
fn spooled_bytes_are_not_plaintext_on_disk() {
    let node = TestNode::start();
    let data: Vec<u8> = b"top secret words ".iter().copied().cycle().take(200_000).collect();
    let url = create(&node, "secret.txt", data.len());
    assert_eq!(patch(&url, 0, &data[..150_000]).0, 204);
    let spooled: Vec<u8> = std::fs::read_dir(node.dir.join("uploads"))
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".data"))
        .flat_map(|e| std::fs::read(e.path()).unwrap())
        .collect();
    assert_eq!(spooled.len(), 150_000);
    assert!(!spooled.windows(16).any(|w| w == b"top secret words"), "plaintext in the spool");
    let (code, h, _) = patch(&url, 150_000, &data[150_000..]);
    assert_eq!((code, header(&h, "X-DistStore-Id")), (204, sha256_hex(&data)));
    assert_eq!(get(&node.url("/api/v1/files/secret.txt")).1, data);
}

#[test]
fn terminated_uploads_are_gone_and_free_their_space() {
    let node = TestNode::start();
    let url = create(&node, "t.bin", 1000);
    assert_eq!(patch(&url, 0, &[1u8; 400]).0, 204);
    let (code, _, _) = tus("DELETE", &url, &[], None);
    assert_eq!(code, 204);
    assert_eq!(offset_of(&url), None);
    assert_eq!(patch(&url, 400, &[1u8; 600]).0, 404);
    assert!(spool_files(&node).is_empty(), "{:?}", spool_files(&node));
    assert_eq!(get(&node.url("/api/v1/files/t.bin")).0, 404);
}

#[test]
fn abandoned_uploads_expire() {
    let node = TestNode::start_with(&["--upload-expiry", "1s"]);
    let url = create(&node, "abandoned.bin", 1000);
    assert_eq!(patch(&url, 0, &[1u8; 100]).0, 204);
    wait_for("the upload to expire", Duration::from_secs(15), || offset_of(&url).is_none().then_some(()));
    // The sweeper removes the bytes too, without anyone asking.
    wait_for("the spool to be emptied", Duration::from_secs(15), || {
        spool_files(&node).is_empty().then_some(())
    });
}

#[test]
fn uploads_are_bounded_in_number_and_reserved_size() {
    let node = TestNode::start_with(&[
        "--max-resumable-uploads",
        "2",
        "--upload-spool-size",
        "10000",
        "--max-upload-size",
        "8000",
    ]);
    let meta = format!("name {}", b64("x"));
    let post = |len: &str| {
        tus("POST", &node.url("/api/v1/uploads"), &[("Upload-Length", len), ("Upload-Metadata", &meta)], None)
    };
    assert_eq!(post("9000").0, 413, "over --max-upload-size");
    let first = create(&node, "a", 6000);
    assert_eq!(post("6000").0, 507, "over --upload-spool-size");
    let _second = create(&node, "b", 10);
    let (code, _, body) = post("10");
    assert_eq!(code, 503, "over --max-resumable-uploads: {}", String::from_utf8_lossy(&body));
    assert!(error_of(&body).contains("too many unfinished uploads"));
    // Finishing one frees its place.
    assert_eq!(patch(&first, 0, &vec![3u8; 6000]).0, 204);
    assert_eq!(post("10").0, 201);
    // The name must be given and valid.
    let (code, _, _) = tus("POST", &node.url("/api/v1/uploads"), &[("Upload-Length", "1")], None);
    assert_eq!(code, 400);
}

#[test]
fn an_upload_survives_a_node_restart() {
    let mut node = TestNode::start();
    let data = random_bytes(2 * 1024 * 1024, 11);
    let url = create(&node, "restart.bin", data.len());
    assert_eq!(patch(&url, 0, &data[..1_000_000]).0, 204);
    node.restart();
    assert_eq!(offset_of(&url), Some(1_000_000), "the acknowledged offset is durable");
    let (code, h, _) = patch(&url, 1_000_000, &data[1_000_000..]);
    assert_eq!(code, 204);
    assert_eq!(header(&h, "X-DistStore-Id"), sha256_hex(&data));
    assert_eq!(get(&node.url("/api/v1/files/restart.bin")).1, data);
}

// Interrupted client uploads.

const BIG: usize = 40 * 1024 * 1024;

/// Runs `diststore put` against `node`, with its upload state in `state`.
fn put_cmd(node: &TestNode, state: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.arg("put")
        .args(args)
        .env("DISTSTORE_NODE", &node.base)
        .env("XDG_STATE_HOME", state)
        .env_remove("DISTSTORE_API_TOKEN");
    cmd
}

fn spooled_bytes(node: &TestNode) -> u64 {
    std::fs::read_dir(node.dir.join("uploads"))
        .map(|d| {
            d.flatten()
                .filter(|e| e.file_name().to_string_lossy().ends_with(".data"))
                .map(|e| e.metadata().map(|m| m.len()).unwrap_or(0))
                .sum()
        })
        .unwrap_or(0)
}

fn start_slow_put(node: &TestNode, state: &Path, file: &Path) -> Child {
    put_cmd(node, state, &["--limit-rate", "8MiB", file.to_str().unwrap()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn client")
}

fn wait_for_60_percent(node: &TestNode, client: &mut Child) {
    wait_for("60% of the upload to arrive", Duration::from_secs(60), || {
        assert!(client.try_wait().unwrap().is_none(), "the client ended early");
        (spooled_bytes(node) >= (BIG as u64) * 6 / 10).then_some(())
    });
}

#[test]
fn a_killed_client_resumes_where_it_stopped() {
    let node = TestNode::start();
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("big.bin");
    let data = random_bytes(BIG, 21);
    std::fs::write(&file, &data).unwrap();
    let state = tmp.path().join("state");

    let mut client = start_slow_put(&node, &state, &file);
    wait_for_60_percent(&node, &mut client);
    client.kill().unwrap();
    client.wait().unwrap();

    // The client remembered its upload, and the node kept what it received.
    let saved: serde_json::Value =
        serde_json::from_slice(&std::fs::read(state.join("diststore/uploads.json")).unwrap()).unwrap();
    let url = saved.as_object().unwrap().values().next().unwrap().as_str().unwrap().to_owned();
    let kept = wait_for("the node to count what it received", Duration::from_secs(10), || {
        offset_of(&url).filter(|o| *o >= (BIG as u64) / 2)
    });
    assert!(kept < BIG as u64);

    let out = put_cmd(&node, &state, &[file.to_str().unwrap()]).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.starts_with("resumed "), "{stdout}");
    assert!(stdout.contains(&sha256_hex(&data)), "{stdout}");
    let (code, body) = get(&node.url("/api/v1/files/big.bin"));
    assert_eq!(code, 200);
    assert!(body == data, "the resumed file differs");
    // Done: the state forgets it.
    let saved: serde_json::Value =
        serde_json::from_slice(&std::fs::read(state.join("diststore/uploads.json")).unwrap()).unwrap();
    assert!(saved.as_object().unwrap().is_empty(), "{saved}");
}

#[test]
fn a_client_rides_out_a_node_killed_and_restarted() {
    let mut node = TestNode::start();
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("big.bin");
    let data = random_bytes(BIG, 22);
    std::fs::write(&file, &data).unwrap();
    let state = tmp.path().join("state");

    let mut client = start_slow_put(&node, &state, &file);
    wait_for_60_percent(&node, &mut client);
    node.restart(); // kill -9, then start on the same port and data directory
    let status = wait_for("the client to finish", Duration::from_secs(120), || client.try_wait().unwrap());
    let mut stdout = String::new();
    std::io::Read::read_to_string(client.stdout.as_mut().unwrap(), &mut stdout).unwrap();
    let mut stderr = String::new();
    std::io::Read::read_to_string(client.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    assert!(status.success(), "{stdout}{stderr}");
    assert!(stdout.starts_with("resumed "), "{stdout}");
    let (code, body) = get(&node.url("/api/v1/files/big.bin"));
    assert_eq!(code, 200);
    assert!(body == data, "the resumed file differs");
}
