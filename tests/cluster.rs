//! Several nodes as separate processes on loopback: replication, reads through any node,
//! node loss, catch-up, conflicts, deletes, and a wrong secret.

mod common;

use std::time::{Duration, Instant};

use common::cluster::*;
use common::*;

#[test]
fn a_file_written_on_one_node_reads_on_every_node_and_is_stored_twice() {
    let c = Cluster::start(3, &[]);
    let data = random_bytes(6 << 20, 1);
    let v = put_ok(&c.nodes[1], "shared/big.bin", &data);
    assert_eq!(v["id"], sha256_hex(&data));
    for n in &c.nodes {
        assert!(read_ok(n, "shared/big.bin") == data, "content differs on {}", n.base);
    }
    // Replication 2: the chunks are on two nodes in all, not one and not three.
    assert_eq!(c.stored(&[0, 1, 2]), 2 * sealed_size(&data, &v), "stored across the cluster");
    // Every node lists the whole cluster's names.
    for i in 0..3 {
        assert_eq!(c.names(i), vec![("shared/big.bin".to_string(), sha256_hex(&data))]);
    }
    // Details name the holders.
    let (_, body) = get(&c.nodes[0].url("/api/v1/info/shared/big.bin"));
    let holders = json(&body)["holders"].as_array().unwrap().clone();
    let held: u64 = holders.iter().map(|h| h["chunks"].as_u64().unwrap()).sum();
    assert_eq!(held, 2 * v["chunks"].as_u64().unwrap());
}

#[test]
fn each_node_can_die_while_the_others_keep_reading_and_writing() {
    let mut c = Cluster::start(3, &[]);
    let files: Vec<(String, Vec<u8>)> =
        (0..6).map(|i| (format!("f{i}"), random_bytes(300_000 * (i + 1), 10 + i as u64))).collect();
    for (i, (name, data)) in files.iter().enumerate() {
        put_ok(&c.nodes[i % 3], name, data);
    }
    for victim in 0..3 {
        c.nodes[victim].kill9();
        let alive: Vec<usize> = (0..3).filter(|&i| i != victim).collect();
        for &i in &alive {
            for (name, data) in &files {
                assert!(read_ok(&c.nodes[i], name) == *data, "{name} via node {i} with node {victim} down");
            }
        }
        let name = format!("written-while-{victim}-down");
        let data = random_bytes(700_000, 100 + victim as u64);
        put_ok(&c.nodes[alive[0]], &name, &data);
        assert!(read_ok(&c.nodes[alive[1]], &name) == data);
        c.nodes[victim].restart();
        c.wait_connected(&[0, 1, 2]);
        // It catches up on what it missed without anyone acting.
        wait_for(&format!("node {victim} to list {name}"), Duration::from_secs(30), || {
            c.names(victim).iter().any(|(n, _)| *n == name).then_some(())
        });
        assert!(read_ok(&c.nodes[victim], &name) == data);
    }
}

#[test]
fn a_returning_node_catches_up_on_new_files_and_deletes() {
    let mut c = Cluster::start(3, &[]);
    put_ok(&c.nodes[0], "old-1", b"one");
    put_ok(&c.nodes[0], "old-2", b"two");
    c.nodes[2].kill9();
    c.wait_connected(&[0, 1]);
    put_ok(&c.nodes[1], "new-while-down", &random_bytes(2 << 20, 3));
    assert_eq!(delete(&c.nodes[0].url("/api/v1/files/old-1")).0, 204);
    let started = Instant::now();
    c.nodes[2].restart();
    let expected = c.names(0);
    wait_for("the returning node to converge", Duration::from_secs(30), || {
        (c.names(2) == expected).then_some(())
    });
    eprintln!("catch-up took {:?}", started.elapsed());
    assert_eq!(get(&c.nodes[2].url("/api/v1/files/old-1")).0, 404);
    assert_eq!(read_ok(&c.nodes[2], "old-2"), b"two");
    assert_eq!(read_ok(&c.nodes[2], "new-while-down").len(), 2 << 20);
}

#[test]
fn concurrent_writes_to_one_name_converge_to_one_winner() {
    let c = Cluster::start(3, &[]);
    let a = random_bytes(100_000, 7);
    let b = random_bytes(120_000, 8);
    std::thread::scope(|s| {
        s.spawn(|| put_ok(&c.nodes[0], "contested", &a));
        s.spawn(|| put_ok(&c.nodes[2], "contested", &b));
    });
    let winner = wait_for("all nodes to agree on one winner", Duration::from_secs(30), || {
        let ids: Vec<String> = (0..3)
            .map(|i| {
                c.names(i).into_iter().find(|(n, _)| n == "contested").map(|(_, id)| id).unwrap_or_default()
            })
            .collect();
        (ids.iter().all(|id| *id == ids[0]) && !ids[0].is_empty()).then(|| ids[0].clone())
    });
    assert!(winner == sha256_hex(&a) || winner == sha256_hex(&b));
    for n in &c.nodes {
        assert_eq!(sha256_hex(&read_ok(n, "contested")), winner);
    }
}

#[test]
fn deletes_propagate_and_space_is_reclaimed_cluster_wide() {
    let c = Cluster::start(3, &[]);
    let data = random_bytes(4 << 20, 9);
    put_ok(&c.nodes[0], "doomed", &data);
    put_ok(&c.nodes[0], "kept", b"small");
    for n in &c.nodes {
        assert_eq!(read_ok(n, "doomed").len(), data.len());
    }
    assert_eq!(delete(&c.nodes[1].url("/api/v1/files/doomed")).0, 204);
    for (i, n) in c.nodes.iter().enumerate() {
        wait_for(&format!("node {i} to drop the name"), Duration::from_secs(30), || {
            (get(&n.url("/api/v1/files/doomed")).0 == 404).then_some(())
        });
    }
    wait_for("every node to free the deleted chunks", Duration::from_secs(90), || {
        // Only "kept" (5 bytes + tag) remains, on two nodes.
        (c.stored(&[0, 1, 2]) == 2 * (5 + 16)).then_some(())
    });
}

#[test]
fn a_peer_with_the_wrong_secret_is_refused_and_learns_nothing() {
    let c = Cluster::start(2, &[]);
    put_ok(&c.nodes[0], "private", b"members only");
    let tmp = tempfile::tempdir().unwrap();
    let wrong = tmp.path().join("wrong");
    std::fs::write(&wrong, "not the cluster secret").unwrap();
    let intruder = TestNode::start_in(
        &tmp.path().join("x"),
        &["--secret-file", wrong.to_str().unwrap(), "--peer", &c.nodes[0].base],
    );
    wait_for("the member to log the refusal", Duration::from_secs(20), || {
        c.nodes[0].log_text().contains("refused a peer connection").then_some(())
    });
    wait_for("the intruder to log its failed handshake", Duration::from_secs(20), || {
        intruder.log_text().contains("handshake failed").then_some(())
    });
    assert_eq!(
        intruder.status()["peers"].as_array().unwrap().iter().filter(|p| p["state"] == "up").count(),
        0
    );
    assert_eq!(get(&intruder.url("/api/v1/files/private")).0, 404);
    assert_eq!(json(&get(&intruder.url("/api/v1/files")).1)["total"], 0);
    // The members still see only each other.
    let peers = c.nodes[0].status()["peers"].as_array().unwrap().clone();
    assert!(peers.iter().all(|p| p["url"] != intruder.base.as_str() || p["state"] == "down"), "{peers:?}");
    let _ = &c.secret;
}

#[test]
fn writes_need_the_configured_minimum_of_live_nodes() {
    let mut c = Cluster::start(2, &["--min-replicas", "2"]);
    put_ok(&c.nodes[0], "both-up", b"ok");
    c.nodes[1].kill9();
    wait_for("node 0 to see its peer down", Duration::from_secs(20), || {
        let s = c.nodes[0].status();
        (s["peers"].as_array().unwrap().iter().all(|p| p["state"] == "down")).then_some(())
    });
    let (code, body) = put(&c.nodes[0].url("/api/v1/files/alone"), &random_bytes(200_000, 4));
    assert_eq!(code, 503, "{}", String::from_utf8_lossy(&body));
    assert!(error_of(&body).contains("writes need at least 2"), "{}", error_of(&body));
    assert_eq!(get(&c.nodes[0].url("/api/v1/files/alone")).0, 404);
}

/// A hand-driven peer: dials a node's peer endpoint and authenticates with `secret`.
mod raw_peer {
    use async_tungstenite::WebSocketStream;
    use diststore::cluster::connection::{self, Authenticated, LinkError};
    use diststore::content::NodeId;
    use diststore::crypto::Secret;
    use diststore::runtime::net::TcpStream;

    pub type Ws = WebSocketStream<TcpStream>;

    pub async fn dial(base: &str) -> Ws {
        let host_port = base.trim_start_matches("http://");
        let (host, port) = host_port.rsplit_once(':').unwrap();
        let tcp = diststore::runtime::connect_tcp(host, port.parse().unwrap()).await.unwrap();
        let url = format!("ws://{host_port}/api/v1/peer");
        async_tungstenite::client_async(url, tcp).await.unwrap().0
    }

    pub async fn handshake(ws: &mut Ws, secret: &[u8]) -> Result<Authenticated, LinkError> {
        let keys = Secret::new(secret.to_vec()).keys();
        connection::client_handshake(ws, &keys, NodeId::from_bytes([0xab; 16]), "").await
    }

    /// Whether the node closed the socket within `limit`.
    pub async fn closed_within(ws: &mut Ws, limit: std::time::Duration) -> bool {
        use async_tungstenite::tungstenite::Message;
        use futures_util::StreamExt;
        let closed = async {
            loop {
                match ws.next().await {
                    None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return,
                    Some(Ok(_)) => continue,
                }
            }
        };
        diststore::runtime::timeout(limit, closed).await.is_some()
    }
}

#[test]
fn bad_peer_input_is_refused_and_the_node_keeps_serving() {
    use async_tungstenite::tungstenite::Message as Ws;
    use diststore::cluster::connection;
    use diststore::cluster::messages::{
        Handshake, Message, PROTOCOL_VERSION, Request, Response, SealedChunk,
    };
    use diststore::content::ChunkId;
    use diststore::crypto::Secret;
    use futures_util::StreamExt;

    let c = Cluster::start(1, &[]);
    let node = &c.nodes[0];
    let secret = b"cluster test secret";
    let stored_before = node.status()["stored_bytes"].clone();
    diststore::runtime::block_on(async {
        // A chunk whose bytes do not match its id, and a valid sealed chunk claimed under
        // another id: both refused, nothing stored.
        let mut ws = raw_peer::dial(&node.base).await;
        let auth = raw_peer::handshake(&mut ws, secret).await.expect("right secret");
        let (mut tx, mut rx) = connection::split(ws, auth);
        let keys = Secret::new(secret.to_vec()).keys();
        let real = ChunkId::of(b"real chunk");
        let sealed = keys.seal_chunk(&real, b"real chunk");
        for (id, bytes) in [([1u8; 32], vec![0u8; 100]), (*ChunkId::of(b"other").as_bytes(), sealed)] {
            let body =
                Request::PutChunks { lease: 1, chunks: vec![SealedChunk { id, sealed: bytes.into() }] };
            tx.send(Message::Request { id: 1, body }).await.unwrap();
            match rx.recv().await.unwrap() {
                Message::Response { id: 1, body: Response::Error(e) } => {
                    assert!(e.contains("refused chunk"), "{e}")
                }
                other => panic!("expected a refusal, got {other:?}"),
            }
        }

        // Garbage after the handshake: the link is dropped.
        let mut ws = raw_peer::dial(&node.base).await;
        raw_peer::handshake(&mut ws, secret).await.expect("right secret");
        ws.send(Ws::binary(vec![
            0xde, 0xad, 0xbe, 0xef, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17,
        ]))
        .await
        .unwrap();
        assert!(
            raw_peer::closed_within(&mut ws, std::time::Duration::from_secs(10)).await,
            "the node kept a link that sent a bad frame"
        );

        // Chunk bytes travel as attachments after their frame: one too large, or too many of
        // them, and the link is dropped instead of buffered.
        let oversized = vec![SealedChunk { id: [3; 32], sealed: vec![0u8; 5 << 20].into() }];
        let too_many = (0..17u8).map(|i| SealedChunk { id: [i; 32], sealed: vec![i; 64].into() }).collect();
        for chunks in [oversized, too_many] {
            let mut ws = raw_peer::dial(&node.base).await;
            let auth = raw_peer::handshake(&mut ws, secret).await.expect("right secret");
            let (mut tx, mut rx) = connection::split(ws, auth);
            tx.send(Message::Request { id: 1, body: Request::PutChunks { lease: 1, chunks } }).await.unwrap();
            let answer = diststore::runtime::timeout(std::time::Duration::from_secs(10), rx.recv()).await;
            assert!(matches!(answer, Some(Err(_))), "expected the link dropped, got {answer:?}");
        }

        // A peer speaking another protocol version, newer or the one before (whose pongs
        // carried no space figures), is refused with a reason.
        for version in [PROTOCOL_VERSION + 1, PROTOCOL_VERSION - 1] {
            let mut ws = raw_peer::dial(&node.base).await;
            let hello = Handshake::Hello { version, node: [1; 16], nonce: [2; 32], url: String::new() };
            ws.send(Ws::binary(diststore::cluster::messages::encode(&hello))).await.unwrap();
            match ws.next().await {
                Some(Ok(Ws::Binary(b))) => match diststore::cluster::messages::decode::<Handshake>(&b)
                    .unwrap()
                {
                    Handshake::Refused { reason } => assert!(reason.contains("protocol version"), "{reason}"),
                    other => panic!("expected a refusal, got {other:?}"),
                },
                other => panic!("expected a refusal, got {other:?}"),
            }
        }

        // A peer that stops in the middle of the handshake.
        let mut ws = raw_peer::dial(&node.base).await;
        ws.send(Ws::binary(vec![0u8; 3])).await.unwrap();
        drop(ws);
    });
    assert_eq!(node.status()["stored_bytes"], stored_before, "a refused chunk was stored");
    wait_for("the node to log the refusals", Duration::from_secs(10), || {
        node.log_text().contains("refused a peer connection").then_some(())
    });
    // Still serving, to clients and to real peers.
    put_ok(node, "after-bad-peers", b"fine");
    assert_eq!(get(&node.url("/health")).0, 200);
}

#[test]
fn a_peer_that_goes_silent_is_dropped() {
    let c = Cluster::start(1, &[]);
    let node = &c.nodes[0];
    diststore::runtime::block_on(async {
        // Authenticated, then nothing: not even the heartbeat every real peer sends each second.
        let mut ws = raw_peer::dial(&node.base).await;
        raw_peer::handshake(&mut ws, b"cluster test secret").await.expect("right secret");
        let started = std::time::Instant::now();
        assert!(
            raw_peer::closed_within(&mut ws, std::time::Duration::from_secs(30)).await,
            "the node kept a silent link for 30 s"
        );
        assert!(started.elapsed() >= std::time::Duration::from_secs(10), "dropped a live link early");
    });
    // The node's output reaches the test through copier threads: wait for it, bounded.
    wait_for("the node to log the dropped link", Duration::from_secs(10), || {
        node.log_text().contains("no message for").then_some(())
    });
    put_ok(node, "after-a-silent-peer", b"fine");
}

#[test]
fn a_node_down_inside_the_grace_moves_nothing_and_catches_up_when_back() {
    // The default grace (--down-out-after 10m). A node going down changes the cluster view,
    // so each survivor runs one ranking pass: a copy storm would start there.
    let mut c = Cluster::start(3, &[]);
    let old = random_bytes(6 << 20, 61);
    let sealed_old = sealed_size(&old, &put_ok(&c.nodes[0], "old", &old));
    assert_eq!(c.stored(&[0, 1, 2]), 2 * sealed_old);
    let on_survivors = c.stored(&[0, 1]);
    let repair = |c: &Cluster, i: usize| c.nodes[i].status()["repair"].clone();
    let passes = |c: &Cluster, i: usize| repair(c, i)["passes"].as_u64().unwrap();
    let fetched = |c: &Cluster, i: usize| repair(c, i)["fetched"].as_u64().unwrap();
    let (p0, p1) = (passes(&c, 0), passes(&c, 1));
    c.nodes[2].kill9();
    // The pass that follows sees node 2's chunks under-replicated, and fetches none of them.
    wait_for("a repair pass on each survivor after node 2 went down", Duration::from_secs(60), || {
        let done = |i: usize| {
            let r = repair(&c, i);
            r["passes"].as_u64().unwrap() > [p0, p1][i] && r["pass_running"] == false
        };
        (done(0) && done(1)).then_some(())
    });
    assert!(repair(&c, 0)["under_replicated"].as_u64().unwrap() > 0);
    assert_eq!(c.stored(&[0, 1]), on_survivors, "the survivors copied node 2's share");
    assert_eq!((fetched(&c, 0), fetched(&c, 1)), (0, 0));
    // Writes meanwhile still get two copies, on the live nodes.
    let new = random_bytes(6 << 20, 62);
    let sealed_new = sealed_size(&new, &put_ok(&c.nodes[1], "new", &new));
    assert_eq!(c.stored(&[0, 1]), on_survivors + 2 * sealed_new);
    c.nodes[2].restart();
    c.wait_connected(&[0, 1, 2]);
    // Node 2 fetches its share of what was written while it was away and the stand-ins hand
    // theirs back: exactly two copies of everything, and the survivors fetched nothing.
    wait_for("exactly two copies of both files", Duration::from_secs(90), || {
        (c.stored(&[0, 1, 2]) == 2 * (sealed_old + sealed_new)).then_some(())
    });
    assert_eq!((fetched(&c, 0), fetched(&c, 1)), (0, 0));
    for n in &c.nodes {
        assert!(read_ok(n, "old") == old && read_ok(n, "new") == new);
    }
}

#[test]
fn repair_keeps_two_copies_once_a_node_is_down_past_the_grace_and_hands_them_back() {
    let mut c = Cluster::start(3, &["--down-out-after", "2s"]);
    let data = random_bytes(6 << 20, 31);
    let sealed = sealed_size(&data, &put_ok(&c.nodes[0], "precious", &data));
    assert_eq!(c.stored(&[0, 1, 2]), 2 * sealed);
    c.nodes[2].kill9();
    // The survivors re-replicate what node 2 held: two copies again, on the two of them.
    wait_for("two copies on the survivors", Duration::from_secs(60), || {
        (c.stored(&[0, 1]) == 2 * sealed).then_some(())
    });
    c.nodes[2].restart();
    c.wait_connected(&[0, 1, 2]);
    // Node 2 fetches its share back, and the stand-ins drop theirs once it confirms.
    wait_for("exactly two copies across all three nodes again", Duration::from_secs(90), || {
        let on_2 = c.nodes[2].status()["stored_bytes"].as_u64().unwrap();
        (on_2 > 0 && c.stored(&[0, 1, 2]) == 2 * sealed).then_some(())
    });
    for n in &c.nodes {
        assert!(read_ok(n, "precious") == data);
    }
}

#[test]
fn the_scrub_drops_a_damaged_copy_and_repair_fetches_a_good_one_back() {
    let mut c = Cluster::start(2, &[]);
    let data = random_bytes(3 << 20, 41);
    put_ok(&c.nodes[0], "scrubbed", &data);
    // Replication 2 on two nodes: node 1 holds every chunk.
    let full = c.nodes[1].status()["stored_bytes"].as_u64().unwrap();
    assert!(full > data.len() as u64);
    c.nodes[1].terminate();
    damage_a_stored_chunk(&c.nodes[1].dir);
    // Its next pass, soon: a restart alone resumes a pass in progress, not a new one.
    c.nodes[1].args.extend(["--scrub-period".to_string(), "1s".to_string()]);
    c.nodes[1].start_again();
    c.wait_connected(&[0, 1]);
    wait_for("node 1 to drop its damaged copy and fetch a good one", Duration::from_secs(90), || {
        let s = c.nodes[1].status();
        let fetched = s["repair"]["fetched"].as_u64().unwrap_or(0);
        (s["scrub"]["corrupt"] == 1 && fetched >= 1 && s["stored_bytes"] == full).then_some(())
    });
    // Node 1's own copy is whole again: it serves the file alone.
    c.nodes[0].kill9();
    assert!(read_ok(&c.nodes[1], "scrubbed") == data);
}

#[test]
fn a_stand_in_keeps_its_copy_while_the_returning_owner_holds_a_damaged_one() {
    let mut c = Cluster::start(3, &["--down-out-after", "2s"]);
    let data = random_bytes(6 << 20, 51);
    let sealed = sealed_size(&data, &put_ok(&c.nodes[0], "guarded", &data));
    let dropped = |c: &Cluster, i: usize| c.nodes[i].status()["repair"]["dropped"].as_u64().unwrap();
    c.nodes[2].kill9();
    wait_for("two copies on the survivors", Duration::from_secs(60), || {
        (c.stored(&[0, 1]) == 2 * sealed).then_some(())
    });
    damage_a_stored_chunk(&c.nodes[2].dir);
    // Back with its scrub off: only the stand-ins' check before they drop can see the damage.
    let args = c.nodes[2].args.clone();
    c.nodes[2].args.extend(["--scrub-rate".to_string(), "0".to_string()]);
    c.nodes[2].start_again();
    c.wait_connected(&[0, 1, 2]);
    wait_for("both stand-ins to hand node 2's share back", Duration::from_secs(90), || {
        (dropped(&c, 0) > 0 && dropped(&c, 1) > 0).then_some(())
    });
    assert!(
        c.stored(&[0, 1, 2]) > 2 * sealed,
        "a stand-in dropped the good copy of the chunk node 2 holds damaged"
    );

    // With its scrub on, node 2 drops the damaged copy and fetches a good one; the stand-in
    // then hands its copy back too: exactly two good copies.
    c.nodes[2].args = args;
    c.nodes[2].args.extend(["--scrub-period".to_string(), "1s".to_string()]);
    c.nodes[2].restart();
    c.wait_connected(&[0, 1, 2]);
    wait_for("exactly two copies again", Duration::from_secs(90), || {
        (c.nodes[2].status()["scrub"]["corrupt"] == 1 && c.stored(&[0, 1, 2]) == 2 * sealed).then_some(())
    });
    for n in &c.nodes {
        assert!(read_ok(n, "guarded") == data);
    }
}

/// Regression: chunks a peer sent ahead of their manifest were protected only in memory, so a
/// holder restarting before the manifest arrived collected them as garbage. Once confirmed,
/// they wait for their manifest on disk.
#[test]
fn chunks_received_ahead_of_their_manifest_survive_a_restart() {
    use diststore::cluster::connection;
    use diststore::cluster::messages::{Message, Request, Response, SealedChunk};
    use diststore::content::ChunkId;
    use diststore::crypto::Secret;

    let mut c = Cluster::start(1, &[]);
    let secret = b"cluster test secret";
    let plain = random_bytes(100_000, 41);
    let id = ChunkId::of(&plain);
    let sealed = Secret::new(secret.to_vec()).keys().seal_chunk(&id, &plain);
    let sealed_len = sealed.len() as u64;
    let node = &c.nodes[0];
    diststore::runtime::block_on(async {
        let mut ws = raw_peer::dial(&node.base).await;
        let auth = raw_peer::handshake(&mut ws, secret).await.expect("right secret");
        let (mut tx, mut rx) = connection::split(ws, auth);
        let body = Request::PutChunks {
            lease: 1,
            chunks: vec![SealedChunk { id: *id.as_bytes(), sealed: sealed.into() }],
        };
        tx.send(Message::Request { id: 1, body }).await.unwrap();
        assert!(matches!(
            rx.recv().await.unwrap(),
            Message::Response { id: 1, body: Response::Stored { .. } }
        ));
        tx.send(Message::Request { id: 2, body: Request::Confirm { lease: 1 } }).await.unwrap();
        assert!(matches!(
            rx.recv().await.unwrap(),
            Message::Response { id: 2, body: Response::Confirmed { present: 1, absent: 0 } }
        ));
    });
    assert_eq!(c.nodes[0].status()["stored_bytes"], sealed_len);
    c.nodes[0].restart();
    // A collection runs at start and after a delete; the waiting chunk must outlive both.
    put_ok(&c.nodes[0], "trigger", b"t");
    assert_eq!(delete(&c.nodes[0].url("/api/v1/files/trigger")).0, 204);
    wait_for("the deleted file to be collected and the waiting chunk kept", Duration::from_secs(60), || {
        (c.nodes[0].status()["stored_bytes"] == sealed_len).then_some(())
    });
}
