//! The native API a client builds on: conditional writes, move and copy, modification times,
//! folders and search in listings, share links, and the API token's rules. Real binary, real
//! HTTP.

mod common;

use std::sync::{Arc, Barrier};
use std::time::Duration;

use common::cluster::Cluster;
use common::*;
use serde_json::{Value, json};

const TOKEN: &str = "0123456789abcdef0123456789abcdef";

fn post_json(url: &str, headers: &[(&str, &str)], value: &Value) -> (u16, ureq::http::HeaderMap, Vec<u8>) {
    let mut all = vec![("Content-Type", "application/json")];
    all.extend_from_slice(headers);
    call("POST", url, &all, Some(value.to_string().as_bytes()))
}

fn file_url(node: &TestNode, name: &str) -> String {
    node.url(&format!("/api/v1/files/{name}"))
}

fn etag_of(put_body: &[u8]) -> String {
    format!("\"{}\"", json(put_body)["id"].as_str().unwrap())
}

fn list(node: &TestNode, query: &str) -> Value {
    let (code, body) = get(&node.url(&format!("/api/v1/files?{query}")));
    assert_eq!(code, 200, "{}", String::from_utf8_lossy(&body));
    json(&body)
}

fn names(listing: &Value) -> Vec<String> {
    listing["files"].as_array().unwrap().iter().map(|f| f["name"].as_str().unwrap().to_owned()).collect()
}

#[test]
fn if_none_match_star_creates_only_and_if_match_guards_writes_and_deletes() {
    let node = TestNode::start();
    let url = file_url(&node, "doc.txt");
    let (code, _, first) = call("PUT", &url, &[("If-None-Match", "*")], Some(b"one"));
    assert_eq!(code, 201, "{}", String::from_utf8_lossy(&first));
    let (code, _, body) = call("PUT", &url, &[("If-None-Match", "*")], Some(b"two"));
    assert_eq!(code, 412, "an existing name is refused: {}", String::from_utf8_lossy(&body));
    assert!(error_of(&body).contains("precondition"), "{}", error_of(&body));
    assert_eq!(get(&url).1, b"one", "a refused write changes nothing");

    let one = etag_of(&first);
    let (code, _, second) = call("PUT", &url, &[("If-Match", &one)], Some(b"two"));
    assert_eq!(code, 201);
    let (code, _, _) = call("PUT", &url, &[("If-Match", &one)], Some(b"three"));
    assert_eq!(code, 412, "a stale ETag is refused");
    let (code, _, _) = call("PUT", &file_url(&node, "absent"), &[("If-Match", "*")], Some(b"x"));
    assert_eq!(code, 412, "If-Match: * needs the name to exist");
    assert_eq!(get(&file_url(&node, "absent")).0, 404);

    let (code, _, _) = call("DELETE", &url, &[("If-Match", &one)], None);
    assert_eq!(code, 412);
    assert_eq!(get(&url).1, b"two");
    let (code, _, _) = call("DELETE", &url, &[("If-Match", &etag_of(&second))], None);
    assert_eq!(code, 204);
    assert_eq!(get(&url).0, 404);
}

#[test]
fn racing_conditional_writes_let_exactly_one_win() {
    let node = TestNode::start();
    const WRITERS: usize = 8;
    let race = |name: &str, header: (&'static str, String)| -> Vec<(u16, Vec<u8>)> {
        let barrier = Arc::new(Barrier::new(WRITERS));
        let url = file_url(&node, name);
        let handles: Vec<_> = (0..WRITERS)
            .map(|i| {
                let (barrier, url, header) = (barrier.clone(), url.clone(), header.clone());
                std::thread::spawn(move || {
                    let data = format!("writer {i}").into_bytes();
                    barrier.wait();
                    let (code, _, _) = call("PUT", &url, &[(header.0, &header.1)], Some(&data));
                    (code, data)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    };
    // Create-only: one creator.
    let results = race("race/create", ("If-None-Match", "*".into()));
    let winners: Vec<_> = results.iter().filter(|(c, _)| *c == 201).collect();
    assert_eq!(winners.len(), 1, "{results:?}");
    assert!(results.iter().all(|(c, _)| *c == 201 || *c == 412), "{results:?}");
    assert_eq!(get(&file_url(&node, "race/create")).1, winners[0].1, "the winner's bytes are stored");

    // Compare-and-set from one version: one writer moves it on, the others see it changed.
    let (code, body) = put(&file_url(&node, "race/cas"), b"base");
    assert_eq!(code, 201);
    let results = race("race/cas", ("If-Match", etag_of(&body)));
    let winners: Vec<_> = results.iter().filter(|(c, _)| *c == 201).collect();
    assert_eq!(winners.len(), 1, "{results:?}");
    assert!(results.iter().all(|(c, _)| *c == 201 || *c == 412), "{results:?}");
    assert_eq!(get(&file_url(&node, "race/cas")).1, winners[0].1);
}

#[test]
fn conditional_reads_by_date_and_etag() {
    let node = TestNode::start();
    let url = file_url(&node, "dated.txt");
    let (_, body) = put(&url, b"dated");
    let (code, head, _) = get_with(&url, &[]);
    assert_eq!(code, 200);
    let last_modified = head.get("last-modified").unwrap().to_str().unwrap().to_owned();
    let (code, _, body304) = get_with(&url, &[("If-Modified-Since", &last_modified)]);
    assert_eq!((code, body304.len()), (304, 0));
    let (code, _, _) = get_with(&url, &[("If-Modified-Since", "Thu, 01 Jan 2015 00:00:00 GMT")]);
    assert_eq!(code, 200);
    let (code, _, _) = get_with(&url, &[("If-Unmodified-Since", "Thu, 01 Jan 2015 00:00:00 GMT")]);
    assert_eq!(code, 412);
    let (code, _, data) = get_with(&url, &[("If-Unmodified-Since", &last_modified)]);
    assert_eq!((code, data.as_slice()), (200, &b"dated"[..]));
    let (code, _, _) = get_with(&url, &[("If-Match", "\"00\"")]);
    assert_eq!(code, 412);
    let (code, _, _) = get_with(&url, &[("If-Match", &etag_of(&body))]);
    assert_eq!(code, 200);
    // If-None-Match wins over If-Modified-Since (RFC 9110).
    let (code, _, _) =
        get_with(&url, &[("If-None-Match", "\"other\""), ("If-Modified-Since", &last_modified)]);
    assert_eq!(code, 200);
}

#[test]
fn a_move_adds_no_stored_bytes_and_a_prefix_moves_every_name_under_it() {
    let node = TestNode::start();
    let data = random_bytes(300_000, 7);
    let (code, body) = put(&file_url(&node, "a/big.bin"), &data);
    assert_eq!(code, 201);
    let id = json(&body)["id"].clone();
    let stored = node.status()["stored_bytes"].as_u64().unwrap();

    let (code, _, body) =
        post_json(&node.url("/api/v1/move"), &[], &json!({"from": "a/big.bin", "to": "b/big.bin"}));
    assert_eq!(code, 200, "{}", String::from_utf8_lossy(&body));
    assert_eq!(json(&body), json!({"moved": 1}));
    assert_eq!(get(&file_url(&node, "a/big.bin")).0, 404);
    let (code, back) = get(&file_url(&node, "b/big.bin"));
    assert!(code == 200 && back == data);
    let status = node.status();
    assert_eq!(status["stored_bytes"].as_u64().unwrap(), stored, "a move stores nothing");
    assert_eq!(status["files"], 1);
    assert_eq!(list(&node, "prefix=b/")["files"][0]["id"], id);

    for name in ["dir/x", "dir/sub/y", "dir/sub/z", "dirt"] {
        assert_eq!(put(&file_url(&node, name), name.as_bytes()).0, 201);
    }
    // Not overwriting an existing destination: refused, and nothing moved.
    assert_eq!(put(&file_url(&node, "new/sub/z"), b"already here").0, 201);
    let (code, _, _) =
        post_json(&node.url("/api/v1/move"), &[], &json!({"from": "dir/", "to": "new/", "overwrite": false}));
    assert_eq!(code, 412);
    assert_eq!(names(&list(&node, "prefix=dir/")), ["dir/sub/y", "dir/sub/z", "dir/x"]);
    assert_eq!(get(&file_url(&node, "new/sub/z")).1, b"already here");

    let (code, _, body) = post_json(&node.url("/api/v1/move"), &[], &json!({"from": "dir/", "to": "new/"}));
    assert_eq!(code, 200, "{}", String::from_utf8_lossy(&body));
    assert_eq!(json(&body), json!({"moved": 3}));
    assert_eq!(names(&list(&node, "prefix=dir")), ["dirt"], "the prefix is a folder, not a string prefix");
    assert_eq!(names(&list(&node, "prefix=new/")), ["new/sub/y", "new/sub/z", "new/x"]);
    assert_eq!(get(&file_url(&node, "new/sub/z")).1, b"dir/sub/z", "overwrite is the default");

    let (code, _, _) = post_json(&node.url("/api/v1/move"), &[], &json!({"from": "nothing/", "to": "x/"}));
    assert_eq!(code, 404);
    let (code, _, _) = post_json(&node.url("/api/v1/move"), &[], &json!({"from": "missing", "to": "x"}));
    assert_eq!(code, 404);
    let (code, _, _) =
        post_json(&node.url("/api/v1/move"), &[], &json!({"from": "new/", "to": "new/deeper/"}));
    assert_eq!(code, 400, "into itself");
    let (code, _, _) = post_json(&node.url("/api/v1/move"), &[], &json!({"from": "new/", "to": "flat"}));
    assert_eq!(code, 400);
    let (code, _, _) = post_json(&node.url("/api/v1/move"), &[], &json!({"from": "new/x"}));
    assert_eq!(code, 400);
    let huge = json!({"from": "new/x", "to": "y".repeat(100_000)});
    assert_eq!(post_json(&node.url("/api/v1/move"), &[], &huge).0, 413, "JSON bodies are bounded");
}

#[test]
fn a_copy_names_the_same_content_twice() {
    let node = TestNode::start();
    let data = random_bytes(200_000, 9);
    assert_eq!(put(&file_url(&node, "src/one"), &data).0, 201);
    assert_eq!(put(&file_url(&node, "src/two"), b"two").0, 201);
    let stored = node.status()["stored_bytes"].as_u64().unwrap();
    let (code, _, body) =
        post_json(&node.url("/api/v1/copy"), &[], &json!({"from": "src/one", "to": "dst/one"}));
    assert_eq!((code, json(&body)), (200, json!({"copied": 1})));
    assert_eq!(get(&file_url(&node, "src/one")).1, data);
    assert_eq!(get(&file_url(&node, "dst/one")).1, data);
    let (code, _, _) = post_json(
        &node.url("/api/v1/copy"),
        &[],
        &json!({"from": "src/two", "to": "dst/one", "overwrite": false}),
    );
    assert_eq!(code, 412);
    assert_eq!(get(&file_url(&node, "dst/one")).1, data);
    let (code, _, body) = post_json(&node.url("/api/v1/copy"), &[], &json!({"from": "src/", "to": "all/"}));
    assert_eq!((code, json(&body)), (200, json!({"copied": 2})));
    let status = node.status();
    assert_eq!(status["stored_bytes"].as_u64().unwrap(), stored, "copies store nothing");
    assert_eq!(status["files"], 5);
    // Deleting the original leaves the copy whole (after a collection, too).
    assert_eq!(delete(&file_url(&node, "src/one")).0, 204);
    assert_eq!(get(&file_url(&node, "all/one")).1, data);
}

#[test]
fn the_client_modification_time_round_trips() {
    let node = TestNode::start();
    let url = file_url(&node, "photos/cat.jpg");
    let (code, _, _) = call("PUT", &url, &[("X-DistStore-Mtime", "1700000000.25")], Some(b"meow"));
    assert_eq!(code, 201);
    let listing = list(&node, "prefix=photos/");
    assert_eq!(listing["files"][0]["mtime"], "2023-11-14T22:13:20.250Z");
    assert!(listing["files"][0]["modified"].as_str().unwrap().starts_with("20"));
    let (_, head, _) = get_with(&url, &[]);
    assert_eq!(head.get("x-diststore-mtime").unwrap(), "1700000000.25");
    // Without one, none is reported.
    assert_eq!(put(&file_url(&node, "photos/dog.jpg"), b"woof").0, 201);
    assert!(list(&node, "prefix=photos/dog")["files"][0].get("mtime").is_none());
    // A move keeps it.
    let (code, _, _) =
        post_json(&node.url("/api/v1/move"), &[], &json!({"from": "photos/cat.jpg", "to": "cat.jpg"}));
    assert_eq!(code, 200);
    assert_eq!(list(&node, "prefix=cat")["files"][0]["mtime"], "2023-11-14T22:13:20.250Z");
    // Regression (found by schemathesis): a time past year 9999 was kept and listed as a
    // date no RFC 3339 parser reads; such times are refused now.
    for bad in ["yesterday", "-5", "1.2.3", "1e9", "", "253402300800"] {
        let (code, _, body) = call("PUT", &url, &[("X-DistStore-Mtime", bad)], Some(b"x"));
        assert_eq!(code, 400, "{bad:?}: {}", String::from_utf8_lossy(&body));
    }
}

#[test]
fn listings_fold_folders_and_search_ignoring_case() {
    let node = TestNode::start();
    for name in
        ["top.txt", "a/one.TXT", "a/b/two.txt", "a/b/c/three.md", "a/d/four.txt", "a/zz.txt", "e/Report.pdf"]
    {
        assert_eq!(put(&file_url(&node, name), name.as_bytes()).0, 201);
    }
    let root = list(&node, "delimiter=/");
    assert_eq!(names(&root), ["top.txt"]);
    assert_eq!(root["folders"], json!(["a/", "e/"]));
    let a = list(&node, "prefix=a/&delimiter=/");
    assert_eq!(names(&a), ["a/one.TXT", "a/zz.txt"]);
    assert_eq!(a["folders"], json!(["a/b/", "a/d/"]));
    assert_eq!(a["total"], 4, "files and folders, each once");
    // Paging through folders and files in name order: each item once.
    let mut seen = Vec::new();
    let mut after = String::new();
    loop {
        let page = list(&node, &format!("prefix=a/&delimiter=/&limit=1&after={after}"));
        seen.extend(names(&page));
        seen.extend(page["folders"].as_array().unwrap().iter().map(|f| f.as_str().unwrap().to_owned()));
        match page["next"].as_str() {
            Some(next) => after = next.to_owned(),
            None => break,
        }
    }
    assert_eq!(seen, ["a/b/", "a/d/", "a/one.TXT", "a/zz.txt"]);
    // Search matches the whole name, any case.
    assert_eq!(
        names(&list(&node, "search=TXT")),
        ["a/b/two.txt", "a/d/four.txt", "a/one.TXT", "a/zz.txt", "top.txt"]
    );
    assert_eq!(names(&list(&node, "search=report")), ["e/Report.pdf"]);
    assert_eq!(names(&list(&node, "search=b/t")), ["a/b/two.txt"]);
    let folded = list(&node, "search=three&delimiter=/");
    assert_eq!((names(&folded).len(), folded["folders"].clone()), (0, json!(["a/"])));
    assert_eq!(get(&node.url("/api/v1/files?delimiter=x")).0, 400);
}

/// Size and modified orders page by cursor from the node's index, in a folder and over the
/// whole store, both ways (and descending names by cursor): every file once, in order, ties by name; the folder's folders come
/// by name beside them; an `after` that is gone is refused, not silently restarted.
#[test]
fn listings_by_size_and_time_page_by_cursor() {
    let node = TestNode::start();
    // Sizes repeat (ties go by name); each put is later than the one before.
    let files = ["d/e.bin", "d/a.bin", "d/c.bin", "d/sub/x.bin", "d/b.bin", "top.bin", "d/other/y.bin"];
    let sizes = [30, 10, 20, 5, 20, 40, 1];
    for (name, size) in files.iter().zip(sizes) {
        assert_eq!(put(&file_url(&node, name), &vec![b'x'; size]).0, 201);
    }
    let walk = |query: &str| -> Vec<String> {
        let mut seen = Vec::new();
        let mut after = String::new();
        loop {
            let page = list(&node, &format!("{query}&limit=2&after={after}"));
            seen.extend(names(&page));
            match page["next"].as_str() {
                Some(next) => after = next.to_owned(),
                None => return seen,
            }
        }
    };
    assert_eq!(walk("prefix=d/&delimiter=/&sort=size"), ["d/a.bin", "d/b.bin", "d/c.bin", "d/e.bin"]);
    assert_eq!(
        walk("prefix=d/&delimiter=/&sort=size&order=desc"),
        ["d/e.bin", "d/c.bin", "d/b.bin", "d/a.bin"]
    );
    assert_eq!(walk("prefix=d/&delimiter=/&sort=modified"), ["d/e.bin", "d/a.bin", "d/c.bin", "d/b.bin"]);
    // Descending reverses the whole order, ties included.
    assert_eq!(walk("sort=size&order=desc")[..3], ["top.bin", "d/e.bin", "d/c.bin"]);
    assert_eq!(
        walk("sort=modified&order=desc"),
        files.iter().rev().map(|n| n.to_string()).collect::<Vec<_>>()
    );
    assert_eq!(walk("delimiter=/&sort=size"), ["top.bin"]);
    // Descending names read backwards from the end of the prefix, by cursor too.
    let mut all: Vec<String> = files.iter().map(|n| n.to_string()).collect();
    all.sort();
    all.reverse();
    assert_eq!(walk("order=desc"), all);
    assert_eq!(walk("order=desc&prefix=d/").len(), 6);
    assert_eq!(walk("order=desc&prefix=d/")[0], "d/sub/x.bin");
    let page = list(&node, "prefix=d/&delimiter=/&sort=size&limit=2");
    assert_eq!(page["folders"], json!(["d/other/", "d/sub/"]));
    assert_eq!(page["total"], 6, "four files and two folders");
    // The first page's cursor, then that file deleted: nothing to go on from.
    assert_eq!(page["next"], "d/b.bin");
    assert_eq!(call("DELETE", &file_url(&node, "d/b.bin"), &[], None).0, 204);
    let (code, body) = get(&node.url("/api/v1/files?prefix=d/&delimiter=/&sort=size&after=d/b.bin"));
    assert_eq!(code, 400);
    assert!(error_of(&body).contains("first page"), "{}", error_of(&body));
    // A file of another folder is not a cursor of this one.
    assert_eq!(get(&node.url("/api/v1/files?prefix=d/&delimiter=/&sort=size&after=top.bin")).0, 400);
    assert_eq!(walk("prefix=d/&delimiter=/&sort=size"), ["d/a.bin", "d/c.bin", "d/e.bin"]);
}

/// The status of a GET of a share link, with no API token.
fn open_share(url: &str) -> (u16, Vec<u8>) {
    let (code, _, body) = get_with(url, &[]);
    (code, body)
}

fn share(node: &TestNode, name: &str, expires_in: u64) -> Value {
    let auth = format!("Bearer {TOKEN}");
    let (code, _, body) = post_json(
        &node.url("/api/v1/shares"),
        &[("Authorization", &auth)],
        &json!({"name": name, "expires_in": expires_in}),
    );
    assert_eq!(code, 201, "{}", String::from_utf8_lossy(&body));
    json(&body)
}

#[test]
fn share_links_work_without_the_token_until_they_expire_or_are_revoked() {
    let node = TestNode::start_with(&["--api-token", TOKEN]);
    let auth = format!("Bearer {TOKEN}");
    let data = random_bytes(100_000, 3);
    let (code, _, _) =
        call("PUT", &file_url(&node, "shared/report.pdf"), &[("Authorization", &auth)], Some(&data));
    assert_eq!(code, 201);

    let link = share(&node, "shared/report.pdf", 3600);
    let url = link["url"].as_str().unwrap().to_owned();
    assert_eq!(url, node.url(link["path"].as_str().unwrap()));
    assert!(link["expires"].as_str().unwrap().ends_with('Z'));
    assert!(!url.contains(TOKEN), "the link carries no API token");
    assert_eq!(open_share(&url), (200, data.clone()));
    let (code, head, part) = get_with(&url, &[("Range", "bytes=10-19")]);
    assert_eq!((code, part.as_slice()), (206, &data[10..20]));
    assert_eq!(head.get("etag").unwrap().to_str().unwrap(), format!("\"{}\"", sha256_hex(&data)));
    let (code, head, body) = call("HEAD", &url, &[], None);
    assert_eq!((code, body.len()), (200, 0));
    assert_eq!(head.get("content-length").unwrap(), &data.len().to_string());
    // Read-only: the link opens nothing else and changes nothing.
    assert_eq!(call("PUT", &url, &[], Some(b"x")).0, 405);
    assert_eq!(call("DELETE", &url, &[], None).0, 405);

    // Forged: another name in the payload, or a MAC from elsewhere.
    let token = link["path"].as_str().unwrap().strip_prefix("/share/").unwrap();
    let (payload, mac) = token.split_once('.').unwrap();
    let mut bad = payload.as_bytes().to_vec();
    let last = bad.len() - 2;
    bad[last] = if bad[last] == b'A' { b'B' } else { b'A' };
    let forged = format!("{}.{mac}", String::from_utf8(bad).unwrap());
    assert_eq!(open_share(&node.url(&format!("/share/{forged}"))).0, 403);
    assert_eq!(open_share(&node.url("/share/garbage")).0, 403);

    // Expired: a one-second link stops opening (bounded wait for the clock, not a sleep).
    let short = share(&node, "shared/report.pdf", 1);
    let short_url = short["url"].as_str().unwrap().to_owned();
    wait_for("the short link to expire", Duration::from_secs(5), || {
        let (code, body) = open_share(&short_url);
        (code == 403).then(|| error_of(&body))
    })
    .contains("expired")
    .then_some(())
    .expect("says it expired");

    // Revoked: every link made so far stops; a new one works.
    let (code, _, _) = call("DELETE", &node.url("/api/v1/shares"), &[("Authorization", &auth)], None);
    assert_eq!(code, 204);
    let (code, body) = open_share(&url);
    assert_eq!(code, 403);
    assert!(error_of(&body).contains("revoked"), "{}", error_of(&body));
    let fresh = share(&node, "shared/report.pdf", 3600);
    assert_eq!(open_share(fresh["url"].as_str().unwrap()).0, 200);
    // Creating links needs the token; a missing name is 404.
    let (code, _, _) = post_json(&node.url("/api/v1/shares"), &[], &json!({"name": "shared/report.pdf"}));
    assert_eq!(code, 401);
    let (code, _, _) =
        post_json(&node.url("/api/v1/shares"), &[("Authorization", &auth)], &json!({"name": "nope"}));
    assert_eq!(code, 404);
}

#[test]
fn a_share_link_opens_on_every_node_and_revocation_reaches_them_all() {
    let cluster = Cluster::start(2, &[]);
    let (a, b) = (&cluster.nodes[0], &cluster.nodes[1]);
    let data = random_bytes(50_000, 5);
    assert_eq!(put(&file_url(a, "c/shared.bin"), &data).0, 201);
    let (code, _, body) =
        post_json(&a.url("/api/v1/shares"), &[], &json!({"name": "c/shared.bin", "expires_in": 600}));
    assert_eq!(code, 201);
    let path = json(&body)["path"].as_str().unwrap().to_owned();
    wait_for("the link to open on the second node", Duration::from_secs(20), || {
        (open_share(&b.url(&path)) == (200, data.clone())).then_some(())
    });
    // Revoked on the second node: refused on the first too.
    assert_eq!(call("DELETE", &b.url("/api/v1/shares"), &[], None).0, 204);
    wait_for("the revocation to reach the first node", Duration::from_secs(20), || {
        (open_share(&a.url(&path)).0 == 403).then_some(())
    });
    assert_eq!(open_share(&b.url(&path)).0, 403);
}

#[test]
fn move_and_copy_reach_the_other_nodes_of_a_cluster() {
    let cluster = Cluster::start(2, &[]);
    let (a, b) = (&cluster.nodes[0], &cluster.nodes[1]);
    let data = random_bytes(400_000, 11);
    assert_eq!(put(&file_url(a, "m/file"), &data).0, 201);
    let stored = cluster.stored(&[0, 1]);
    let (code, _, _) = post_json(&a.url("/api/v1/move"), &[], &json!({"from": "m/", "to": "n/"}));
    assert_eq!(code, 200);
    let (code, _, _) = post_json(&a.url("/api/v1/copy"), &[], &json!({"from": "n/file", "to": "o/file"}));
    assert_eq!(code, 200);
    wait_for("the second node to see the move and the copy", Duration::from_secs(20), || {
        let mut names: Vec<String> = cluster.names(1).into_iter().map(|(n, _)| n).collect();
        names.sort();
        (names == ["n/file", "o/file"]).then_some(())
    });
    assert_eq!(get(&file_url(b, "o/file")).1, data);
    assert_eq!(get(&file_url(b, "m/file")).0, 404);
    assert_eq!(cluster.stored(&[0, 1]), stored, "no node stored anything more");
}

#[test]
fn the_token_is_refused_in_a_query_string() {
    let node = TestNode::start_with(&["--api-token", TOKEN]);
    let (code, body) = get(&node.url(&format!("/api/v1/files?token={TOKEN}")));
    assert_eq!(code, 401);
    let message = error_of(&body);
    assert!(message.contains("URL") && message.contains("Authorization: Bearer"), "{message}");
    let auth = format!("Bearer {TOKEN}");
    assert_eq!(get_with(&node.url("/api/v1/files"), &[("Authorization", &auth)]).0, 200);
}

#[test]
fn a_short_token_is_refused_at_start() {
    let tmp = tempfile::tempdir().unwrap();
    let args = vec!["--api-token".to_string(), "s3cr3t".to_string()];
    let err =
        spawn_node(&tmp.path().join("d"), &args, &tmp.path().join("log"), None).expect_err("must refuse");
    assert!(err.contains("openssl rand -hex 32") && err.contains("32 characters"), "{err}");
}

#[test]
fn wrong_tokens_are_rate_limited_per_address() {
    let node = TestNode::start_with(&["--api-token", TOKEN]);
    let url = node.url("/api/v1/files");
    let mut codes = Vec::new();
    for i in 0..10 {
        codes.push(get_with(&url, &[("Authorization", &format!("Bearer wrong-{i}"))]).0);
    }
    assert!(codes.iter().all(|c| *c == 401), "{codes:?}");
    let (code, head, body) = get_with(&url, &[("Authorization", "Bearer wrong-again")]);
    assert_eq!(code, 429, "{}", String::from_utf8_lossy(&body));
    let wait: u64 = head.get("retry-after").unwrap().to_str().unwrap().parse().unwrap();
    assert!((1..=60).contains(&wait), "{wait}");
    // While limited, even the right token waits (or guessing would go on at full speed).
    let auth = format!("Bearer {TOKEN}");
    assert_eq!(get_with(&url, &[("Authorization", &auth)]).0, 429);
    let (code, _, _) = post_json(&node.url("/api/v1/session"), &[], &json!({"token": TOKEN}));
    assert_eq!(code, 429);
    // Requests without a token do not count, and the health check stays open.
    assert_eq!(get(&node.url("/health")).0, 200);
}

#[test]
fn the_ui_signs_in_once_with_an_http_only_strict_cookie() {
    let node = TestNode::start_with(&["--api-token", TOKEN]);
    let (code, _, _) = post_json(&node.url("/api/v1/session"), &[], &json!({"token": "wrong"}));
    assert_eq!(code, 401);
    let (code, head, _) = post_json(&node.url("/api/v1/session"), &[], &json!({"token": TOKEN}));
    assert_eq!(code, 204);
    let set = head.get("set-cookie").unwrap().to_str().unwrap().to_owned();
    assert!(set.contains("HttpOnly") && set.contains("SameSite=Strict"), "{set}");
    assert!(!set.contains(TOKEN), "the cookie is not the token: {set}");
    let cookie = set.split(';').next().unwrap().to_owned();
    assert_eq!(get_with(&node.url("/api/v1/files"), &[("Cookie", &cookie)]).0, 200);
    assert_eq!(get_with(&node.url("/api/v1/events"), &[("Cookie", "diststore_session=1.00")]).0, 401);
    let (code, head, _) = call("DELETE", &node.url("/api/v1/session"), &[("Cookie", &cookie)], None);
    assert_eq!(code, 204);
    assert!(head.get("set-cookie").unwrap().to_str().unwrap().contains("Max-Age=0"));
}

/// A PUT with `Content-Range` used to be stored as a complete file of the range's bytes.
#[test]
fn a_partial_put_is_refused_and_changes_nothing() {
    let node = TestNode::start();
    let url = node.url("/api/v1/files/big.bin");
    assert_eq!(put(&url, b"0123456789").0, 201);
    let res = agent().put(&url).header("Content-Range", "bytes 4-9/100").send(&b"456789"[..]).unwrap();
    assert_eq!(res.status(), 400);
    let text = res.into_body().read_to_string().unwrap();
    assert!(text.contains("/api/v1/uploads"), "{text}");
    assert_eq!(get(&url).1, b"0123456789");
}

/// Reads one response from a kept-alive connection: (status line, body by Content-Length).
fn read_response(conn: &mut impl std::io::BufRead) -> (String, Vec<u8>) {
    let mut status = String::new();
    conn.read_line(&mut status).unwrap();
    let mut len = 0;
    loop {
        let mut line = String::new();
        conn.read_line(&mut line).unwrap();
        if line == "\r\n" || line.is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':')
            && name.eq_ignore_ascii_case("content-length")
        {
            len = value.trim().parse().unwrap();
        }
    }
    let mut body = vec![0u8; len];
    conn.read_exact(&mut body).unwrap();
    (status.trim_end().to_owned(), body)
}

/// Regression (issue 17): a large download's writes are gathered into large sends. The tail
/// must go out when the response ends, and the connection must then write the next response
/// (and a `100 Continue`) as it comes: a tail left in the buffer hangs the reader here until
/// its timeout.
#[test]
fn a_large_download_ends_whole_and_its_connection_serves_the_next_requests() {
    use std::io::{BufReader, Write};
    let node = TestNode::start();
    // A multiple neither of async-h1's 8 KiB copy buffer nor of the 256 KiB gathered.
    let big = random_bytes(3 * 1024 * 1024 + 12_345, 17);
    let small = random_bytes(100, 18);
    assert_eq!(put(&node.url("/api/v1/files/big"), &big).0, 201);
    assert_eq!(put(&node.url("/api/v1/files/small"), &small).0, 201);
    let host = node.url("").trim_start_matches("http://").to_owned();
    let mut conn = std::net::TcpStream::connect(&host).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut reader = BufReader::new(conn.try_clone().unwrap());
    for (name, want) in [("big", &big), ("small", &small), ("big", &big)] {
        write!(conn, "GET /api/v1/files/{name} HTTP/1.1\r\nHost: {host}\r\n\r\n").unwrap();
        let (status, body) = read_response(&mut reader);
        assert_eq!(status, "HTTP/1.1 200 OK", "{name}");
        assert_eq!(body.len(), want.len(), "{name}");
        assert!(body == *want, "{name}: other bytes than stored");
    }
    // The client waits for `100 Continue` before it sends the body.
    let body = random_bytes(5000, 19);
    write!(
        conn,
        "PUT /api/v1/files/after HTTP/1.1\r\nHost: {host}\r\nContent-Length: {}\r\nExpect: 100-continue\r\n\r\n",
        body.len()
    )
    .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(&mut reader, &mut line).unwrap();
    assert_eq!(line.trim_end(), "HTTP/1.1 100 Continue");
    std::io::BufRead::read_line(&mut reader, &mut line).unwrap();
    conn.write_all(&body).unwrap();
    let (status, _) = read_response(&mut reader);
    assert_eq!(status, "HTTP/1.1 201 Created");
    assert_eq!(get(&node.url("/api/v1/files/after")), (200, body));
}
