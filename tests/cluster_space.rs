//! Space figures between nodes: each node's status shows every peer's disk and database
//! figures (sent with the heartbeats), kept fresh, marked not current once a peer is gone,
//! and a cluster capacity that counts each disk once.

mod common;

use std::time::Duration;

use common::cluster::*;
use common::*;

/// Node `i`'s view of the peer at `url`.
fn peer_view(c: &Cluster, i: usize, url: &str) -> Value {
    let s = c.nodes[i].status();
    s["peers"].as_array().unwrap().iter().find(|p| p["url"] == url).cloned().unwrap_or(Value::Null)
}

#[test]
fn every_node_sees_its_peers_disks_and_a_gone_peers_figures_are_not_current() {
    let mut c = Cluster::start(3, &[]);
    let own = c.nodes[0].status();
    let (b1, b2) = (c.nodes[1].base.clone(), c.nodes[2].base.clone());

    // Within a bounded wait, node 0 shows both peers' current figures.
    let views = wait_for("node 0 to show both peers' space", Duration::from_secs(30), || {
        let views = [peer_view(&c, 0, &b1), peer_view(&c, 0, &b2)];
        views.iter().all(|p| p["space"]["current"] == true).then_some(views)
    });
    for p in &views {
        let space = &p["space"];
        let total = space["disk_total_bytes"].as_u64().unwrap();
        let free = space["disk_free_bytes"].as_u64().unwrap();
        assert!(total > 0, "{space}");
        assert!(free <= total, "{space}");
        assert!(space["db_file_bytes"].as_u64().unwrap() > 0, "{space}");
        assert!(space["disk_reserve_bytes"].is_u64(), "{space}");
        assert!(space["age_secs"].as_u64().unwrap() <= 20, "{space}");
        assert!(space["measured_at"].as_str().is_some_and(|t| t.contains('T')), "{space}");
        // Every node here runs on this machine, with its data dir on one file system.
        assert_eq!(space["disk_id"], own["disk_id"], "one disk, one id");
    }
    // So the cluster's capacity is three nodes on one disk: that disk, counted once.
    let capacity = wait_for("capacity over three nodes", Duration::from_secs(10), || {
        let cap = c.nodes[0].status()["capacity"].clone();
        (cap["nodes"] == 3).then_some(cap)
    });
    assert_eq!(capacity["disks"], 1, "{capacity}");
    assert_eq!(capacity["nodes_unknown"], 0, "{capacity}");
    assert_eq!(capacity["disk_total_bytes"], own["disk_total_bytes"], "{capacity}");
    let (total, free, used) = (
        capacity["disk_total_bytes"].as_u64().unwrap(),
        capacity["disk_free_bytes"].as_u64().unwrap(),
        capacity["disk_used_bytes"].as_u64().unwrap(),
    );
    assert_eq!(used, total - free, "{capacity}");

    // The figures follow the peers: after an upload grows the holders' database files, node
    // 0's view of each peer's file size comes to match what that peer reports of itself.
    let before: Vec<u64> = views.iter().map(|p| p["space"]["db_file_bytes"].as_u64().unwrap()).collect();
    put_ok(&c.nodes[0], "space/big.bin", &random_bytes(24 << 20, 3));
    let after: Vec<u64> = (1..3).map(|i| c.nodes[i].status()["db_file_bytes"].as_u64().unwrap()).collect();
    assert!(
        after.iter().zip(&before).any(|(a, b)| a > b),
        "no holder's database grew: {before:?} -> {after:?}"
    );
    wait_for("node 0 to see the peers' new database sizes", Duration::from_secs(30), || {
        [&b1, &b2]
            .iter()
            .enumerate()
            .all(|(k, url)| {
                let own_now = c.nodes[k + 1].status()["db_file_bytes"].as_u64().unwrap();
                peer_view(&c, 0, url)["space"]["db_file_bytes"].as_u64() == Some(own_now)
            })
            .then_some(())
    });

    // A killed node's figures are no longer shown as current, and the capacity leaves it out.
    c.nodes[2].kill9();
    let gone = wait_for("node 0 to see node 2 down", Duration::from_secs(30), || {
        let p = peer_view(&c, 0, &b2);
        (p["state"] == "down").then_some(p)
    });
    assert!(
        gone["space"].is_null() || gone["space"]["current"] == false,
        "stale figures shown as current: {gone}"
    );
    let cap = c.nodes[0].status()["capacity"].clone();
    assert_eq!(cap["nodes"], 2, "{cap}");
    assert_eq!(cap["nodes_unknown"], 0, "{cap}");
    // The live peer's figures stay current.
    assert_eq!(peer_view(&c, 0, &b1)["space"]["current"], true);
}
