//! Serving peers: a peer's inbound connection (its outbound link to this node) and the
//! requests it carries.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use async_tungstenite::WebSocketStream;
use futures_util::{AsyncRead, AsyncWrite};

use super::connection::{self, LinkError};
use super::messages::{self, Member, Message, NameUpdate, Request, Response};
use super::{Cluster, ClusterError, HANDLERS_PER_LINK, link};
use crate::content::{ChunkId, FileId, NodeId};
use crate::events::Event;
use crate::runtime;
use crate::storage::StorageError;
use crate::storage::records::ManifestRecordV1;

/// Numbers inbound connections, so that a connection's end releases only its own leases.
static CONNECTIONS: AtomicU64 = AtomicU64::new(1);

impl Cluster {
    /// Serves a peer's inbound connection (its outbound link) until it closes.
    /// `remote` is the address the connection came from: a peer that advertises an address
    /// nobody else can dial is reached there instead (see [`reachable_url`]).
    pub async fn accept<S>(self: Arc<Self>, mut ws: WebSocketStream<S>, remote: Option<IpAddr>)
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        // Anyone can open this endpoint: bound the unauthenticated handshakes (each may buffer
        // one message), per source too.
        let Some(slot) = self.handshakes.admit(remote) else { return };
        let handshake = connection::server_handshake(&mut ws, &self.keys, self.me).await;
        drop(slot);
        let auth = match handshake {
            Ok(auth) => auth,
            Err(e) => {
                log::warn!("refused a peer connection: {e}");
                return;
            }
        };
        let peer = auth.peer;
        let url = reachable_url(&auth.peer_url, remote);
        log::debug!("peer {peer} ({url}) connected");
        // The dialer may be new to us: link back so requests flow both ways.
        if !url.is_empty() {
            self.learn(vec![Member { node: *peer.as_bytes(), url }]);
        }
        let connection = CONNECTIONS.fetch_add(1, Ordering::Relaxed);
        let (mut writer, mut reader) = connection::split(ws, auth);
        let (tx, queue) = connection::outbox(64);
        let write = async move {
            writer.drain(queue).await;
            writer.close().await;
        };
        let handler = self.clone();
        // Requests a peer may have in progress at once. Its link bounds itself to this, so
        // past it (a peer misbehaving) the reader waits; heartbeats never take a slot.
        let (busy, done) = async_channel::bounded::<()>(HANDLERS_PER_LINK);
        let read = async move {
            loop {
                let Some(received) = runtime::timeout(link::INBOUND_SILENCE, reader.recv()).await else {
                    log::warn!("link from peer {peer} dropped: no message for {:?}", link::INBOUND_SILENCE);
                    break;
                };
                match received {
                    Ok(Message::Request { id, body: Request::Ping { members, stats: _, states } }) => {
                        handler.merge_states(states);
                        handler.learn(members);
                        let body = Response::Pong {
                            members: handler.members(),
                            stats: handler.local_stats().await,
                            space: handler.space_for_peers(),
                            states: handler.wire_states(),
                        };
                        if tx.send(Message::Response { id, body }).await.is_err() {
                            break;
                        }
                    }
                    Ok(Message::Request { id, body }) => {
                        if busy.send(()).await.is_err() {
                            break;
                        }
                        let (cluster, tx, done) = (handler.clone(), tx.clone(), done.clone());
                        runtime::spawn(async move {
                            let body = cluster.handle(peer, connection, body).await;
                            let _ = done.try_recv();
                            let _ = tx.send(Message::Response { id, body }).await;
                        });
                    }
                    Ok(Message::Response { .. }) => {
                        log::warn!("peer {peer} sent a response on its own link; dropping it");
                        break;
                    }
                    Err(LinkError::Closed) => break,
                    Err(e) => {
                        log::warn!("link from peer {peer} dropped: {e}");
                        break;
                    }
                }
            }
        };
        futures_lite::future::race(write, read).await;
        // Its transfers ended with the connection: nothing to keep for them.
        self.leases.release_connection(connection);
    }

    async fn handle(self: &Arc<Self>, peer: NodeId, connection: u64, request: Request) -> Response {
        match self.try_handle(peer, connection, request).await {
            Ok(r) => r,
            Err(e) => Response::Error(e.to_string()),
        }
    }

    async fn try_handle(
        self: &Arc<Self>,
        peer: NodeId,
        connection: u64,
        request: Request,
    ) -> Result<Response, ClusterError> {
        Ok(match request {
            Request::Ping { members, stats: _, states } => {
                self.merge_states(states);
                self.learn(members);
                Response::Pong {
                    members: self.members(),
                    stats: self.local_stats().await,
                    space: self.space_for_peers(),
                    states: self.wire_states(),
                }
            }
            Request::PutChunks { lease, chunks } => {
                // Pinned before anything else: from here until the upload releases the lease,
                // no collection takes them, whatever else uses or stops using them.
                let ids: Vec<ChunkId> = chunks.iter().map(|c| ChunkId::from_bytes(c.id)).collect();
                self.leases.pin(peer, connection, lease, &ids);
                // Never store bytes that do not open under our key to their id. Checked, with
                // which chunks are new here, in one trip to a blocking thread.
                let (keys, store) = (self.keys.clone(), self.store.clone());
                let checked = runtime::blocking(move || {
                    let chunks: Vec<(ChunkId, bytes::Bytes)> =
                        chunks.into_iter().map(|c| (ChunkId::from_bytes(c.id), c.sealed)).collect();
                    for (id, sealed) in &chunks {
                        if let Err(e) = keys.verify_chunk(id, sealed) {
                            return Ok(Err(format!("refused chunk {id}: {e}")));
                        }
                    }
                    let ids: Vec<ChunkId> = chunks.iter().map(|(id, _)| *id).collect();
                    let had = store.have_chunks_blocking(&ids)?;
                    let new_bytes = chunks
                        .iter()
                        .zip(had)
                        .filter(|(_, had)| !had)
                        .map(|((_, sealed), _)| sealed.len() as u64)
                        .sum::<u64>();
                    Ok::<_, StorageError>(Ok((chunks, new_bytes)))
                })
                .await?;
                let (chunks, new_bytes) = match checked {
                    Ok(c) => c,
                    Err(refusal) => return Ok(Response::Error(refusal)),
                };
                let ids: Vec<ChunkId> = chunks.iter().map(|(id, _)| *id).collect();
                self.store.put_received_chunks(chunks).await?;
                super::repair::queue_stand_ins(self, &ids).await?;
                Response::Stored { new_bytes }
            }
            Request::Confirm { lease } => {
                let Some(ids) = self.leases.chunks(peer, lease) else {
                    return Ok(Response::Error(
                        "no such upload here (this node restarted, or the link carrying it dropped)".into(),
                    ));
                };
                let present = self.store.confirm_chunks(ids).await?;
                let held = present.iter().filter(|p| **p).count() as u64;
                Response::Confirmed { present: held, absent: present.len() as u64 - held }
            }
            Request::Pin { ids, .. } if ids.len() > messages::MAX_PIN => {
                Response::Error(format!("{} chunks to pin, at most {}", ids.len(), messages::MAX_PIN))
            }
            Request::Pin { lease, ids } => {
                let ids: Vec<ChunkId> = ids.into_iter().map(ChunkId::from_bytes).collect();
                self.leases.pin(peer, connection, lease, &ids);
                Response::Have(self.store.have_chunks(ids).await?)
            }
            Request::Release { lease } => {
                self.leases.release(peer, lease);
                Response::Released
            }
            Request::GetChunk { id } => {
                let (store, id) = (self.store.clone(), ChunkId::from_bytes(id));
                let sealed = runtime::blocking(move || store.chunk_blocking(id)).await?;
                if sealed.is_none() {
                    // Asked for it, so a peer expects it here: repair looks into it.
                    self.suspect(vec![id]).await;
                }
                Response::Chunk(sealed.map(bytes::Bytes::from))
            }
            Request::VerifyChunks { ids } if ids.len() > messages::MAX_VERIFY => {
                Response::Error(format!("{} chunks to verify, at most {}", ids.len(), messages::MAX_VERIFY))
            }
            Request::VerifyChunks { ids } => {
                let (store, keys) = (self.store.clone(), self.keys.clone());
                // A copy that cannot be read counts as absent: the asker then keeps its own.
                let ids: Vec<ChunkId> = ids.into_iter().map(ChunkId::from_bytes).collect();
                let asked = ids.clone();
                let have: Vec<bool> = runtime::blocking(move || {
                    ids.into_iter()
                        .map(|id| {
                            matches!(store.chunk_blocking(id), Ok(Some(sealed)) if keys.verify_chunk(&id, &sealed).is_ok())
                        })
                        .collect()
                })
                .await;
                // An owner asked about a chunk it lacks queues it for repair.
                let lacking = asked.iter().zip(&have).filter(|(_, h)| !**h).map(|(id, _)| *id).collect();
                self.suspect(lacking).await;
                Response::Have(have)
            }
            Request::HasChunks { ids } => Response::Have(
                self.store.have_chunks(ids.into_iter().map(ChunkId::from_bytes).collect()).await?,
            ),
            Request::ApplyNames { updates } => {
                // Announced by the uploader, which placed the chunks already.
                self.apply_updates(updates).await?;
                Response::Applied
            }
            Request::Digest => Response::Digest(self.store.name_digest().await?),
            Request::ListBucket { bucket } => Response::Bucket(
                self.store
                    .records(Some(bucket))
                    .await?
                    .into_iter()
                    .map(|(name, record)| NameUpdate::new(name, record, None))
                    .collect(),
            ),
            Request::GetManifest { id } => Response::Manifest(
                self.store
                    .manifest(FileId::from_bytes(id))
                    .await?
                    .as_ref()
                    .map(|m| ManifestRecordV1::from_manifest(m).into()),
            ),
        })
    }

    /// Queues chunks found missing (or damaged) for repair, and wakes it. Best effort: a
    /// failure to queue is logged (the next ranking pass finds the chunk again).
    pub async fn suspect(&self, ids: Vec<ChunkId>) {
        if ids.is_empty() || !self.has_members() {
            return;
        }
        match self.store.enqueue_repair(ids).await {
            Ok(()) => self.wake_repair(),
            Err(e) => log::warn!("could not queue chunks for repair: {e}"),
        }
    }

    /// Applies name records from a peer; publishes what changed. Returns the chunks of the
    /// live files that applied.
    pub(super) async fn apply_updates(&self, updates: Vec<NameUpdate>) -> Result<Vec<ChunkId>, ClusterError> {
        let mut batch = Vec::with_capacity(updates.len());
        for u in updates {
            // A name this node's API could neither serve nor delete is refused.
            if let Err(e) = crate::content::FileName::new(u.name.as_str()) {
                log::warn!("refused a name record from a peer: {e}");
                continue;
            }
            let (name, record, manifest) = u.into_records();
            self.clock.observe(&record.stamp);
            let manifest = match (record.file, manifest) {
                (Some(file), Some(m)) => Some(m.into_manifest(FileId::from_bytes(file))),
                _ => None,
            };
            batch.push((name, record, manifest));
        }
        let names: Vec<(String, bool, Vec<ChunkId>)> = batch
            .iter()
            .map(|(n, r, m)| {
                let chunks = m.as_ref().map(|m| m.chunks.iter().map(|c| c.id).collect()).unwrap_or_default();
                (n.clone(), r.file.is_some(), chunks)
            })
            .collect();
        let applied = self.store.apply_names(batch).await?;
        let mut chunks = Vec::new();
        for ((name, live, ids), applied) in names.into_iter().zip(applied) {
            if applied {
                chunks.extend(ids);
                self.events.publish(if live { Event::Put { name } } else { Event::Delete { name } });
            }
        }
        Ok(chunks)
    }
}

/// The URL to reach a peer at. A peer listening on every address (`0.0.0.0`) without
/// `--advertise` announces an address nobody can dial, and one on loopback announces an address
/// only its own host can: from another host, the address its connection came from (with the
/// port it announced) reaches it.
pub fn reachable_url(advertised: &str, remote: Option<IpAddr>) -> String {
    let (Some(ip), Some(remote)) = (super::url_ip(advertised), remote) else { return advertised.to_owned() };
    let Ok(mut url) = url::Url::parse(advertised) else { return advertised.to_owned() };
    let unreachable = ip.is_unspecified() || (ip.is_loopback() && !remote.is_loopback());
    if !unreachable || url.set_ip_host(remote).is_err() {
        return advertised.to_owned();
    }
    let derived = url.as_str().trim_end_matches('/').to_owned();
    log::warn!(
        "a peer advertises {advertised}, which this node cannot dial; reaching it at {derived} instead \
         (start it with --advertise http://ADDRESS:PORT)"
    );
    derived
}

#[cfg(test)]
mod tests {
    use super::reachable_url;

    #[test]
    fn an_unreachable_advertised_address_is_replaced_by_the_connection_s() {
        let remote = Some("10.0.0.2".parse().unwrap());
        assert_eq!(reachable_url("http://0.0.0.0:8080", remote), "http://10.0.0.2:8080");
        assert_eq!(reachable_url("http://127.0.0.1:8080", remote), "http://10.0.0.2:8080");
        assert_eq!(reachable_url("http://10.0.0.9:8080", remote), "http://10.0.0.9:8080");
        assert_eq!(reachable_url("http://node2:8080", remote), "http://node2:8080");
        // On one host, loopback is reachable.
        let local = Some("127.0.0.1".parse().unwrap());
        assert_eq!(reachable_url("http://127.0.0.1:8081", local), "http://127.0.0.1:8081");
        assert_eq!(reachable_url("http://[::]:8080", remote), "http://10.0.0.2:8080");
    }
}
