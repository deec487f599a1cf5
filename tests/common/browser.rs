//! A minimal Chrome DevTools Protocol client and a headless Chromium with one page, for the
//! browser tests (the UI, and attacks a web page can make on a node).

use serde_json::{Value, json};
use std::io::{BufRead, BufReader, ErrorKind};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};
use tungstenite::{Message, WebSocket};

/// Bound for every wait on the page; generous for a busy two-core machine.
pub const WAIT: Duration = Duration::from_secs(20);
/// Bound for one CDP command to be answered.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// How often a condition is polled while waiting.
pub const POLL: Duration = Duration::from_millis(100);

// ---------------------------------------------------------------------------
// A minimal CDP client: one WebSocket to the browser, page commands sent in a
// flattened target session.

pub struct Cdp {
    pub ws: WebSocket<TcpStream>,
    next_id: u64,
    /// Uncaught exceptions thrown by page scripts; the test requires none.
    pub exceptions: Vec<String>,
    /// Console errors, kept for failure messages (a refused upload logs one).
    pub console: Vec<String>,
}

impl Cdp {
    pub fn connect(ws_url: &str) -> Cdp {
        let addr = ws_url
            .strip_prefix("ws://")
            .and_then(|rest| rest.split('/').next())
            .unwrap_or_else(|| panic!("unexpected DevTools address {ws_url:?}"));
        let stream = TcpStream::connect(addr).expect("connect to Chromium's DevTools port");
        let (ws, _) = tungstenite::client(ws_url, stream).expect("DevTools WebSocket handshake");
        // A short read timeout lets `call` check its own deadline between reads.
        ws.get_ref().set_read_timeout(Some(Duration::from_millis(250))).expect("set read timeout");
        Cdp { ws, next_id: 0, exceptions: Vec::new(), console: Vec::new() }
    }

    /// Sends one command and returns its result, noting the events that
    /// arrive meanwhile. A CDP error is a test failure.
    pub fn call(&mut self, session: Option<&str>, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let mut message = json!({ "id": id, "method": method, "params": params });
        if let Some(session) = session {
            message["sessionId"] = json!(session);
        }
        self.ws
            .send(Message::text(message.to_string()))
            .unwrap_or_else(|e| panic!("CDP {method}: send failed: {e}"));
        let deadline = Instant::now() + CALL_TIMEOUT;
        loop {
            let message = match self.ws.read() {
                Ok(message) => message,
                Err(tungstenite::Error::Io(e))
                    if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) =>
                {
                    assert!(Instant::now() < deadline, "CDP {method}: no answer within {CALL_TIMEOUT:?}");
                    continue;
                }
                Err(e) => panic!("CDP {method}: connection failed: {e}"),
            };
            let Message::Text(text) = message else {
                continue;
            };
            let value: Value = serde_json::from_str(text.as_str()).expect("CDP sends JSON");
            if value["id"].as_u64() == Some(id) {
                if let Some(error) = value.get("error") {
                    panic!("CDP {method} failed: {error}");
                }
                return value["result"].clone();
            }
            self.note_event(&value);
        }
    }

    pub fn note_event(&mut self, event: &Value) {
        let params = &event["params"];
        match event["method"].as_str() {
            Some("Runtime.exceptionThrown") => {
                let details = &params["exceptionDetails"];
                let text = details["exception"]["description"]
                    .as_str()
                    .or(details["text"].as_str())
                    .unwrap_or("unknown exception");
                self.exceptions.push(text.to_string());
            }
            Some("Runtime.consoleAPICalled") if params["type"] == "error" => {
                let args: Vec<String> = params["args"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|a| match &a["value"] {
                        Value::Null => a["description"].as_str().unwrap_or("").to_string(),
                        v => v.to_string(),
                    })
                    .collect();
                self.console.push(args.join(" "));
            }
            Some("Log.entryAdded") if params["entry"]["level"] == "error" => {
                let text = params["entry"]["text"].as_str().unwrap_or("");
                self.console.push(text.to_string());
            }
            _ => {}
        }
    }
}

/// A headless Chromium with one page. Closed (then killed) on drop.
pub struct Browser {
    child: Child,
    pub cdp: Cdp,
    session: String,
    stderr: Arc<Mutex<String>>,
    _profile: tempfile::TempDir,
}

impl Browser {
    pub fn launch(chromium: &Path) -> Browser {
        Browser::launch_with(chromium, &[])
    }

    /// As [`Browser::launch`], with extra command-line switches (e.g. `--host-resolver-rules`).
    pub fn launch_with(chromium: &Path, extra: &[&str]) -> Browser {
        let profile = tempfile::tempdir().expect("temp profile dir");
        let mut child = Command::new(chromium)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--window-size=1280,900",
                "--remote-debugging-port=0",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .args(extra)
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", chromium.display()));

        // Chromium prints its DevTools address on stderr. Keep draining
        // stderr afterwards so it never blocks on a full pipe.
        let stderr_pipe = child.stderr.take().expect("piped stderr");
        let stderr = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = mpsc::channel();
        let log = Arc::clone(&stderr);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr_pipe).lines() {
                let Ok(line) = line else { break };
                if let Some(url) = line.strip_prefix("DevTools listening on ") {
                    let _ = tx.send(url.trim().to_string());
                }
                let mut log = log.lock().unwrap();
                if log.len() < 64 * 1024 {
                    log.push_str(&line);
                    log.push('\n');
                }
            }
        });
        let ws_url = match rx.recv_timeout(WAIT) {
            Ok(url) => url,
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "chromium printed no DevTools address within {WAIT:?}; stderr:\n{}",
                    stderr.lock().unwrap()
                );
            }
        };

        let mut browser =
            Browser { child, cdp: Cdp::connect(&ws_url), session: String::new(), stderr, _profile: profile };
        let target = browser.cdp.call(None, "Target.createTarget", json!({ "url": "about:blank" }));
        let target_id = target["targetId"].as_str().expect("targetId").to_string();
        let attached = browser.cdp.call(
            None,
            "Target.attachToTarget",
            json!({ "targetId": target_id, "flatten": true }),
        );
        browser.session = attached["sessionId"].as_str().expect("sessionId").to_string();
        browser.page("Runtime.enable", json!({}));
        browser.page("Log.enable", json!({}));
        browser.page("Page.enable", json!({}));
        browser
    }

    /// A command for the page (as opposed to the browser).
    pub fn page(&mut self, method: &str, params: Value) -> Value {
        let session = self.session.clone();
        self.cdp.call(Some(&session), method, params)
    }

    /// Evaluates an expression (awaiting a promise) and returns its JSON value.
    pub fn eval(&mut self, expression: &str) -> Value {
        let result = self.page(
            "Runtime.evaluate",
            json!({ "expression": expression, "returnByValue": true, "awaitPromise": true }),
        );
        if let Some(details) = result.get("exceptionDetails") {
            panic!("page script failed: {expression}\n{details:#}");
        }
        result["result"]["value"].clone()
    }

    /// Polls `expression` (awaited if it is a promise) until it is truthy and
    /// returns its value; fails with `what` and a look at the page after `WAIT`.
    pub fn wait_for(&mut self, what: &str, expression: &str) -> Value {
        let probe = format!(
            "(async () => {{ try {{ const v = await ({expression}); return v ? {{ ok: true, v }} : {{ ok: false }}; }} \
             catch (e) {{ return {{ ok: false, err: String(e) }}; }} }})()"
        );
        let deadline = Instant::now() + WAIT;
        loop {
            let result = self.eval(&probe);
            if result["ok"] == true {
                return result["v"].clone();
            }
            if Instant::now() >= deadline {
                let error = result["err"].as_str().unwrap_or("none");
                panic!(
                    "timed out after {WAIT:?} waiting for {what}\n  condition: {expression}\n  last error: {error}\n{}",
                    self.diagnostics()
                );
            }
            std::thread::sleep(POLL);
        }
    }

    /// What the page shows, for failure messages.
    pub fn diagnostics(&mut self) -> String {
        let text = self.eval("document.body ? document.body.innerText.slice(0, 3000) : ''");
        format!(
            "  page text:\n{}\n  exceptions: {:?}\n  console errors: {:?}",
            text.as_str().unwrap_or(""),
            self.cdp.exceptions,
            self.cdp.console
        )
    }

    pub fn goto(&mut self, url: &str) {
        self.page("Page.navigate", json!({ "url": url }));
        self.wait_for(
            &format!("{url} to load"),
            &format!("location.href === {} && document.readyState === 'complete'", json!(url)),
        );
    }

    pub fn click(&mut self, selector: &str) {
        let clicked = self.eval(&format!(
            "(() => {{ const el = document.querySelector({}); if (!el) return false; el.click(); return true; }})()",
            json!(selector)
        ));
        assert_eq!(clicked, true, "nothing to click at {selector}");
    }

    pub fn focus(&mut self, selector: &str) {
        let focused = self.eval(&format!(
            "(() => {{ const el = document.querySelector({}); if (!el) return false; el.focus(); \
             return document.activeElement === el; }})()",
            json!(selector)
        ));
        assert_eq!(focused, true, "cannot focus {selector}");
    }

    /// One key press as the keyboard sends it (keyDown with text, keyUp).
    pub fn press(&mut self, key: &str) {
        let (code, vk, text) = match key {
            "Enter" => ("Enter", 13, "\r"),
            "Tab" => ("Tab", 9, ""),
            "Escape" => ("Escape", 27, ""),
            other => panic!("press: no mapping for key {other:?}"),
        };
        let mut down = json!({
            "type": if text.is_empty() { "rawKeyDown" } else { "keyDown" },
            "key": key, "code": code,
            "windowsVirtualKeyCode": vk, "nativeVirtualKeyCode": vk,
        });
        if !text.is_empty() {
            down["text"] = json!(text);
            down["unmodifiedText"] = json!(text);
        }
        self.page("Input.dispatchKeyEvent", down);
        self.page(
            "Input.dispatchKeyEvent",
            json!({ "type": "keyUp", "key": key, "code": code,
                    "windowsVirtualKeyCode": vk, "nativeVirtualKeyCode": vk }),
        );
    }

    /// Puts files into an `<input type=file>` as the picker would; the page
    /// sees the usual `change` event.
    pub fn set_input_files(&mut self, selector: &str, files: &[&Path]) {
        let document = self.page("DOM.getDocument", json!({ "depth": 0 }));
        let root = document["root"]["nodeId"].clone();
        let found = self.page("DOM.querySelector", json!({ "nodeId": root, "selector": selector }));
        let node_id = found["nodeId"].as_u64().unwrap_or(0);
        assert!(node_id != 0, "no file input at {selector}");
        let files: Vec<String> = files.iter().map(|p| p.display().to_string()).collect();
        self.page("DOM.setFileInputFiles", json!({ "nodeId": node_id, "files": files }));
    }

    pub fn set_viewport(&mut self, width: u32, height: u32, mobile: bool) {
        self.page(
            "Emulation.setDeviceMetricsOverride",
            json!({ "width": width, "height": height, "deviceScaleFactor": 1, "mobile": mobile }),
        );
    }

    pub fn set_color_scheme(&mut self, scheme: &str) {
        self.page(
            "Emulation.setEmulatedMedia",
            json!({ "features": [{ "name": "prefers-color-scheme", "value": scheme }] }),
        );
    }

    /// Saves a PNG of the whole page under `target/ui-screenshots/`.
    pub fn screenshot(&mut self, name: &str) -> PathBuf {
        // A toast is fixed to the bottom of the window, which lands mid-page
        // in a full-page picture: dismiss it first.
        self.eval("document.querySelectorAll('[data-testid=toast]').forEach(t => { t.hidden = true; })");
        // The full window width (the capture drops the scrollbar) by the
        // full document height.
        let size = self.eval("[window.innerWidth, document.documentElement.scrollHeight]");
        let clip = json!({
            "x": 0, "y": 0, "scale": 1,
            "width": size[0].as_f64().unwrap_or(1280.0),
            "height": size[1].as_f64().unwrap_or(900.0),
        });
        let shot = self.page(
            "Page.captureScreenshot",
            json!({ "format": "png", "clip": clip, "captureBeyondViewport": true }),
        );
        let png = base64_decode(shot["data"].as_str().expect("screenshot data"));
        assert!(png.starts_with(b"\x89PNG"), "screenshot {name} is not a PNG");
        let path = screenshot_dir().join(name);
        std::fs::write(&path, png).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
        path
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Asking Chromium to close lets it take its helper processes down;
        // kill it if it has not gone within a few seconds.
        let close = json!({ "id": u64::MAX, "method": "Browser.close" });
        let _ = self.cdp.ws.send(Message::text(close.to_string()));
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!(
                "chromium stderr (last part):\n{}",
                self.stderr.lock().map(|s| s.clone()).unwrap_or_default()
            );
        }
    }
}

// ---------------------------------------------------------------------------
// Helpers

/// Debian's `/usr/bin/chromium`, or `chromium` on PATH.
pub fn find_chromium() -> Option<PathBuf> {
    let debian = PathBuf::from("/usr/bin/chromium");
    if debian.is_file() {
        return Some(debian);
    }
    std::env::split_paths(&std::env::var_os("PATH")?).map(|dir| dir.join("chromium")).find(|p| p.is_file())
}

/// Returns the browser, or `None` when the test should be skipped. Under CI a
/// missing browser fails the test: a skipped UI test there hides breakage.
pub fn chromium_or_skip() -> Option<PathBuf> {
    if let Some(path) = find_chromium() {
        return Some(path);
    }
    if std::env::var_os("CI").is_some() {
        panic!(
            "chromium is not installed but CI is set: the browser UI test must run in CI; \
             install it first (apt-get install -y chromium)"
        );
    }
    eprintln!("skipping: chromium not installed (apt-get install chromium)");
    None
}

pub fn screenshot_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"));
    let dir = target.join("ui-screenshots");
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
    dir
}

/// Standard base64 (CDP screenshots); no dependency for one use.
pub fn base64_decode(text: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let mut buffer = 0u32;
    let mut bits = 0;
    for c in text.bytes() {
        let value = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            b'=' | b'\n' | b'\r' => continue,
            other => panic!("bad base64 byte {other:#x}"),
        };
        buffer = (buffer << 6) | u32::from(value);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((buffer >> bits) as u8);
        }
    }
    out
}

/// An HTTP agent that returns every status rather than failing on 4xx/5xx.
pub fn http() -> ureq::Agent {
    ureq::Agent::config_builder().http_status_as_error(false).build().into()
}

/// Waits until the UI's upload of `name` ends; returns its final state and message.
pub fn wait_upload_end(browser: &mut Browser, name: &str) -> (String, String) {
    let item = format!("document.querySelector('[data-testid=upload-item][data-name={}]')", json!(name));
    let end = browser.wait_for(
        &format!("the upload of {name:?} to end"),
        &format!(
            "(() => {{ const item = {item}; \
             if (!item || !['done', 'error', 'cancelled', 'skipped'].includes(item.dataset.state)) return null; \
             return [item.dataset.state, item.querySelector('[data-testid=upload-message]').textContent]; }})()"
        ),
    );
    (end[0].as_str().unwrap_or("").to_string(), end[1].as_str().unwrap_or("").to_string())
}

/// In-page accessibility smoke check: every control has an accessible name,
/// ids are unique, dialogs are labelled. Returns the problems found.
pub const A11Y_CHECK: &str = r#"(() => {
  const problems = [];
  const named = (el) => {
    if (el.getAttribute('aria-label')) return true;
    const by = el.getAttribute('aria-labelledby');
    if (by && by.split(/\s+/).every((id) => document.getElementById(id)?.textContent.trim())) return true;
    if (el.labels && [...el.labels].some((l) => l.textContent.trim())) return true;
    return el.textContent.trim().length > 0;
  };
  for (const el of document.querySelectorAll('button, a[href], summary, input:not([type=hidden]):not([hidden]), select, textarea, progress')) {
    if (!named(el)) problems.push(`unnamed ${el.tagName.toLowerCase()} ${el.id || el.className || el.outerHTML.slice(0, 80)}`);
  }
  const ids = [...document.querySelectorAll('[id]')].map((el) => el.id);
  for (const id of new Set(ids)) if (ids.filter((x) => x === id).length > 1) problems.push(`duplicate id ${id}`);
  for (const d of document.querySelectorAll('dialog')) if (!named(d)) problems.push(`unlabelled dialog ${d.id}`);
  if (!document.documentElement.lang) problems.push('no lang on <html>');
  if (!document.querySelector('[aria-live]')) problems.push('no aria-live region');
  return problems;
})()"#;
