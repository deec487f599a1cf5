//! `/metrics` as Prometheus reads it: parsed by prometheus_client's strict OpenMetrics parser
//! (Python, `tests/metrics/parse.py`; `.ci/run` installs it into `.ci/venv`), on a 3-node
//! cluster with a node down and a repair running.

mod common;

use std::collections::HashMap;
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::cluster::{Cluster, put_ok, read_ok};
use common::*;

/// A Python that has prometheus_client, or `None` (the test is skipped outside CI).
fn parser_python() -> Option<String> {
    let ok = Command::new("python3")
        .args(["-c", "import prometheus_client.openmetrics.parser"])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if ok {
        return Some("python3".into());
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "python3 with prometheus_client is not on PATH but CI is set: .ci/run installs it into .ci/venv"
    );
    eprintln!(
        "skipping: no python3 with prometheus_client on PATH (pip install prometheus-client in .ci/venv)"
    );
    None
}

#[derive(Debug, Clone)]
struct Sample {
    name: String,
    labels: HashMap<String, String>,
    value: f64,
}

#[derive(Debug)]
struct Scrape {
    /// Family name → its type, as the exposition declared it.
    types: HashMap<String, String>,
    samples: Vec<Sample>,
}

impl Scrape {
    /// Samples named `name` whose labels include every pair of `labels`.
    fn find(&self, name: &str, labels: &[(&str, &str)]) -> Vec<&Sample> {
        self.samples
            .iter()
            .filter(|s| {
                s.name == name && labels.iter().all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
            })
            .collect()
    }

    /// The one sample named `name` with `labels`.
    fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let found = self.find(name, labels);
        assert_eq!(found.len(), 1, "{name}{labels:?}: {found:?}");
        found[0].value
    }
}

/// Fetches `/metrics` and parses it strictly; a malformed exposition fails the test.
fn scrape(python: &str, node: &TestNode) -> Scrape {
    let (code, head, body) = get_with(&node.url("/metrics"), &[]);
    assert_eq!(code, 200, "{}", String::from_utf8_lossy(&body));
    let content_type = head.get("content-type").and_then(|v| v.to_str().ok()).unwrap_or_default();
    assert!(content_type.starts_with("application/openmetrics-text"), "{content_type}");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/metrics/parse.py");
    let mut child = Command::new(python)
        .arg(script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3");
    child.stdin.take().unwrap().write_all(&body).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "the OpenMetrics parser refused /metrics: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&body)
    );
    let families: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    let mut scrape = Scrape { types: HashMap::new(), samples: Vec::new() };
    for f in families {
        scrape.types.insert(f["name"].as_str().unwrap().into(), f["type"].as_str().unwrap().into());
        for s in f["samples"].as_array().unwrap() {
            let labels = s["labels"]
                .as_object()
                .unwrap()
                .iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
                .collect();
            let value = s["value"].as_f64().unwrap_or(f64::NAN);
            scrape.samples.push(Sample { name: s["name"].as_str().unwrap().into(), labels, value });
        }
    }
    scrape
}

#[test]
fn metrics_parse_and_show_a_node_down_under_replication_and_repair() {
    let Some(python) = parser_python() else { return };
    // A grace long enough to see the under-replicated state before repair moves data (a
    // node going down starts a ranking pass; its grace ending, another).
    let mut c = Cluster::start(3, &["--down-out-after", "6s"]);
    let mut uploaded = 0u64;
    for i in 0..3 {
        let data = random_bytes(3 << 20, 70 + i);
        uploaded += data.len() as u64;
        put_ok(&c.nodes[0], &format!("secret-plans/file-{i}.bin"), &data);
    }
    let read = read_ok(&c.nodes[0], "secret-plans/file-0.bin");
    assert_eq!(get(&c.nodes[0].url("/api/v1/files/no-such-file")).0, 404);

    let s = scrape(&python, &c.nodes[0]);
    // Types as Prometheus conventions want them.
    for (family, kind) in [
        ("diststore_build", "info"),
        ("diststore_http_requests", "counter"),
        ("diststore_http_request_duration_seconds", "histogram"),
        ("diststore_repair_fetched_chunks", "counter"),
        ("diststore_peer_up", "gauge"),
        ("process_cpu_seconds", "counter"),
        ("process_resident_memory_bytes", "gauge"),
    ] {
        assert_eq!(s.types.get(family).map(String::as_str), Some(kind), "{family}");
    }
    assert_eq!(s.value("diststore_build_info", &[("version", env!("CARGO_PKG_VERSION"))]), 1.0);
    let put = [("method", "PUT"), ("route", "/api/v1/files/{name}")];
    assert_eq!(s.value("diststore_http_requests_total", &[put[0], put[1], ("status", "201")]), 3.0);
    assert_eq!(
        s.value(
            "diststore_http_requests_total",
            &[("method", "GET"), ("route", "/api/v1/files/{name}"), ("status", "404")]
        ),
        1.0
    );
    assert_eq!(s.value("diststore_http_request_duration_seconds_count", &put), 3.0);
    assert_eq!(
        s.value("diststore_http_request_duration_seconds_bucket", &[put[0], put[1], ("le", "+Inf")]),
        3.0
    );
    assert!(s.value("diststore_http_request_duration_seconds_sum", &put) > 0.0);
    // Labels carry route templates, never the names in paths.
    for sample in &s.samples {
        for value in sample.labels.values() {
            assert!(!value.contains("secret-plans") && !value.contains("no-such-file"), "{sample:?}");
        }
    }
    // Bytes at the socket: at least the bodies that went in and out.
    assert!(s.value("diststore_http_received_bytes_total", &[]) >= uploaded as f64);
    assert!(s.value("diststore_http_sent_bytes_total", &[]) >= read.len() as f64);
    assert_eq!(s.value("diststore_files", &[]), 3.0);
    assert!(s.value("diststore_db_file_bytes", &[]) > 0.0);
    assert!(s.value("diststore_disk_free_bytes", &[]) > 0.0);
    assert!(s.value("diststore_disk_used_bytes", &[]) > 0.0);
    assert_eq!(s.value("diststore_uploads", &[]), 0.0);
    assert!(s.value("diststore_uploads_max", &[]) >= 1.0);
    assert!(s.value("process_resident_memory_bytes", &[]) > 1e6);
    assert!(s.value("process_open_fds", &[]) >= 3.0);
    assert!(s.value("process_cpu_seconds_total", &[]) > 0.0);
    for peer in [&c.nodes[1], &c.nodes[2]] {
        assert_eq!(s.value("diststore_peer_up", &[("peer", &peer.base)]), 1.0);
        let seen = s.value("diststore_peer_last_seen_timestamp_seconds", &[("peer", &peer.base)]);
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64();
        assert!((now - 60.0..now + 5.0).contains(&seen), "last seen {seen}, now {now}");
    }
    assert_eq!(s.value("diststore_chunks_under_replicated", &[]), 0.0);
    // Every series the Grafana dashboard queries is one the node exposes.
    let dashboard =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/grafana-dashboard.json")).unwrap();
    let exposed: std::collections::HashSet<&str> = s.samples.iter().map(|x| x.name.as_str()).collect();
    let mut queried = 0;
    for query in serde_json::from_str::<Value>(&dashboard).unwrap()["panels"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| p["targets"].as_array().cloned().unwrap_or_default())
    {
        let expr = query["expr"].as_str().unwrap();
        for word in expr.split(|ch: char| !(ch.is_ascii_alphanumeric() || ch == '_')) {
            if word.starts_with("diststore_") || word.starts_with("process_") {
                assert!(exposed.contains(word), "the dashboard queries {word}, which /metrics does not have");
                queried += 1;
            }
        }
    }
    assert!(queried > 20, "{queried}");

    // Node 2 goes down: node 0 shows it down, and its chunks under-replicated while the
    // grace runs.
    let down = c.nodes[2].base.clone();
    c.nodes[2].kill9();
    let under =
        wait_for("node 0 to show node 2 down and chunks under-replicated", Duration::from_secs(30), || {
            let s = scrape(&python, &c.nodes[0]);
            let under = s.value("diststore_chunks_under_replicated", &[]);
            (s.value("diststore_peer_up", &[("peer", &down)]) == 0.0 && under > 0.0).then_some(under)
        });
    let total_chunks: f64 =
        (0..2).map(|i| scrape(&python, &c.nodes[i]).value("diststore_chunks", &[])).sum::<f64>();
    assert!(under <= total_chunks, "{under} under-replicated of {total_chunks} stored on the survivors");

    // After the grace, repair fetches copies onto the survivors: the counters show it, and
    // nothing stays missing or under-replicated.
    wait_for("the survivors' repair to fetch node 2's copies", Duration::from_secs(60), || {
        let scrapes: Vec<Scrape> = (0..2).map(|i| scrape(&python, &c.nodes[i])).collect();
        let fetched: f64 =
            scrapes.iter().map(|s| s.value("diststore_repair_fetched_chunks_total", &[])).sum();
        let settled = scrapes.iter().all(|s| {
            s.value("diststore_chunks_missing", &[]) == 0.0
                && s.value("diststore_chunks_under_replicated", &[]) == 0.0
                && s.value("diststore_repair_passes_total", &[]) > 0.0
        });
        (fetched > 0.0 && settled).then_some(())
    });
    // Node 2 still shows down on node 0, with the last time it was heard from.
    let s = scrape(&python, &c.nodes[0]);
    assert_eq!(s.value("diststore_peer_up", &[("peer", &down)]), 0.0);
    assert!(s.value("diststore_peer_last_seen_timestamp_seconds", &[("peer", &down)]) > 0.0);
}
