//! The browser UI in a real headless Chromium, driven over the Chrome DevTools
//! Protocol (CDP) against real nodes.
//!
//! The scenarios are what a user does: upload through the file input and watch
//! the progress bar reach 100 %, find the file in the list, open its details,
//! copy its id and a curl command, download it through the page and compare
//! bytes, cancel a (throttled) upload, drop several files, see changes made
//! elsewhere appear without a reload, delete with the keyboard alone through
//! the confirmation dialog, see an upload refused by the server in the
//! server's own words, sign in with the API token once (a cookie, never a URL), and watch the cluster
//! view follow a peer going down. Screenshots land in `target/ui-screenshots/`.
//!
//! Needs Debian's `chromium`. Without it the tests skip, except under CI (env
//! `CI` set), where a missing browser is a failure: CI must install it.

mod common;

use common::browser::{A11Y_CHECK, Browser, POLL, WAIT, chromium_or_skip, http, wait_upload_end};
use common::{TestNode, random_bytes, sha256_hex};
use serde_json::{Value, json};
use std::path::Path;
use std::time::Instant;

const MIB: usize = 1024 * 1024;

/// Waits for a file with exactly `len` bytes to appear in `dir` under `name`
/// (Chromium writes `*.crdownload` first and renames when done).
fn wait_for_download(dir: &Path, name: &str, len: usize) -> Vec<u8> {
    let path = dir.join(name);
    let deadline = Instant::now() + WAIT;
    loop {
        if let Ok(bytes) = std::fs::read(&path)
            && bytes.len() == len
        {
            return bytes;
        }
        if Instant::now() >= deadline {
            let present: Vec<String> = std::fs::read_dir(dir)
                .map(|entries| {
                    entries.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect()
                })
                .unwrap_or_default();
            panic!(
                "download {name:?} ({len} bytes) did not complete within {WAIT:?}; the directory holds {present:?}"
            );
        }
        std::thread::sleep(POLL);
    }
}

/// CSS selector for an element with `data-testid` inside the row or upload
/// item of `name`.
fn in_item(kind: &str, name: &str, testid: &str) -> String {
    format!("[data-testid={kind}][data-name={}] [data-testid={testid}]", json!(name))
}

// ---------------------------------------------------------------------------
// The scenario

#[test]
fn browser_ui_upload_download_delete_live_and_cluster() {
    let Some(chromium) = chromium_or_skip() else {
        return;
    };
    // The limit lets the same node take a few-MiB upload and refuse a bigger one.
    let limit = 8 * MIB;
    let node = TestNode::start_with(&["--max-upload-size", "8MiB"]);
    let http = http();
    let work = tempfile::tempdir().expect("temp dir");
    let downloads = work.path().join("downloads");
    std::fs::create_dir(&downloads).unwrap();

    let mut browser = Browser::launch(&chromium);
    browser.set_viewport(1280, 900, false);
    browser.set_color_scheme("light");
    browser.cdp.call(
        None,
        "Browser.setDownloadBehavior",
        json!({ "behavior": "allow", "downloadPath": downloads.display().to_string() }),
    );

    // Let the copy buttons use the clipboard as they would in a focused tab.
    browser.cdp.call(
        None,
        "Browser.grantPermissions",
        json!({ "permissions": ["clipboardReadWrite", "clipboardSanitizedWrite"], "origin": node.base }),
    );
    browser.page("Emulation.setFocusEmulationEnabled", json!({ "enabled": true }));

    // --- The page loads from the node alone and goes live.
    browser.goto(&node.url("/"));
    browser.wait_for(
        "the page to connect to the event stream",
        "document.getElementById('conn').dataset.state === 'live'",
    );
    // Survives only as long as the document does: proves "without a reload".
    browser.eval("window.__sameDocument = true");
    browser.wait_for(
        "the upload limit to show",
        "document.querySelector('[data-testid=upload-limit]').textContent.includes('8.00 MiB')",
    );

    // --- Upload through the file input; progress reaches 100 %.
    let name = "ui test data.bin";
    let data = random_bytes(3 * MIB + 4321, 0x5eed_0001);
    let id = sha256_hex(&data);
    let path = work.path().join(name);
    std::fs::write(&path, &data).unwrap();
    browser.set_input_files("[data-testid=file-input]", &[&path]);
    let (state, message) = wait_upload_end(&mut browser, name);
    assert_eq!(state, "done", "upload failed: {message}");
    let progress = browser.eval(&format!(
        "(() => {{ const p = document.querySelector({}); return [p.value, p.max]; }})()",
        json!(in_item("upload-item", name, "upload-progress"))
    ));
    assert_eq!(progress, json!([100, 100]), "progress bar at the end");
    let bytes_text = browser.eval(&format!(
        "document.querySelector({}).textContent",
        json!(in_item("upload-item", name, "upload-bytes"))
    ));
    assert!(bytes_text.as_str().unwrap_or("").contains("(100 %)"), "progress text at the end: {bytes_text}");

    // --- It is in the list, with its size.
    let row = format!("[data-testid=file-row][data-name={}]", json!(name));
    let row_text = browser.wait_for(
        "the uploaded file to appear in the list",
        &format!("document.querySelector({})?.innerText", json!(row)),
    );
    let row_text = row_text.as_str().unwrap_or("");
    assert!(row_text.contains("3.00 MiB"), "row shows the size: {row_text:?}");

    // --- Details: size, id, chunks, dedup, holders.
    browser.click(&format!("{row} [data-testid=file-details]"));
    let details_id = browser.wait_for(
        "the details dialog to show the content id",
        "document.getElementById('details-dialog').open && document.querySelector('[data-testid=details-id]')?.textContent",
    );
    assert_eq!(details_id, json!(id), "details show the full id (= sha256 of the bytes)");
    let details = browser.eval("document.querySelector('[data-testid=details-content]').innerText");
    let details = details.as_str().unwrap_or("");
    for expected in ["3.00 MiB", "Chunks", "Dedup savings", "this node"] {
        assert!(details.contains(expected), "details lack {expected:?}:\n{details}");
    }
    browser.press("Escape");
    browser.wait_for("Escape to close the details dialog", "!document.getElementById('details-dialog').open");

    // --- Copy buttons: the full content id, and a curl command that fetches
    // the same bytes.
    browser.click(&format!("{row} [data-testid=menu-copy-id]"));
    let copied = browser.wait_for(
        "the content id on the clipboard",
        &format!("navigator.clipboard.readText().then(t => t === {} && t)", json!(id)),
    );
    assert_eq!(copied, json!(id));
    browser.click(&format!("{row} [data-testid=menu-curl]"));
    let command = browser.wait_for(
        "a curl command on the clipboard",
        "navigator.clipboard.readText().then(t => t.startsWith('curl ') && t)",
    );
    let command = command.as_str().unwrap_or("");
    let file_url = node.url("/api/v1/files/ui%20test%20data.bin");
    assert!(
        command.contains(&format!("'{file_url}'")) && command.contains("-o 'ui test data.bin'"),
        "curl command: {command}"
    );
    let mut fetched = http.get(&file_url).call().expect("GET the curl URL");
    assert_eq!(fetched.status().as_u16(), 200, "GET {file_url}");
    let fetched = fetched.body_mut().with_config().limit(64 * MIB as u64).read_to_vec().expect("read body");
    assert_eq!(sha256_hex(&fetched), id, "the curl URL serves other bytes");

    // --- Download through the page's control; same bytes, original name.
    browser.click(&format!("{row} [data-testid=download]"));
    let downloaded = wait_for_download(&downloads, name, data.len());
    assert_eq!(sha256_hex(&downloaded), id, "downloaded bytes differ from the upload");

    // --- Cancel: with the upload throttled to 512 KiB/s, Cancel stops it
    // part-way; the node keeps nothing of it.
    let slow_name = "slow upload.bin";
    let slow_path = work.path().join(slow_name);
    std::fs::write(&slow_path, random_bytes(6 * MIB, 0x5eed_0003)).unwrap();
    browser.page("Network.enable", json!({}));
    browser.page(
        "Network.emulateNetworkConditions",
        json!({ "offline": false, "latency": 0, "downloadThroughput": -1, "uploadThroughput": MIB / 2 }),
    );
    browser.set_input_files("[data-testid=file-input]", &[&slow_path]);
    browser.wait_for(
        "the throttled upload to make progress",
        &format!(
            "document.querySelector({})?.value >= 2",
            json!(in_item("upload-item", slow_name, "upload-progress"))
        ),
    );
    browser.click(&in_item("upload-item", slow_name, "upload-cancel"));
    let (state, message) = wait_upload_end(&mut browser, slow_name);
    assert_eq!(state, "cancelled", "cancel: {message}");
    browser.page(
        "Network.emulateNetworkConditions",
        json!({ "offline": false, "latency": 0, "downloadThroughput": -1, "uploadThroughput": -1 }),
    );
    let get = http.get(node.url("/api/v1/files/slow%20upload.bin")).call().expect("GET after cancel");
    assert_eq!(get.status().as_u16(), 404, "a cancelled upload must leave no file");

    // --- Several files at once by drag and drop (files made in the page).
    browser.eval(
        "(() => { const dt = new DataTransfer(); \
           dt.items.add(new File(['first dropped file'], 'dropped-1.txt', { type: 'text/plain' })); \
           dt.items.add(new File(['second dropped file'], 'dropped-2.txt', { type: 'text/plain' })); \
           const zone = document.querySelector('[data-testid=dropzone]'); \
           zone.dispatchEvent(new DragEvent('dragenter', { dataTransfer: dt, bubbles: true })); \
           zone.dispatchEvent(new DragEvent('drop', { dataTransfer: dt, bubbles: true, cancelable: true })); })()",
    );
    for dropped in ["dropped-1.txt", "dropped-2.txt"] {
        let (state, message) = wait_upload_end(&mut browser, dropped);
        assert_eq!(state, "done", "dropped {dropped}: {message}");
    }
    let (code, body) = {
        let mut res = http.get(node.url("/api/v1/files/dropped-2.txt")).call().expect("GET dropped");
        (res.status().as_u16(), res.body_mut().read_to_string().unwrap_or_default())
    };
    assert_eq!((code, body.as_str()), (200, "second dropped file"), "dropped file content");

    // --- A change made elsewhere shows up without a reload (server-sent events).
    let other = "zz-elsewhere.txt";
    let put = http
        .put(node.url(&format!("/api/v1/files/{other}")))
        .header("Content-Type", "text/plain")
        .send("uploaded by someone else")
        .expect("PUT through the API");
    assert_eq!(put.status().as_u16(), 201, "PUT {other}");
    browser.wait_for(
        "a file uploaded through the API to appear without a reload",
        &format!(
            "window.__sameDocument && document.querySelector('[data-testid=file-row][data-name={}]')",
            json!(other)
        ),
    );

    // --- Accessibility smoke check, then the main page as a picture.
    let problems = browser.eval(A11Y_CHECK);
    assert_eq!(problems, json!([]), "accessibility problems on the main page");
    let shot = browser.screenshot("main.png");
    eprintln!("screenshot: {}", shot.display());

    // --- Delete with the keyboard alone: Enter on Delete opens the page's
    // confirmation with Cancel focused (the safe default); Tab, Enter deletes.
    browser.focus(&format!("{row} [data-testid=delete]"));
    browser.press("Enter");
    browser.wait_for(
        "the delete confirmation with Cancel focused",
        "document.getElementById('confirm-dialog').open && \
         document.activeElement === document.querySelector('[data-testid=confirm-cancel]')",
    );
    let question = browser.eval("document.querySelector('[data-testid=confirm-text]').textContent");
    assert!(question.as_str().unwrap_or("").contains(name), "the confirmation names the file: {question}");
    browser.press("Tab");
    browser.wait_for(
        "Tab to reach the Delete button",
        "document.activeElement === document.querySelector('[data-testid=confirm-ok]')",
    );
    browser.press("Enter");
    browser.wait_for(
        "the deleted file to leave the list",
        &format!(
            "!document.getElementById('confirm-dialog').open && !document.querySelector({})",
            json!(row)
        ),
    );
    let get = http.get(node.url("/api/v1/files/ui%20test%20data.bin")).call().expect("GET after delete");
    assert_eq!(get.status().as_u16(), 404, "the API still serves the deleted file");

    // --- Too large: the page refuses before sending, naming the limit ...
    let big_name = "too big.bin";
    let big = random_bytes(limit + MIB, 0x5eed_0002);
    let big_path = work.path().join(big_name);
    std::fs::write(&big_path, &big).unwrap();
    browser.set_input_files("[data-testid=file-input]", &[&big_path]);
    let (state, message) = wait_upload_end(&mut browser, big_name);
    assert_eq!(state, "error", "an over-limit upload must fail");
    assert!(
        message.contains("Too large") && message.contains("8.00 MiB"),
        "client-side refusal names the limit: {message:?}"
    );

    // ... and when the page's own check is bypassed, the server's refusal is
    // shown in the server's words.
    browser.eval("window.diststore.skipSizeCheck = true");
    browser.click(&in_item("upload-item", big_name, "upload-retry"));
    browser.wait_for(
        "the retried upload to start",
        &format!(
            "document.querySelector('[data-testid=upload-item][data-name={}]').dataset.attempts === '2'",
            json!(big_name)
        ),
    );
    let (state, message) = wait_upload_end(&mut browser, big_name);
    assert_eq!(state, "error", "the server must refuse an over-limit upload");
    let status = browser.eval(&format!(
        "document.querySelector({}).dataset.status",
        json!(in_item("upload-item", big_name, "upload-message"))
    ));
    assert_eq!(status, "413", "the page saw the server's 413 (message: {message:?})");
    assert!(
        !message.is_empty() && !message.starts_with("HTTP 413"),
        "the page shows the server's error text, not a generic one: {message:?}"
    );
    // The same request through the API gives the exact words to compare. A
    // server that answers 413 before reading the body may reset the
    // connection under a client that is still sending; browsers cope with
    // that, a plain client may not, so only compare when it got an answer.
    match http.put(node.url("/api/v1/files/too%20big.bin")).send(&big[..]) {
        Ok(mut refused) => {
            assert_eq!(refused.status().as_u16(), 413, "PUT over the limit");
            let text = refused.body_mut().read_to_string().expect("413 body");
            let body: Value = serde_json::from_str(&text).expect("413 body is JSON");
            assert_eq!(
                message,
                body["error"].as_str().expect("413 has an error field"),
                "the page shows the server's error text as the server words it"
            );
        }
        Err(e) => eprintln!("note: PUT over the limit through ureq: {e} (not compared)"),
    }
    browser.eval("window.diststore.skipSizeCheck = false");

    // --- Cluster view: this node up, totals; light, dark and phone pictures.
    browser.eval("location.hash = '#cluster'");
    browser.wait_for(
        "the cluster view to list this node as up",
        "!document.getElementById('view-cluster').hidden && \
         document.querySelector('[data-testid=node-row][data-state=up]')",
    );
    browser.wait_for(
        "the totals to count the three files left",
        "document.querySelector('[data-testid=total-files] dd')?.textContent === '3'",
    );
    // The scrub's pass at start found the store (empty then) undamaged.
    browser.wait_for(
        "the scrub total to report its pass",
        "document.querySelector('[data-testid=total-scrub] dd')?.textContent.endsWith('none damaged')",
    );
    let problems = browser.eval(A11Y_CHECK);
    assert_eq!(problems, json!([]), "accessibility problems on the cluster view");
    browser.screenshot("cluster.png");
    browser.set_color_scheme("dark");
    browser.screenshot("cluster-dark.png");
    browser.set_viewport(390, 844, true);
    browser.eval("location.hash = '#files'");
    browser.wait_for("the files view to return", "!document.getElementById('view-files').hidden");
    browser.screenshot("main-phone-dark.png");
    let overflow = browser.eval("document.documentElement.scrollWidth - window.innerWidth");
    assert!(
        overflow.as_f64().unwrap_or(1.0) <= 0.0,
        "the page scrolls sideways on a phone-sized screen by {overflow} px"
    );

    assert!(browser.cdp.exceptions.is_empty(), "page scripts threw: {:?}", browser.cdp.exceptions);
    assert_eq!(browser.eval("window.__sameDocument"), true, "the page reloaded");
}

#[test]
fn browser_ui_signs_in_once_and_never_puts_the_token_in_a_url() {
    let Some(chromium) = chromium_or_skip() else {
        return;
    };
    let token = "ui-test-token-0123456789abcdef-ui";
    let node = TestNode::start_with(&["--api-token", token]);
    let work = tempfile::tempdir().expect("temp dir");
    let downloads = work.path().join("downloads");
    std::fs::create_dir(&downloads).unwrap();

    let mut browser = Browser::launch(&chromium);
    browser.set_viewport(1280, 900, false);
    browser.cdp.call(
        None,
        "Browser.setDownloadBehavior",
        json!({ "behavior": "allow", "downloadPath": downloads.display().to_string() }),
    );
    browser.goto(&node.url("/"));

    // The first 401 opens the token dialog; a wrong token is refused in it.
    browser.wait_for(
        "the token dialog",
        "document.getElementById('token-dialog').open && \
         document.activeElement === document.querySelector('[data-testid=token-input]')",
    );
    browser.eval("document.querySelector('[data-testid=token-input]').value = 'wrong'");
    browser.click("[data-testid=token-ok]");
    browser.wait_for(
        "the token dialog to say the token was refused",
        "document.getElementById('token-dialog').open && !document.getElementById('token-error').hidden",
    );
    browser.eval(&format!("document.querySelector('[data-testid=token-input]').value = {}", json!(token)));
    browser.click("[data-testid=token-ok]");
    browser.wait_for(
        "the page to go live after signing in (the event stream sends the session cookie)",
        "!document.getElementById('token-dialog').open && \
         document.getElementById('conn').dataset.state === 'live'",
    );

    // The page keeps no token: the session is an HttpOnly cookie it cannot read.
    let kept = browser.eval(&format!(
        "(document.cookie + JSON.stringify(sessionStorage) + JSON.stringify(localStorage) + \
         document.documentElement.outerHTML).includes({})",
        json!(token)
    ));
    assert_eq!(kept, json!(false), "the token is kept in the page");

    // Uploads go through with the cookie ...
    let name = "secret note.txt";
    let data = b"only for token holders\n".to_vec();
    let path = work.path().join(name);
    std::fs::write(&path, &data).unwrap();
    browser.set_input_files("[data-testid=file-input]", &[&path]);
    let (state, message) = wait_upload_end(&mut browser, name);
    assert_eq!(state, "done", "upload with the token failed: {message}");

    // ... and so do plain links, which carry no token.
    let row = format!("[data-testid=file-row][data-name={}]", json!(name));
    browser.wait_for("the uploaded file in the list", &format!("document.querySelector({})", json!(row)));
    let href = browser
        .eval(&format!("document.querySelector({}).href", json!(format!("{row} [data-testid=download]"))));
    assert!(!href.as_str().unwrap_or("").contains("token"), "a token in a link: {href}");
    browser.click(&format!("{row} [data-testid=download]"));
    let downloaded = wait_for_download(&downloads, name, data.len());
    assert_eq!(downloaded, data, "downloaded bytes");

    // A reload keeps the session: no second question.
    browser.goto(&node.url("/"));
    browser.wait_for(
        "the reloaded page to go live without asking again",
        "document.getElementById('conn').dataset.state === 'live' && \
         !document.getElementById('token-dialog').open && \
         document.querySelector('[data-testid=file-row]')",
    );
    // Signing out clears the session: the next load asks again.
    browser.wait_for("the sign-out button", "!document.getElementById('sign-out').hidden");
    browser.click("[data-testid=sign-out]");
    browser.wait_for(
        "the token dialog after signing out",
        "document.getElementById('token-dialog') && document.getElementById('token-dialog').open",
    );
    assert!(browser.cdp.exceptions.is_empty(), "page scripts threw: {:?}", browser.cdp.exceptions);
}

#[test]
fn browser_ui_cluster_view_follows_a_peer_going_down() {
    let Some(chromium) = chromium_or_skip() else {
        return;
    };
    // Two nodes of one cluster; the page is served by the first.
    let work = tempfile::tempdir().expect("temp dir");
    let secret = work.path().join("secret");
    std::fs::write(&secret, "ui browser test secret").unwrap();
    let secret = secret.display().to_string();
    let first = TestNode::start_in(&work.path().join("n0"), &["--secret-file", &secret]);
    let mut second =
        TestNode::start_in(&work.path().join("n1"), &["--secret-file", &secret, "--peer", &first.base]);

    let mut browser = Browser::launch(&chromium);
    browser.set_viewport(1280, 900, false);
    browser.goto(&first.url("/#cluster"));
    browser.wait_for(
        "the cluster view to show both nodes up",
        "document.querySelectorAll('[data-testid=node-row][data-state=up]').length === 2",
    );
    browser.eval("window.__sameDocument = true");

    // A file written through the other node shows up here by itself.
    let put = http()
        .put(second.url("/api/v1/files/from-the-other-node.txt"))
        .send("written on the second node")
        .expect("PUT on the second node");
    assert_eq!(put.status().as_u16(), 201, "PUT on the second node");
    browser.wait_for(
        "the totals to count the file written elsewhere",
        "document.querySelector('[data-testid=total-files] dd')?.textContent === '1'",
    );
    // Each node's own stored bytes (peers report theirs with heartbeats).
    browser.wait_for(
        "both nodes to report the bytes they store",
        "[...document.querySelectorAll('[data-testid=node-row] td.num')].every(td => td.textContent !== '0 B')",
    );
    browser.screenshot("cluster-two-nodes.png");

    // The other node dies: its row turns down without a reload.
    second.kill9();
    browser.wait_for(
        "the dead peer to show as down",
        "document.querySelectorAll('[data-testid=node-row][data-state=down]').length === 1 && \
         document.querySelectorAll('[data-testid=node-row][data-state=up]').length === 1",
    );
    let row = browser.eval("document.querySelector('[data-testid=node-row][data-state=down]').innerText");
    assert!(row.as_str().unwrap_or("").contains("Down"), "the down row says so in words: {row}");
    browser.screenshot("cluster-peer-down.png");
    browser.eval("location.hash = '#files'");
    browser.wait_for(
        "the replicated file in the list",
        "document.querySelector('[data-testid=file-row][data-name=\"from-the-other-node.txt\"]')",
    );
    assert_eq!(browser.eval("window.__sameDocument"), true, "the page reloaded");
    assert!(browser.cdp.exceptions.is_empty(), "page scripts threw: {:?}", browser.cdp.exceptions);
}
