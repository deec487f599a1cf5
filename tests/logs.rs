//! The node's log lines as an operator reads them: femme's lines at the level asked for, the
//! access log, and a closed event stream that is no error.
//!
//! Tests run a debug build, where femme writes readable lines: the module path, the message,
//! then each field on its own line (`    key value`); release builds write the same as JSON.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::*;

/// The log without femme's colour codes.
fn plain_log(node: &TestNode) -> String {
    let text = node.log_text();
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            // An SGR sequence: ESC [ ... m
            for c in chars.by_ref() {
                if c == 'm' {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// The records of the log: a line starting with the module path, then its field lines.
fn records(node: &TestNode) -> Vec<(String, Vec<(String, String)>)> {
    let mut out: Vec<(String, Vec<(String, String)>)> = Vec::new();
    for line in plain_log(node).lines() {
        match line.strip_prefix("    ") {
            Some(field) if !out.is_empty() => {
                let (k, v) = field.split_once(' ').unwrap_or((field, ""));
                out.last_mut().unwrap().1.push((k.to_owned(), v.to_owned()));
            }
            _ => out.push((line.to_owned(), Vec::new())),
        }
    }
    out
}

fn field<'a>(fields: &'a [(String, String)], key: &str) -> Option<&'a str> {
    fields.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
}

/// Stops the node with SIGTERM and waits for it, so its log is complete.
fn stop(node: &mut TestNode) {
    assert!(node.terminate().success());
    wait_for("the node's last log line", Duration::from_secs(10), || {
        node.log_text().lines().any(|l| l.contains("stopped")).then_some(())
    });
}

#[test]
fn the_access_log_has_method_route_status_bytes_and_time_and_never_the_path() {
    let mut node = TestNode::start_with(&["--access-log"]);
    let asked = std::time::Instant::now();
    assert_eq!(get(&node.url("/health")).0, 200);
    let took_ms = asked.elapsed().as_secs_f64() * 1000.0;
    assert_eq!(get(&node.url("/api/v1/files/private%20name.txt")).0, 404);
    stop(&mut node);
    let access: Vec<Vec<(String, String)>> = records(&node)
        .into_iter()
        .filter(|(head, _)| head.starts_with("diststore::access "))
        .map(|(_, fields)| fields)
        .collect();
    let health = access.iter().find(|f| field(f, "route") == Some("/health")).expect("a line for /health");
    assert_eq!((field(health, "method"), field(health, "status")), (Some("GET"), Some("200")));
    assert_eq!(field(health, "bytes"), Some("3"), "{health:?}");
    // The node's own time for the request: within what the client waited for it.
    let duration: f64 = field(health, "duration_ms").unwrap().parse().unwrap();
    assert!((0.0..=took_ms).contains(&duration), "duration_ms {duration}, the client waited {took_ms} ms");
    let missing = access.iter().find(|f| field(f, "status") == Some("404")).expect("a line for the 404");
    assert_eq!(field(missing, "route"), Some("/api/v1/files/{name}"));
    // The access log names the route, never the path with the file's name.
    assert!(!node.log_text().contains("private"), "{}", node.log_text());
    // Without the flag, no access lines.
    let mut quiet = TestNode::start();
    assert_eq!(get(&quiet.url("/health")).0, 200);
    stop(&mut quiet);
    assert!(!quiet.log_text().contains("diststore::access"), "{}", quiet.log_text());
}

#[test]
fn the_log_level_drops_what_is_below_it() {
    // The start's info lines come before the "listening" line, which the harness has seen once
    // the node is up.
    let quiet = TestNode::start_with(&["--log-level", "warn"]);
    assert!(quiet.log_text().contains("diststore listening on "));
    assert!(!plain_log(&quiet).contains("with data in"), "{}", quiet.log_text());
    let chatty = TestNode::start();
    assert!(plain_log(&chatty).contains("with data in"), "the same start logs at info by default");
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
    let err = run(&[], Some("info,diststore=debug"));
    assert!(err.contains("RUST_LOG") && err.contains("is not a log level"), "{err}");
    let err = run(&["--log-level", "loud"], None);
    assert!(err.contains("--log-level"), "{err}");
    // Nothing was created by the refused starts.
    assert!(!dir.path().join("d").exists());
}

#[test]
fn a_client_closing_its_event_stream_is_not_logged_as_an_error() {
    let mut node = TestNode::start_with(&["--log-level", "debug"]);
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
    // femme colours a record's module path red at error level.
    assert!(!node.log_text().contains("\x1b[31m"), "{}", node.log_text());
}
