//! Bulk downloads: `POST /api/v1/zip` streams a zip of chosen names and whole folders. Real
//! binary, real HTTP; the zips are read back with Python's `zipfile`, an independent reader.

mod common;

use std::collections::BTreeMap;
use std::io::Read;
use std::process::Command;

use common::*;
use serde_json::{Value, json};

/// POSTs `body` with `content_type`: (status, headers, body).
fn post(url: &str, content_type: &str, body: &[u8]) -> (u16, ureq::http::HeaderMap, Vec<u8>) {
    let mut res = agent().post(url).header("Content-Type", content_type).send(body).expect("request failed");
    let code = res.status().as_u16();
    let head = res.headers().clone();
    let body = res.body_mut().with_config().limit(u64::MAX).read_to_vec().expect("read body");
    (code, head, body)
}

fn zip_of(node: &TestNode, selection: &Value) -> (u16, ureq::http::HeaderMap, Vec<u8>) {
    post(&node.url("/api/v1/zip"), "application/json", selection.to_string().as_bytes())
}

fn put_with_mtime(node: &TestNode, name: &str, body: &[u8], mtime: &str) {
    let url = node.url(&format!("/api/v1/files/{}", encode(name)));
    let res = agent().put(&url).header("X-DistStore-Mtime", mtime).send(body).expect("put");
    assert_eq!(res.status().as_u16(), 201, "put {name}");
}

fn encode(name: &str) -> String {
    name.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~/".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// What Python's `zipfile` makes of a zip: `testzip()`'s verdict (CRC of every member), and
/// each member's SHA-256, size and date.
fn read_with_python(zip: &[u8]) -> (Value, BTreeMap<String, Value>) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("out.zip");
    std::fs::write(&path, zip).unwrap();
    let script = r#"
import hashlib, json, sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z:
    bad = z.testzip()
    members = {i.filename: {"sha256": hashlib.sha256(z.read(i)).hexdigest(), "size": i.file_size,
               "date": list(i.date_time), "stored": i.compress_type == zipfile.ZIP_STORED,
               "utf8": bool(i.flag_bits & 0x800)} for i in z.infolist()}
print(json.dumps({"bad": bad, "members": members}))
"#;
    let out = Command::new("python3").arg("-c").arg(script).arg(&path).output().expect("python3 runs");
    assert!(out.status.success(), "python could not read the zip: {}", String::from_utf8_lossy(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let members = v["members"].as_object().unwrap().iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    (v["bad"].clone(), members)
}

#[test]
fn a_zip_of_files_and_a_folder_holds_every_byte() {
    let node = TestNode::start();
    let big = random_bytes(2 * 1024 * 1024 + 12_345, 7);
    let files: Vec<(&str, Vec<u8>)> = vec![
        ("docs/readme.txt", b"hello zip\n".to_vec()),
        ("docs/empty", Vec::new()),
        ("docs/deep/big.bin", big),
        ("notes/ünïcødé 文件.txt", "grüße\n".as_bytes().to_vec()),
        ("top.txt", b"at the top".to_vec()),
        // Not selected: must not appear.
        ("docs2/not-me", b"x".to_vec()),
        ("other/not-me", b"y".to_vec()),
    ];
    for (name, body) in &files {
        let (code, _) = put(&node.url(&format!("/api/v1/files/{}", encode(name))), body);
        assert_eq!(code, 201, "put {name}");
    }
    // 2023-11-14 22:13:20 UTC, a time the client kept.
    put_with_mtime(&node, "docs/dated.txt", b"dated", "1700000000");

    let selection = json!({"names": ["top.txt", "notes/ünïcødé 文件.txt"], "prefixes": ["docs/"]});
    let (code, head, zip) = zip_of(&node, &selection);
    assert_eq!(code, 200, "{}", String::from_utf8_lossy(&zip));
    assert_eq!(head.get("content-type").unwrap(), "application/zip");
    assert!(head.get("content-disposition").unwrap().to_str().unwrap().starts_with("attachment;"));

    let (bad, members) = read_with_python(&zip);
    assert_eq!(bad, Value::Null, "testzip() found a member whose CRC does not match");
    let mut expected: BTreeMap<String, String> = files
        .iter()
        .filter(|(n, _)| !n.contains("not-me"))
        .map(|(n, b)| (n.to_string(), sha256_hex(b)))
        .collect();
    expected.insert("docs/dated.txt".into(), sha256_hex(b"dated"));
    let got: BTreeMap<String, String> =
        members.iter().map(|(n, m)| (n.clone(), m["sha256"].as_str().unwrap().to_string())).collect();
    assert_eq!(got, expected, "every selected file once, byte for byte, and nothing else");
    for (name, m) in &members {
        assert_eq!(m["stored"], true, "{name} is stored, not compressed");
        if !name.is_ascii() {
            assert_eq!(m["utf8"], true, "{name} carries the UTF-8 flag");
        }
    }
    assert_eq!(members["docs/deep/big.bin"]["size"], 2 * 1024 * 1024 + 12_345);
    assert_eq!(members["docs/dated.txt"]["date"], json!([2023, 11, 14, 22, 13, 20]));

    // One folder alone is named for the folder.
    let (code, head, zip) = zip_of(&node, &json!({"prefixes": ["docs/deep/"]}));
    assert_eq!(code, 200);
    assert!(head.get("content-disposition").unwrap().to_str().unwrap().contains("filename=\"deep.zip\""));
    assert_eq!(read_with_python(&zip).1.keys().collect::<Vec<_>>(), ["docs/deep/big.bin"]);
}

#[test]
fn a_page_form_gets_the_zip_too() {
    let node = TestNode::start();
    for (name, body) in [("a/one", &b"1"[..]), ("a/two", b"22")] {
        assert_eq!(put(&node.url(&format!("/api/v1/files/{name}")), body).0, 201);
    }
    let selection = json!({"prefixes": ["a/"]}).to_string();
    let form: String = url_encode_form(&[("selection", &selection)]);
    let (code, _, zip) = post(&node.url("/api/v1/zip"), "application/x-www-form-urlencoded", form.as_bytes());
    assert_eq!(code, 200, "{}", String::from_utf8_lossy(&zip));
    let (bad, members) = read_with_python(&zip);
    assert_eq!(bad, Value::Null);
    assert_eq!(members.keys().collect::<Vec<_>>(), ["a/one", "a/two"]);

    // A page of another site may not post it (the CSRF guard).
    let res = agent()
        .post(node.url("/api/v1/zip"))
        .header("Content-Type", "application/x-www-form-urlencoded")
        .header("Origin", "http://evil.example")
        .send(form.as_bytes())
        .unwrap();
    assert_eq!(res.status().as_u16(), 403);
}

fn url_encode_form(pairs: &[(&str, &str)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| {
            let enc = |s: &str| {
                s.bytes()
                    .map(|b| {
                        if b.is_ascii_alphanumeric() { (b as char).to_string() } else { format!("%{b:02X}") }
                    })
                    .collect::<String>()
            };
            format!("{}={}", enc(k), enc(v))
        })
        .collect::<Vec<_>>()
        .join("&")
}

#[test]
fn bad_selections_get_a_clear_error_before_any_zip_byte() {
    let node = TestNode::start();
    put(&node.url("/api/v1/files/here.txt"), b"here");

    let (code, head, body) = zip_of(&node, &json!({"names": ["here.txt", "missing.txt"]}));
    assert_eq!(code, 404);
    assert_eq!(head.get("content-type").unwrap(), "application/json");
    assert!(error_of(&body).contains("missing.txt"), "{}", error_of(&body));

    let (code, _, body) = zip_of(&node, &json!({"prefixes": ["nothing-here/"]}));
    assert_eq!(code, 404, "an empty folder does not exist");
    assert!(error_of(&body).contains("nothing-here/"));

    let (code, _, body) = zip_of(&node, &json!({"prefixes": ["no-slash"]}));
    assert_eq!(code, 400);
    assert!(error_of(&body).contains("ends in /"));

    let (code, _, body) = zip_of(&node, &json!({}));
    assert_eq!(code, 400);
    assert!(error_of(&body).contains("at least one"));

    let (code, _, body) = post(&node.url("/api/v1/zip"), "application/json", b"{\"names\": [");
    assert_eq!(code, 400);
    assert!(error_of(&body).contains("expected JSON"));

    let many: Vec<String> = (0..10_001).map(|i| format!("f{i}")).collect();
    let (code, _, body) = zip_of(&node, &json!({ "names": many }));
    assert_eq!(code, 413);
    assert!(error_of(&body).contains("at most 10000 files"), "{}", error_of(&body));

    let (code, _, body) = zip_of(&node, &json!({"names": [".diststore/x"]}));
    assert_eq!(code, 400, "the node's own metadata is not reachable: {}", String::from_utf8_lossy(&body));
}

#[test]
fn a_file_that_fails_verification_cuts_the_zip() {
    let mut node = TestNode::start();
    put(&node.url("/api/v1/files/d/big.bin"), &random_bytes(3 * 1024 * 1024, 3));
    node.terminate();
    damage_a_stored_chunk(&node.dir);
    node.start_again();
    let res = agent()
        .post(node.url("/api/v1/zip"))
        .header("Content-Type", "application/json")
        .send(json!({"prefixes": ["d/"]}).to_string().as_bytes())
        .unwrap();
    // The status was sent before the damage was met; the body must then not end as if whole.
    assert_eq!(res.status().as_u16(), 200);
    let mut body = Vec::new();
    let read = res.into_body().into_reader().read_to_end(&mut body);
    assert!(
        read.is_err(),
        "the body ended cleanly after {} bytes of a zip with a damaged member",
        body.len()
    );
}
