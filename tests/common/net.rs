//! Node loss and network partitions for real: every node runs as its own host in a Linux network
//! namespace, joined by a veth pair to a bridge in the root namespace. The bridge carries an
//! address too, so this test process reaches every node directly, also while it is cut off.
//!
//! A cut is made by pointing the neighbour (ARP) entries on both sides of it at a MAC address
//! no host has: frames across the cut vanish without a reset or an ICMP error, as on a broken
//! network, while the test host still talks to every node. Healing deletes those entries.
//! Only iproute2 is needed; the tests need root and skip (or fail under CI) without it.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::{Child, Command};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use super::*;

pub const PORT: u16 = 8080;
/// A MAC address no host on the bridge has.
const NOWHERE_MAC: &str = "02:00:5e:00:de:ad";
/// Per request, for polling nodes that may be unreachable.
pub const QUICK: Duration = Duration::from_secs(5);
/// Per request, for reads and writes that must succeed.
pub const SLOW: Duration = Duration::from_secs(60);

static NEXT_NET: AtomicU32 = AtomicU32::new(0);
/// Held while picking a subnet and claiming it, so parallel tests pick different ones.
static SUBNETS: Mutex<()> = Mutex::new(());

/// Whether iproute2's `tc` runs here (for packet loss); under CI it must.
pub fn tc_available() -> bool {
    let ok = Command::new("tc").arg("-V").output().is_ok_and(|o| o.status.success());
    assert!(ok || std::env::var_os("CI").is_none(), "`tc` (iproute2) is missing, and CI is set");
    ok
}

/// Whether these tests can run here; under CI they must.
pub fn netns_available() -> bool {
    let has_ip = Command::new("ip").arg("-V").output().is_ok_and(|o| o.status.success());
    if is_root() && has_ip {
        return true;
    }
    let why = if is_root() { "`ip` (iproute2) is missing" } else { "not running as root" };
    assert!(
        std::env::var_os("CI").is_none(),
        "network namespace tests need root and iproute2, and CI is set: {why}"
    );
    println!("skipping: network namespace tests need root and iproute2");
    false
}

fn ip(args: &[&str]) -> Result<String, String> {
    let out = Command::new("ip").args(args).output().map_err(|e| format!("running ip: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!("ip {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim()))
    }
}

fn must_ip(args: &[&str]) {
    ip(args).unwrap_or_else(|e| panic!("{e}"));
}

struct Host {
    ns: String,
    /// The veth end on the bridge, in the root namespace.
    host_veth: String,
    /// The veth end inside the node's namespace.
    ns_veth: String,
    addr: String,
    dir: PathBuf,
    log: PathBuf,
    child: Option<Child>,
}

/// Nodes as hosts on one bridge. Dropping it kills the nodes and removes the namespaces, the
/// veths and the bridge; after a panic it prints the tail of every node's log and keeps them.
pub struct Net {
    bridge: String,
    subnet: u8,
    secret: PathBuf,
    hosts: Vec<Host>,
    tmp: Option<tempfile::TempDir>,
    /// Flags every node gets on top of the harness's own.
    extra: Vec<String>,
}

impl Net {
    /// Builds the network for `n` nodes and starts them: node 1 first, the others joining
    /// through it. Returns once every node sees all the others up.
    pub fn start(n: usize) -> Net {
        Self::start_with(n, &[])
    }

    /// As [`Net::start`], with `extra` flags for every node.
    pub fn start_with(n: usize, extra: &[&str]) -> Net {
        let k = NEXT_NET.fetch_add(1, Ordering::Relaxed);
        let pid = std::process::id();
        let tag = format!("ds{pid}{k}");
        let tmp = tempfile::tempdir().expect("temp dir");
        let secret = tmp.path().join("secret");
        std::fs::write(&secret, format!("partition-test-secret-{pid}-{k}\n")).expect("write secret");
        let mut net = Net {
            bridge: format!("{tag}b"),
            subnet: 0,
            secret,
            hosts: Vec::new(),
            tmp: Some(tmp),
            extra: extra.iter().map(|s| s.to_string()).collect(),
        };
        {
            let _claim = SUBNETS.lock().unwrap_or_else(|p| p.into_inner());
            let first = (pid % 200) as usize + 37 * k as usize;
            net.subnet = (0..250)
                .map(|i| ((first + i) % 250 + 1) as u8)
                .find(|x| {
                    let prefix = format!("10.77.{x}.0/24");
                    let addrs = ip(&["-4", "addr", "show", "to", &prefix]).unwrap_or_default();
                    let routes = ip(&["-4", "route", "show", "root", &prefix]).unwrap_or_default();
                    addrs.trim().is_empty() && routes.trim().is_empty()
                })
                .expect("a free 10.77.X.0/24 subnet");
            must_ip(&["link", "add", &net.bridge, "type", "bridge"]);
            must_ip(&["addr", "add", &format!("10.77.{}.254/24", net.subnet), "dev", &net.bridge]);
            must_ip(&["link", "set", &net.bridge, "up"]);
        }
        for i in 1..=n {
            let dir = net.tmp.as_ref().unwrap().path().join(format!("n{i}"));
            net.hosts.push(Host {
                ns: format!("{tag}n{i}"),
                host_veth: format!("{tag}h{i}"),
                ns_veth: format!("{tag}p{i}"),
                addr: format!("10.77.{}.{i}", net.subnet),
                log: dir.with_extension("log"),
                dir,
                child: None,
            });
            let h = net.hosts.last().unwrap();
            must_ip(&["netns", "add", &h.ns]);
            must_ip(&[
                "link",
                "add",
                &h.host_veth,
                "type",
                "veth",
                "peer",
                "name",
                &h.ns_veth,
                "netns",
                &h.ns,
            ]);
            must_ip(&["link", "set", &h.host_veth, "master", &net.bridge]);
            must_ip(&["link", "set", &h.host_veth, "up"]);
            must_ip(&["-n", &h.ns, "addr", "add", &format!("{}/24", h.addr), "dev", &h.ns_veth]);
            must_ip(&["-n", &h.ns, "link", "set", &h.ns_veth, "up"]);
            must_ip(&["-n", &h.ns, "link", "set", "lo", "up"]);
        }
        for i in 1..=n {
            net.launch(i);
        }
        let started = Instant::now();
        net.wait_all_up();
        println!("{n} nodes up and linked in {:?}", started.elapsed());
        net
    }

    fn host(&self, node: usize) -> &Host {
        &self.hosts[node - 1]
    }

    pub fn url(&self, node: usize, path: &str) -> String {
        format!("http://{}:{PORT}{path}", self.host(node).addr)
    }

    /// Starts (or restarts) a node's process on its data directory, always with the same flags.
    pub fn launch(&mut self, node: usize) {
        let h = self.host(node);
        assert!(h.child.is_none(), "node {node} is running");
        let mut args: Vec<String> = vec![
            "--listen".into(),
            format!("{}:{PORT}", h.addr),
            "--open-api".into(),
            "--advertise".into(),
            format!("http://{}:{PORT}", h.addr),
            "--secret-file".into(),
            self.secret.display().to_string(),
            "--replication".into(),
            "2".into(),
        ];
        args.extend(self.extra.iter().cloned());
        if node != 1 {
            args.extend(["--peer".into(), format!("http://{}:{PORT}", self.host(1).addr)]);
        }
        let (child, base) = spawn_node(&h.dir, &args, &h.log, Some(&h.ns))
            .unwrap_or_else(|e| panic!("node {node} failed to start: {e}"));
        assert_eq!(base, self.url(node, ""), "node {node} listens where it was told");
        self.hosts[node - 1].child = Some(child);
    }

    /// SIGKILL: no chance to flush, close links or say goodbye.
    pub fn kill(&mut self, node: usize) {
        let mut child = self.hosts[node - 1].child.take().expect("node is running");
        child.kill().expect("SIGKILL");
        child.wait().expect("reap");
    }

    /// Sends `signal` to a running node's process (`ip netns exec` execs the binary, so the
    /// child is the node itself): SIGSTOP and SIGCONT pause and resume it.
    pub fn signal(&self, node: usize, signal: i32) {
        let child = self.host(node).child.as_ref().expect("node is running");
        let rc = unsafe { libc::kill(child.id() as i32, signal) };
        assert_eq!(rc, 0, "signal {signal} to node {node}: {}", std::io::Error::last_os_error());
    }

    /// Drops `percent`% of the frames leaving each end of the node's veth, chosen at random
    /// per frame, so both directions lose packets; `0` stops it. The kernel's `netem` qdisc
    /// would do this, but it is an optional module that some kernels (this repository's CI
    /// VM's among them) lack; a four-instruction classic BPF filter on `clsact`, always in
    /// iproute2's `tc`, only needs cls_bpf: it loads a random u32 and returns TC_ACT_SHOT (2)
    /// below the threshold, TC_ACT_OK (0) otherwise.
    pub fn set_loss(&self, node: usize, percent: u32) {
        let h = self.host(node);
        for (ns, dev) in [(None, &h.host_veth), (Some(&h.ns), &h.ns_veth)] {
            let tc = |args: &[&str]| {
                let mut cmd = Command::new("tc");
                if let Some(ns) = ns {
                    cmd.args(["-n", ns]);
                }
                let out = cmd.args(args).output().unwrap_or_else(|e| panic!("running tc: {e}"));
                assert!(
                    out.status.success(),
                    "tc {}: {}",
                    args.join(" "),
                    String::from_utf8_lossy(&out.stderr).trim()
                );
            };
            if percent == 0 {
                tc(&["qdisc", "del", "dev", dev, "clsact"]);
                continue;
            }
            // SKF_AD_OFF + SKF_AD_RANDOM = -4096 + 56, as the u32 classic BPF wants.
            let threshold = (u64::from(percent.min(100)) * u64::from(u32::MAX) / 100) as u32;
            let program = format!("4,32 0 0 4294963256,53 1 0 {threshold},6 0 0 2,6 0 0 0");
            tc(&["qdisc", "add", "dev", dev, "clsact"]);
            tc(&["filter", "add", "dev", dev, "egress", "bpf", "da", "bytecode", &program]);
        }
    }

    /// The node's log so far (stdout and stderr of every run), as written.
    pub fn log_text(&self, node: usize) -> String {
        std::fs::read_to_string(&self.host(node).log).unwrap_or_default()
    }

    /// Cuts the links between the two groups (both directions, silently).
    pub fn cut(&self, side_a: &[usize], side_b: &[usize]) {
        self.set_cut(side_a, side_b, true);
    }

    pub fn heal(&self, side_a: &[usize], side_b: &[usize]) {
        self.set_cut(side_a, side_b, false);
    }

    fn set_cut(&self, side_a: &[usize], side_b: &[usize], cut: bool) {
        for (from, to) in side_a.iter().flat_map(|a| side_b.iter().flat_map(move |b| [(*a, *b), (*b, *a)])) {
            let (h, peer) = (self.host(from), &self.host(to).addr);
            if cut {
                must_ip(&[
                    "-n",
                    &h.ns,
                    "neigh",
                    "replace",
                    peer,
                    "lladdr",
                    NOWHERE_MAC,
                    "dev",
                    &h.ns_veth,
                    "nud",
                    "permanent",
                ]);
            } else {
                must_ip(&["-n", &h.ns, "neigh", "del", peer, "dev", &h.ns_veth]);
            }
        }
    }

    pub fn status(&self, node: usize) -> Option<Value> {
        match try_get(&self.url(node, "/api/v1/status"), QUICK) {
            Ok((200, body)) => serde_json::from_slice(&body).ok(),
            _ => None,
        }
    }

    pub fn node_id(&self, node: usize) -> String {
        let status = self.status(node).unwrap_or_else(|| panic!("status of node {node}"));
        status["node_id"].as_str().expect("node_id").to_string()
    }

    /// Node ids of the peers `node` reports in state `state` ("up" or "down").
    pub fn peers_in(&self, node: usize, state: &str) -> Option<BTreeSet<String>> {
        let status = self.status(node)?;
        Some(
            status["peers"]
                .as_array()?
                .iter()
                .filter(|p| p["state"] == state)
                .filter_map(|p| p["node_id"].as_str().map(str::to_string))
                .collect(),
        )
    }

    pub fn wait_all_up(&self) {
        let n = self.hosts.len();
        let ids: Vec<String> = (1..=n)
            .map(|i| wait_for(&format!("node {i} status"), Duration::from_secs(10), || self.status(i)))
            .map(|s| s["node_id"].as_str().expect("node_id").to_string())
            .collect();
        settle("every node to see every other node up", Duration::from_secs(30), || {
            for i in 1..=n {
                let up = self.peers_in(i, "up").ok_or(format!("node {i} status unavailable"))?;
                let want: BTreeSet<String> =
                    ids.iter().enumerate().filter(|(j, _)| j + 1 != i).map(|(_, id)| id.clone()).collect();
                if !want.is_subset(&up) {
                    return Err(format!("node {i} sees up: {up:?}"));
                }
            }
            Ok(())
        });
    }

    /// Waits until every node in `observers` reports `target` in `state`.
    pub fn wait_peer_state(
        &self,
        observers: &[usize],
        target: usize,
        target_id: &str,
        state: &str,
    ) -> Duration {
        let start = Instant::now();
        settle(&format!("nodes {observers:?} to see node {target} {state}"), Duration::from_secs(30), || {
            for &o in observers {
                let seen = self.peers_in(o, state).ok_or(format!("node {o} status unavailable"))?;
                if !seen.contains(target_id) {
                    return Err(format!("node {o} reports {state}: {seen:?}"));
                }
            }
            Ok(())
        });
        start.elapsed()
    }

    /// The full listing of a node: name → content id.
    pub fn listing(&self, node: usize) -> Result<BTreeMap<String, String>, String> {
        let mut out = BTreeMap::new();
        let mut after = String::new();
        loop {
            let url = self.url(node, &format!("/api/v1/files?prefix=&limit=1000&after={after}"));
            let (code, body) = try_get(&url, QUICK).map_err(|e| format!("listing node {node}: {e}"))?;
            if code != 200 {
                return Err(format!("listing node {node}: {code} {}", String::from_utf8_lossy(&body)));
            }
            let page = json(&body);
            for f in page["files"].as_array().expect("files") {
                let name = f["name"].as_str().expect("name").to_string();
                out.insert(name, f["id"].as_str().expect("id").to_string());
            }
            match page["next"].as_str() {
                Some(next) => after = next.to_string(),
                None => return Ok(out),
            }
        }
    }

    /// Writes `data` as `name` through `node`, which must accept it.
    pub fn put(&self, node: usize, name: &str, data: &[u8]) -> String {
        let url = self.url(node, &format!("/api/v1/files/{name}"));
        let (code, body) =
            try_put(&url, data, SLOW).unwrap_or_else(|e| panic!("PUT {name} on node {node}: {e}"));
        assert_eq!(code, 201, "PUT {name} on node {node}: {}", String::from_utf8_lossy(&body));
        let id = json(&body)["id"].as_str().expect("id").to_string();
        assert_eq!(id, sha256_hex(data), "content id of {name}");
        id
    }

    pub fn delete(&self, node: usize, name: &str) {
        let url = self.url(node, &format!("/api/v1/files/{name}"));
        let (code, body) = try_send(bounded_agent(SLOW).delete(&url).call())
            .unwrap_or_else(|e| panic!("DELETE {name} on node {node}: {e}"));
        assert_eq!(code, 204, "DELETE {name} on node {node}: {}", String::from_utf8_lossy(&body));
    }

    /// Reads `name` from `node`: Ok when it serves exactly the bytes with `sha`, Err when it
    /// fails to serve them (status or transport). Serving other bytes fails the test at once.
    pub fn read(&self, node: usize, name: &str, sha: &str) -> Result<(), String> {
        let url = self.url(node, &format!("/api/v1/files/{name}"));
        let (code, body) = try_get(&url, SLOW).map_err(|e| format!("GET {name} from node {node}: {e}"))?;
        if code != 200 {
            return Err(format!("GET {name} from node {node}: {code} {}", String::from_utf8_lossy(&body)));
        }
        assert_eq!(
            sha256_hex(&body),
            sha,
            "node {node} served wrong bytes for {name} ({} bytes)",
            body.len()
        );
        Ok(())
    }

    pub fn status_of_get(&self, node: usize, name: &str) -> u16 {
        let url = self.url(node, &format!("/api/v1/files/{name}"));
        try_get(&url, SLOW).unwrap_or_else(|e| panic!("GET {name} from node {node}: {e}")).0
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for h in &mut self.hosts {
            if let Some(mut child) = h.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        if std::thread::panicking() {
            for (i, h) in self.hosts.iter().enumerate() {
                let text = strip_ansi(&std::fs::read_to_string(&h.log).unwrap_or_default());
                let lines: Vec<&str> = text.lines().collect();
                let tail = lines[lines.len().saturating_sub(60)..].join("\n");
                eprintln!("===== node {} ({}) log, last 60 lines =====\n{tail}", i + 1, h.addr);
            }
            if let Some(tmp) = self.tmp.take() {
                eprintln!("node data and logs kept in {}", tmp.keep().display());
            }
        }
        for h in &self.hosts {
            let _ = ip(&["netns", "del", &h.ns]);
            let _ = ip(&["link", "del", &h.host_veth]);
        }
        let _ = ip(&["link", "del", &self.bridge]);
    }
}

/// Log text without terminal colour codes.
pub fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            // Skip to the end of the escape sequence.
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// An agent with a bound on every request and no proxy from the environment.
pub fn bounded_agent(limit: Duration) -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(limit))
        .proxy(None)
        .build()
        .into()
}

pub fn try_send(
    res: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
) -> Result<(u16, Vec<u8>), String> {
    let mut res = res.map_err(|e| e.to_string())?;
    let code = res.status().as_u16();
    let body =
        res.body_mut().with_config().limit(u64::MAX).read_to_vec().map_err(|e| format!("body: {e}"))?;
    Ok((code, body))
}

pub fn try_get(url: &str, limit: Duration) -> Result<(u16, Vec<u8>), String> {
    try_send(bounded_agent(limit).get(url).call())
}

pub fn try_put(url: &str, data: &[u8], limit: Duration) -> Result<(u16, Vec<u8>), String> {
    try_send(bounded_agent(limit).put(url).send(data))
}

/// Runs `f` when dropped during a panic.
struct OnPanic<F: FnMut()>(F);

impl<F: FnMut()> Drop for OnPanic<F> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            (self.0)();
        }
    }
}

/// [`wait_for`] with a reason: on timeout it also prints the last reason `check` gave.
pub fn settle<T>(what: &str, limit: Duration, mut check: impl FnMut() -> Result<T, String>) -> T {
    let last = RefCell::new(String::from("(not checked yet)"));
    let _report = OnPanic(|| eprintln!("while waiting for {what}, last seen: {}", last.borrow()));
    wait_for(what, limit, || match check() {
        Ok(v) => Some(v),
        Err(e) => {
            *last.borrow_mut() = e;
            None
        }
    })
}
