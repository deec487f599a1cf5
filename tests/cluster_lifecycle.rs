//! Node lifecycle and event-driven repair, with real processes: `node remove` and `node
//! drain` through the client, an idle cluster that runs no ranking pass, and a fourth node
//! that moves only its share.

mod common;

use std::collections::HashMap;
use std::process::Command;
use std::time::Duration;

use common::cluster::{Cluster, put_ok, read_ok};
use common::*;

fn repair(node: &TestNode) -> Value {
    node.status()["repair"].clone()
}

fn counter(node: &TestNode, field: &str) -> u64 {
    repair(node)[field].as_u64().unwrap()
}

/// Runs `diststore node ...` against `node`; returns (success, stdout, stderr).
fn client(node: &TestNode, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(BIN).args(["node"]).args(args).env("DISTSTORE_NODE", &node.base).output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

/// This node's view of the members: id → state.
fn states(node: &TestNode) -> HashMap<String, String> {
    let (ok, out, err) = client(node, &["list", "--json"]);
    assert!(ok, "{err}");
    serde_json::from_str::<Value>(&out).unwrap()["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| (n["node_id"].as_str().unwrap().to_owned(), n["state"].as_str().unwrap().to_owned()))
        .collect()
}

fn node_id(node: &TestNode) -> String {
    node.status()["node_id"].as_str().unwrap().to_owned()
}

/// Waits until `node`'s repair has no pass under way, nothing queued, and a pass done.
fn wait_repair_idle(node: &TestNode, limit: Duration) -> Value {
    wait_for(&format!("{}'s repair to be idle", node.base), limit, || {
        let r = repair(node);
        (r["pass_running"] == false && r["queued"] == 0 && r["passes"].as_u64().unwrap() > 0).then_some(r)
    })
}

/// Stored chunks on each of `which`.
fn chunks(c: &Cluster, which: &[usize]) -> Vec<u64> {
    which.iter().map(|&i| c.nodes[i].status()["chunks"].as_u64().unwrap()).collect()
}

/// Uploads `n` small files (one chunk each) to node 0; returns their names and bodies.
fn small_files(c: &Cluster, n: usize, seed: u64) -> Vec<(String, Vec<u8>)> {
    (0..n)
        .map(|i| {
            let name = format!("f/{i}");
            let body = random_bytes(2048 + i % 2048, seed + i as u64);
            put_ok(&c.nodes[0], &name, &body);
            (name, body)
        })
        .collect()
}

fn post(url: &str) -> u16 {
    agent().post(url).send(&[][..]).unwrap().status().as_u16()
}

#[test]
fn node_remove_of_a_killed_node_restores_two_copies_long_before_the_grace() {
    // The default grace is 10 minutes: only the removal can explain copies within a minute.
    let mut c = Cluster::start(3, &[]);
    let files = small_files(&c, 60, 1000);
    assert_eq!(chunks(&c, &[0, 1, 2]).iter().sum::<u64>(), 120, "two copies of 60 one-chunk files");
    let on_survivors: u64 = chunks(&c, &[0, 1]).iter().sum();
    let gone = node_id(&c.nodes[2]);

    // Refused while it is up: removing a live node would throw its copies away.
    let (ok, _, err) = client(&c.nodes[0], &["remove", &gone]);
    assert!(!ok && err.contains("is up"), "{err}");
    let (ok, _, err) = client(&c.nodes[0], &["remove", "not-an-id"]);
    assert!(!ok && err.contains("not a node id"), "{err}");
    let (ok, _, err) = client(&c.nodes[0], &["remove", &"ab".repeat(16)]);
    assert!(!ok && err.contains("no member"), "{err}");
    // Over HTTP: a bad id is a 400, an unknown one a 404, a live one a 409.
    assert_eq!(post(&c.nodes[0].url("/api/v1/nodes/zz/remove")), 400);
    assert_eq!(post(&c.nodes[0].url(&format!("/api/v1/nodes/{}/remove", "cd".repeat(16)))), 404);
    assert_eq!(post(&c.nodes[0].url(&format!("/api/v1/nodes/{gone}/remove"))), 409);
    assert_eq!(states(&c.nodes[0]).get(&gone).map(String::as_str), Some("up"));

    c.nodes[2].kill9();
    wait_for("node 0 to see node 2 down", Duration::from_secs(30), || {
        (states(&c.nodes[0]).get(&gone).map(String::as_str) == Some("down")).then_some(())
    });
    let fetched_before = counter(&c.nodes[0], "fetched") + counter(&c.nodes[1], "fetched");
    let (ok, out, err) = client(&c.nodes[0], &["remove", &gone]);
    assert!(ok, "{err}");
    assert!(out.contains("removed"), "{out}");
    // The state spreads by gossip: node 1 drops it from placement as well.
    wait_for("node 1 to see node 2 removed", Duration::from_secs(10), || {
        (states(&c.nodes[1]).get(&gone).map(String::as_str) == Some("removed")).then_some(())
    });
    // Two survivors, R = 2: each must hold every chunk.
    wait_for("both survivors to hold all 60 chunks", Duration::from_secs(60), || {
        (chunks(&c, &[0, 1]) == [60, 60]).then_some(())
    });
    for i in [0, 1] {
        let r = wait_repair_idle(&c.nodes[i], Duration::from_secs(30));
        assert_eq!((r["missing"].as_u64(), r["under_replicated"].as_u64()), (Some(0), Some(0)), "{r}");
    }
    // They fetched exactly node 2's share: each missing copy once, nothing twice.
    let fetched = counter(&c.nodes[0], "fetched") + counter(&c.nodes[1], "fetched") - fetched_before;
    assert_eq!(fetched, 120 - on_survivors);
    for (name, body) in &files {
        assert!(read_ok(&c.nodes[1], name) == *body, "{name}");
    }
}

#[test]
fn node_drain_moves_a_live_nodes_chunks_then_it_leaves_and_every_file_reads_without_it() {
    let mut c = Cluster::start(3, &[]);
    let mut files = small_files(&c, 40, 2000);
    // And a file of several chunks.
    let big = random_bytes(5 << 20, 2999);
    put_ok(&c.nodes[1], "big", &big);
    files.push(("big".into(), big));
    let held = chunks(&c, &[0, 1, 2]);
    assert!(held[2] > 0, "node 2 holds part of the data: {held:?}");
    let total: u64 = held.iter().sum();
    let draining = node_id(&c.nodes[2]);

    let (ok, out, err) = client(&c.nodes[0], &["drain", &draining]);
    assert!(ok, "{err}");
    assert!(out.contains("draining"), "{out}");
    // Node 2 hands its chunks over, then leaves: every node sees it removed.
    for i in [0, 1, 2] {
        wait_for(&format!("node {i} to see node 2 removed"), Duration::from_secs(90), || {
            (states(&c.nodes[i]).get(&draining).map(String::as_str) == Some("removed")).then_some(())
        });
    }
    assert_eq!(chunks(&c, &[2]), [0], "a drained node holds no chunk");
    // Every copy it held now lives on the other two: the same number of copies in all.
    wait_for("the two others to hold every copy", Duration::from_secs(60), || {
        (chunks(&c, &[0, 1]).iter().sum::<u64>() == total).then_some(())
    });
    // Draining again, or removing, a removed node changes nothing.
    let (ok, _, err) = client(&c.nodes[0], &["drain", &draining]);
    assert!(!ok && err.contains("removed already"), "{err}");
    c.nodes[2].kill9();
    for (name, body) in &files {
        for i in [0, 1] {
            assert!(read_ok(&c.nodes[i], name) == *body, "{name} from node {i}");
        }
    }
    // The cluster still takes writes, with two copies.
    put_ok(&c.nodes[0], "after", b"written after the drain");
    assert_eq!(read_ok(&c.nodes[1], "after"), b"written after the drain");
}

#[test]
fn an_idle_cluster_runs_no_ranking_pass() {
    let c = Cluster::start(3, &[]);
    small_files(&c, 20, 3000);
    let settled: Vec<u64> = (0..3)
        .map(|i| wait_repair_idle(&c.nodes[i], Duration::from_secs(60))["passes"].as_u64().unwrap())
        .collect();
    // Five heartbeats observed on every link: each peer's last-seen time moves on five times.
    for i in 0..3 {
        let mut seen: HashMap<String, std::collections::HashSet<String>> = HashMap::new();
        wait_for(&format!("five heartbeats on node {i}'s links"), Duration::from_secs(30), || {
            for p in c.nodes[i].status()["peers"].as_array().unwrap() {
                let at = p["last_seen"].as_str().unwrap_or_default().to_owned();
                seen.entry(p["url"].as_str().unwrap().to_owned()).or_default().insert(at);
            }
            (seen.len() == 2 && seen.values().all(|s| s.len() >= 5)).then_some(())
        });
    }
    let after: Vec<u64> = (0..3).map(|i| counter(&c.nodes[i], "passes")).collect();
    assert_eq!(after, settled, "an idle cluster ranked its chunks again");
    for i in 0..3 {
        let r = repair(&c.nodes[i]);
        assert_eq!((r["pass_running"].as_bool(), r["queued"].as_u64()), (Some(false), Some(0)), "{r}");
    }
}

#[test]
fn a_single_node_runs_no_repair_at_all() {
    let node = TestNode::start();
    put_ok(&node, "alone", b"no peers, no repair");
    // Its scrub and collector run at start; repair has nothing to rank against.
    let s = node.status();
    assert_eq!(
        (s["repair"]["passes"].as_u64(), s["repair"]["pass_running"].as_bool()),
        (Some(0), Some(false))
    );
    let nodes = node.status()["nodes"].as_array().unwrap().len();
    assert_eq!(nodes, 1);
}

#[test]
fn a_fourth_node_moves_at_most_1_2_r_over_n_of_the_chunks() {
    let mut c = Cluster::start(3, &[]);
    const FILES: u64 = 400;
    small_files(&c, FILES as usize, 4000);
    assert_eq!(chunks(&c, &[0, 1, 2]).iter().sum::<u64>(), 2 * FILES);
    for i in 0..3 {
        wait_repair_idle(&c.nodes[i], Duration::from_secs(60));
    }
    let fetched_before: u64 = (0..3).map(|i| counter(&c.nodes[i], "fetched")).sum();
    let args: Vec<String> = vec![
        "--secret-file".into(),
        c.secret.to_str().unwrap().into(),
        "--peer".into(),
        c.nodes[0].base.clone(),
    ];
    let dir = c.nodes[0].dir.parent().unwrap().join("n3");
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    c.nodes.push(TestNode::start_in(&dir, &args));
    c.wait_connected(&[0, 1, 2, 3]);
    // The newcomer fetches its share; the others hand theirs over once it confirms: two
    // copies of every chunk again, over four nodes.
    wait_for("two copies of every chunk over four nodes", Duration::from_secs(120), || {
        let held = chunks(&c, &[0, 1, 2, 3]);
        (held.iter().sum::<u64>() == 2 * FILES && held[3] > 0).then_some(())
    });
    for i in 0..4 {
        wait_repair_idle(&c.nodes[i], Duration::from_secs(60));
    }
    let moved: u64 = (0..4).map(|i| counter(&c.nodes[i], "fetched")).sum::<u64>() - fetched_before;
    // Rendezvous hashing: a chunk moves when the newcomer ranks among its R = 2 best of 4,
    // R/N = 1/2 of them; at most 1.2 times that may move.
    let bound = (1.2 * 2.0 / 4.0 * FILES as f64) as u64;
    eprintln!(
        "a fourth node moved {moved} of {FILES} chunks ({:.3}; bound {bound})",
        moved as f64 / FILES as f64
    );
    assert!(moved <= bound, "{moved} chunks moved, more than {bound}");
    assert_eq!(moved, chunks(&c, &[3])[0], "only the newcomer fetched, each of its chunks once");
}
