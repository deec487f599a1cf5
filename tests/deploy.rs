//! Deployment as an operator does it: `--listen` with a host name, and `scripts/cluster.sh`
//! starting a cluster that requires an API token, filling in a killed node and restarting one.

mod common;

use std::net::TcpListener;
use std::path::Path;
use std::process::Command;

use common::*;

#[test]
fn listen_accepts_a_host_name() {
    let node = TestNode::start_with(&["--listen", "localhost:0"]);
    assert!(node.base.starts_with("http://127.0.0.1:"), "{}", node.base);
    assert_eq!(get(&node.url("/health")).0, 200);
}

/// `count` consecutive ports nothing listens on now, from a base chosen by the kernel.
fn free_ports(count: u16) -> u16 {
    wait_for("a free range of ports", std::time::Duration::from_secs(10), || {
        let base = TcpListener::bind("127.0.0.1:0").ok()?.local_addr().ok()?.port();
        if base > 65_535 - count {
            return None;
        }
        let held: Vec<TcpListener> =
            (base..base + count).filter_map(|p| TcpListener::bind(("127.0.0.1", p)).ok()).collect();
        (held.len() == count as usize).then_some(base)
    })
}

struct Script {
    dir: tempfile::TempDir,
    base: u16,
    s3_base: u16,
    token: String,
}

impl Script {
    fn run(&self, args: &[&str]) -> (bool, String) {
        let out = Command::new("bash")
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/cluster.sh"))
            .args(args)
            .env("DISTSTORE_BIN", BIN)
            .env("DISTSTORE_CLUSTER_DIR", self.dir.path())
            .env("BASE_PORT", self.base.to_string())
            .env("S3_BASE_PORT", self.s3_base.to_string())
            .env("DISTSTORE_NODE_ARGS", format!("--api-token {}", self.token))
            .env("CLUSTER_START_TIMEOUT", "60")
            .env_remove("DISTSTORE_API_TOKEN")
            .output()
            .expect("bash");
        let text =
            format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        (out.status.success(), text)
    }

    fn ok(&self, args: &[&str]) -> String {
        let (ok, text) = self.run(args);
        assert!(ok, "cluster.sh {args:?} failed:\n{text}");
        text
    }

    fn pid(&self, i: usize) -> String {
        std::fs::read_to_string(self.dir.path().join(format!("node{i}.pid"))).unwrap().trim().to_string()
    }

    fn url(&self, i: u16, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.base + i - 1)
    }
}

impl Drop for Script {
    fn drop(&mut self) {
        let _ = self.run(&["stop"]);
    }
}

fn authed(url: &str, token: &str) -> ureq::RequestBuilder<ureq::typestate::WithoutBody> {
    agent().get(url).header("Authorization", format!("Bearer {token}"))
}

#[test]
fn cluster_sh_fills_in_a_killed_node_and_restarts_one_with_an_api_token() {
    for tool in ["curl", "jq", "openssl", "setsid"] {
        if Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .is_ok_and(|o| o.status.success())
        {
            continue;
        }
        assert!(std::env::var_os("CI").is_none(), "{tool} is missing but CI is set");
        eprintln!("skipping: {tool} is not installed");
        return;
    }
    let base = free_ports(3);
    let s3_base = loop {
        let p = free_ports(3);
        if p.abs_diff(base) >= 3 {
            break p;
        }
    };
    let script = Script {
        dir: tempfile::tempdir().unwrap(),
        base,
        s3_base,
        token: "cluster-script-test-token-0123456789abcdef".into(),
    };
    script.ok(&["start", "3"]);
    assert!(script.run(&["status"]).0);
    // The API wants the token; the script's status check sent it.
    assert_eq!(get(&script.url(1, "/api/v1/status")).0, 401);
    let data = random_bytes(300_000, 5);
    let mut res = agent()
        .put(script.url(1, "/api/v1/files/kept"))
        .header("Authorization", format!("Bearer {}", script.token))
        .send(&data[..])
        .unwrap();
    assert_eq!(res.status(), 201, "{}", res.body_mut().read_to_string().unwrap());

    // A node killed with -9: status says so, and start fills it in, leaving the others alone.
    let (one, two, three) = (script.pid(1), script.pid(2), script.pid(3));
    unsafe { libc::kill(two.parse().unwrap(), libc::SIGKILL) };
    wait_for("status to report the killed node", std::time::Duration::from_secs(10), || {
        let (ok, text) = script.run(&["status"]);
        (!ok && text.contains("DEAD")).then_some(())
    });
    let out = script.ok(&["start", "3"]);
    assert!(out.contains("starting node2") && !out.contains("starting node1"), "{out}");
    assert_eq!((script.pid(1), script.pid(3)), (one.clone(), three.clone()));
    assert_ne!(script.pid(2), two);
    assert!(script.run(&["status"]).0);

    // Restart one node: a new process on the same port and data, seen by the others again.
    let out = script.ok(&["restart", "3"]);
    assert!(out.contains("node3 restarted"), "{out}");
    assert_ne!(script.pid(3), three);
    assert_eq!(script.pid(1), one);
    let (ok, status) = script.run(&["status"]);
    assert!(ok, "{status}");
    let mut res = authed(&script.url(3, "/api/v1/files/kept"), &script.token).call().unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.body_mut().with_config().limit(1 << 20).read_to_vec().unwrap(), data);

    script.ok(&["stop"]);
    let (ok, text) = script.run(&["status"]);
    assert!(!ok && text.matches("stopped").count() == 3, "{text}");
}
