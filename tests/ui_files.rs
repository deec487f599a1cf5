//! The file manager in a real headless Chromium, as a person uses it: folders and the
//! breadcrumb, a whole folder uploaded through the folder picker, search by substring in any
//! case, the view in the URL (reload and back), previews of an image and a text file,
//! multi-select with a shift-click range, bulk download as one zip and bulk delete, moving a file, a folder deleted with
//! the count in its confirmation, the overwrite prompt, share links opened in a fresh browser
//! without the token, an upload that resumes after the node restarts (with speed, time left and
//! the leave-page warning while it runs), and the health banner
//! when a node of a three-node cluster dies. Screenshots at desktop and phone sizes, light and
//! dark, land in `target/ui-screenshots/`.
//!
//! Needs Debian's `chromium`; skips without it except under CI (`CI` set).

mod common;

use common::browser::{A11Y_CHECK, Browser, base64_decode, chromium_or_skip, http, wait_upload_end};
use common::cluster::Cluster;
use common::{TestNode, get, random_bytes, sha256_hex};
use serde_json::json;

const MIB: usize = 1024 * 1024;
/// A 1×1 PNG (valid CRCs), so the preview has a real image to decode.
const PNG_1X1: &str =
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==";

/// PUTs through the API with a content type, as another client would.
fn put_typed(node: &TestNode, name: &str, content_type: &str, body: &[u8]) {
    let url = node.url(&format!("/api/v1/files/{}", encode(name)));
    let res = http().put(&url).header("Content-Type", content_type).send(body).expect("PUT");
    assert_eq!(res.status().as_u16(), 201, "PUT {name}");
}

fn encode(name: &str) -> String {
    name.split('/').map(|s| s.replace(' ', "%20")).collect::<Vec<_>>().join("/")
}

fn status_of(node: &TestNode, name: &str) -> u16 {
    get(&node.url(&format!("/api/v1/files/{}", encode(name)))).0
}

fn q(s: &str) -> String {
    json!(s).to_string()
}

/// A real mouse click (pressed and released) at the middle of the element, with modifier
/// keys (8 = Shift), as a person clicks: checkboxes see `shiftKey` as they would.
fn mouse_click(browser: &mut Browser, selector: &str, modifiers: u32) {
    let at = browser.eval(&format!(
        "(() => {{ const el = document.querySelector({}); if (!el) return null; el.scrollIntoView({{ block: 'center' }}); \
         const r = el.getBoundingClientRect(); return [r.x + r.width / 2, r.y + r.height / 2]; }})()",
        q(selector)
    ));
    let (Some(x), Some(y)) = (at[0].as_f64(), at[1].as_f64()) else {
        panic!("nothing to click at {selector}");
    };
    for kind in ["mousePressed", "mouseReleased"] {
        browser.page(
            "Input.dispatchMouseEvent",
            json!({ "type": kind, "x": x, "y": y, "button": "left", "clickCount": 1, "modifiers": modifiers }),
        );
    }
}

/// Types into a field as a keyboard would (focus, then text input events).
fn type_into(browser: &mut Browser, selector: &str, text: &str) {
    browser.eval(&format!(
        "(() => {{ const el = document.querySelector({}); el.focus(); el.select && el.select(); }})()",
        q(selector)
    ));
    browser.page("Input.insertText", json!({ "text": text }));
}

/// Waits until the rows shown are exactly `want` (in that order).
fn wait_rows(browser: &mut Browser, what: &str, want: &[&str]) {
    browser.wait_for(
        what,
        &format!(
            "JSON.stringify([...document.querySelectorAll('#file-rows tr')].map(r => r.dataset.name)) === {} \
             && !document.getElementById('file-table').hasAttribute('aria-busy')",
            q(&json!(want).to_string())
        ),
    );
}

fn row(name: &str) -> String {
    format!("#file-rows tr[data-name={}]", q(name))
}

fn wait_upload_done(browser: &mut Browser, name: &str) {
    let (state, message) = wait_upload_end(browser, name);
    assert_eq!(state, "done", "upload of {name}: {message}");
}

fn no_exceptions(browser: &Browser) {
    assert!(browser.cdp.exceptions.is_empty(), "page scripts threw: {:?}", browser.cdp.exceptions);
}

// ---------------------------------------------------------------------------

#[test]
fn ui_files_folders_search_previews_selection_and_moves() {
    let Some(chromium) = chromium_or_skip() else {
        return;
    };
    let node = TestNode::start();
    let png = base64_decode(PNG_1X1);
    let readme = "Hello from the readme.\nSecond line <b>not markup</b>\n";
    put_typed(&node, "photos/2024/IMG_2024_0001.png", "image/png", &png);
    put_typed(&node, "photos/2024/IMG_2024_0002.png", "image/png", &png);
    put_typed(&node, "photos/2024/beach.png", "image/png", &png);
    put_typed(&node, "photos/2024/sunset.png", "image/png", &png);
    put_typed(&node, "photos/2023/IMG_2023_0001.png", "image/png", &png);
    put_typed(&node, "docs/readme.txt", "text/plain", readme.as_bytes());
    put_typed(&node, "archive/old-img_2024-list.txt", "text/plain", b"old list");
    put_typed(&node, "archive/keep.txt", "text/plain", b"keep");

    let mut browser = Browser::launch(&chromium);
    browser.set_viewport(1280, 900, false);
    browser.set_color_scheme("light");
    browser.goto(&node.url("/"));

    // --- The top level: three folders with their file counts, no files.
    wait_rows(&mut browser, "the top-level folders", &["archive/", "docs/", "photos/"]);
    browser.wait_for(
        "the folder counts",
        "document.querySelector('[data-count-for=\"photos/\"]')?.textContent === '5 files'",
    );

    // --- Into photos/ by its row, then 2024/; the breadcrumb follows.
    browser.click(&format!("{} [data-testid=folder-open]", row("photos/")));
    wait_rows(&mut browser, "the folders of photos/", &["photos/2023/", "photos/2024/"]);
    browser.click(&format!("{} [data-testid=folder-open]", row("photos/2024/")));
    wait_rows(
        &mut browser,
        "the files of photos/2024/",
        &[
            "photos/2024/IMG_2024_0001.png",
            "photos/2024/IMG_2024_0002.png",
            "photos/2024/beach.png",
            "photos/2024/sunset.png",
        ],
    );
    let crumbs =
        browser.eval("[...document.querySelectorAll('[data-testid=crumb]')].map(a => a.textContent)");
    assert_eq!(crumbs, json!(["All files", "photos", "2024"]), "breadcrumb");
    assert!(
        browser.eval("location.hash").as_str().unwrap().contains("path=photos%2F2024%2F"),
        "the folder is in the URL"
    );

    // Grid view of the image folder: every tile shows its decoded thumbnail.
    browser.click("[data-testid=layout-grid]");
    browser.wait_for(
        "four thumbnails decoded",
        "[...document.querySelectorAll('#file-grid [data-testid=thumbnail]')].filter(i => i.complete && i.naturalWidth > 0).length === 4 \
         && !document.getElementById('file-grid').hidden",
    );
    browser.screenshot("files-grid.png");
    browser.click("[data-testid=layout-list]");
    browser.wait_for("the list view again", "!document.getElementById('list-wrap').hidden");

    // --- Breadcrumb back up to photos/, then the browser's Back returns to 2024/.
    browser.click("[data-testid=crumb][data-path=\"photos/\"]");
    wait_rows(&mut browser, "photos/ by the breadcrumb", &["photos/2023/", "photos/2024/"]);
    browser.eval("history.back()");
    browser.wait_for(
        "Back to return to photos/2024/",
        &format!("document.querySelector({})", q(&row("photos/2024/beach.png"))),
    );

    // --- Image preview in the details panel: the browser decodes the stored PNG.
    browser.click(&format!("{} [data-testid=file-details]", row("photos/2024/beach.png")));
    browser.wait_for(
        "the image preview to decode",
        "(() => { const i = document.querySelector('#details-preview [data-testid=preview-image]'); \
         return document.getElementById('details-dialog').open && i && i.complete && i.naturalWidth === 1; })()",
    );
    browser.press("Escape");
    browser.wait_for("the details to close", "!document.getElementById('details-dialog').open");

    // --- Multi-select: the first box, then Shift+click on the third selects the range.
    mouse_click(&mut browser, &format!("{} .row-check", row("photos/2024/IMG_2024_0001.png")), 0);
    mouse_click(&mut browser, &format!("{} .row-check", row("photos/2024/beach.png")), 8);
    let selected = browser.wait_for(
        "three rows selected",
        "document.querySelectorAll('#file-rows tr[aria-selected=true]').length === 3 && \
         document.querySelector('[data-testid=bulk-count]').textContent",
    );
    assert_eq!(selected, "3 items selected");

    // --- Bulk download: the three files arrive as one zip the node streamed, byte for byte.
    let downloads = tempfile::tempdir().unwrap();
    browser.page(
        "Page.setDownloadBehavior",
        json!({ "behavior": "allow", "downloadPath": downloads.path().to_str().unwrap() }),
    );
    browser.click("[data-testid=bulk-download]");
    let zip_path = downloads.path().join("files.zip");
    common::wait_for("the zip download to finish", std::time::Duration::from_secs(30), || {
        zip_path.exists().then_some(())
    });
    let listing = std::process::Command::new("python3")
        .args([
            "-c",
            "import sys, zipfile; z = zipfile.ZipFile(sys.argv[1]); assert z.testzip() is None; \
                      print(sorted((i.filename, len(z.read(i))) for i in z.infolist()))",
        ])
        .arg(&zip_path)
        .output()
        .expect("python3 runs");
    assert!(
        listing.status.success(),
        "the zip does not read back: {}",
        String::from_utf8_lossy(&listing.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&listing.stdout).trim(),
        format!(
            "[('photos/2024/IMG_2024_0001.png', {n}), ('photos/2024/IMG_2024_0002.png', {n}), ('photos/2024/beach.png', {n})]",
            n = png.len()
        )
    );

    browser.click("[data-testid=bulk-delete]");
    let question = browser.wait_for(
        "the bulk delete confirmation",
        "document.getElementById('confirm-dialog').open && document.querySelector('[data-testid=confirm-text]').textContent",
    );
    assert!(question.as_str().unwrap().contains("3 items (3 files in all)"), "confirmation: {question}");
    browser.click("[data-testid=confirm-ok]");
    wait_rows(&mut browser, "only the unselected file left", &["photos/2024/sunset.png"]);
    for gone in ["photos/2024/IMG_2024_0001.png", "photos/2024/IMG_2024_0002.png", "photos/2024/beach.png"] {
        assert_eq!(status_of(&node, gone), 404, "{gone} was selected and deleted");
    }
    assert_eq!(status_of(&node, "photos/2024/sunset.png"), 200, "the unselected file stays");

    // --- Search across the whole store, any case; the search is in the URL.
    browser.goto(&node.url("/#files?path=docs%2F"));
    wait_rows(&mut browser, "docs/", &["docs/readme.txt"]);
    type_into(&mut browser, "[data-testid=search]", "IMG_20");
    wait_rows(
        &mut browser,
        "names containing img_20 in any case, in every folder",
        &["archive/old-img_2024-list.txt", "photos/2023/IMG_2023_0001.png"],
    );
    let count = browser.eval("document.querySelector('[data-testid=list-count]').textContent");
    assert_eq!(count, "2 files match");
    let searched = browser.eval("location.href").as_str().unwrap().to_string();
    assert!(searched.contains("q=IMG_20"), "the search is in the URL: {searched}");
    // The URL alone brings the same view back (a bookmark), in another order.
    browser.goto(&format!("{searched}&sort=name&order=desc"));
    wait_rows(
        &mut browser,
        "the bookmarked search, in descending name order",
        &["photos/2023/IMG_2023_0001.png", "archive/old-img_2024-list.txt"],
    );
    assert_eq!(browser.eval("document.querySelector('[data-testid=search]').value"), "IMG_20");
    // Sorting by size from the column header (largest first).
    browser.click("th[data-sort=size] .sort-button");
    wait_rows(
        &mut browser,
        "the search sorted by size, largest first",
        &["photos/2023/IMG_2023_0001.png", "archive/old-img_2024-list.txt"],
    );
    assert!(browser.eval("location.hash").as_str().unwrap().contains("sort=size"), "the sort is in the URL");

    // --- Text preview: the file's own text, shown as text (not markup), in the quick look.
    browser.goto(&node.url("/#files?path=docs%2F"));
    wait_rows(&mut browser, "docs/ again", &["docs/readme.txt"]);
    browser.click(&format!("{} [data-testid=menu-quicklook]", row("docs/readme.txt")));
    let shown = browser.wait_for(
        "the text preview",
        "document.getElementById('quicklook').open && document.querySelector('#quicklook-body [data-testid=preview-text]')?.textContent",
    );
    assert_eq!(shown, readme, "the preview shows the file's text");
    assert_eq!(
        browser.eval("document.querySelectorAll('#quicklook-body b').length"),
        0,
        "text rendered as markup"
    );
    browser.press("Escape");
    browser.wait_for("the quick look to close", "!document.getElementById('quicklook').open");

    // --- Move (rename into another folder) from the file's menu: metadata only.
    browser.click(&format!("{} [data-testid=menu-move]", row("docs/readme.txt")));
    browser.wait_for("the move dialog", "document.getElementById('prompt-dialog').open");
    browser.eval("document.querySelector('[data-testid=prompt-input]').value = ''");
    type_into(&mut browser, "[data-testid=prompt-input]", "archive/readme-moved.txt");
    browser.click("[data-testid=prompt-ok]");
    wait_rows(&mut browser, "docs/ empty after the move", &[]);
    assert_eq!(status_of(&node, "docs/readme.txt"), 404, "the old name is gone");
    let (code, moved) = get(&node.url("/api/v1/files/archive/readme-moved.txt"));
    assert_eq!((code, moved.as_slice()), (200, readme.as_bytes()), "the moved file has the same bytes");

    // --- Upload a whole folder through the folder picker, into the folder shown.
    let work = tempfile::tempdir().unwrap();
    let trip = work.path().join("trip");
    std::fs::create_dir_all(trip.join("day 2")).unwrap();
    std::fs::write(trip.join("plan.txt"), "day 1: arrive").unwrap();
    std::fs::write(trip.join("day 2").join("notes.txt"), "day 2: hike").unwrap();
    browser.set_input_files("[data-testid=folder-input]", &[&trip]);
    wait_upload_done(&mut browser, "docs/trip/plan.txt");
    wait_upload_done(&mut browser, "docs/trip/day 2/notes.txt");
    assert_eq!(get(&node.url("/api/v1/files/docs/trip/day%202/notes.txt")), (200, b"day 2: hike".to_vec()));
    wait_rows(&mut browser, "the uploaded folder in docs/", &["docs/trip/"]);
    browser.wait_for(
        "the uploaded folder's count",
        "document.querySelector('[data-count-for=\"docs/trip/\"]')?.textContent === '2 files'",
    );

    // --- The same file again: the page asks before replacing; keeping it sends nothing.
    browser.click(&format!("{} [data-testid=folder-open]", row("docs/trip/")));
    wait_rows(&mut browser, "docs/trip/", &["docs/trip/day 2/", "docs/trip/plan.txt"]);
    let plan = work.path().join("plan.txt");
    std::fs::write(&plan, "a different plan").unwrap();
    browser.set_input_files("[data-testid=file-input]", &[&plan]);
    let asked = browser.wait_for(
        "the overwrite question",
        "document.getElementById('overwrite-dialog').open && document.querySelector('[data-testid=overwrite-text]').textContent",
    );
    assert!(asked.as_str().unwrap().contains("docs/trip/plan.txt"), "names the file: {asked}");
    browser.click("[data-testid=overwrite-skip]");
    browser.wait_for(
        "the upload to be skipped",
        "document.querySelector('[data-testid=upload-item][data-state=skipped]')",
    );
    assert_eq!(get(&node.url("/api/v1/files/docs/trip/plan.txt")).1, b"day 1: arrive", "kept");

    // --- A new folder exists in this tab until a file lands in it.
    browser.click("[data-testid=new-folder]");
    browser.wait_for("the new folder dialog", "document.getElementById('prompt-dialog').open");
    type_into(&mut browser, "[data-testid=prompt-input]", "empty one");
    browser.click("[data-testid=prompt-ok]");
    browser.wait_for(
        "the new, empty folder opened",
        "new URLSearchParams(location.hash.split('?')[1]).get('path') === 'docs/trip/empty one/' && \
         document.querySelector('[data-testid=list-empty]').textContent.includes('only in this browser tab')",
    );
    let note = work.path().join("note.txt");
    std::fs::write(&note, "first file of the new folder").unwrap();
    browser.set_input_files("[data-testid=file-input]", &[&note]);
    wait_upload_done(&mut browser, "docs/trip/empty one/note.txt");
    wait_rows(&mut browser, "the file in the new folder", &["docs/trip/empty one/note.txt"]);

    // --- Delete a folder: the confirmation counts the files under it.
    browser.goto(&node.url("/"));
    wait_rows(&mut browser, "the top level", &["archive/", "docs/", "photos/"]);
    browser.click(&format!("{} [data-testid=menu-delete]", row("archive/")));
    let question = browser.wait_for(
        "the folder delete confirmation",
        "document.getElementById('confirm-dialog').open && document.querySelector('[data-testid=confirm-text]').textContent",
    );
    assert!(
        question.as_str().unwrap().contains("“archive/” and the 3 files in it"),
        "the confirmation counts the files: {question}"
    );
    browser.click("[data-testid=confirm-ok]");
    wait_rows(&mut browser, "the folder gone", &["docs/", "photos/"]);
    assert_eq!(status_of(&node, "archive/keep.txt"), 404);

    // --- Bulk move of a selected folder into another: every name under it follows.
    mouse_click(&mut browser, &format!("{} .row-check", row("docs/")), 0);
    browser.click("[data-testid=bulk-move]");
    browser.wait_for("the move dialog", "document.getElementById('prompt-dialog').open");
    browser.eval("document.querySelector('[data-testid=prompt-input]').value = ''");
    type_into(&mut browser, "[data-testid=prompt-input]", "photos/");
    browser.click("[data-testid=prompt-ok]");
    wait_rows(&mut browser, "docs/ moved into photos/", &["photos/"]);
    assert_eq!(get(&node.url("/api/v1/files/photos/docs/trip/plan.txt")), (200, b"day 1: arrive".to_vec()));
    assert_eq!(status_of(&node, "docs/trip/plan.txt"), 404, "the old names are gone");

    // --- Pictures: desktop and phone, light and dark; nothing scrolls sideways on a phone.
    browser.goto(&node.url("/#files?path=photos%2F"));
    wait_rows(&mut browser, "photos/", &["photos/2023/", "photos/2024/", "photos/docs/"]);
    browser.wait_for(
        "the counts",
        "[...document.querySelectorAll('[data-testid=folder-count]')].every(c => /^\\d+ files?$/.test(c.textContent))",
    );
    let problems = browser.eval(A11Y_CHECK);
    assert_eq!(problems, json!([]), "accessibility problems");
    for (scheme, (w, h, phone)) in [
        ("light", (1280, 900, false)),
        ("dark", (1280, 900, false)),
        ("light", (390, 844, true)),
        ("dark", (390, 844, true)),
    ] {
        browser.set_viewport(w, h, phone);
        browser.set_color_scheme(scheme);
        let size = if phone { "phone" } else { "desktop" };
        browser.screenshot(&format!("files-{size}-{scheme}.png"));
        if phone {
            let overflow = browser.eval("document.documentElement.scrollWidth - window.innerWidth");
            assert!(overflow.as_f64().unwrap_or(1.0) <= 0.0, "sideways scroll on a phone: {overflow} px");
        }
    }
    no_exceptions(&browser);
}

#[test]
fn ui_files_share_link_opens_without_the_token_and_revokes() {
    let Some(chromium) = chromium_or_skip() else {
        return;
    };
    let token = "ui-files-token-0123456789abcdef-0123456789";
    let node = TestNode::start_with(&["--api-token", token]);
    let content = "shared with a friend\n";
    let res = http()
        .put(node.url("/api/v1/files/shared/letter.txt"))
        .header("Authorization", &format!("Bearer {token}"))
        .header("Content-Type", "text/plain")
        .send(content)
        .expect("PUT");
    assert_eq!(res.status().as_u16(), 201);

    let mut browser = Browser::launch(&chromium);
    browser.set_viewport(1280, 900, false);
    browser.goto(&node.url("/#files?path=shared%2F"));
    browser.wait_for("the token dialog", "document.getElementById('token-dialog').open");
    browser.eval(&format!("document.querySelector('[data-testid=token-input]').value = {}", q(token)));
    browser.click("[data-testid=token-ok]");
    wait_rows(&mut browser, "the shared folder after signing in", &["shared/letter.txt"]);

    // Create the link from the file's menu.
    browser.click(&format!("{} [data-testid=menu-share]", row("shared/letter.txt")));
    browser.wait_for("the share dialog", "document.getElementById('share-dialog').open");
    browser.click("[data-testid=share-create]");
    let link = browser.wait_for("a share link", "document.querySelector('[data-testid=share-url]').value");
    let link = link.as_str().unwrap().to_string();
    assert!(link.starts_with(&node.url("/share/")) && !link.contains(token), "link: {link}");

    // A fresh browser (its own profile: no cookie, no token) has no access to the node ...
    let mut friend = Browser::launch(&chromium);
    friend.goto(&node.url("/"));
    friend.wait_for("the friend to be asked for a token", "document.getElementById('token-dialog').open");
    let api = friend.eval("fetch('/api/v1/files/shared/letter.txt').then(r => r.status)");
    assert_eq!(api, 401, "the friend has no access beyond the link");
    // ... but opens the link.
    friend.goto(&link);
    let body = friend.wait_for("the shared text", "document.body && document.body.innerText");
    assert_eq!(body.as_str().unwrap().trim_end(), content.trim_end(), "the link serves the file");

    // Revoke from the same dialog: the link stops working.
    browser.click("[data-testid=share-revoke]");
    browser.wait_for("the revoke confirmation", "document.getElementById('confirm-dialog').open");
    browser.click("[data-testid=confirm-ok]");
    browser.wait_for(
        "the links revoked",
        "document.querySelector('[data-testid=toast]').textContent.includes('revoked')",
    );
    friend.goto(&link);
    let refused = friend.wait_for("the revoked link's answer", "document.body && document.body.innerText");
    assert!(
        !refused.as_str().unwrap().contains(content.trim_end()),
        "a revoked link still serves: {refused}"
    );
    assert_eq!(get(&link).0, 403, "a revoked link is refused");
    no_exceptions(&browser);
}

#[test]
fn ui_files_upload_resumes_after_the_node_restarts() {
    let Some(chromium) = chromium_or_skip() else {
        return;
    };
    let mut node = TestNode::start();
    let work = tempfile::tempdir().unwrap();
    let name = "big upload.bin";
    let data = random_bytes(6 * MIB, 0x5eed_00aa);
    let path = work.path().join(name);
    std::fs::write(&path, &data).unwrap();

    let mut browser = Browser::launch(&chromium);
    browser.set_viewport(1280, 900, false);
    browser.goto(&node.url("/"));
    browser.wait_for("the page to go live", "document.getElementById('conn').dataset.state === 'live'");
    // 1 MiB PATCHes at 1 MiB/s, so the restart lands mid-upload with some of it stored.
    browser.eval(&format!("window.diststore.patchBytes = {MIB}"));
    browser.page("Network.enable", json!({}));
    browser.page(
        "Network.emulateNetworkConditions",
        json!({ "offline": false, "latency": 0, "downloadThroughput": -1, "uploadThroughput": MIB }),
    );
    browser.set_input_files("[data-testid=file-input]", &[&path]);
    let item = format!("document.querySelector('[data-testid=upload-item][data-name={}]')", q(name));
    browser.wait_for(
        "a third of the upload to be sent",
        &format!("Number({item}?.querySelector('progress').value) >= 35"),
    );
    // Speed and time left show while it runs, per file and in total.
    let line = browser.eval(&format!("{item}.querySelector('[data-testid=upload-bytes]').textContent"));
    assert!(
        line.as_str().unwrap().contains("/s ·") && line.as_str().unwrap().contains("left"),
        "per file: {line}"
    );
    let total = browser.eval("document.querySelector('[data-testid=upload-total]').textContent");
    assert!(
        total.as_str().unwrap().contains("1 file left") && total.as_str().unwrap().contains("left"),
        "total: {total}"
    );
    browser.screenshot("upload-panel.png");
    // Leaving the page now would stop the upload: the page asks the browser to warn first.
    const LEAVE: &str = "(() => { const e = new Event('beforeunload', { cancelable: true }); \
                         window.dispatchEvent(e); return e.defaultPrevented; })()";
    assert_eq!(browser.eval(LEAVE), true, "no warning before leaving during an upload");

    // The node dies mid-upload; the page notices and waits for it ...
    node.kill9();
    browser.wait_for("the page to wait for the node", &format!("{item}.dataset.state === 'retrying'"));
    // ... and goes on when it is back.
    node.start_again();
    browser.wait_for(
        "the upload to resume and finish",
        &format!("{item}.dataset.state === 'done' && {item}.dataset.resumedAt"),
    );
    let resumed_at: u64 =
        browser.eval(&format!("{item}.dataset.resumedAt")).as_str().unwrap().parse().unwrap();
    assert!(resumed_at > 0, "the upload went on from where the node was, not from zero");
    assert_eq!(browser.eval(LEAVE), false, "a warning before leaving with nothing running");
    let creates = browser.eval(&format!("Number({item}.dataset.creates)"));
    assert_eq!(creates, 1, "one resumable upload across the restart, not a new one");
    let (code, stored) = get(&node.url("/api/v1/files/big%20upload.bin"));
    assert_eq!(code, 200);
    assert_eq!(sha256_hex(&stored), sha256_hex(&data), "the stored file is the uploaded one");
    no_exceptions(&browser);
}

#[test]
fn ui_files_health_banner_when_a_node_of_three_dies() {
    let Some(chromium) = chromium_or_skip() else {
        return;
    };
    let mut cluster = Cluster::start(3, &[]);
    let mut browser = Browser::launch(&chromium);
    browser.set_viewport(1280, 900, false);
    browser.goto(&cluster.nodes[0].url("/"));
    browser.wait_for("the page healthy", "document.getElementById('conn').dataset.state === 'live'");
    assert_eq!(
        browser.eval("document.getElementById('health-banner').hidden"),
        true,
        "no banner while all is well"
    );
    assert_eq!(browser.eval("document.getElementById('conn-text').textContent"), "Healthy");

    // The cluster view shows each peer's disk, as the peers report it, and the cluster's.
    browser.wait_for(
        "every node's disk and the cluster's capacity over three nodes",
        "[...document.querySelectorAll('[data-testid=node-row] [data-testid=node-disk]')] \
           .filter((td) => /used, .* free of /.test(td.textContent)).length === 3 && \
         /free of .* over 3 nodes/.test(document.querySelector('[data-testid=total-capacity] dd')?.textContent)",
    );

    let dead = cluster.nodes[2].base.clone();
    cluster.nodes[2].kill9();
    let text = browser.wait_for(
        "the banner to say a node is down",
        "!document.getElementById('health-banner').hidden && \
         document.querySelector('[data-testid=health-item][data-key=nodes-down]')?.textContent",
    );
    assert!(text.as_str().unwrap().contains(&dead), "the banner names the node: {text}");
    // The header no longer says all is well.
    assert_eq!(browser.eval("document.getElementById('conn').dataset.state"), "degraded");
    browser.screenshot("banner-node-down.png");
    // On every view: the cluster view shows it too, with this node's disk.
    browser.eval("location.hash = '#cluster'");
    browser.wait_for(
        "the cluster view with one node down and the disk figures",
        "document.querySelectorAll('[data-testid=node-row][data-state=down]').length === 1 && \
         !document.getElementById('health-banner').hidden && \
         /used, .* free of /.test(document.querySelector('[data-testid=total-disk] dd')?.textContent)",
    );
    // The dead node's last figures are not shown as its disk now.
    browser.wait_for(
        "the down node's disk marked stale or unknown",
        "/stale|unknown/.test(document.querySelector('[data-testid=node-row][data-state=down] \
           [data-testid=node-disk]')?.textContent)",
    );
    browser.set_color_scheme("dark");
    browser.screenshot("banner-node-down-cluster-dark.png");
    no_exceptions(&browser);
}

/// Another client's writes show up in an open tab through the event stream without a reload:
/// a burst of puts refreshes the folder's page at most once per 250 ms, keeps the rows that
/// did not change (the same elements), recounts only the folder that changed, and never
/// lists an untouched folder again.
#[test]
fn ui_files_puts_by_another_client_update_only_what_changed() {
    let Some(chromium) = chromium_or_skip() else {
        return;
    };
    let node = TestNode::start();
    put_typed(&node, "docs/readme.txt", "text/plain", b"readme");
    put_typed(&node, "other/keep.txt", "text/plain", b"keep");
    put_typed(&node, "top.txt", "text/plain", b"top");

    let mut browser = Browser::launch(&chromium);
    browser.goto(&node.url("/"));
    wait_rows(&mut browser, "the top level", &["docs/", "other/", "top.txt"]);
    browser.wait_for(
        "the folder counts",
        "[...document.querySelectorAll('[data-testid=folder-count]')].every(c => /^\\d+ files?$/.test(c.textContent))",
    );
    // From here on, every listing the tab asks for is recorded with when it left.
    browser.eval(
        "window.listCalls = []; window.stillThisPage = true; \
         const realFetch = window.fetch; \
         window.fetch = (input, init) => { \
           const url = String(input.url ?? input); \
           if (url.includes('/api/v1/files?')) window.listCalls.push({ url, at: performance.now() }); \
           return realFetch(input, init); }; \
         document.querySelector('#file-rows tr[data-name=\"top.txt\"]').dataset.mark = 'kept'",
    );

    for i in 0..20 {
        put_typed(&node, &format!("docs/burst-{i:02}.txt"), "text/plain", b"burst");
    }
    put_typed(&node, "new.txt", "text/plain", b"new");

    wait_rows(&mut browser, "the new file at the top level", &["docs/", "other/", "new.txt", "top.txt"]);
    browser.wait_for(
        "the recount of docs/",
        "document.querySelector('[data-count-for=\"docs/\"]').textContent === '21 files'",
    );
    assert_eq!(browser.eval("window.stillThisPage === true"), true, "the page was reloaded");
    assert_eq!(
        browser.eval("document.querySelector('#file-rows tr[data-name=\"top.txt\"]').dataset.mark"),
        "kept",
        "an unchanged row was rebuilt"
    );
    let calls = browser.eval("JSON.stringify(window.listCalls)");
    let calls: Vec<serde_json::Value> = serde_json::from_str(calls.as_str().unwrap()).unwrap();
    assert!(!calls.is_empty(), "no listing at all: the update came from somewhere else");
    assert!(
        calls.iter().all(|c| !c["url"].as_str().unwrap().contains("prefix=other%2F")),
        "the untouched folder was listed again: {calls:?}"
    );
    // The folder's own page: coalesced, never two within the bound.
    let pages: Vec<f64> = calls
        .iter()
        .filter(|c| c["url"].as_str().unwrap().contains("delimiter=%2F"))
        .map(|c| c["at"].as_f64().unwrap())
        .collect();
    assert!(!pages.is_empty(), "the new file appeared without a listing: {calls:?}");
    for pair in pages.windows(2) {
        assert!(pair[1] - pair[0] >= 240.0, "two page refreshes {} ms apart: {calls:?}", pair[1] - pair[0]);
    }
    no_exceptions(&browser);
}
