//! A cluster of nodes as separate processes on loopback, for the cluster tests.

use std::path::PathBuf;
use std::time::Duration;

use super::*;

/// Nodes sharing one secret, the first being the seed of the others.
pub struct Cluster {
    pub nodes: Vec<TestNode>,
    _tmp: tempfile::TempDir,
    pub secret: PathBuf,
}

impl Cluster {
    pub fn start(n: usize, extra: &[&str]) -> Cluster {
        let tmp = tempfile::tempdir().unwrap();
        let secret = tmp.path().join("secret");
        std::fs::write(&secret, "cluster test secret").unwrap();
        let mut nodes: Vec<TestNode> = Vec::new();
        for i in 0..n {
            let mut args: Vec<String> = vec!["--secret-file".into(), secret.to_str().unwrap().into()];
            args.extend(extra.iter().map(|s| s.to_string()));
            if let Some(seed) = nodes.first() {
                args.extend(["--peer".into(), seed.base.clone()]);
            }
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            nodes.push(TestNode::start_in(&tmp.path().join(format!("n{i}")), &args));
        }
        let c = Cluster { nodes, _tmp: tmp, secret };
        c.wait_connected(&(0..n).collect::<Vec<_>>());
        c
    }

    /// Waits until each of `which` sees every other of `which` up.
    pub fn wait_connected(&self, which: &[usize]) {
        for &i in which {
            let want: Vec<String> =
                which.iter().filter(|&&j| j != i).map(|&j| self.nodes[j].base.clone()).collect();
            wait_for(&format!("node {i} to see {} peers up", want.len()), Duration::from_secs(30), || {
                let s = self.nodes[i].status();
                let up: Vec<String> = s["peers"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .filter(|p| p["state"] == "up")
                    .map(|p| p["url"].as_str().unwrap().to_string())
                    .collect();
                want.iter().all(|w| up.contains(w)).then_some(())
            });
        }
    }

    /// Stored chunk bytes summed over the nodes `which`.
    pub fn stored(&self, which: &[usize]) -> u64 {
        which.iter().map(|&i| self.nodes[i].status()["stored_bytes"].as_u64().unwrap()).sum()
    }

    pub fn names(&self, i: usize) -> Vec<(String, String)> {
        let (code, body) = get(&self.nodes[i].url("/api/v1/files?limit=1000"));
        assert_eq!(code, 200);
        json(&body)["files"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| (f["name"].as_str().unwrap().to_string(), f["id"].as_str().unwrap().to_string()))
            .collect()
    }
}

/// What one copy of a file stores: its bytes plus a tag per chunk (`put` is its 201 body).
pub fn sealed_size(data: &[u8], put: &Value) -> u64 {
    data.len() as u64 + diststore::crypto::TAG_LEN as u64 * put["chunks"].as_u64().unwrap()
}

pub fn put_ok(node: &TestNode, name: &str, data: &[u8]) -> Value {
    let (code, body) = put(&node.url(&format!("/api/v1/files/{name}")), data);
    assert_eq!(code, 201, "{}", String::from_utf8_lossy(&body));
    json(&body)
}

pub fn read_ok(node: &TestNode, name: &str) -> Vec<u8> {
    let (code, body) = get(&node.url(&format!("/api/v1/files/{name}")));
    assert_eq!(code, 200, "{name} from {}: {}", node.base, String::from_utf8_lossy(&body));
    body
}
