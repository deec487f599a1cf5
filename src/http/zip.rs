//! `POST /api/v1/zip`: several files and whole folders as one zip, made as it is sent.
//!
//! Entries are stored, not compressed (stored content is mostly incompressible, and the CPU
//! goes to decryption), each followed by a data descriptor with its CRC-32 and sizes (ZIP64),
//! so nothing is buffered beyond the chunks in flight: memory per download is the read path's
//! read-ahead plus `QUEUE` pieces, whatever the total size. Every name is checked before the
//! status is sent (an unknown one is `404`); a file that fails to read later (deleted meanwhile,
//! a chunk that fails verification, no holder reachable) cuts the body, so the zip is visibly
//! broken rather than silently missing a member.

use std::collections::BTreeSet;
use std::io;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use async_zip::base::write::ZipFileWriter;
use async_zip::{Compression, ZipDateTimeBuilder, ZipEntryBuilder, ZipString};
use futures_util::AsyncWriteExt;
use tide::{Body, Response, StatusCode};

use super::serve_content::disposition;
use super::{ApiError, Req, bounded_body, user_name};
use crate::content::FileName;
use crate::node::{ByteStream, Node, NodeError, mtime_of};
use crate::runtime;
use crate::storage::{ListQuery, SortBy};

/// Most files one zip holds, after folders are expanded.
pub const MAX_ENTRIES: usize = 10_000;
/// Largest selection body: room for `MAX_ENTRIES` names of ordinary length.
const MAX_BODY: u64 = 2 << 20;
/// Names read per listing page while expanding a folder.
const PAGE: usize = 1000;
/// Pieces of zip made ahead of the client.
const QUEUE: usize = 4;

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Selection {
    #[serde(default)]
    names: Vec<String>,
    /// Folders: every name starting with one (each ends in `/`; `""` is the whole store).
    #[serde(default)]
    prefixes: Vec<String>,
}

const SHAPE: &str = r#"{"names": ["a.txt"], "prefixes": ["photos/"]}"#;

/// The selection, from a JSON body or (for a page's form submit, which gets the browser's own
/// download UI) from a form field `selection` holding the same JSON.
async fn selection(req: &mut Req) -> Result<Selection, ApiError> {
    let is_form = req.content_type().is_some_and(|m| m.essence() == "application/x-www-form-urlencoded");
    let body = bounded_body(req, MAX_BODY).await?;
    let json = if is_form {
        url::form_urlencoded::parse(&body)
            .find(|(k, _)| k == "selection")
            .map(|(_, v)| v.into_owned().into_bytes())
            .ok_or_else(|| {
                ApiError::BadRequest(format!("expected a form field `selection` holding {SHAPE}"))
            })?
    } else {
        body
    };
    serde_json::from_slice(&json).map_err(|e| ApiError::BadRequest(format!("expected JSON {SHAPE}: {e}")))
}

fn too_many() -> ApiError {
    ApiError::TooLarge(format!("a zip holds at most {MAX_ENTRIES} files; select fewer"))
}

/// Every name the selection covers, each once, in name order; each one exists now.
async fn resolve(node: &Node, sel: Selection) -> Result<Vec<FileName>, ApiError> {
    if sel.names.len() + sel.prefixes.len() > MAX_ENTRIES {
        return Err(too_many());
    }
    if sel.names.is_empty() && sel.prefixes.is_empty() {
        return Err(ApiError::BadRequest(format!("select at least one name or prefix: {SHAPE}")));
    }
    let mut names = BTreeSet::new();
    for raw in sel.names {
        let name = user_name(raw)?;
        match node.find(&name).await {
            Ok(_) => names.insert(name.as_str().to_owned()),
            Err(NodeError::NotFound) => {
                return Err(ApiError::NotFound(format!("no such file: {:?}", name.as_str())));
            }
            Err(e) => return Err(e.into()),
        };
    }
    for prefix in sel.prefixes {
        if !prefix.is_empty() {
            if !prefix.ends_with('/') {
                return Err(ApiError::BadRequest(format!("a prefix ends in / (a folder); got {prefix:?}")));
            }
            user_name(format!("{prefix}x"))?;
        }
        let mut after = None;
        let mut found = false;
        loop {
            let page = node
                .list(ListQuery {
                    prefix: prefix.clone(),
                    after: after.take(),
                    offset: 0,
                    limit: PAGE,
                    sort: SortBy::Name,
                    descending: false,
                    hidden: None,
                    count: false,
                    delimiter: false,
                    search: None,
                })
                .await?;
            found |= !page.entries.is_empty();
            names.extend(page.entries.into_iter().map(|e| e.name));
            if names.len() > MAX_ENTRIES {
                return Err(too_many());
            }
            match page.next {
                Some(next) => after = Some(next),
                None => break,
            }
        }
        if !found {
            return Err(ApiError::NotFound(format!("no files under {prefix:?}")));
        }
    }
    // Listed names passed validation when stored.
    names.into_iter().map(|n| FileName::new(n).map_err(ApiError::from)).collect()
}

/// The download's file name: the folder's when one folder is all there is.
fn archive_name(names: &[FileName], prefixes: &[String]) -> String {
    match (names.len(), prefixes) {
        (_, [only]) if !only.is_empty() => {
            format!("{}.zip", only.trim_end_matches('/').rsplit('/').next().unwrap_or("files"))
        }
        _ => "files.zip".into(),
    }
}

pub async fn download(mut req: Req) -> Result<Response, ApiError> {
    let sel = selection(&mut req).await?;
    let prefixes = sel.prefixes.clone();
    let requested_names = sel.names.len();
    let node = req.state().node.clone();
    let names = resolve(&node, sel).await?;
    let file_name = if requested_names == 0 { archive_name(&names, &prefixes) } else { "files.zip".into() };
    let (tx, rx) = async_channel::bounded(QUEUE);
    let count = names.len();
    runtime::spawn(async move {
        if let Err(e) = write_zip(&node, names, &tx).await {
            // The client went away: nothing to tell.
            if !tx.is_closed() {
                log::error!("zip of {count} files cut: {e}");
                let _ = tx.send(Err(io::Error::other(e.to_string()))).await;
            }
        }
    });
    let mut res = Response::new(StatusCode::Ok);
    // No length: the body is sent chunked, its end marked only when the zip is whole.
    res.set_body(Body::from_reader(ByteStream::from(rx), None));
    res.insert_header("Content-Type", "application/zip");
    res.insert_header("Content-Disposition", disposition("attachment", &file_name));
    res.insert_header("Cache-Control", "no-store");
    res.insert_header("X-Content-Type-Options", "nosniff");
    res.insert_header("X-DistStore-Entries", count.to_string());
    Ok(res)
}

#[derive(Debug, thiserror::Error)]
enum ZipError {
    #[error("{name}: {source}")]
    Read { name: String, source: NodeError },
    #[error("{name}: the read ended after {got} of {size} bytes")]
    Short { name: String, got: u64, size: u64 },
    #[error("{name}: {source}")]
    Piece { name: String, source: io::Error },
    #[error("writing the zip: {0}")]
    Format(#[from] async_zip::error::ZipError),
    #[error("the client went away")]
    Gone,
}

type Queue = async_channel::Sender<io::Result<bytes::Bytes>>;

async fn write_zip(node: &Node, names: Vec<FileName>, tx: &Queue) -> Result<(), ZipError> {
    let out = Outbox::default();
    let mut zip = ZipFileWriter::new(out.clone());
    for name in names {
        let key = name.as_str().to_owned();
        let found = node.find(&name).await.map_err(|source| ZipError::Read { name: key.clone(), source })?;
        let ms = mtime_of(&found.record).unwrap_or(found.record.modified_ms);
        // A leading `/` would make some unzippers write outside the folder they extract to.
        let entry = ZipEntryBuilder::new(ZipString::from(key.trim_start_matches('/')), Compression::Stored)
            .last_modification_date(dos_time(ms))
            .unix_permissions(0o644);
        let mut writer = zip.write_entry_stream(entry).await?;
        let size = found.manifest.size;
        let mut got = 0u64;
        if size > 0 {
            let pieces = node
                .read_pieces(&found.manifest, 0, size)
                .await
                .map_err(|source| ZipError::Read { name: key.clone(), source })?;
            while let Ok(piece) = pieces.recv().await {
                let piece = piece.map_err(|source| ZipError::Piece { name: key.clone(), source })?;
                got += piece.len() as u64;
                // The entry's CRC-32 is computed here, on the executor: crc32fast runs at about
                // 10 GB/s (0.1 ms a piece of up to 1 MiB), well inside a task's fair slice, and
                // a hop to a blocking thread per piece would cost more than it saves.
                writer.write_all(&piece).await.map_err(|e| ZipError::Format(e.into()))?;
                out.send(tx).await?;
            }
        }
        if got != size {
            return Err(ZipError::Short { name: key, got, size });
        }
        writer.close().await?;
        out.send(tx).await?;
    }
    zip.close().await?;
    out.send(tx).await
}

/// The zip writer's sink: bytes collect here and are handed to the body's queue after each
/// step, so at most one step's output (a chunk, a header) sits here at a time.
#[derive(Clone, Default)]
struct Outbox(Arc<Mutex<Vec<u8>>>);

impl Outbox {
    async fn send(&self, tx: &Queue) -> Result<(), ZipError> {
        let bytes = {
            let mut kept = self.0.lock().unwrap_or_else(|e| e.into_inner());
            // The next step's output is about this one's size: made at once, not by doubling.
            let next = Vec::with_capacity(kept.len());
            std::mem::replace(&mut *kept, next)
        };
        if bytes.is_empty() {
            return Ok(());
        }
        tx.send(Ok(bytes.into())).await.map_err(|_| ZipError::Gone)
    }
}

impl futures_util::AsyncWrite for Outbox {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).extend_from_slice(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: std::pin::Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_close(self: std::pin::Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// Unix ms as an MS-DOS date and time (UTC, 2-second steps), clamped to what it can hold
/// (1980 to 2107).
fn dos_time(ms: u64) -> async_zip::ZipDateTime {
    let secs = ms / 1000;
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = crate::clock::civil_from_days(days as i64);
    let (y, m, d, rem) = match y {
        ..1980 => (1980, 1, 1, 0),
        2108.. => (2107, 12, 31, 86_399),
        _ => (y, m, d, rem),
    };
    ZipDateTimeBuilder::new()
        .year(y as i32)
        .month(m)
        .day(d)
        .hour((rem / 3600) as u32)
        .minute((rem % 3600 / 60) as u32)
        .second((rem % 60) as u32)
        .build()
}

#[cfg(test)]
mod tests {
    use super::dos_time;

    #[test]
    fn dos_times_keep_the_date_and_clamp_outside_their_range() {
        // 2024-02-29 13:45:30 UTC.
        let t = dos_time(1_709_214_330_000);
        assert_eq!(
            (t.year(), t.month(), t.day(), t.hour(), t.minute(), t.second()),
            (2024, 2, 29, 13, 45, 30)
        );
        let t = dos_time(0);
        assert_eq!((t.year(), t.month(), t.day()), (1980, 1, 1));
    }
}
