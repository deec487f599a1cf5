//! Fault tests checked against their history (the Jepsen way): client threads run random PUTs,
//! GETs, DELETEs and listings through random nodes of a 3-node cluster (R = 2) while a nemesis
//! kills (`kill -9`) and restarts nodes, pauses them (SIGSTOP/SIGCONT), cuts one off from the
//! others and drops its packets. Every operation is recorded with its start, end and outcome;
//! after the faults heal and the cluster converges, `check` decides whether the history and the
//! converged state are allowed: no acknowledged write lost, no read of bytes never written, no
//! read cut short by a node that was not itself faulted.
//!
//! `NEMESIS_SECS` sets the length of the fault phase (default below), `NEMESIS_SEED` replays a
//! run's schedule and workload (each thread's choices are seeded; the interleaving is not).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use sha2::Digest;

use common::net::*;
use common::*;

/// Nodes holding each chunk.
const R: usize = 2;
/// Default length of the fault phase. With start-up and convergence a test stays well under
/// 2.5 minutes on 2 cores in a debug build.
const DEFAULT_SECS: u64 = 40;
const CLIENTS: usize = 5;
/// Per client request: long enough for a 20 MiB upload to a debug build that was paused for
/// up to 4 s, short enough that a stuck request shows in the history.
const REQUEST: Duration = Duration::from_secs(60);
/// How long the cluster may take to converge once every fault is healed.
const CONVERGE: Duration = Duration::from_secs(90);
/// Names several clients write, delete and read at once.
const CONTENDED: usize = 4;

/// The two fault tests share the machine's cores and use its network: one at a time, so one
/// test's load never shows up as another's timeouts.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

// ---------------------------------------------------------------------------------------------
// The history.

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    Put,
    Get,
    Delete,
    List,
}

#[derive(Clone, Debug, PartialEq)]
enum Outcome {
    /// PUT 201, GET 200 with the whole body, DELETE 204, list 200.
    Ok,
    /// GET or DELETE 404.
    NotFound,
    /// Certainly had no effect: a 4xx other than 404, a connection that never opened, a GET
    /// or list that failed.
    Failed(String),
    /// A PUT or DELETE that may or may not have taken effect (5xx, the connection broke). After
    /// a client timeout the node may still be working on it, so it may even take effect later.
    Unknown { timed_out: bool, why: String },
    /// A GET answered 200 whose body ended before its Content-Length or broke off.
    Cut { got: u64, expected: Option<u64>, why: String },
}

#[derive(Clone, Debug)]
struct Op {
    kind: Kind,
    /// 1-based node the request went to.
    node: usize,
    /// The file name; for a list, the prefix.
    name: String,
    /// PUT: SHA-256 of the body sent. GET that read the whole body: SHA-256 of what it read.
    value: Option<String>,
    /// List: (name, id) of every entry returned.
    listed: Vec<(String, String)>,
    /// Since the start of the test.
    start: Duration,
    end: Duration,
    outcome: Outcome,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum FaultKind {
    Kill,
    Pause,
    Partition,
    Loss,
}

/// A fault on one node, from when it was injected until the node was back and linked again.
#[derive(Clone, Debug)]
struct Fault {
    kind: FaultKind,
    node: usize,
    start: Duration,
    end: Duration,
}

/// What one node answers for a name once the cluster has converged.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Seen {
    /// 200 with the whole body, which has this SHA-256.
    Present(String),
    /// 404.
    Absent,
    /// Anything else (503, a cut body, a transport error).
    Unreadable(String),
}

// ---------------------------------------------------------------------------------------------
// The checker: a pure function of the history, the fault log and the final state.

/// A write that ended less than this before another started is treated as concurrent with it:
/// name records are ordered by hybrid logical clock stamps in whole milliseconds, and two nodes'
/// stamps within one millisecond are ordered by counter and node id, not by real time.
const SLACK: Duration = Duration::from_millis(2);

#[derive(Debug, Default)]
struct Verdict {
    /// PUTs answered 201 and DELETEs answered 204.
    acked_writes: usize,
    /// Names whose final state drops an acknowledged write that nothing superseded.
    lost: Vec<String>,
    /// Names whose final state is not allowed for another reason (a superseded value back, an
    /// absence no delete explains).
    unexplained: Vec<String>,
    /// Reads, listings or final states showing a value no PUT of that name wrote (before).
    never_written: Vec<String>,
    cuts: usize,
    /// Cut reads served by a node that was neither killed nor paused nor cut off meanwhile.
    unexcused_cuts: Vec<String>,
}

impl Verdict {
    fn holds(&self) -> bool {
        self.lost.is_empty()
            && self.unexplained.is_empty()
            && self.never_written.is_empty()
            && self.unexcused_cuts.is_empty()
    }
}

/// May have taken effect.
fn effective(op: &Op) -> bool {
    matches!(op.outcome, Outcome::Ok | Outcome::Unknown { .. })
}

/// When the op's effect, if any, had certainly happened: never known for a request the client
/// gave up on, since the node may still be working on it.
fn settled_by(op: &Op) -> Option<Duration> {
    match op.outcome {
        Outcome::Unknown { timed_out: true, .. } => None,
        _ => Some(op.end),
    }
}

/// Whether an acknowledged op of a kind in `by` started after `w` had certainly taken effect,
/// so that by last-writer-wins `w` cannot be the final state.
fn superseded(w: &Op, writes: &[&Op], by: &[Kind]) -> bool {
    settled_by(w).is_some_and(|done| {
        writes.iter().any(|o| o.outcome == Outcome::Ok && by.contains(&o.kind) && o.start > done + SLACK)
    })
}

fn describe(op: &Op) -> String {
    let value = op.value.as_deref().map(|v| format!(" {}", &v[..12.min(v.len())])).unwrap_or_default();
    format!(
        "{:?} {}{value} via n{} [{:.3}s..{:.3}s] -> {:?}",
        op.kind,
        op.name,
        op.node,
        op.start.as_secs_f64(),
        op.end.as_secs_f64(),
        op.outcome
    )
}

/// Decides whether `history` (every operation, any order), `faults` and `last` (each name's
/// final state as seen by each node) are allowed.
fn check(history: &[Op], faults: &[Fault], last: &BTreeMap<String, Vec<(usize, Seen)>>) -> Verdict {
    let mut v = Verdict {
        acked_writes: history
            .iter()
            .filter(|o| matches!(o.kind, Kind::Put | Kind::Delete) && o.outcome == Outcome::Ok)
            .count(),
        ..Verdict::default()
    };
    let mut writes: BTreeMap<&str, Vec<&Op>> = BTreeMap::new();
    for op in history.iter().filter(|o| matches!(o.kind, Kind::Put | Kind::Delete)) {
        writes.entry(&op.name).or_default().push(op);
    }
    let written_before = |name: &str, value: &str, by: Duration| {
        writes.get(name).is_some_and(|ws| {
            ws.iter().any(|w| w.kind == Kind::Put && w.value.as_deref() == Some(value) && w.start < by)
        })
    };

    // What reads and listings saw.
    for op in history {
        match (&op.kind, &op.outcome) {
            (Kind::Get, Outcome::Ok) => {
                let value = op.value.as_deref().unwrap_or("(none)");
                if !written_before(&op.name, value, op.end) {
                    v.never_written.push(describe(op));
                }
            }
            (Kind::List, Outcome::Ok) => {
                for (name, id) in &op.listed {
                    if !written_before(name, id, op.end) {
                        v.never_written.push(format!("{name} = {id} in {}", describe(op)));
                    }
                }
            }
            (Kind::Get, Outcome::Cut { .. }) => {
                v.cuts += 1;
                let faulted =
                    faults.iter().any(|f| f.node == op.node && f.start < op.end && f.end > op.start);
                if !faulted {
                    v.unexcused_cuts.push(describe(op));
                }
            }
            _ => {}
        }
    }

    // The final state of every name ever written or seen at the end.
    let names: BTreeSet<&str> = writes.keys().copied().chain(last.keys().map(String::as_str)).collect();
    let none = Vec::new();
    for name in names {
        let ws: Vec<&Op> =
            writes.get(name).unwrap_or(&none).iter().copied().filter(|o| effective(o)).collect();
        let puts = || ws.iter().filter(|o| o.kind == Kind::Put);
        let allowed: BTreeSet<&str> = puts()
            .filter(|p| !superseded(p, &ws, &[Kind::Put, Kind::Delete]))
            .filter_map(|p| p.value.as_deref())
            .collect();
        // Acknowledged PUTs nothing later replaced: one of these (or a concurrent write) must
        // be what every node serves.
        let standing: Vec<&&Op> = puts()
            .filter(|p| p.outcome == Outcome::Ok && !superseded(p, &ws, &[Kind::Put, Kind::Delete]))
            .collect();
        let absent_ok = ws.iter().any(|d| d.kind == Kind::Delete && !superseded(d, &ws, &[Kind::Put]))
            || !puts().any(|p| p.outcome == Outcome::Ok);
        let Some(seen) = last.get(name) else {
            v.unexplained.push(format!("{name}: no final state observed"));
            continue;
        };
        let mut lost = Vec::new();
        for (node, s) in seen {
            match s {
                Seen::Present(h) if allowed.contains(h.as_str()) => {}
                Seen::Absent if absent_ok => {}
                Seen::Present(h) if !written_before(name, h, Duration::MAX) => {
                    v.never_written.push(format!("{name}: node {node} finally serves {h}, never written"))
                }
                Seen::Present(h) => v.unexplained.push(format!(
                    "{name}: node {node} finally serves {h}, which a later acknowledged write replaced"
                )),
                _ if !standing.is_empty() => lost.push(format!("n{node} {s:?}")),
                _ => v
                    .unexplained
                    .push(format!("{name}: node {node} finally {s:?}, and no delete explains it")),
            }
        }
        if !lost.is_empty() {
            let acked: Vec<String> = standing.iter().map(|p| describe(p)).collect();
            v.lost.push(format!("{name}: acknowledged {acked:?}, finally {}", lost.join(", ")));
        }
    }
    v
}

// ---------------------------------------------------------------------------------------------
// Clients: one operation each, recorded.

/// Classifies a request that got no HTTP answer.
fn transport_failure(e: &ureq::Error) -> Outcome {
    match e {
        ureq::Error::Timeout(_) => Outcome::Unknown { timed_out: true, why: e.to_string() },
        // Nothing reached the node.
        ureq::Error::ConnectionFailed => Outcome::Failed(e.to_string()),
        ureq::Error::Io(io) if io.kind() == std::io::ErrorKind::ConnectionRefused => {
            Outcome::Failed(e.to_string())
        }
        _ => Outcome::Unknown { timed_out: false, why: e.to_string() },
    }
}

/// The outcome of a PUT or DELETE answered with `code`.
fn write_outcome(code: u16, body: &[u8], ok: u16) -> Outcome {
    let why = || format!("{code} {}", String::from_utf8_lossy(&body[..body.len().min(200)]));
    match code {
        c if c == ok => Outcome::Ok,
        404 => Outcome::NotFound,
        400..=499 => Outcome::Failed(why()),
        // A 5xx may come after part of the work was done: it may have taken effect.
        _ => Outcome::Unknown { timed_out: false, why: why() },
    }
}

struct Client<'a> {
    urls: &'a [String],
    t0: Instant,
}

impl Client<'_> {
    fn op(&self, kind: Kind, node: usize, name: &str, start: Instant) -> Op {
        Op {
            kind,
            node,
            name: name.to_string(),
            value: None,
            listed: Vec::new(),
            start: start - self.t0,
            end: self.t0.elapsed(),
            outcome: Outcome::Ok,
        }
    }

    fn file_url(&self, node: usize, name: &str) -> String {
        format!("{}/api/v1/files/{name}", self.urls[node - 1])
    }

    fn put(&self, node: usize, name: &str, data: &[u8]) -> Op {
        let value = sha256_hex(data);
        let start = Instant::now();
        let outcome = match bounded_agent(REQUEST).put(self.file_url(node, name)).send(data) {
            Ok(mut res) => {
                let code = res.status().as_u16();
                let body = res.body_mut().read_to_vec().unwrap_or_default();
                write_outcome(code, &body, 201)
            }
            Err(e) => transport_failure(&e),
        };
        Op { value: Some(value), outcome, ..self.op(Kind::Put, node, name, start) }
    }

    fn delete(&self, node: usize, name: &str) -> Op {
        let start = Instant::now();
        let outcome = match bounded_agent(REQUEST).delete(self.file_url(node, name)).call() {
            Ok(mut res) => {
                let code = res.status().as_u16();
                let body = res.body_mut().read_to_vec().unwrap_or_default();
                write_outcome(code, &body, 204)
            }
            Err(e) => transport_failure(&e),
        };
        Op { outcome, ..self.op(Kind::Delete, node, name, start) }
    }

    fn get(&self, node: usize, name: &str) -> Op {
        let start = Instant::now();
        let (outcome, value) = read_file(&self.file_url(node, name), REQUEST);
        Op { outcome, value, ..self.op(Kind::Get, node, name, start) }
    }

    fn list(&self, node: usize, prefix: &str) -> Op {
        let start = Instant::now();
        let url = format!("{}/api/v1/files?prefix={prefix}&limit=1000", self.urls[node - 1]);
        let (outcome, listed) = match try_get(&url, REQUEST) {
            Ok((200, body)) => match list_page(&body) {
                Ok((listed, _)) => (Outcome::Ok, listed),
                Err(e) => (Outcome::Failed(e), Vec::new()),
            },
            Ok((code, body)) => {
                (Outcome::Failed(format!("{code} {}", String::from_utf8_lossy(&body))), Vec::new())
            }
            Err(e) => (Outcome::Failed(e), Vec::new()),
        };
        Op { outcome, listed, ..self.op(Kind::List, node, prefix, start) }
    }
}

/// Streams a GET, hashing as it goes: the outcome, and the SHA-256 when the whole body came.
fn read_file(url: &str, limit: Duration) -> (Outcome, Option<String>) {
    let mut res = match bounded_agent(limit).get(url).call() {
        Ok(res) => res,
        Err(e) => return (Outcome::Failed(e.to_string()), None),
    };
    let code = res.status().as_u16();
    if code != 200 {
        let body = res.body_mut().read_to_vec().unwrap_or_default();
        return match code {
            404 => (Outcome::NotFound, None),
            _ => (Outcome::Failed(format!("{code} {}", String::from_utf8_lossy(&body))), None),
        };
    }
    let expected =
        res.headers().get("content-length").and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    let mut reader = res.body_mut().with_config().limit(u64::MAX).reader();
    let mut hasher = sha2::Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    let mut got = 0u64;
    loop {
        match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                hasher.update(&buf[..n]);
                got += n as u64;
            }
            Err(e) => return (Outcome::Cut { got, expected, why: e.to_string() }, None),
        }
    }
    if expected.is_some_and(|len| len != got) {
        return (Outcome::Cut { got, expected, why: "short body".into() }, None);
    }
    (Outcome::Ok, Some(hex::encode(hasher.finalize())))
}

/// A page of a listing: (name, id) entries, and the `after` for the next page.
type Page = (Vec<(String, String)>, Option<String>);

fn list_page(body: &[u8]) -> Result<Page, String> {
    let page: Value = serde_json::from_slice(body).map_err(|e| format!("listing is not JSON: {e}"))?;
    let files = page["files"].as_array().ok_or("listing without files")?;
    let entries = files
        .iter()
        .filter_map(|f| Some((f["name"].as_str()?.to_string(), f["id"].as_str()?.to_string())))
        .collect();
    Ok((entries, page["next"].as_str().map(str::to_string)))
}

/// Mostly small bodies, sometimes large: 4 KiB to 20 MiB.
fn body_size(rng: &mut StdRng) -> usize {
    const K: usize = 1024;
    match rng.random_range(0..100) {
        0..80 => rng.random_range(4 * K..64 * K),
        80..95 => rng.random_range(64 * K..1024 * K),
        95..99 => rng.random_range(1024 * K..6 * 1024 * K),
        _ => rng.random_range(6 * 1024 * K..=20 * 1024 * K),
    }
}

/// One client thread's workload until `until`: random operations through random nodes.
/// Stops at `until`, or early when `stop` is set (the nemesis panicked).
fn run_client(
    id: usize,
    seed: u64,
    c: &Client,
    pool: &Mutex<Vec<String>>,
    until: Instant,
    stop: &AtomicBool,
) -> Vec<Op> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut ops = Vec::new();
    let mut k = 0usize;
    let n = c.urls.len();
    let pick = |pool: &Mutex<Vec<String>>, rng: &mut StdRng| {
        let names = pool.lock().unwrap();
        names[rng.random_range(0..names.len())].clone()
    };
    while Instant::now() < until && !stop.load(Ordering::Relaxed) {
        let node = rng.random_range(1..=n);
        k += 1;
        match rng.random_range(0..100) {
            0..22 => {
                let name = format!("u/{id}-{k}");
                let data = random_bytes(body_size(&mut rng), rng.random());
                pool.lock().unwrap().push(name.clone());
                ops.push(c.put(node, &name, &data));
            }
            22..34 => {
                let name = format!("c/{}", rng.random_range(0..CONTENDED));
                let data = random_bytes(body_size(&mut rng), rng.random());
                ops.push(c.put(node, &name, &data));
            }
            34..66 | 88..100 => ops.push(c.get(node, &pick(pool, &mut rng))),
            66..76 => ops.push(c.delete(node, &pick(pool, &mut rng))),
            76..82 => {
                let prefix = ["", "c/", "a/", "b/", &format!("u/{id}-")][rng.random_range(0..5)].to_string();
                ops.push(c.list(node, &prefix));
            }
            _ => ops.extend(race_put_and_delete(id, k, c, pool, &mut rng)),
        }
    }
    ops
}

/// The pattern of the known loss: `a` (1–8 MiB) written, then `b` (= `a` with a 4 KiB patch,
/// so they share most chunks) written through one node while `a` is deleted through another.
fn race_put_and_delete(
    id: usize,
    k: usize,
    c: &Client,
    pool: &Mutex<Vec<String>>,
    rng: &mut StdRng,
) -> Vec<Op> {
    let n = c.urls.len();
    let (a, b) = (format!("a/{id}-{k}"), format!("b/{id}-{k}"));
    let mut data = random_bytes(rng.random_range(1 << 20..=8 << 20), rng.random());
    let mut ops = vec![c.put(rng.random_range(1..=n), &a, &data)];
    pool.lock().unwrap().extend([a.clone(), b.clone()]);
    let at = rng.random_range(0..data.len() - 4096);
    fill_random(&mut data[at..at + 4096], rng.random());
    let put_node = rng.random_range(1..=n);
    let delete_node = (put_node + rng.random_range(0..n - 1)) % n + 1;
    // Jitter, so the delete lands at different points of the upload: up to its length at
    // 8 MB/s, about what a debug build takes.
    let delay = Duration::from_millis(rng.random_range(0..=data.len() as u64 / 8000));
    std::thread::scope(|s| {
        let deleter = s.spawn(|| {
            std::thread::sleep(delay);
            c.delete(delete_node, &a)
        });
        ops.push(c.put(put_node, &b, &data));
        ops.push(deleter.join().expect("delete thread"));
    });
    ops
}

// ---------------------------------------------------------------------------------------------
// Convergence: poll until every node agrees and every chunk has R copies, then the final state.

struct Converged {
    /// Each name's final state on each node.
    last: BTreeMap<String, Vec<(usize, Seen)>>,
    /// What was still wrong at the bound; empty when it converged.
    problems: Vec<String>,
    /// What was wrong at the last poll that found something wrong: what converged last.
    last_wrong: Vec<String>,
    took: Duration,
}

/// A node's full listing (name → id), following `next`.
fn full_listing(url: &str) -> Result<BTreeMap<String, String>, String> {
    let mut out = BTreeMap::new();
    let mut after = String::new();
    loop {
        let page = format!("{url}/api/v1/files?prefix=&limit=1000&after={after}");
        let (code, body) = try_get(&page, QUICK)?;
        if code != 200 {
            return Err(format!("{code} {}", String::from_utf8_lossy(&body)));
        }
        let (entries, next) = list_page(&body)?;
        out.extend(entries);
        match next {
            Some(next) => after = next,
            None => return Ok(out),
        }
    }
}

fn seen_at(url: &str, name: &str) -> Seen {
    match read_file(&format!("{url}/api/v1/files/{name}"), REQUEST) {
        (Outcome::Ok, Some(h)) => Seen::Present(h),
        (Outcome::NotFound, _) => Seen::Absent,
        (outcome, _) => Seen::Unreadable(format!("{outcome:?}")),
    }
}

/// Whether `name`'s chunks have exactly R copies among the nodes, by `/api/v1/info`.
fn replicas_ok(url: &str, name: &str) -> Result<(), String> {
    let (code, body) = try_get(&format!("{url}/api/v1/info/{name}"), QUICK)?;
    if code != 200 {
        return Err(format!("info {name}: {code} {}", String::from_utf8_lossy(&body)));
    }
    let info: Value = serde_json::from_slice(&body).map_err(|e| format!("info {name}: {e}"))?;
    let distinct = info["distinct_chunks"].as_u64().ok_or("info without distinct_chunks")?;
    let counts: Vec<u64> = info["holders"]
        .as_array()
        .ok_or("info without holders")?
        .iter()
        .filter_map(|h| h["chunks"].as_u64())
        .collect();
    let total: u64 = counts.iter().sum();
    if total != R as u64 * distinct || counts.iter().any(|&c| c > distinct) {
        return Err(format!(
            "{name}: {distinct} distinct chunks, copies per node {counts:?} (want {R} each)"
        ));
    }
    Ok(())
}

/// Polls (bounded) until every node lists the same names, every name reads back the same
/// through every node (its listed content, or 404 when unlisted), and every file's chunks have
/// R copies; returns the final state either way, with what was still wrong.
fn converge(urls: &[String], written: &BTreeSet<String>, limit: Duration) -> Converged {
    let start = Instant::now();
    // Names whose reads agreed with this listing on every node.
    let mut verified: BTreeMap<String, Seen> = BTreeMap::new();
    let mut last: BTreeMap<String, Vec<(usize, Seen)>> = BTreeMap::new();
    let mut listing_seen: Option<BTreeMap<String, String>> = None;
    let mut last_wrong = Vec::new();
    loop {
        let problems = (|| -> Vec<String> {
            let listings: Vec<_> = urls.iter().map(|u| full_listing(u)).collect();
            let mut problems = Vec::new();
            for (i, l) in listings.iter().enumerate() {
                if let Err(e) = l {
                    problems.push(format!("listing node {}: {e}", i + 1));
                }
            }
            if !problems.is_empty() {
                return problems;
            }
            let listings: Vec<BTreeMap<String, String>> = listings.into_iter().map(Result::unwrap).collect();
            for (i, l) in listings.iter().enumerate().skip(1) {
                if *l != listings[0] {
                    let differ: Vec<&String> = l
                        .iter()
                        .filter(|(k, v)| listings[0].get(*k) != Some(v))
                        .map(|(k, _)| k)
                        .chain(listings[0].iter().filter(|(k, v)| l.get(*k) != Some(v)).map(|(k, _)| k))
                        .take(10)
                        .collect();
                    problems.push(format!("nodes 1 and {} list differently, e.g. {differ:?}", i + 1));
                }
            }
            if !problems.is_empty() {
                return problems;
            }
            let listing = listings.into_iter().next().unwrap();
            if listing_seen.as_ref() != Some(&listing) {
                verified.clear();
                listing_seen = Some(listing.clone());
            }
            let names: BTreeSet<String> = written.iter().chain(listing.keys()).cloned().collect();
            let todo: Vec<String> = names.into_iter().filter(|n| !verified.contains_key(n)).collect();
            // One reader per node, in parallel.
            let per_node: Vec<Vec<Seen>> = std::thread::scope(|s| {
                let readers: Vec<_> = urls
                    .iter()
                    .map(|u| s.spawn(|| todo.iter().map(|name| seen_at(u, name)).collect::<Vec<_>>()))
                    .collect();
                readers.into_iter().map(|r| r.join().expect("reader")).collect()
            });
            for (j, name) in todo.iter().enumerate() {
                let seen: Vec<(usize, Seen)> =
                    per_node.iter().enumerate().map(|(i, s)| (i + 1, s[j].clone())).collect();
                let want = match listing.get(name) {
                    Some(id) => Seen::Present(id.clone()),
                    None => Seen::Absent,
                };
                if seen.iter().all(|(_, s)| *s == want) {
                    verified.insert(name.clone(), want);
                } else if problems.len() < 20 {
                    problems.push(format!("{name}: listed as {want:?}, read as {seen:?}"));
                }
                last.insert(name.clone(), seen);
            }
            if !problems.is_empty() {
                return problems;
            }
            for name in listing.keys() {
                if let Err(e) = replicas_ok(&urls[0], name) {
                    problems.push(e);
                }
            }
            problems
        })();
        if problems.is_empty() || start.elapsed() > limit {
            // Names never read (the listings never agreed): read them now for the checker.
            let missing: Vec<&String> = written.iter().filter(|n| !last.contains_key(*n)).collect();
            for name in missing {
                let seen = urls.iter().enumerate().map(|(i, u)| (i + 1, seen_at(u, name))).collect();
                last.insert(name.clone(), seen);
            }
            return Converged { last, problems, last_wrong, took: start.elapsed() };
        }
        last_wrong = problems;
        std::thread::sleep(Duration::from_millis(500));
    }
}

// ---------------------------------------------------------------------------------------------
// A run: clients and nemesis together, then convergence, the checker and a report.

fn env_u64(key: &str) -> Option<u64> {
    std::env::var(key).ok().map(|v| v.parse().unwrap_or_else(|_| panic!("{key} must be a number: {v}")))
}

/// Sets the flag when dropped, also by a panic, so the client threads stop with the nemesis.
struct StopOnDrop<'a>(&'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// Runs the clients against `urls` for the fault phase while `nemesis` (given its own seeded
/// RNG, the test's start and the end of the phase) injects faults on this thread and returns
/// them once every node is back. Then converges, checks and reports; panics on a violation.
fn run(
    test: &str,
    urls: &[String],
    nemesis: impl FnOnce(&mut StdRng, Instant, Instant) -> Vec<Fault>,
) -> Verdict {
    let seed = env_u64("NEMESIS_SEED").unwrap_or_else(rand::random);
    let secs = env_u64("NEMESIS_SECS").unwrap_or(DEFAULT_SECS);
    eprintln!("{test}: seed {seed} (NEMESIS_SEED to replay), fault phase {secs} s, {CLIENTS} clients");
    let t0 = Instant::now();
    let until = t0 + Duration::from_secs(secs);
    let pool = Mutex::new((0..CONTENDED).map(|i| format!("c/{i}")).collect::<Vec<_>>());
    let stop = AtomicBool::new(false);
    let client = Client { urls, t0 };
    let (mut history, faults) = std::thread::scope(|s| {
        let clients: Vec<_> = (0..CLIENTS)
            .map(|id| {
                let (client, pool, stop) = (&client, &pool, &stop);
                s.spawn(move || run_client(id, seed ^ (id as u64 + 1), client, pool, until, stop))
            })
            .collect();
        let guard = StopOnDrop(&stop);
        let faults = nemesis(&mut StdRng::seed_from_u64(seed), t0, until);
        drop(guard);
        let history: Vec<Op> = clients.into_iter().flat_map(|c| c.join().expect("client thread")).collect();
        (history, faults)
    });
    history.sort_by_key(|o| o.start);
    let phase = t0.elapsed();

    // Every name a write touched, deletes included: a name only ever deleted (a delete of a
    // name no put reached yet) has a final state to check too (absent).
    let written: BTreeSet<String> = history
        .iter()
        .filter(|o| matches!(o.kind, Kind::Put | Kind::Delete))
        .map(|o| o.name.clone())
        .collect();
    let converged = converge(urls, &written, CONVERGE);
    let verdict = check(&history, &faults, &converged.last);
    report(test, &history, &faults, &verdict, &converged, phase);
    assert!(verdict.holds(), "{test}: the history breaks the guarantees (see above)");
    assert!(
        converged.problems.is_empty(),
        "{test}: no convergence within {CONVERGE:?}: {:#?}",
        converged.problems
    );
    verdict
}

fn report(test: &str, history: &[Op], faults: &[Fault], v: &Verdict, c: &Converged, phase: Duration) {
    let mut per_kind: BTreeMap<(Kind, &str), usize> = BTreeMap::new();
    for op in history {
        let outcome = match op.outcome {
            Outcome::Ok => "ok",
            Outcome::NotFound => "404",
            Outcome::Failed(_) => "failed",
            Outcome::Unknown { .. } => "indeterminate",
            Outcome::Cut { .. } => "cut",
        };
        *per_kind.entry((op.kind, outcome)).or_default() += 1;
    }
    // Latency per kind (median and max), and why requests failed, most common first.
    let mut latency: BTreeMap<Kind, Vec<Duration>> = BTreeMap::new();
    let mut reasons: BTreeMap<String, usize> = BTreeMap::new();
    for op in history {
        latency.entry(op.kind).or_default().push(op.end.saturating_sub(op.start));
        let why = match &op.outcome {
            Outcome::Failed(why) | Outcome::Unknown { why, .. } | Outcome::Cut { why, .. } => why,
            _ => continue,
        };
        let short: String = why.chars().take(90).collect();
        *reasons.entry(format!("{:?} {short}", op.kind)).or_default() += 1;
    }
    let latency: Vec<String> = latency
        .into_iter()
        .map(|(k, mut d)| {
            d.sort();
            format!("{k:?} median {:?} max {:?}", d[d.len() / 2], d[d.len() - 1])
        })
        .collect();
    let mut reasons: Vec<_> = reasons.into_iter().collect();
    reasons.sort_by_key(|(_, n)| std::cmp::Reverse(*n));
    let mut fault_kinds: BTreeMap<FaultKind, usize> = BTreeMap::new();
    for f in faults {
        *fault_kinds.entry(f.kind).or_default() += 1;
    }
    let races = history.iter().filter(|o| o.kind == Kind::Put && o.name.starts_with("b/")).count();
    eprintln!("===== {test} =====");
    eprintln!(
        "operations: {} in {:.1} s (with heal); by kind and outcome: {per_kind:?}",
        history.len(),
        phase.as_secs_f64()
    );
    eprintln!("latency: {}", latency.join("; "));
    for (why, n) in reasons.iter().take(8) {
        eprintln!("  {n:>5} x {why}");
    }
    eprintln!("faults injected: {fault_kinds:?}");
    eprintln!("acknowledged writes: {}; put/delete races run: {races}", v.acked_writes);
    eprintln!(
        "lost: {}, unexplained final states: {}, never-written reads: {}, cut reads: {} ({} outside fault windows)",
        v.lost.len(),
        v.unexplained.len(),
        v.never_written.len(),
        v.cuts,
        v.unexcused_cuts.len()
    );
    match c.problems.is_empty() {
        true => eprintln!(
            "converged {:.1} s after the heal ({} names); the last still wrong: {:?}",
            c.took.as_secs_f64(),
            c.last.len(),
            &c.last_wrong[..c.last_wrong.len().min(3)]
        ),
        false => eprintln!(
            "NOT converged {:.1} s after the heal; still wrong ({}): {:#?}",
            c.took.as_secs_f64(),
            c.problems.len(),
            c.problems
        ),
    }
    for (what, list) in [
        ("lost", &v.lost),
        ("unexplained", &v.unexplained),
        ("never written", &v.never_written),
        ("unexcused cut", &v.unexcused_cuts),
    ] {
        for line in list.iter().take(20) {
            eprintln!("  {what}: {line}");
        }
    }
}

/// Lines of a node's log that report errors or warnings (red or yellow in a debug build's
/// pretty log, level 40 or 50 in a release build's JSON), counted by their first words, so a
/// report can say what the nodes complained about.
fn log_complaints(log: &str) -> BTreeMap<String, usize> {
    const RED: &str = "\x1b[31m";
    const YELLOW: &str = "\x1b[33m";
    let mut out = BTreeMap::new();
    let complaint = |l: &str| {
        l.contains(RED) || l.contains(YELLOW) || l.contains("\"level\":40") || l.contains("\"level\":50")
    };
    for line in log.lines().filter(|l| complaint(l) || l.contains("panicked")) {
        let text: String = strip_ansi(line).chars().take(110).collect();
        *out.entry(text).or_default() += 1;
    }
    out
}

fn print_complaints(node: usize, log: &str) {
    let complaints = log_complaints(log);
    let total: usize = complaints.values().sum();
    eprintln!("node {node}: {total} error/warning lines in its log");
    let mut top: Vec<_> = complaints.into_iter().collect();
    top.sort_by_key(|(_, n)| std::cmp::Reverse(*n));
    for (text, n) in top.into_iter().take(6) {
        eprintln!("  {n:>5} x {text}");
    }
}

/// A pause in the nemesis schedule (time between faults, a fault's length): the schedule
/// itself, not a wait for the cluster to settle.
fn hold(rng: &mut StdRng, from_ms: u64, to_ms: u64) {
    std::thread::sleep(Duration::from_millis(rng.random_range(from_ms..to_ms)));
}

// ---------------------------------------------------------------------------------------------
// Test 1: nodes as local processes; kill -9 and restart, SIGSTOP and SIGCONT.

/// A free port below the kernel's ephemeral range: a node killed and restarted binds its port
/// again, and a client connection could meanwhile take a port from that range as its own.
fn free_low_port(rng: &mut StdRng) -> u16 {
    (0..1000)
        .map(|_| rng.random_range(20_000..32_000))
        .find(|&p| std::net::TcpListener::bind(("127.0.0.1", p)).is_ok())
        .expect("a free port between 20000 and 32000")
}

struct Local {
    nodes: Vec<TestNode>,
    tmp: Option<tempfile::TempDir>,
}

impl Local {
    /// Node 1 first, the others joining through it; all on fixed ports so a restarted node is
    /// found where it was.
    fn start() -> Local {
        let tmp = tempfile::tempdir().expect("temp dir");
        let secret = tmp.path().join("secret");
        std::fs::write(&secret, "nemesis test secret").expect("secret");
        let mut rng = StdRng::seed_from_u64(u64::from(std::process::id()));
        let mut nodes: Vec<TestNode> = Vec::new();
        for i in 1..=3 {
            let port = free_low_port(&mut rng);
            let mut args = vec![
                "--listen".to_string(),
                format!("127.0.0.1:{port}"),
                "--secret-file".into(),
                secret.display().to_string(),
                "--replication".into(),
                R.to_string(),
            ];
            if let Some(seed) = nodes.first() {
                args.extend(["--peer".into(), seed.base.clone()]);
            }
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            nodes.push(TestNode::start_in(&tmp.path().join(format!("n{i}")), &args));
        }
        let local = Local { nodes, tmp: Some(tmp) };
        local.wait_linked();
        local
    }

    fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(|n| n.base.clone()).collect()
    }

    /// Waits until every node sees every other up: before the next fault, so that never more
    /// than one node is out.
    fn wait_linked(&self) {
        let urls = self.urls();
        settle("every node to see every other up", Duration::from_secs(60), || {
            for (i, u) in urls.iter().enumerate() {
                let (code, body) = try_get(&format!("{u}/api/v1/status"), QUICK)?;
                if code != 200 {
                    return Err(format!("status of node {}: {code}", i + 1));
                }
                let status = json(&body);
                let up: Vec<&str> = status["peers"]
                    .as_array()
                    .map(|ps| {
                        ps.iter().filter(|p| p["state"] == "up").filter_map(|p| p["url"].as_str()).collect()
                    })
                    .unwrap_or_default();
                for (j, other) in urls.iter().enumerate() {
                    if j != i && !up.contains(&other.as_str()) {
                        return Err(format!("node {} sees up only {up:?}", i + 1));
                    }
                }
            }
            Ok(())
        });
    }

    fn signal(&self, node: usize, signal: i32) {
        let pid = self.nodes[node - 1].pid().expect("node is running");
        let rc = unsafe { libc::kill(pid as i32, signal) };
        assert_eq!(rc, 0, "signal {signal} to node {node}: {}", std::io::Error::last_os_error());
    }

    /// The fault schedule: a fault on one random node at a time, then wait until it is back.
    fn nemesis(&mut self, rng: &mut StdRng, t0: Instant, until: Instant) -> Vec<Fault> {
        let mut faults = Vec::new();
        loop {
            hold(rng, 500, 2500);
            if Instant::now() >= until {
                return faults;
            }
            let node = rng.random_range(1..=3);
            let start = t0.elapsed();
            let kind = if rng.random_bool(0.4) {
                self.nodes[node - 1].kill9();
                hold(rng, 300, 3000);
                self.nodes[node - 1].start_again();
                FaultKind::Kill
            } else {
                self.signal(node, libc::SIGSTOP);
                hold(rng, 1000, 4000);
                self.signal(node, libc::SIGCONT);
                FaultKind::Pause
            };
            self.wait_linked();
            faults.push(Fault { kind, node, start, end: t0.elapsed() });
        }
    }
}

impl Drop for Local {
    fn drop(&mut self) {
        for (i, n) in self.nodes.iter().enumerate() {
            // After a panic mid-pause: SIGKILL (TestNode's drop) ends a stopped process too,
            // but resume it first so nothing is ever left stopped.
            if let Some(pid) = n.pid() {
                unsafe { libc::kill(pid as i32, libc::SIGCONT) };
            }
            if std::thread::panicking() {
                print_complaints(i + 1, &n.log_text());
            }
        }
        if std::thread::panicking()
            && let Some(tmp) = self.tmp.take()
        {
            eprintln!("node data and logs kept in {}", tmp.keep().display());
        }
    }
}

#[test]
fn history_holds_under_kills_and_pauses() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let started = Instant::now();
    let mut local = Local::start();
    let urls = local.urls();
    eprintln!("3 local nodes up and linked in {:.1} s", started.elapsed().as_secs_f64());
    run("history_holds_under_kills_and_pauses", &urls, |rng, t0, until| local.nemesis(rng, t0, until));
    for (i, n) in local.nodes.iter().enumerate() {
        print_complaints(i + 1, &n.log_text());
    }
    eprintln!("whole test: {:.1} s", started.elapsed().as_secs_f64());
}

// ---------------------------------------------------------------------------------------------
// Test 2: nodes as hosts in network namespaces; partitions, packet loss, kill -9.

/// The fault schedule: one node at a time is cut off, loses 20% of its packets, or is killed
/// and restarted; after each the cluster is whole and linked before the next.
fn net_nemesis(net: &mut Net, rng: &mut StdRng, t0: Instant, until: Instant) -> Vec<Fault> {
    let mut faults = Vec::new();
    loop {
        hold(rng, 500, 2500);
        if Instant::now() >= until {
            return faults;
        }
        let node = rng.random_range(1..=3);
        let others: Vec<usize> = (1..=3).filter(|&o| o != node).collect();
        let start = t0.elapsed();
        let kind = match rng.random_range(0..3) {
            0 => {
                net.cut(&[node], &others);
                hold(rng, 2000, 6000);
                net.heal(&[node], &others);
                FaultKind::Partition
            }
            1 => {
                net.set_loss(node, 20);
                hold(rng, 3000, 8000);
                net.set_loss(node, 0);
                FaultKind::Loss
            }
            _ => {
                net.kill(node);
                hold(rng, 300, 3000);
                net.launch(node);
                FaultKind::Kill
            }
        };
        net.wait_all_up();
        faults.push(Fault { kind, node, start, end: t0.elapsed() });
    }
}

#[test]
fn history_holds_under_partitions_and_packet_loss() {
    if !netns_available() || !tc_available() {
        return;
    }
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let started = Instant::now();
    let mut net = Net::start(3);
    let urls: Vec<String> = (1..=3).map(|i| net.url(i, "")).collect();
    run("history_holds_under_partitions_and_packet_loss", &urls, |rng, t0, until| {
        net_nemesis(&mut net, rng, t0, until)
    });
    for i in 1..=3 {
        print_complaints(i, &net.log_text(i));
    }
    eprintln!("whole test: {:.1} s", started.elapsed().as_secs_f64());
}

// ---------------------------------------------------------------------------------------------
// The checker on small hand-made histories.

fn at(ms: u64) -> Duration {
    Duration::from_millis(ms)
}

fn w(kind: Kind, name: &str, value: Option<&str>, start: u64, end: u64, outcome: Outcome) -> Op {
    Op {
        kind,
        node: 1,
        name: name.into(),
        value: value.map(str::to_string),
        listed: Vec::new(),
        start: at(start),
        end: at(end),
        outcome,
    }
}

fn everywhere(name: &str, seen: Seen) -> BTreeMap<String, Vec<(usize, Seen)>> {
    BTreeMap::from([(name.to_string(), (1..=3).map(|n| (n, seen.clone())).collect())])
}

fn unknown() -> Outcome {
    Outcome::Unknown { timed_out: false, why: "503".into() }
}

#[test]
fn checker_accepts_the_last_acknowledged_put() {
    let h = [
        w(Kind::Put, "x", Some("v1"), 0, 10, Outcome::Ok),
        w(Kind::Put, "x", Some("v2"), 20, 30, Outcome::Ok),
        w(Kind::Get, "x", Some("v1"), 11, 15, Outcome::Ok),
    ];
    let v = check(&h, &[], &everywhere("x", Seen::Present("v2".into())));
    assert!(v.holds(), "{v:?}");
    assert_eq!(v.acked_writes, 2);
}

#[test]
fn checker_flags_a_lost_acknowledged_put() {
    let h = [w(Kind::Put, "x", Some("v1"), 0, 10, Outcome::Ok)];
    for gone in [Seen::Absent, Seen::Unreadable("503".into())] {
        let v = check(&h, &[], &everywhere("x", gone));
        assert_eq!(v.lost.len(), 1, "{v:?}");
        assert!(!v.holds());
    }
    // A superseded value back is not the acknowledged one either.
    let h = [
        w(Kind::Put, "x", Some("v1"), 0, 10, Outcome::Ok),
        w(Kind::Put, "x", Some("v2"), 20, 30, Outcome::Ok),
    ];
    let v = check(&h, &[], &everywhere("x", Seen::Present("v1".into())));
    assert_eq!(v.unexplained.len(), 3, "{v:?}");
}

#[test]
fn checker_flags_a_read_of_a_never_written_value() {
    let h = [
        w(Kind::Put, "x", Some("v1"), 0, 10, Outcome::Ok),
        w(Kind::Get, "x", Some("garbage"), 12, 14, Outcome::Ok),
        // Read before the write that would explain it started.
        w(Kind::Get, "x", Some("v2"), 15, 16, Outcome::Ok),
        w(Kind::Put, "x", Some("v2"), 20, 30, Outcome::Ok),
    ];
    let v = check(&h, &[], &everywhere("x", Seen::Present("v2".into())));
    assert_eq!(v.never_written.len(), 2, "{v:?}");
    assert!(v.lost.is_empty() && v.unexplained.is_empty(), "{v:?}");
}

#[test]
fn checker_allows_either_outcome_of_indeterminate_and_concurrent_writes() {
    let h = [
        w(Kind::Put, "x", Some("v1"), 0, 10, Outcome::Ok),
        // Concurrent with each other: either may win.
        w(Kind::Put, "x", Some("v2"), 20, 40, Outcome::Ok),
        w(Kind::Delete, "x", None, 25, 30, Outcome::Ok),
        // May or may not have happened.
        w(Kind::Put, "y", Some("w1"), 0, 10, unknown()),
    ];
    for x in [Seen::Present("v2".into()), Seen::Absent] {
        for y in [Seen::Present("w1".into()), Seen::Absent] {
            let mut last = everywhere("x", x.clone());
            last.extend(everywhere("y", y));
            let v = check(&h, &[], &last);
            assert!(v.holds(), "{v:?}");
        }
    }
    let v = check(&h, &[], &everywhere("x", Seen::Present("v1".into())));
    assert!(!v.holds(), "v1 was replaced by writes that started after it ended: {v:?}");
    // A client that timed out cannot tell when its write took effect: a later one does not
    // rule it out.
    let h = [
        w(Kind::Put, "x", Some("v1"), 0, 10, Outcome::Unknown { timed_out: true, why: "timeout".into() }),
        w(Kind::Put, "x", Some("v2"), 20, 30, Outcome::Ok),
    ];
    assert!(check(&h, &[], &everywhere("x", Seen::Present("v1".into()))).holds());
}

#[test]
fn checker_excuses_cut_reads_only_from_faulted_nodes() {
    let cut = Outcome::Cut { got: 10, expected: Some(20), why: "eof".into() };
    let h = [w(Kind::Put, "x", Some("v1"), 0, 10, Outcome::Ok), w(Kind::Get, "x", None, 100, 200, cut)];
    let last = everywhere("x", Seen::Present("v1".into()));
    let on = |node| [Fault { kind: FaultKind::Kill, node, start: at(150), end: at(300) }];
    let v = check(&h, &on(1), &last);
    assert_eq!((v.cuts, v.unexcused_cuts.len()), (1, 0), "{v:?}");
    let v = check(&h, &on(2), &last);
    assert_eq!((v.cuts, v.unexcused_cuts.len()), (1, 1), "{v:?}");
}
