//! Resource bounds on the HTTP front (issue 12, items 4, 5, 6, 10): each attack reproduced
//! against the real binary over raw sockets, with the node's memory, threads and descriptors
//! (from /proc) held to the configured bounds while a probe keeps being answered in time.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::*;

const TOKEN: &str = "bounds-token-0123456789abcdef0123456789";

fn addr(node: &TestNode) -> String {
    node.base.trim_start_matches("http://").to_owned()
}

fn connect(node: &TestNode) -> TcpStream {
    let s = TcpStream::connect(addr(node)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.set_write_timeout(Some(Duration::from_secs(10))).unwrap();
    s
}

/// Reads one response: status and body (by Content-Length, chunked, or to the end).
fn read_response(s: &mut TcpStream) -> std::io::Result<(u16, Vec<u8>)> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if s.read(&mut byte)? == 0 {
            return Err(std::io::Error::new(ErrorKind::UnexpectedEof, "closed before a response"));
        }
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).to_lowercase();
    let status = head.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let header = |name: &str| {
        head.lines().find_map(|l| l.strip_prefix(&format!("{name}: ")).map(|v| v.trim().to_owned()))
    };
    let mut body = Vec::new();
    if let Some(len) = header("content-length") {
        body.resize(len.parse().unwrap(), 0);
        s.read_exact(&mut body)?;
    } else if header("transfer-encoding").as_deref() == Some("chunked") {
        loop {
            let mut line = Vec::new();
            while !line.ends_with(b"\r\n") {
                s.read_exact(&mut byte)?;
                line.push(byte[0]);
            }
            let size = usize::from_str_radix(String::from_utf8_lossy(&line).trim(), 16).unwrap();
            let mut chunk = vec![0u8; size + 2];
            s.read_exact(&mut chunk)?;
            if size == 0 {
                break;
            }
            body.extend_from_slice(&chunk[..size]);
        }
    } else {
        s.read_to_end(&mut body)?;
    }
    Ok((status, body))
}

fn request(node: &TestNode, text: &str) -> (u16, Vec<u8>) {
    let mut s = connect(node);
    s.write_all(text.as_bytes()).unwrap();
    read_response(&mut s).expect("a response")
}

fn get_raw(node: &TestNode, path: &str) -> (u16, Vec<u8>) {
    request(
        node,
        &format!(
            "GET {path} HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {TOKEN}\r\nConnection: close\r\n\r\n"
        ),
    )
}

/// A read that must be answered in full within a second, whatever else holds the node.
fn probe(node: &TestNode, path: &str, expect: &[u8]) {
    let start = Instant::now();
    let mut s = connect(node);
    s.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
    let text = format!(
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {TOKEN}\r\nConnection: close\r\n\r\n"
    );
    s.write_all(text.as_bytes()).unwrap();
    let (status, body) = read_response(&mut s).expect("the probe is answered");
    let took = start.elapsed();
    assert_eq!(status, 200, "probe {path}: {}", String::from_utf8_lossy(&body[..body.len().min(200)]));
    assert!(body == expect, "probe {path} returned other bytes");
    assert!(took < Duration::from_secs(1), "probe {path} took {took:?}");
}

struct Usage {
    rss_mib: u64,
    threads: u64,
    fds: usize,
}

fn usage(node: &TestNode) -> Usage {
    let pid = node.pid().expect("running");
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    let field = |name: &str| -> u64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or_else(|| panic!("{name} in /proc/{pid}/status"))
    };
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).expect("proc fd").count();
    Usage { rss_mib: field("VmRSS:") / 1024, threads: field("Threads:"), fds }
}

/// Open sockets of the node (listeners and connections).
fn sockets(node: &TestNode) -> usize {
    let pid = node.pid().expect("running");
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("proc fd")
        .filter_map(|f| std::fs::read_link(f.ok()?.path()).ok())
        .filter(|target| target.to_string_lossy().starts_with("socket:"))
        .count()
}

fn thread_names(node: &TestNode) -> Vec<String> {
    let pid = node.pid().expect("running");
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .expect("proc task")
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .map(|n| n.trim().to_owned())
        .collect()
}

fn metric(node: &TestNode, name: &str) -> u64 {
    let (status, body) = get_raw(node, "/metrics");
    assert_eq!(status, 200);
    let text = String::from_utf8(body).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("{name} in /metrics"))
}

fn start(args: &[&str]) -> TestNode {
    let mut all = vec!["--api-token", TOKEN, "--s3-listen", "off"];
    all.extend_from_slice(args);
    TestNode::start_with(&all)
}

/// Stores `data` as `name` (for probes that read through the blocking pool).
fn store(node: &TestNode, name: &str, data: &[u8]) {
    let mut s = connect(node);
    let head = format!(
        "PUT /api/v1/files/{name} HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {TOKEN}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        data.len()
    );
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(data).unwrap();
    let (status, body) = read_response(&mut s).unwrap();
    assert_eq!(status, 201, "{}", String::from_utf8_lossy(&body));
}

/// Writes `total` bytes of `fill` after `prefix` until done or the node stops taking them;
/// returns how many bytes went out.
fn flood(mut s: TcpStream, prefix: &[u8], fill: u8, total: usize) -> usize {
    s.set_write_timeout(Some(Duration::from_secs(5))).unwrap();
    if s.write_all(prefix).is_err() {
        return 0;
    }
    let block = vec![fill; 64 * 1024];
    let mut sent = prefix.len();
    while sent < total {
        match s.write(&block) {
            Ok(0) | Err(_) => break,
            Ok(n) => sent += n,
        }
    }
    sent
}

/// Issue 12 item 4: one header line without a newline was buffered whole (1 GiB line → 1 GB
/// RSS), before authentication too. Now at most --max-head-size is read: four senders of
/// 256 MiB lines are cut off after a few MiB, the node's memory does not move, and reads go on.
#[test]
fn a_head_line_without_end_is_refused_before_it_is_buffered() {
    let node = start(&["--max-head-size", "4KiB"]);
    let data = random_bytes(300_000, 1);
    store(&node, "probe.bin", &data);
    let before = usage(&node);
    let senders: Vec<_> = (0..4)
        .map(|i| {
            let s = connect(&node);
            std::thread::spawn(move || {
                let prefix = format!("PUT /api/v1/files/x{i} HTTP/1.1\r\nHost: localhost\r\nX-Long: ");
                flood(s, prefix.as_bytes(), b'a', 256 << 20)
            })
        })
        .collect();
    for _ in 0..5 {
        probe(&node, "/api/v1/files/probe.bin", &data);
    }
    for sender in senders {
        let sent = sender.join().unwrap();
        // The node reads 4 KiB, answers 431, reads past at most 1 MiB, and closes; the rest
        // is only what socket buffers held.
        assert!(sent < 32 << 20, "the node took {sent} bytes of one head line");
    }
    let after = usage(&node);
    assert!(after.rss_mib < before.rss_mib + 64, "RSS went from {} to {} MiB", before.rss_mib, after.rss_mib);
    assert_eq!(metric(&node, "diststore_http_heads_refused_total"), 4);

    // A client that stops there reads why.
    let mut s = connect(&node);
    let long = format!("GET /health HTTP/1.1\r\nHost: localhost\r\nX-Long: {}", "a".repeat(5000));
    s.write_all(long.as_bytes()).unwrap();
    let (status, body) = read_response(&mut s).expect("an answer");
    assert_eq!(status, 431, "{}", String::from_utf8_lossy(&body));
    assert!(error_of(&body).contains("--max-head-size"));
    // Heads within the bound are served, and keep their connection.
    let mut s = connect(&node);
    for _ in 0..2 {
        let ok = format!("GET /health HTTP/1.1\r\nHost: localhost\r\nX-Fill: {}\r\n\r\n", "b".repeat(3000));
        s.write_all(ok.as_bytes()).unwrap();
        assert_eq!(read_response(&mut s).unwrap().0, 200);
    }
}

/// Issue 12 item 5: bodies had no timeout, even after a 401, so stalled unauthenticated PUTs
/// held descriptors until the node stopped accepting. Now connections beyond
/// --max-connections get 503 at once, and a stalled body is dropped after
/// --body-idle-timeout.
#[test]
fn stalled_bodies_are_dropped_and_connections_are_bounded() {
    let node = start(&["--max-connections", "32", "--body-idle-timeout", "3s", "--header-timeout", "3s"]);
    let data = random_bytes(100_000, 2);
    store(&node, "probe.bin", &data);
    let before = usage(&node);
    let before_sockets = sockets(&node);
    let stalled_head =
        "PUT /api/v1/files/stalled HTTP/1.1\r\nHost: localhost\r\nContent-Length: 1000000\r\n\r\nsome";
    // Without a token: each gets its 401 and then stalls in the body.
    let mut held = Vec::new();
    for _ in 0..32 {
        let mut s = connect(&node);
        s.write_all(stalled_head.as_bytes()).unwrap();
        assert_eq!(read_response_head(&mut s), 401);
        held.push((s, Instant::now()));
    }
    assert_eq!(metric_over_limit(&node), 503, "a connection past the bound is refused");
    // Many more are refused at once, each with 503 or a close, never a hang.
    for _ in 0..100 {
        let mut s = connect(&node);
        let start = Instant::now();
        let _ = s.write_all(b"GET /health HTTP/1.1\r\nHost: localhost\r\n\r\n");
        match read_response(&mut s) {
            Ok((status, _)) => assert_eq!(status, 503),
            Err(e) => {
                assert!(start.elapsed() < Duration::from_secs(2), "refusal took {:?}: {e}", start.elapsed())
            }
        }
    }
    let during = usage(&node);
    // The held connections, and at most 64 being told 503 (each for a second at most).
    assert!(during.fds <= before.fds + 32 + 64, "descriptors went from {} to {}", before.fds, during.fds);
    // The stalled connections are closed after the idle timeout (plus a margin), not held.
    for (mut s, since) in held {
        let mut rest = Vec::new();
        let _ = s.read_to_end(&mut rest);
        let held_for = since.elapsed();
        assert!(held_for < Duration::from_secs(7), "a stalled body was held {held_for:?}");
    }
    // (Compared by sockets: a runtime may start a reactor of its own, with descriptors, later.)
    wait_for("the stalled connections to be gone", Duration::from_secs(5), || {
        (sockets(&node) <= before_sockets).then_some(())
    });
    probe(&node, "/api/v1/files/probe.bin", &data);
    assert!(metric(&node, "diststore_http_body_timeouts_total") >= 32);
    assert!(metric(&node, "diststore_http_connections_refused_total") >= 100);
    assert_eq!(metric(&node, "diststore_http_connections_max"), 32);
}

/// Status of the next response on `s`, reading its head only.
fn read_response_head(s: &mut TcpStream) -> u16 {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(s.read(&mut byte).expect("a response"), 1, "closed before a response");
        head.push(byte[0]);
    }
    String::from_utf8_lossy(&head).split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0)
}

/// The status a fresh connection gets while every place is taken.
fn metric_over_limit(node: &TestNode) -> u16 {
    let mut s = connect(node);
    s.write_all(b"GET /health HTTP/1.1\r\nHost: localhost\r\n\r\n").unwrap();
    read_response(&mut s).map(|(status, _)| status).unwrap_or(0)
}

/// Issue 12 item 6: about 250 uploads stalled after 1 MiB took the whole blocking pool that
/// reads use, and every GET timed out; 500 idle threads and ~800 MB stayed. Now uploads past
/// --max-uploads get 503, the admitted ones run on threads of their own, reads are answered
/// meanwhile, and a stalled upload is dropped (threads and memory returned) after the idle
/// timeout.
#[test]
fn stalled_uploads_neither_starve_reads_nor_keep_threads() {
    let node = start(&["--max-uploads", "8", "--body-idle-timeout", "5s"]);
    let data = random_bytes(300_000, 3);
    store(&node, "probe.bin", &data);
    let before = usage(&node);
    // The sealing threads are unnamed (they show the process name, as the main thread does).
    let before_unnamed = thread_names(&node).iter().filter(|n| *n == "diststore").count();
    let head = format!(
        "PUT /api/v1/files/stalled HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {TOKEN}\r\nContent-Length: {}\r\n\r\n",
        100 << 20
    );
    let body = random_bytes(3 << 19, 4);
    let mut admitted = Vec::new();
    let mut refused = 0;
    for _ in 0..40 {
        let mut s = connect(&node);
        s.write_all(head.as_bytes()).unwrap();
        // A refused upload is told at once, before it sends its body.
        s.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
        let mut first = [0u8; 12];
        match s.read(&mut first) {
            Ok(n) if n > 0 => {
                assert!(first.starts_with(b"HTTP/1.1 503"), "{}", String::from_utf8_lossy(&first));
                refused += 1;
            }
            _ => {
                s.write_all(&body).unwrap();
                admitted.push(s);
            }
        }
    }
    assert_eq!((admitted.len(), refused), (8, 32));
    wait_for("8 uploads in flight", Duration::from_secs(5), || {
        (metric(&node, "diststore_uploads") == 8).then_some(())
    });
    for _ in 0..5 {
        probe(&node, "/api/v1/files/probe.bin", &data);
    }
    let during = usage(&node);
    // A hashing and a cutting thread per upload (once its first block is in).
    wait_for("the uploads' own threads", Duration::from_secs(5), || {
        (thread_names(&node).iter().filter(|n| n.starts_with("upload-")).count() == 8 * 2).then_some(())
    });
    // Four threads per upload at most; its queued blocks are a few MiB.
    assert!(
        during.threads <= before.threads + 8 * 4 + 16,
        "threads: {} then {}",
        before.threads,
        during.threads
    );
    assert!(
        during.rss_mib < before.rss_mib + 8 * 16 + 32,
        "RSS: {} then {} MiB",
        before.rss_mib,
        during.rss_mib
    );
    assert_eq!(metric(&node, "diststore_uploads_refused_total"), 32);

    // After the idle timeout the stalled uploads are gone: answered, closed, their threads
    // ended, nothing named.
    for mut s in admitted {
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let (status, body) = read_response(&mut s).expect("the stalled upload is answered");
        assert_eq!(status, 400, "{}", String::from_utf8_lossy(&body));
        assert!(error_of(&body).contains("in time"), "{}", String::from_utf8_lossy(&body));
    }
    // Their own threads end with them (the shared pools keep what reads started).
    wait_for("the upload threads to end", Duration::from_secs(5), || {
        let names = thread_names(&node);
        let sealers = names.iter().filter(|n| *n == "diststore").count();
        let own = names.iter().any(|n| n.starts_with("upload-"));
        (!own && sealers <= before_unnamed && metric(&node, "diststore_uploads") == 0).then_some(())
    });
    assert_eq!(get_raw(&node, "/api/v1/files/stalled").0, 404);
    store(&node, "after.bin", &body);
    probe(&node, "/api/v1/files/after.bin", &body);
}

/// Issue 12 item 10: a multipart part's header line and the preamble before the first part
/// were buffered whole (407 MB for 200 MB of each, and the upload was accepted). Now either
/// is refused once past --max-head-size (and the key field's bound).
#[test]
fn multipart_preambles_and_part_headers_are_bounded() {
    let node = start(&["--max-head-size", "4KiB"]);
    let before = usage(&node);
    let boundary = "XyZ";
    let post = |len: usize| {
        format!(
            "POST /api/store HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {TOKEN}\r\nContent-Type: multipart/form-data; boundary={boundary}\r\nContent-Length: {len}\r\n\r\n"
        )
    };
    // Past the refusal the node reads on (and discards) up to 64 MiB, so that clients that
    // send their whole body before reading see the answer; then it closes.
    let total = 256 << 20;
    for (what, start) in [
        (
            "a part header line",
            format!("--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; x=\""),
        ),
        ("a preamble", String::from("preamble ")),
    ] {
        let s = connect(&node);
        let mut reader = s.try_clone().unwrap();
        let prefix = format!("{}{start}", post(total + start.len()));
        let sender = std::thread::spawn(move || flood(s, prefix.as_bytes(), b'a', total));
        let answer = read_response(&mut reader);
        let sent = sender.join().unwrap();
        let (status, body) = answer.unwrap_or_else(|e| panic!("{what}: no answer: {e}"));
        assert_eq!(status, 400, "{what}: {}", String::from_utf8_lossy(&body));
        assert!(error_of(&body).contains("--max-head-size"), "{what}: {}", String::from_utf8_lossy(&body));
        assert!(sent < 100 << 20, "{what}: the node took {sent} bytes");
    }
    let after = usage(&node);
    assert!(after.rss_mib < before.rss_mib + 64, "RSS went from {} to {} MiB", before.rss_mib, after.rss_mib);
    assert_eq!(metric(&node, "diststore_http_heads_refused_total"), 2);
    assert_eq!(get_raw(&node, "/api/list").1, b"[]");

    // A well-formed form still stores, with a preamble and an ignored field.
    let form = format!(
        "preamble\r\n--{boundary}\r\nContent-Disposition: form-data; name=\"submit\"\r\n\r\nUpload\r\n--{boundary}\r\nContent-Disposition: form-data; name=\"key\"\r\n\r\nk1\r\n--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.txt\"\r\nContent-Type: text/plain\r\n\r\n{}\r\n--{boundary}--\r\n",
        "z".repeat(200_000)
    );
    let (status, body) = request(&node, &format!("{}{form}", post(form.len())));
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    assert_eq!(get_raw(&node, "/api/get?key=k1").1.len(), 200_000);
}

/// Issue 12 item 10: `/api/list` built the whole array in memory (20 concurrent over 20,000
/// names: 742 MB) and `sort=size&limit=1` loaded every record. Now `/api/list` streams page by
/// page, and ordered listings keep only the top `offset + limit`.
#[test]
fn listings_stream_and_sorted_pages_stay_small() {
    let node = start(&[]);
    let names = 1500;
    let workers: Vec<_> = (0..6)
        .map(|w| {
            let addr = addr(&node);
            std::thread::spawn(move || {
                let mut s = TcpStream::connect(addr).unwrap();
                for i in (w..names).step_by(6) {
                    let body = "x".repeat(i % 97);
                    let put = format!(
                        "PUT /api/v1/files/dir/n{i:05} HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {TOKEN}\r\nContent-Length: {}\r\n\r\n{body}",
                        body.len()
                    );
                    s.write_all(put.as_bytes()).unwrap();
                    assert_eq!(read_response(&mut s).unwrap().0, 201);
                }
            })
        })
        .collect();
    workers.into_iter().for_each(|w| w.join().unwrap());

    let mut s = connect(&node);
    s.write_all(
        format!("GET /api/list HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {TOKEN}\r\n\r\n")
            .as_bytes(),
    )
    .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        s.read_exact(&mut byte).unwrap();
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).to_lowercase();
    assert!(head.contains("transfer-encoding: chunked"), "not streamed: {head}");
    let (_, body) = get_raw(&node, "/api/list");
    let listed: Vec<String> = serde_json::from_slice(&body).expect("a JSON array");
    let expected: Vec<String> = (0..names).map(|i| format!("dir/n{i:05}")).collect();
    assert_eq!(listed, expected);

    let (status, body) = get_raw(&node, "/api/v1/files?sort=size&order=desc&limit=1");
    assert_eq!(status, 200);
    let page = json(&body);
    assert_eq!(page["total"], names as u64);
    // Sizes are i % 97: the largest, 96, first holds for i = 96 + 97k; ties go by name, and
    // descending reverses that too.
    let largest = (0..names).filter(|i| i % 97 == 96).max().unwrap();
    assert_eq!(page["files"][0]["name"], format!("dir/n{largest:05}"));
    let (_, body) = get_raw(&node, "/api/v1/files?sort=size&limit=3&offset=5");
    let page = json(&body);
    let mut by_size: Vec<usize> = (0..names).collect();
    by_size.sort_by_key(|i| (i % 97, format!("dir/n{i:05}")));
    let want: Vec<String> = by_size[5..8].iter().map(|i| format!("dir/n{i:05}")).collect();
    let got: Vec<String> =
        page["files"].as_array().unwrap().iter().map(|f| f["name"].as_str().unwrap().into()).collect();
    assert_eq!(got, want);
    let (_, body) = get_raw(&node, "/api/v1/files?order=desc&limit=2&prefix=dir/");
    let got: Vec<String> =
        json(&body)["files"].as_array().unwrap().iter().map(|f| f["name"].as_str().unwrap().into()).collect();
    assert_eq!(got, [format!("dir/n{:05}", names - 1), format!("dir/n{:05}", names - 2)]);
    let (status, _) = get_raw(&node, "/api/v1/files?sort=size&offset=20000");
    assert_eq!(status, 400, "a deep offset in size order is refused");
    let (_, body) = get_raw(&node, "/api/v1/files?limit=2&offset=1000");
    assert_eq!(json(&body)["files"][0]["name"], "dir/n01000");
}

/// A head that starts but never ends is answered 408 after --header-timeout and closed; an
/// idle kept-alive connection is closed quietly then too.
#[test]
fn a_slow_head_times_out() {
    let node = start(&["--header-timeout", "1s"]);
    let mut s = connect(&node);
    let started = Instant::now();
    s.write_all(b"GET /health HTTP/1.1\r\nHost: localhost\r\n").unwrap();
    let (status, _) = read_response(&mut s).expect("an answer");
    assert_eq!(status, 408);
    assert!(started.elapsed() < Duration::from_secs(3), "took {:?}", started.elapsed());
    let mut idle = connect(&node);
    idle.write_all(b"GET /health HTTP/1.1\r\nHost: localhost\r\n\r\n").unwrap();
    assert_eq!(read_response_head(&mut idle), 200);
    let mut rest = [0u8; 3];
    idle.read_exact(&mut rest).unwrap();
    let started = Instant::now();
    let mut more = Vec::new();
    idle.read_to_end(&mut more).expect("closed, not reset");
    assert!(
        more.is_empty() && started.elapsed() < Duration::from_secs(3),
        "{more:?} {:?}",
        started.elapsed()
    );
    assert_eq!(metric(&node, "diststore_http_header_timeouts_total"), 1);
}

/// The S3 listener has the same bounds: connections past --max-connections are closed at
/// once, a head must arrive within --header-timeout, and a connection where nothing moves
/// either way for --body-idle-timeout (a stalled body, an idle client) is closed.
#[test]
fn the_s3_listener_is_bounded_alike() {
    let s3_node = |header: &str, idle: &str| {
        let args = ["--api-token", TOKEN, "--s3-listen", "127.0.0.1:0", "--max-connections", "8"];
        let timeouts = ["--header-timeout", header, "--body-idle-timeout", idle];
        let node = TestNode::start_with(&[&args[..], &timeouts[..]].concat());
        let s3 = node.s3().trim_start_matches("http://").to_owned();
        (node, s3)
    };
    let open = |s3: &str| {
        let s = TcpStream::connect(s3).expect("connect to S3");
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s
    };
    // How long until the node closes `s`, reading (and dropping) whatever it answers.
    let closed_after = |mut s: TcpStream| {
        let start = Instant::now();
        let mut sink = Vec::new();
        let _ = s.read_to_end(&mut sink);
        start.elapsed()
    };

    // The head bound (the idle one far off).
    let (node, s3) = s3_node("2s", "60s");
    let mut held: Vec<TcpStream> = (0..8).map(|_| open(&s3)).collect();
    wait_for("8 S3 connections", Duration::from_secs(5), || {
        (metric(&node, "diststore_s3_connections") == 8).then_some(())
    });
    let refused = closed_after(open(&s3));
    assert!(refused < Duration::from_secs(1), "a ninth connection was held {refused:?}");
    assert_eq!(metric(&node, "diststore_s3_connections_refused_total"), 1);
    held[0].write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\n").unwrap();
    let head = closed_after(held.remove(0));
    assert!(head < Duration::from_secs(5), "a head that never ends held its connection {head:?}");
    drop(held);

    // The idle bound (the head one far off): a connection where nothing moves goes.
    let (node, s3) = s3_node("60s", "2s");
    let since = Instant::now();
    let idle = open(&s3);
    let mut started = open(&s3);
    started.write_all(b"GET / HTTP/1.1\r\nHost: loc").unwrap();
    for s in [idle, started] {
        closed_after(s);
        let took = since.elapsed();
        assert!(took > Duration::from_millis(1500) && took < Duration::from_secs(5), "closed after {took:?}");
    }
    wait_for("the S3 connections to be gone", Duration::from_secs(5), || {
        (metric(&node, "diststore_s3_connections") == 0).then_some(())
    });
}
