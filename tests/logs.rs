//! The node's log lines as an operator reads them: JSON with `--log-format json`, readable
//! lines otherwise, filters by module, the access log, and a closed event stream that is no
//! error.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::*;

/// The lines the logger wrote: all but the "listening on" lines printed for scripts.
fn log_lines(node: &TestNode) -> Vec<String> {
    node.log_text()
        .lines()
        .filter(|l| !l.starts_with("diststore listening on ") && !l.starts_with("diststore s3 listening on "))
        .map(str::to_owned)
        .collect()
}

/// Every logger line as JSON; a line that does not parse fails the test.
fn json_lines(node: &TestNode) -> Vec<Value> {
    log_lines(node)
        .iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON line ({e}): {l}")))
        .collect()
}

/// Stops the node with SIGTERM and waits for it, so its log is complete.
fn stop(node: &mut TestNode) {
    assert!(node.terminate().success());
    wait_for("the node's last log line", Duration::from_secs(10), || {
        node.log_text().lines().any(|l| l.contains("stopped")).then_some(())
    });
}

#[test]
fn json_lines_parse_and_the_access_log_has_method_route_status_bytes_and_time() {
    let mut node = TestNode::start_with(&["--log-format", "json", "--access-log"]);
    assert_eq!(get(&node.url("/health")).0, 200);
    assert_eq!(get(&node.url("/api/v1/files/private%20name.txt")).0, 404);
    stop(&mut node);
    let lines = json_lines(&node);
    for line in &lines {
        assert!(
            ["error", "warn", "info", "debug", "trace"].contains(&line["level"].as_str().unwrap()),
            "{line}"
        );
        assert!(line["time"].as_str().unwrap().ends_with('Z'), "{line}");
        assert!(line["target"].as_str().unwrap().starts_with("diststore"), "{line}");
        assert!(line["msg"].is_string(), "{line}");
    }
    let access: Vec<&Value> = lines.iter().filter(|l| l["target"] == "diststore::access").collect();
    let health = access.iter().find(|l| l["route"] == "/health").expect("an access line for /health");
    assert_eq!((health["method"].as_str(), health["status"].as_u64()), (Some("GET"), Some(200)));
    assert_eq!(health["bytes"].as_u64(), Some(3), "{health}");
    assert!(health["duration_ms"].as_f64().unwrap() >= 0.0);
    let missing = access.iter().find(|l| l["status"] == 404).expect("an access line for the 404");
    assert_eq!(missing["route"], "/api/v1/files/{name}");
    // The access log names the route, never the path with the file's name.
    assert!(!node.log_text().contains("private"), "{}", node.log_text());
}

#[test]
fn pretty_lines_are_the_default_and_are_not_json_and_no_access_log_without_the_flag() {
    let mut node = TestNode::start();
    assert_eq!(get(&node.url("/health")).0, 200);
    stop(&mut node);
    let lines = log_lines(&node);
    let started = lines.iter().find(|l| l.contains("with data in")).expect("the start line");
    assert!(started.contains(" INFO  diststore: node "), "{started}");
    for line in &lines {
        assert!(serde_json::from_str::<Value>(line).is_err(), "a JSON line by default: {line}");
    }
    assert!(!lines.iter().any(|l| l.contains("diststore::access")), "{lines:?}");
}

#[test]
fn a_filter_drops_one_modules_lines_and_keeps_the_rest() {
    let mut node = TestNode::start_with(&[
        "--log-format",
        "json",
        "--access-log",
        "--log-level",
        "info,diststore::access=off",
    ]);
    for _ in 0..3 {
        assert_eq!(get(&node.url("/health")).0, 200);
    }
    stop(&mut node);
    let lines = json_lines(&node);
    assert!(lines.iter().any(|l| l["target"] == "diststore" && l["level"] == "info"), "{lines:?}");
    assert!(!lines.iter().any(|l| l["target"] == "diststore::access"), "{lines:?}");
    // And a level alone drops everything below it: the start's info lines come before the
    // "listening" line, which the harness has seen once the node is up.
    let quiet = TestNode::start_with(&["--log-format", "json", "--log-level", "warn"]);
    assert!(quiet.log_text().contains("diststore listening on "));
    let lines = json_lines(&quiet);
    assert!(lines.iter().all(|l| l["level"] == "warn" || l["level"] == "error"), "{lines:?}");
    let mut chatty = TestNode::start_with(&["--log-format", "json"]);
    assert!(
        json_lines(&chatty).iter().any(|l| l["level"] == "info"),
        "the same start logs at info by default"
    );
    stop(&mut chatty);
}

#[test]
fn malformed_log_settings_are_refused_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let run = |args: &[&str], env: Option<&str>| {
        let mut cmd = std::process::Command::new(BIN);
        cmd.args(["--listen", "127.0.0.1:0", "--s3-listen", "off", "--data-dir"])
            .arg(dir.path().join("d"))
            .args(args);
        cmd.env_remove("RUST_LOG");
        if let Some(v) = env {
            cmd.env("RUST_LOG", v);
        }
        let out = cmd.output().unwrap();
        assert!(!out.status.success());
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let err = run(&[], Some("info,diststore=loud"));
    assert!(err.contains("RUST_LOG") && err.contains("is not a log filter"), "{err}");
    let err = run(&["--log-level", "loud"], None);
    assert!(err.contains("--log-level") && err.contains("is not a log filter"), "{err}");
    let err = run(&["--log-format", "xml"], None);
    assert!(err.contains("is not a log format"), "{err}");
    // Nothing was created by the refused starts.
    assert!(!dir.path().join("d").exists());
}

#[test]
fn a_client_closing_its_event_stream_is_not_logged_as_an_error() {
    let mut node =
        TestNode::start_with(&["--log-format", "json", "--log-level", "info,diststore::http::status=debug"]);
    let addr = node.base.trim_start_matches("http://").to_string();
    let mut stream = TcpStream::connect(&addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(stream, "GET /api/v1/events HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\n\r\n")
        .unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut line = String::new();
    while !line.replace(' ', "").starts_with("event:status") {
        line.clear();
        assert!(reader.read_line(&mut line).unwrap() > 0, "the stream ended before its first event");
    }
    // The tab goes away.
    drop(reader);
    stream.shutdown(std::net::Shutdown::Both).unwrap();
    drop(stream);
    // The node notices at its next send: each upload is one.
    let mut n = 0;
    wait_for("the node to notice the closed stream", Duration::from_secs(30), || {
        n += 1;
        assert_eq!(put(&node.url(&format!("/api/v1/files/f{n}")), b"x").0, 201);
        node.log_text().contains("event stream closed by the client").then_some(())
    });
    stop(&mut node);
    let errors: Vec<Value> = json_lines(&node).into_iter().filter(|l| l["level"] == "error").collect();
    assert!(errors.is_empty(), "{errors:?}");
}
