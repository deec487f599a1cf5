//! What a web page can do to a default node (loopback, no token) through the user's own
//! browser, tried in a real headless Chromium as an attacker would:
//! - cross-site request forgery: a page of another site (served here from a second loopback
//!   address, so the browser treats it as another site in the same address space and sends
//!   the requests) posts a plain HTML form and a `no-cors` fetch to the node;
//! - DNS rebinding: a host name of the attacker's that resolves to the node
//!   (`--host-resolver-rules`), so the page's own-origin requests reach the node.
//!
//! Needs Debian's `chromium`; skips without it, except under CI, where it fails.

mod common;

use common::browser::{Browser, chromium_or_skip};
use common::{TestNode, get, json, put};
use serde_json::json;
use std::io::{Read, Write};
use std::net::TcpListener;

/// Serves `page` to every request on `addr` (port 0 for any), from a thread; returns the port.
fn serve_page(addr: &str, page: String) -> u16 {
    let listener = TcpListener::bind(addr).expect("bind the attacker's server");
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut buf = [0u8; 4096];
            let _ = stream.read(&mut buf);
            let response = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{page}",
                page.len()
            );
            let _ = stream.write_all(response.as_bytes());
        }
    });
    port
}

#[test]
fn a_page_of_another_site_cannot_store_overwrite_or_delete() {
    let Some(chromium) = chromium_or_skip() else {
        return;
    };
    let node = TestNode::start();
    assert_eq!(put(&node.url("/api/v1/files/victim.txt"), b"original").0, 201);
    let target = node.base.clone();
    let page = format!(
        r#"<!doctype html><html><body>
<form id="legacy" method="POST" action="{target}/api/store" enctype="multipart/form-data">
  <input name="key" value="victim.txt"><textarea name="file">owned</textarea>
</form>
<script>
  // What a page may send anywhere without asking: "simple" requests, whose answer it cannot
  // read but which change state if the server accepts them.
  window.attack = async () => {{
    const form = new FormData();
    form.append('key', 'planted.txt');
    form.append('file', new Blob(['planted']), 'planted.txt');
    await fetch('{target}/api/store', {{ method: 'POST', mode: 'no-cors', body: form }});
    await fetch('{target}/api/v1/files/victim.txt?x=1', {{ method: 'POST', mode: 'no-cors', body: 'owned' }});
    // A PUT or DELETE needs a CORS preflight, which the node does not grant: never sent.
    const refused = await fetch('{target}/api/v1/files/victim.txt', {{ method: 'DELETE' }})
      .then(() => false, () => true);
    return refused;
  }};
</script></body></html>"#
    );
    let port = serve_page("127.0.0.2:0", page);
    let attacker = format!("http://127.0.0.2:{port}/");

    let mut browser = Browser::launch(&chromium);
    browser.goto(&attacker);
    assert_eq!(browser.eval("window.attack()"), true, "the cross-origin DELETE was not blocked");
    // The form navigates the page to the node's answer, which the test (not the attacker) reads.
    browser.eval("document.getElementById('legacy').submit()");
    let answer = browser.wait_for(
        "the form's answer",
        &format!(
            "location.href.startsWith({}) && document.readyState === 'complete' && document.body.innerText",
            json!(format!("{target}/api/store"))
        ),
    );
    assert!(answer.as_str().unwrap().contains("another site"), "{answer}");

    assert_eq!(get(&node.url("/api/v1/files/victim.txt")).1, b"original", "victim overwritten");
    assert_eq!(get(&node.url("/api/v1/files/planted.txt")).0, 404, "a file was planted");
    let listed = json(&get(&node.url("/api/v1/files")).1);
    assert_eq!(listed["files"].as_array().unwrap().len(), 1, "{listed}");

    // The node's own page, in the same browser, still works: same-origin requests pass.
    browser.goto(&node.url("/"));
    let stored = browser
        .eval("fetch('/api/v1/files/mine.txt', { method: 'PUT', body: 'mine' }).then((r) => r.status)");
    assert_eq!(stored, 201);
    assert_eq!(get(&node.url("/api/v1/files/mine.txt")).1, b"mine");
}

#[test]
fn a_host_name_rebound_to_the_node_reads_and_changes_nothing() {
    let Some(chromium) = chromium_or_skip() else {
        return;
    };
    let node = TestNode::start();
    assert_eq!(put(&node.url("/api/v1/files/secret.txt"), b"top secret").0, 201);
    let port = node.base.rsplit(':').next().unwrap().to_owned();
    // The attacker's name now resolves to the node: the page's requests to its own origin
    // (which no same-origin policy stops) reach the node.
    let mut browser =
        Browser::launch_with(&chromium, &["--host-resolver-rules=MAP rebind.example 127.0.0.1"]);
    let origin = format!("http://rebind.example:{port}");
    browser.page("Page.navigate", json!({ "url": format!("{origin}/") }));
    browser.wait_for(
        "the rebound origin to load",
        &format!("location.origin === {} && document.readyState === 'complete'", json!(origin)),
    );
    let page_text = browser.eval("document.body ? document.body.innerText : ''");
    assert!(page_text.as_str().unwrap().contains("does not answer to the host name"), "{page_text}");
    let seen = browser.eval(
        r#"(async () => {
             const list = await fetch('/api/v1/files');
             const file = await fetch('/api/v1/files/secret.txt');
             const del = await fetch('/api/v1/files/secret.txt', { method: 'DELETE' });
             return [list.status, await list.text(), file.status, await file.text(), del.status];
           })()"#,
    );
    assert_eq!(seen[0], 421, "{seen}");
    assert_eq!(seen[2], 421, "{seen}");
    assert_eq!(seen[4], 421, "{seen}");
    for body in [&seen[1], &seen[3]] {
        let body = body.as_str().unwrap();
        assert!(!body.contains("secret.txt") && !body.contains("top secret"), "leaked: {body}");
    }
    assert_eq!(get(&node.url("/api/v1/files/secret.txt")).1, b"top secret");
}
