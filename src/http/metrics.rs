//! `/metrics` in the OpenMetrics text format (prometheus-client): the node's status as
//! gauges and counters, per-peer state, the HTTP requests this app served, the process.
//!
//! Figures the node already keeps (status, gates, counters) are read at each scrape into a
//! registry made for it; only the request families live across scrapes, in [`HttpMetrics`].
//! Every label takes values from a bounded set: route templates and method names from fixed
//! lists, statuses, and the cluster's members.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;
use tide::{Response, StatusCode};

use super::{ApiError, Req};
use crate::limits::Limits;
use crate::{process, runtime};

/// Request latency buckets, seconds: a cached read takes a millisecond, a large upload minutes.
const LATENCY_BUCKETS: [f64; 16] =
    [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 120.0];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    method: &'static str,
    route: &'static str,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    method: &'static str,
    route: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PeerLabels {
    peer: String,
    node_id: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MemberLabels {
    node_id: String,
    state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    version: &'static str,
}

type HistogramFamily = Family<RouteLabels, Histogram, fn() -> Histogram>;

/// What the app's requests did, kept from start.
#[derive(Debug)]
pub struct HttpMetrics {
    requests: Family<RequestLabels, Counter>,
    durations: HistogramFamily,
    in_flight: Gauge,
}

impl Default for HttpMetrics {
    fn default() -> Self {
        HttpMetrics {
            requests: Family::default(),
            durations: Family::new_with_constructor(|| Histogram::new(LATENCY_BUCKETS)),
            in_flight: Gauge::default(),
        }
    }
}

/// A request being served: counted in flight until it is [`HttpMetrics::finish`]ed or dropped.
pub struct InFlight<'a>(&'a Gauge);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.dec();
    }
}

impl HttpMetrics {
    pub fn start(&self) -> InFlight<'_> {
        self.in_flight.inc();
        InFlight(&self.in_flight)
    }

    /// Counts one answered request; `route` and `method` come from fixed lists.
    pub fn finish(&self, method: &'static str, route: &'static str, status: u16, seconds: f64) {
        self.requests.get_or_create(&RequestLabels { method, route, status }).inc();
        self.durations.get_or_create(&RouteLabels { method, route }).observe(seconds);
    }
}

pub async fn metrics(req: Req) -> Result<Response, ApiError> {
    let state = req.state();
    let s = state.node.status().await?;
    let proc = runtime::blocking(process::read).await;
    let mut root = Registry::default();
    register_process(&mut root, &proc);
    let reg = root.sub_registry_with_prefix("diststore");
    reg.register(
        "build",
        "The running build: its version",
        Info::new(BuildLabels { version: env!("CARGO_PKG_VERSION") }),
    );
    // Figures read from the status: (name, help, value), gauges then counters.
    let gauges = [
        ("files", "Live names", s.stats.files),
        ("logical_bytes", "Sum of the sizes of all live names", s.stats.logical_bytes),
        ("unique_bytes", "Sum of the sizes of distinct stored files", s.stats.unique_bytes),
        ("stored_bytes", "Ciphertext bytes of chunks stored on this node", s.stats.stored_bytes),
        ("chunks", "Chunks stored on this node", s.stats.chunks),
        ("replication", "Copies the cluster keeps of each chunk (R)", s.replication as u64),
        ("uptime_seconds", "Seconds since the node started", s.uptime_secs),
        ("db_file_bytes", "Size of the database file", s.space.db_file_bytes),
        ("db_used_bytes", "Estimated bytes of the database file in use", s.space.db_used_bytes),
        (
            "db_free_bytes",
            "Estimated free bytes inside the database file (reused by writes, returned by compaction)",
            s.space.db_free_bytes,
        ),
        ("disk_total_bytes", "Size of the filesystem holding the data", s.space.disk.total),
        ("disk_free_bytes", "Free bytes on the filesystem holding the data", s.space.disk.free),
        (
            "disk_used_bytes",
            "Bytes in use on the filesystem holding the data (by anything)",
            s.space.disk.total.saturating_sub(s.space.disk.free),
        ),
        (
            "disk_reserve_bytes",
            "Free disk space kept for deletes and the collector; uploads are refused below it",
            s.space.reserve_bytes,
        ),
        (
            "chunks_missing",
            "Chunks this node should hold but lacks, at the last repair pass",
            s.repair.missing,
        ),
        (
            "chunks_under_replicated",
            "Chunks of the store with fewer than R owners up (an owner down, or fewer nodes than R), \
             as this node saw the cluster at the last repair pass",
            s.repair.under_replicated,
        ),
        (
            "repair_pass_running",
            "1 while a repair ranking pass is under way",
            u64::from(s.repair.pass_running),
        ),
        (
            "repair_pass_ranked_chunks",
            "Chunk references the pass under way has ranked (0 between passes)",
            s.repair.pass_ranked,
        ),
        ("repair_queued_chunks", "Chunks queued for repair (found missing or damaged)", s.repair.queued),
        (
            "scrub_rate_bytes_per_second",
            "Bytes the scrub verifies per second at most; 0 is off",
            s.scrub.rate,
        ),
        ("leases", "Leases peers' transfers hold on this node", s.leases as u64),
    ];
    for (name, help, value) in gauges {
        reg.register(name, help, ConstGauge::new(i64::try_from(value).unwrap_or(i64::MAX)));
    }
    let counters = [
        ("compactions", "Database compactions since start", s.space.compactions),
        (
            "repair_passes",
            "Repair ranking passes completed since start (one per change of the cluster view)",
            s.repair.passes,
        ),
        (
            "repair_fetched_bytes",
            "Sealed chunk bytes repair fetched from peers since start",
            s.repair.fetched_bytes,
        ),
        ("repair_fetched_chunks", "Chunks repair fetched from peers since start", s.repair.fetched),
        (
            "repair_dropped_chunks",
            "Surplus chunk copies repair dropped once their owners confirmed, since start",
            s.repair.dropped,
        ),
        ("scrub_passes", "Scrub passes completed since start", s.scrub.passes),
        ("scrub_checked_chunks", "Chunks the scrub verified since start", s.scrub.checked),
        ("scrub_corrupt_chunks", "Damaged chunk copies the scrub dropped since start", s.scrub.corrupt),
        (
            "scrub_errors",
            "Chunks the scrub could not read or drop, and passes it had to stop, since start",
            s.scrub.errors,
        ),
        ("gc_passes", "Collector passes since start", s.gc.passes),
        ("gc_files", "Files (manifests) the collector removed since start", s.gc.files),
        ("gc_chunks", "Chunks the collector removed since start", s.gc.chunks),
        ("gc_bytes", "Chunk bytes the collector removed since start", s.gc.bytes),
        (
            "peer_handshakes_refused",
            "Unauthenticated peer handshakes refused (over the total or one source's bound)",
            s.handshakes_refused,
        ),
    ];
    for (name, help, value) in counters {
        reg.register(name, help, ConstCounter::new(value));
    }
    if let Some(ms) = s.repair.last_pass_ms {
        reg.register(
            "repair_last_pass_timestamp_seconds",
            "When the last repair pass ended (Unix seconds): the missing and under-replicated figures are from then",
            ConstGauge::new(ms as f64 / 1000.0),
        );
    }

    let up = Family::<PeerLabels, Gauge>::default();
    let seen = Family::<PeerLabels, Gauge<f64, std::sync::atomic::AtomicU64>>::default();
    for p in &s.peers {
        let labels =
            PeerLabels { peer: p.url.clone(), node_id: p.node.map(|n| n.to_string()).unwrap_or_default() };
        up.get_or_create(&labels).set(i64::from(p.up));
        if let Some(ms) = p.last_seen_ms {
            seen.get_or_create(&labels).set(ms as f64 / 1000.0);
        }
    }
    reg.register("peer_up", "1 while the link to a member is up, else 0", up);
    reg.register(
        "peer_last_seen_timestamp_seconds",
        "When a member was last heard from (Unix seconds); absent if never",
        seen,
    );
    let members = Family::<MemberLabels, Gauge>::default();
    for n in state.node.cluster().nodes() {
        members.get_or_create(&MemberLabels { node_id: n.node.to_string(), state: n.state.as_str() }).set(1);
    }
    reg.register(
        "member_state",
        "1 for each member (this node included) in its lifecycle state: up, down, out, draining, removed",
        members,
    );

    register_limits(reg, state.node.limits());
    reg.register(
        "http_requests",
        "HTTP requests answered, by method, route template and status",
        state.http.requests.clone(),
    );
    reg.register(
        "http_request_duration_seconds",
        "Time from a request's head to its response's head, by method and route template",
        state.http.durations.clone(),
    );
    reg.register("http_requests_in_flight", "HTTP requests being handled", state.http.in_flight.clone());

    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, &root)
        .map_err(|_| ApiError::Internal("encoding the metrics failed".into()))?;
    Ok(Response::builder(StatusCode::Ok)
        .content_type("application/openmetrics-text; version=1.0.0; charset=utf-8")
        .body(out)
        .build())
}

/// The gates' state and the fronts' counters.
fn register_limits(reg: &mut Registry, limits: &Limits) {
    for (gate, what, name) in [
        (&limits.http_connections, "HTTP connections", "http_connections"),
        (&limits.s3_connections, "S3 connections", "s3_connections"),
        (&limits.uploads, "Uploads in flight (native, legacy, S3 and resumable)", "uploads"),
    ] {
        reg.register(name, format!("{what} open now"), ConstGauge::new(gate.in_use() as i64));
        reg.register(
            format!("{name}_max"),
            format!("Most {what} at once"),
            ConstGauge::new(gate.max() as i64),
        );
        reg.register(
            format!("{name}_refused"),
            format!("{what} refused because the most were open, since start"),
            ConstCounter::new(gate.refused()),
        );
    }
    let read = Limits::read;
    reg.register(
        "http_heads_refused",
        "Request heads (or multipart preambles and part headers) refused for their length",
        ConstCounter::new(read(&limits.heads_refused)),
    );
    reg.register(
        "http_header_timeouts",
        "Connections closed because a request head did not arrive in time",
        ConstCounter::new(read(&limits.header_timeouts)),
    );
    reg.register(
        "http_body_timeouts",
        "Requests failed because their body sent nothing for the idle timeout",
        ConstCounter::new(read(&limits.body_timeouts)),
    );
    reg.register(
        "http_received_bytes",
        "Bytes read from HTTP connections (heads, bodies, and peer links upgraded from them)",
        ConstCounter::new(read(&limits.bytes_received)),
    );
    reg.register(
        "http_sent_bytes",
        "Bytes written to HTTP connections (heads, bodies, and peer links upgraded from them)",
        ConstCounter::new(read(&limits.bytes_sent)),
    );
}

/// The conventional `process_*` metrics, each only when the kernel gave it.
fn register_process(reg: &mut Registry, p: &process::ProcessStats) {
    let gauges = [
        ("process_resident_memory_bytes", "Resident memory size", p.resident_bytes),
        ("process_virtual_memory_bytes", "Virtual memory size", p.virtual_bytes),
        ("process_threads", "OS threads", p.threads),
        ("process_open_fds", "Open file descriptors", p.open_fds),
        ("process_max_fds", "Most open file descriptors allowed (soft limit)", p.max_fds),
    ];
    for (name, help, value) in gauges {
        if let Some(v) = value {
            reg.register(name, help, ConstGauge::new(v as i64));
        }
    }
    if let Some(v) = p.cpu_seconds {
        reg.register("process_cpu_seconds", "User and system CPU time spent", ConstCounter::new(v));
    }
    if let Some(v) = p.start_time_seconds {
        reg.register(
            "process_start_time_seconds",
            "Start time of the process since the Unix epoch",
            ConstGauge::new(v),
        );
    }
}
