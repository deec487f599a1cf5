//! The HTTP API of one node, over real HTTP against the real binary.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::*;
use diststore::content::chunker::{MAX_CHUNK, MIN_CHUNK};

#[test]
fn round_trips_at_edge_sizes_return_the_sha256_as_id() {
    let node = TestNode::start();
    let sizes = [0, 1, MIN_CHUNK - 1, MIN_CHUNK, MIN_CHUNK + 1, MAX_CHUNK, MAX_CHUNK + 1, 3 * MAX_CHUNK + 7];
    for (i, &size) in sizes.iter().enumerate() {
        let data = random_bytes(size, i as u64 + 1);
        let name = format!("edge/{size}.bin");
        let (code, body) = put(&node.url(&format!("/api/v1/files/{name}")), &data);
        assert_eq!(code, 201, "{}", String::from_utf8_lossy(&body));
        let v = json(&body);
        assert_eq!(v["id"], sha256_hex(&data), "size {size}");
        assert_eq!(v["size"], size as u64);
        assert_eq!(v["name"], name);
        let (code, back) = get(&node.url(&format!("/api/v1/files/{name}")));
        assert_eq!(code, 200);
        assert_eq!(back.len(), size, "size {size}");
        assert!(back == data, "content differs at size {size}");
        let (code, blob) = get(&node.url(&format!("/api/v1/blobs/{}", sha256_hex(&data))));
        assert_eq!((code, blob == data), (200, true), "blob of size {size}");
    }
}

#[test]
fn a_large_file_streams_both_ways() {
    let node = TestNode::start();
    let size: u64 = 160 << 20;
    let res = agent()
        .put(&node.url("/api/v1/files/large.bin"))
        .header("Content-Length", &size.to_string())
        .send(ureq::SendBody::from_owned_reader(RandomReader::new(size, 42)))
        .expect("upload");
    assert_eq!(res.status().as_u16(), 201);
    let v: Value = serde_json::from_reader(res.into_body().into_reader()).unwrap();
    let (expected, _) = sha256_reader(RandomReader::new(size, 42));
    assert_eq!(v["id"], expected);
    let res = agent().get(&node.url("/api/v1/files/large.bin")).call().expect("download");
    assert_eq!(res.headers()["content-length"], size.to_string().as_str());
    let (got, len) = sha256_reader(res.into_body().into_with_config().limit(u64::MAX).reader());
    assert_eq!((got, len), (expected, size));
}

/// A body sent without a length (chunked) is read into blocks of the full size, several of
/// them reused, and stored byte for byte: the same id as the bytes hash to, and read back whole.
#[test]
fn a_body_without_a_length_is_stored_whole() {
    let node = TestNode::start();
    let size: u64 = (5 << 20) + 12_345;
    let res = agent()
        .put(&node.url("/api/v1/files/chunked.bin"))
        .send(ureq::SendBody::from_owned_reader(RandomReader::new(size, 77)))
        .expect("upload");
    assert_eq!(res.status().as_u16(), 201);
    let v: Value = serde_json::from_reader(res.into_body().into_reader()).unwrap();
    let (expected, _) = sha256_reader(RandomReader::new(size, 77));
    assert_eq!((v["id"].as_str(), v["size"].as_u64()), (Some(expected.as_str()), Some(size)));
    let res = agent().get(&node.url("/api/v1/files/chunked.bin")).call().expect("download");
    let (got, len) = sha256_reader(res.into_body().into_with_config().limit(u64::MAX).reader());
    assert_eq!((got, len), (expected, size));
}

#[test]
fn head_ranges_and_conditional_requests() {
    let node = TestNode::start();
    let data = random_bytes(2 * MAX_CHUNK + 100, 3);
    let id = sha256_hex(&data);
    assert_eq!(put(&node.url("/api/v1/files/r.txt"), &data).0, 201);
    let url = node.url("/api/v1/files/r.txt");

    let res = agent().head(&url).call().unwrap();
    assert_eq!(res.status().as_u16(), 200);
    assert_eq!(res.headers()["content-length"], data.len().to_string().as_str());
    assert_eq!(res.headers()["etag"], format!("\"{id}\"").as_str());
    assert_eq!(res.headers()["accept-ranges"], "bytes");
    assert_eq!(res.headers()["content-type"], "text/plain");
    // Regression: an uploaded HTML page served inline ran scripts on the UI's origin.
    assert_eq!(res.headers()["content-security-policy"], "sandbox");
    assert_eq!(res.headers()["x-content-type-options"], "nosniff");

    // A range crossing a chunk boundary.
    let (from, to) = (MAX_CHUNK - 10, MAX_CHUNK + 20);
    let (code, head, body) = get_with(&url, &[("Range", &format!("bytes={from}-{to}"))]);
    assert_eq!(code, 206);
    assert_eq!(head["content-range"], format!("bytes {from}-{to}/{}", data.len()).as_str());
    assert!(body == data[from..=to]);
    // Suffix and open-ended ranges.
    let (code, _, body) = get_with(&url, &[("Range", "bytes=-5")]);
    assert_eq!((code, body.as_slice()), (206, &data[data.len() - 5..]));
    let (code, _, body) = get_with(&url, &[("Range", &format!("bytes={}-", data.len() - 3))]);
    assert_eq!((code, body.as_slice()), (206, &data[data.len() - 3..]));
    // Unsatisfiable and malformed.
    let (code, head, body) = get_with(&url, &[("Range", &format!("bytes={}-", data.len() + 1))]);
    assert_eq!(code, 416);
    assert_eq!(head["content-range"], format!("bytes */{}", data.len()).as_str());
    assert!(error_of(&body).contains("not satisfiable"));
    let (code, _, body) = get_with(&url, &[("Range", "bytes=9-3")]);
    assert_eq!(code, 400, "{}", String::from_utf8_lossy(&body));
    assert!(error_of(&body).contains("Range"));

    // Conditional.
    let (code, _, body) = get_with(&url, &[("If-None-Match", &format!("\"{id}\""))]);
    assert_eq!((code, body.len()), (304, 0));
    let (code, _, _) = get_with(&url, &[("If-None-Match", "\"other\"")]);
    assert_eq!(code, 200);

    // Blobs: same semantics, by id.
    let blob = node.url(&format!("/api/v1/blobs/{id}"));
    let (code, _, body) = get_with(&blob, &[("Range", "bytes=0-9")]);
    assert_eq!((code, body.as_slice()), (206, &data[..10]));
    let (code, body) = get(&node.url("/api/v1/blobs/not-a-hash"));
    assert_eq!(code, 400);
    assert!(error_of(&body).contains("invalid content id"));
    let (code, _) = get(&node.url(&format!("/api/v1/blobs/{}", "0".repeat(64))));
    assert_eq!(code, 404);
}

#[test]
fn list_with_prefix_and_paging_then_delete() {
    let node = TestNode::start();
    for i in 0..25 {
        assert_eq!(
            put(&node.url(&format!("/api/v1/files/docs/{i:02}.txt")), format!("doc {i}").as_bytes()).0,
            201
        );
    }
    assert_eq!(put(&node.url("/api/v1/files/other.txt"), b"x").0, 201);

    let mut seen = Vec::new();
    let mut after = String::new();
    loop {
        let (code, body) = get(&node.url(&format!("/api/v1/files?prefix=docs/&limit=10&after={after}")));
        assert_eq!(code, 200);
        let v = json(&body);
        assert_eq!(v["total"], 25);
        let files = v["files"].as_array().unwrap();
        assert!(files.len() <= 10);
        for f in files {
            let i: u32 = f["name"].as_str().unwrap()[5..7].parse().unwrap();
            assert_eq!(f["size"].as_u64().unwrap(), format!("doc {i}").len() as u64);
            seen.push(f["name"].as_str().unwrap().to_string());
        }
        match v["next"].as_str() {
            Some(next) => after = next.to_string(),
            None => break,
        }
    }
    let expected: Vec<String> = (0..25).map(|i| format!("docs/{i:02}.txt")).collect();
    assert_eq!(seen, expected);

    // Sorting by size, descending, with offset paging.
    let (_, body) = get(&node.url("/api/v1/files?sort=size&order=desc&limit=3"));
    let v = json(&body);
    assert_eq!(v["total"], 26);
    // 15 docs of 6 bytes ("doc 10".."doc 24") sort before the 1-byte other.txt.
    assert_eq!(v["files"][0]["name"], "docs/24.txt");
    assert_eq!(v["files"][2]["name"], "docs/22.txt");
    let (code, body) = get(&node.url("/api/v1/files?sort=colour"));
    assert_eq!(code, 400);
    assert!(error_of(&body).contains("unknown sort"));
    let (code, _) = get(&node.url("/api/v1/files?limit=0"));
    assert_eq!(code, 400);
    // Regression: a huge offset overflowed (a panic in debug builds).
    let (code, body) = get(&node.url(&format!("/api/v1/files?offset={}", u64::MAX)));
    assert_eq!(code, 200);
    assert_eq!(json(&body)["files"], serde_json::json!([]));

    assert_eq!(delete(&node.url("/api/v1/files/docs/03.txt")).0, 204);
    assert_eq!(get(&node.url("/api/v1/files/docs/03.txt")).0, 404);
    let (code, body) = delete(&node.url("/api/v1/files/docs/03.txt"));
    assert_eq!(code, 404);
    assert_eq!(error_of(&body), "no such file");
    let (_, body) = get(&node.url("/api/v1/files?prefix=docs/"));
    assert_eq!(json(&body)["total"], 24);
}

#[test]
fn bad_names_are_refused_and_change_nothing() {
    let node = TestNode::start();
    assert_eq!(put(&node.url("/api/v1/files/keep"), b"keep").0, 201);
    let before = node.status();
    let long = "n".repeat(1089);
    for (path, fragment) in [
        ("/api/v1/files/a%0Ab".to_string(), "control character"),
        (format!("/api/v1/files/{long}"), "longer than"),
        ("/api/v1/files/bad%ZZ".to_string(), "percent-encoded"),
        ("/api/v1/files/%FF".to_string(), "percent-encoded"),
    ] {
        let (code, body) = put(&node.url(&path), b"data");
        assert_eq!(code, 400, "{path}");
        assert!(error_of(&body).contains(fragment), "{path}: {}", error_of(&body));
    }
    let (code, body) = put(&node.url("/api/v1/files/"), b"data");
    assert!(code == 400 || code == 404 || code == 405, "{code}");
    assert!(!error_of(&body).is_empty());
    let after = node.status();
    assert_eq!(before["files"], after["files"]);
    assert_eq!(before["logical_bytes"], after["logical_bytes"]);
    assert_eq!(get(&node.url("/api/v1/files/keep")).1, b"keep");
}

#[test]
fn uploads_over_the_limit_get_413_and_change_nothing() {
    let node = TestNode::start_with(&["--max-upload-size", "1MiB"]);
    let before = node.status();
    // Declared too large: refused before the body is read.
    let data = random_bytes(2 << 20, 5);
    let (code, body) = put(&node.url("/api/v1/files/big"), &data);
    assert_eq!(code, 413);
    assert!(error_of(&body).contains("larger than the limit"));
    // Chunked body, no length given: refused when it passes the limit.
    let res = agent()
        .put(&node.url("/api/v1/files/big2"))
        .send(ureq::SendBody::from_owned_reader(RandomReader::new(3 << 20, 6)));
    match res {
        Ok(res) => assert_eq!(res.status().as_u16(), 413),
        // The server may close the connection before the client finished sending.
        Err(e) => eprintln!("client saw the refusal as: {e}"),
    }
    // Exactly the limit is fine.
    assert_eq!(put(&node.url("/api/v1/files/fits"), &random_bytes(1 << 20, 7)).0, 201);
    assert_eq!(get(&node.url("/api/v1/files/big")).0, 404);
    assert_eq!(get(&node.url("/api/v1/files/big2")).0, 404);
    let after = node.status();
    assert_eq!(after["files"].as_u64(), before["files"].as_u64().map(|n| n + 1));
}

/// Sends a request head and part of the declared body, then drops the connection.
fn abandon_upload(node: &TestNode, name: &str, declared: usize, sent: usize) {
    let addr = node.base.trim_start_matches("http://");
    let mut s = TcpStream::connect(addr).unwrap();
    write!(s, "PUT /api/v1/files/{name} HTTP/1.1\r\nHost: x\r\nContent-Length: {declared}\r\n\r\n").unwrap();
    s.write_all(&random_bytes(sent, 9)).unwrap();
    s.flush().unwrap();
    drop(s);
}

#[test]
fn a_client_that_disconnects_mid_upload_leaves_nothing_behind() {
    let node = TestNode::start();
    abandon_upload(&node, "half.bin", 10 << 20, 3 << 20);
    abandon_upload(&node, "tiny.bin", 1000, 10);
    // The node keeps serving; the half file never appears; its chunks are collected.
    assert_eq!(put(&node.url("/api/v1/files/after"), b"fine").0, 201);
    wait_for("abandoned chunks to be collected", Duration::from_secs(90), || {
        let s = node.status();
        assert_eq!(s["files"], 1);
        // Only the one 4-byte file (plus its tag) remains.
        (s["stored_bytes"] == 4 + 16).then_some(())
    });
    assert_eq!(get(&node.url("/api/v1/files/half.bin")).0, 404);
    let (_, body) = get(&node.url("/api/v1/files"));
    assert_eq!(json(&body)["total"], 1);
}

#[test]
fn same_bytes_twice_add_almost_nothing_and_an_insertion_adds_few_chunks() {
    let node = TestNode::start();
    let data = random_bytes(64 << 20, 11);
    assert_eq!(put(&node.url("/api/v1/files/a.bin"), &data).0, 201);
    let s = node.status();
    let stored = s["stored_bytes"].as_u64().unwrap();
    assert!(stored >= 64 << 20);
    // Regression: chunks stored as single redb values made the file 2.1x the data.
    let file = s["db_file_bytes"].as_u64().unwrap();
    assert!(file < stored + stored / 3, "database file {file} bytes for {stored} stored");

    let (code, body) = put(&node.url("/api/v1/files/b.bin"), &data);
    assert_eq!(code, 201);
    assert_eq!(json(&body)["new_bytes"], 0);
    let s = node.status();
    assert_eq!(s["stored_bytes"].as_u64().unwrap(), stored, "a second name added stored bytes");
    assert_eq!(s["logical_bytes"].as_u64().unwrap(), 2 * (64 << 20));

    let mut edited = data.clone();
    let mid = data.len() / 2;
    edited.splice(mid..mid, random_bytes(100, 12));
    let (code, body) = put(&node.url("/api/v1/files/c.bin"), &edited);
    assert_eq!(code, 201);
    let growth = node.status()["stored_bytes"].as_u64().unwrap() - stored;
    assert_eq!(json(&body)["new_bytes"].as_u64().unwrap(), growth);
    assert!(growth <= 3 * MAX_CHUNK as u64, "100 inserted bytes added {growth} bytes");
    assert!(growth > 0);

    // Details show what dedup saved.
    let (_, body) = get(&node.url("/api/v1/info/c.bin"));
    let info = json(&body);
    assert!(info["shared_bytes"].as_u64().unwrap() >= (64 << 20) - growth - 100);
}

#[test]
fn a_chunk_repeated_within_a_file_is_stored_and_counted_once() {
    let node = TestNode::start();
    // Zeros cut into identical maximum-size chunks, and a random tail makes a distinct one.
    let mut data = vec![0u8; 8 << 20];
    data.extend(random_bytes(100_000, 13));
    let (code, body) = put(&node.url("/api/v1/files/zeros.bin"), &data);
    assert_eq!(code, 201);
    let stored = node.status()["stored_bytes"].as_u64().unwrap();
    assert_eq!(json(&body)["new_bytes"].as_u64().unwrap(), stored);
    assert!(stored < 2 * MAX_CHUNK as u64 + 200_000, "{stored} bytes stored for one repeated chunk");
    assert_eq!(get(&node.url("/api/v1/files/zeros.bin")).1, data);
}

#[test]
fn no_plaintext_reaches_the_data_directory() {
    let node = TestNode::start();
    let marker = b"DISTSTORE-PLAINTEXT-MARKER-7f3a";
    let mut data = Vec::new();
    while data.len() < 3 << 20 {
        data.extend_from_slice(marker);
        data.extend_from_slice(&random_bytes(200, data.len() as u64));
    }
    assert_eq!(put(&node.url("/api/v1/files/secret-plans.txt"), &data).0, 201);
    assert_eq!(put(&node.url("/api/v1/files/small-secret.txt"), marker).0, 201);
    let mut checked = 0;
    for path in files_under(&node.dir) {
        let bytes = std::fs::read(&path).unwrap();
        checked += bytes.len();
        assert!(!bytes.windows(marker.len()).any(|w| w == marker), "plaintext found in {}", path.display());
    }
    assert!(checked > 3 << 20, "the data directory holds the content ({checked} bytes)");
    // The secret file is private.
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(node.dir.join("secret")).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
}

#[test]
fn deleted_content_is_collected_and_the_space_shows() {
    let node = TestNode::start();
    let data = random_bytes(5 << 20, 13);
    assert_eq!(put(&node.url("/api/v1/files/one"), &data).0, 201);
    assert_eq!(put(&node.url("/api/v1/files/two"), &data).0, 201);
    let stored = node.status()["stored_bytes"].as_u64().unwrap();
    assert_eq!(delete(&node.url("/api/v1/files/one")).0, 204);
    // Still named once: nothing may go.
    let s = node.status();
    assert_eq!(s["stored_bytes"].as_u64().unwrap(), stored);
    assert_eq!(get(&node.url("/api/v1/files/two")).1.len(), data.len());
    assert_eq!(delete(&node.url("/api/v1/files/two")).0, 204);
    wait_for("the collector to free the chunks", Duration::from_secs(90), || {
        (node.status()["stored_bytes"] == 0).then_some(())
    });
    assert_eq!(node.status()["logical_bytes"], 0);
    assert_eq!(get(&node.url(&format!("/api/v1/blobs/{}", sha256_hex(&data)))).0, 404);
}

#[test]
fn the_original_api_still_works() {
    let node = TestNode::start();
    let boundary = "XyZ123";
    let form = |parts: &[(&str, Option<&str>, &[u8])]| {
        let mut body = Vec::new();
        for (name, filename, content) in parts {
            write!(body, "--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"").unwrap();
            if let Some(f) = filename {
                write!(body, "; filename=\"{f}\"\r\nContent-Type: application/octet-stream").unwrap();
            }
            write!(body, "\r\n\r\n").unwrap();
            body.extend_from_slice(content);
            write!(body, "\r\n").unwrap();
        }
        write!(body, "--{boundary}--\r\n").unwrap();
        body
    };
    let store = |body: Vec<u8>| {
        let res = agent()
            .post(&node.url("/api/store"))
            .header("Content-Type", &format!("multipart/form-data; boundary={boundary}"))
            .send(&body[..])
            .unwrap();
        let code = res.status().as_u16();
        (code, res.into_body().read_to_vec().unwrap())
    };
    let content = random_bytes(300_000, 14);
    let (code, body) = store(form(&[("key", None, b"report.pdf"), ("file", Some("r.pdf"), &content)]));
    assert_eq!((code, body.as_slice()), (200, &b"File stored successfully"[..]));
    // The file part first, then the key.
    let (code, _) = store(form(&[("file", Some("n.txt"), b"notes"), ("key", None, b"dir/notes.txt")]));
    assert_eq!(code, 200);

    let (code, head, body) = get_with(&node.url("/api/get?key=report.pdf"), &[]);
    assert_eq!(code, 200);
    assert!(body == content);
    assert!(head["content-disposition"].to_str().unwrap().starts_with("attachment; filename=\"report.pdf\""));
    assert_eq!(head["content-type"], "application/octet-stream");
    let (code, body) = get(&node.url("/api/list"));
    assert_eq!(code, 200);
    assert_eq!(json(&body), serde_json::json!(["dir/notes.txt", "report.pdf"]));
    let (code, body) = get(&node.url("/api/v1/files/dir/notes.txt"));
    assert_eq!((code, body.as_slice()), (200, &b"notes"[..]));

    let res = agent().delete(&node.url("/api/delete?key=report.pdf")).call().unwrap();
    assert_eq!(res.status().as_u16(), 200);
    assert_eq!(
        json(&res.into_body().read_to_vec().unwrap()),
        serde_json::json!({"message": "File deleted successfully"})
    );
    // The neighbour key survives (the original's delete removed neighbouring keys).
    assert_eq!(json(&get(&node.url("/api/list")).1), serde_json::json!(["dir/notes.txt"]));

    // Errors.
    let (code, body) = get(&node.url("/api/get?key=missing"));
    assert_eq!((code, error_of(&body).as_str()), (404, "no such file"));
    let (code, body) = get(&node.url("/api/get"));
    assert_eq!((code, error_of(&body).contains("key")), (400, true));
    let (code, body) = delete(&node.url("/api/delete?key=missing"));
    assert_eq!(code, 404, "{}", String::from_utf8_lossy(&body));
    let (code, body) = store(form(&[("key", None, b"only-key")]));
    assert_eq!((code, error_of(&body).as_str()), (400, "missing `file` field"));
    let (code, body) = store(form(&[("file", Some("f"), b"data")]));
    assert_eq!((code, error_of(&body).as_str()), (400, "missing `key` field"));
    let (code, body) =
        store(b"--XyZ123\r\nContent-Disposition: form-data; name=\"key\"\r\n\r\nunterminated".to_vec());
    assert_eq!(code, 400);
    assert!(error_of(&body).contains("multipart"), "{}", error_of(&body));
    let res = agent().post(&node.url("/api/store")).header("Content-Type", "text/plain").send("x").unwrap();
    assert_eq!(res.status().as_u16(), 400);
    let res = agent().get(&node.url("/api/store")).call().unwrap();
    assert_eq!(res.status().as_u16(), 405);
    assert_eq!(json(&get(&node.url("/api/list")).1), serde_json::json!(["dir/notes.txt"]));
}

#[test]
fn an_api_token_guards_the_api_but_not_health() {
    let token = "0123456789abcdef0123456789abcdef";
    let node = TestNode::start_with(&["--api-token", token]);
    let (code, body) = get(&node.url("/api/v1/files"));
    assert_eq!(code, 401);
    assert!(error_of(&body).contains("token"));
    let (code, _) = put(&node.url("/api/v1/files/x"), b"x");
    assert_eq!(code, 401);
    let (code, _, _) = get_with(&node.url("/api/v1/files"), &[("Authorization", "Bearer wrong")]);
    assert_eq!(code, 401);
    let bearer = format!("Bearer {token}");
    let (code, _, _) = get_with(&node.url("/api/v1/files"), &[("Authorization", &bearer)]);
    assert_eq!(code, 200);
    assert_eq!(get(&node.url("/health")).0, 200);
    assert_eq!(get(&node.url("/metrics")).0, 401);
}

#[test]
fn a_non_loopback_listener_without_a_token_is_refused_at_start() {
    let tmp = tempfile::tempdir().unwrap();
    let args = vec!["--listen".to_string(), "0.0.0.0:0".to_string()];
    let err =
        spawn_node(&tmp.path().join("d"), &args, &tmp.path().join("log"), None).expect_err("must refuse");
    assert!(err.contains("--api-token"), "{err}");
}

#[test]
fn metrics_and_status_report_the_totals() {
    let node = TestNode::start();
    assert_eq!(put(&node.url("/api/v1/files/m1"), &random_bytes(1000, 1)).0, 201);
    let s = node.status();
    assert_eq!(s["files"], 1);
    assert_eq!(s["logical_bytes"], 1000);
    assert_eq!(s["stored_bytes"], 1016);
    assert_eq!(s["node_id"].as_str().unwrap().len(), 32);
    let (code, body) = get(&node.url("/metrics"));
    assert_eq!(code, 200);
    let text = String::from_utf8(body).unwrap();
    assert!(text.contains("diststore_logical_bytes 1000"), "{text}");
    assert!(text.contains("diststore_files 1"));
}

#[test]
fn the_help_describes_every_flag() {
    let out = std::process::Command::new(BIN).arg("--help").output().unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    for flag in
        ["--listen", "--data-dir", "--secret-file", "--max-upload-size", "--api-token", "DISTSTORE_LISTEN"]
    {
        assert!(text.contains(flag), "--help lacks {flag}:\n{text}");
    }
    let mut s = String::new();
    std::process::Command::new(BIN)
        .args(["serve", "--help"])
        .output()
        .unwrap()
        .stdout
        .as_slice()
        .read_to_string(&mut s)
        .unwrap();
    assert!(s.contains("--data-dir"));
}
