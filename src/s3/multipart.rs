//! Multipart uploads. An upload is a record file `.diststore/mpu/<id>/upload` and its parts are
//! files `.diststore/mpu/<id>/part/<NNNNN>`: stored, replicated and made durable exactly as
//! files are, so a part acknowledged is a part kept, on any node of the cluster. Completing
//! assembles the object's manifest from the parts' chunks (no chunk is copied; the parts are
//! read once to compute the object's SHA-256 id), names it, then removes the parts.

use std::sync::Arc;
use std::time::Duration;

use s3s::dto::*;
use s3s::{S3Request, S3Response, S3Result, s3_error};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::access::{caller, check_bucket};
use super::errors::s3_error;
use super::service::{Checks, Gateway, Written, bucket, checks_of, etag_of, object, object_name, receive};
use crate::clock::unix_ms;
use crate::content::{FileId, FileName, Manifest};
use crate::node::registry::random_text;
use crate::node::{Attrs, Node, NodeError};
use crate::runtime;
use crate::storage::ListQuery;

const PREFIX: &str = ".diststore/mpu/";
/// Every part but the last is at least this large, as on S3.
const MIN_PART: u64 = 5 * 1024 * 1024;
const MAX_PARTS: i32 = 10_000;

#[derive(Debug, Clone, Serialize, Deserialize)]
struct UploadRecord {
    bucket: String,
    key: String,
    initiated_ms: u64,
    owner: String,
    content_type: Option<String>,
    headers: Vec<(String, String)>,
}

fn record_name(id: &str) -> String {
    format!("{PREFIX}{id}/upload")
}

fn part_prefix(id: &str) -> String {
    format!("{PREFIX}{id}/part/")
}

fn part_name(id: &str, number: i32) -> FileName {
    FileName::new(format!("{}{number:05}", part_prefix(id))).expect("a valid name")
}

fn valid_id(id: &str) -> bool {
    id.len() == 32 && id.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
}

/// The upload, which must be for `bucket`/`key`.
async fn upload(node: &Node, id: &str, bucket: &str, key: &str) -> S3Result<UploadRecord> {
    let none = || {
        s3_error!(
            NoSuchUpload,
            "The specified upload does not exist. The upload ID may be invalid, or the upload may have been aborted or completed."
        )
    };
    if !valid_id(id) {
        return Err(none());
    }
    let record: UploadRecord =
        node.system_json(&record_name(id)).await.map_err(s3_error)?.ok_or_else(none)?;
    if record.bucket != bucket || record.key != key {
        return Err(none());
    }
    Ok(record)
}

/// Every name under `prefix`, in order.
async fn names_under(node: &Node, prefix: &str) -> S3Result<Vec<crate::storage::NameEntry>> {
    let mut out = Vec::new();
    let mut after = None;
    loop {
        let query =
            ListQuery { prefix: prefix.to_owned(), after: after.take(), limit: 1000, ..Default::default() };
        let page = node.list_system(query).await.map_err(s3_error)?;
        out.extend(page.entries);
        match page.next {
            Some(next) => after = Some(next),
            None => return Ok(out),
        }
    }
}

/// Whether a multipart upload is in progress into `bucket`.
pub(crate) async fn any_in(node: &Node, bucket: &str) -> S3Result<bool> {
    Ok(uploads(node).await?.iter().any(|(_, u)| u.bucket == bucket))
}

/// Every upload in progress, with its id.
async fn uploads(node: &Node) -> S3Result<Vec<(String, UploadRecord)>> {
    let mut out = Vec::new();
    for entry in names_under(node, PREFIX).await? {
        let Some(id) = entry.name.strip_prefix(PREFIX).and_then(|r| r.strip_suffix("/upload")) else {
            continue;
        };
        if let Some(record) = node.system_json::<UploadRecord>(&entry.name).await.map_err(s3_error)? {
            out.push((id.to_owned(), record));
        }
    }
    Ok(out)
}

/// Removes an upload's parts and record.
async fn remove(node: &Node, id: &str) -> S3Result<()> {
    for entry in names_under(node, &part_prefix(id)).await? {
        // A stored name is valid; were it not (bytes from disk), the error says so.
        let name = FileName::new(entry.name).map_err(|e| s3_error(e.into()))?;
        match node.delete(&name).await {
            Ok(()) | Err(NodeError::NotFound) => {}
            Err(e) => return Err(s3_error(e)),
        }
    }
    match node.delete(&FileName::new(record_name(id)).expect("a valid name")).await {
        Ok(()) | Err(NodeError::NotFound) => Ok(()),
        Err(e) => Err(s3_error(e)),
    }
}

fn part_number(n: i32) -> S3Result<i32> {
    if (1..=MAX_PARTS).contains(&n) {
        Ok(n)
    } else {
        Err(s3_error!(InvalidArgument, "Part number must be an integer between 1 and 10000, inclusive"))
    }
}

pub(crate) async fn create(
    gw: &Gateway,
    req: S3Request<CreateMultipartUploadInput>,
) -> S3Result<S3Response<CreateMultipartUploadOutput>> {
    let input = req.input;
    bucket(&gw.node, &input.bucket).await?;
    object_name(&input.bucket, &input.key)?;
    let owner = req.credentials.map(|c| c.access_key).unwrap_or_default();
    let written = Written::new(
        input.content_type,
        [
            input.cache_control,
            input.content_disposition,
            input.content_encoding,
            input.content_language,
            None,
        ],
        input.metadata,
    );
    let id = random_text(32);
    let record = UploadRecord {
        bucket: input.bucket.clone(),
        key: input.key.clone(),
        initiated_ms: unix_ms(),
        owner,
        content_type: written.content_type,
        headers: written.headers,
    };
    gw.node.put_system_json(&record_name(&id), &record).await.map_err(s3_error)?;
    Ok(S3Response::new(CreateMultipartUploadOutput {
        bucket: Some(input.bucket),
        key: Some(input.key),
        upload_id: Some(id),
        ..Default::default()
    }))
}

pub(crate) async fn upload_part(
    gw: &Gateway,
    mut req: S3Request<UploadPartInput>,
) -> S3Result<S3Response<UploadPartOutput>> {
    let input = &mut req.input;
    let number = part_number(input.part_number)?;
    upload(&gw.node, &input.upload_id, &input.bucket, &input.key).await?;
    let checks = checks_of!(input)?;
    let (staged, checksum) =
        receive(&gw.node, input.body.take(), input.content_length, checks, req.trailing_headers.as_ref())
            .await?;
    let etag = hex::encode(staged.md5.expect("asked for"));
    let attrs = Attrs {
        content_type: "application/octet-stream".into(),
        etag: Some(etag.clone()),
        headers: Vec::new(),
    };
    gw.node.commit(staged, part_name(&input.upload_id, number), attrs).await.map_err(s3_error)?;
    Ok(S3Response::new(UploadPartOutput {
        e_tag: Some(ETag::Strong(etag)),
        checksum_crc32: checksum.checksum_crc32,
        checksum_crc32c: checksum.checksum_crc32c,
        checksum_sha1: checksum.checksum_sha1,
        checksum_sha256: checksum.checksum_sha256,
        checksum_crc64nvme: checksum.checksum_crc64nvme,
        ..Default::default()
    }))
}

pub(crate) async fn upload_part_copy(
    gw: &Gateway,
    req: S3Request<UploadPartCopyInput>,
) -> S3Result<S3Response<UploadPartCopyOutput>> {
    let input = &req.input;
    let number = part_number(input.part_number)?;
    upload(&gw.node, &input.upload_id, &input.bucket, &input.key).await?;
    let CopySource::Bucket { bucket: src_bucket, key: src_key, .. } = &input.copy_source else {
        return Err(s3_error!(NotImplemented, "Only bucket copy sources are supported."));
    };
    let key = caller(&gw.node, &req.credentials.as_ref().expect("signed").access_key).await?;
    check_bucket(&gw.node, &key, src_bucket, false).await?;
    let source = object(&gw.node, src_bucket, src_key).await?;
    let size = source.manifest.size;
    let range = match &input.copy_source_range {
        Some(text) => {
            let bad = || {
                s3_error!(
                    InvalidArgument,
                    "The x-amz-copy-source-range value must be of the form bytes=first-last where first and last are the zero-based offsets of the first and last bytes to copy"
                )
            };
            let r = Range::parse(text).map_err(|_| bad())?;
            r.check(size).map_err(|_| s3_error!(InvalidRange, "The requested range is not satisfiable"))?
        }
        None => 0..size,
    };
    let name = part_name(&input.upload_id, number);
    let etag = if range == (0..size) && source.record.etag.as_ref().is_some_and(|e| !e.contains('-')) {
        // The whole object, whose MD5 is known: named again, no bytes move.
        let etag = etag_of(&source);
        let attrs = Attrs {
            content_type: "application/octet-stream".into(),
            etag: Some(etag.clone()),
            headers: Vec::new(),
        };
        gw.node.link(source.manifest, name, attrs).await.map_err(s3_error)?;
        etag
    } else {
        // A range (or content without a known MD5) is read and stored as a part of its own.
        let mut upload = gw.node.upload().await.map_err(s3_error)?.with_md5();
        let pieces = gw.node.read_pieces(&source.manifest, range.start, range.end).await.map_err(s3_error)?;
        while let Ok(piece) = pieces.recv().await {
            let piece = piece.map_err(|e| s3_error!(InternalError, "reading the source failed: {e}"))?;
            upload.write(&piece).await.map_err(s3_error)?;
        }
        let staged = upload.finish().await.map_err(s3_error)?;
        let etag = hex::encode(staged.md5.expect("asked for"));
        let attrs = Attrs {
            content_type: "application/octet-stream".into(),
            etag: Some(etag.clone()),
            headers: Vec::new(),
        };
        gw.node.commit(staged, name, attrs).await.map_err(s3_error)?;
        etag
    };
    Ok(S3Response::new(UploadPartCopyOutput {
        copy_part_result: Some(CopyPartResult {
            e_tag: Some(ETag::Strong(etag)),
            last_modified: Some(Timestamp::from(std::time::UNIX_EPOCH + Duration::from_millis(unix_ms()))),
            ..Default::default()
        }),
        ..Default::default()
    }))
}

pub(crate) async fn complete(
    gw: &Gateway,
    req: S3Request<CompleteMultipartUploadInput>,
) -> S3Result<S3Response<CompleteMultipartUploadOutput>> {
    let input = req.input;
    let record = upload(&gw.node, &input.upload_id, &input.bucket, &input.key).await?;
    let parts = input.multipart_upload.and_then(|m| m.parts).unwrap_or_default();
    if parts.is_empty() {
        return Err(s3_error!(MalformedXML, "You must specify at least one part"));
    }
    let name = object_name(&input.bucket, &input.key)?;
    let mut chunks = Vec::new();
    let mut md5s = Vec::with_capacity(parts.len() * 16);
    let mut manifests = Vec::with_capacity(parts.len());
    let mut last_number = 0;
    for (i, part) in parts.iter().enumerate() {
        let number = part.part_number.unwrap_or(0);
        if number <= last_number {
            return Err(s3_error!(
                InvalidPartOrder,
                "The list of parts was not in ascending order. The parts list must be specified in order by part number."
            ));
        }
        last_number = number;
        let invalid = || {
            s3_error!(
                InvalidPart,
                "One or more of the specified parts could not be found. The part might not have been uploaded, or the specified entity tag might not have matched the part's entity tag."
            )
        };
        let found = match gw.node.find(&part_name(&input.upload_id, number)).await {
            Ok(found) => found,
            Err(NodeError::NotFound) => return Err(invalid()),
            Err(e) => return Err(s3_error(e)),
        };
        let etag = etag_of(&found);
        if part.e_tag.as_ref().is_some_and(|e| e.value().trim_matches('"') != etag) {
            return Err(invalid());
        }
        if i + 1 < parts.len() && found.manifest.size < MIN_PART {
            return Err(s3_error!(
                EntityTooSmall,
                "Your proposed upload is smaller than the minimum allowed object size."
            ));
        }
        md5s.extend(hex::decode(&etag).map_err(|_| invalid())?);
        chunks.extend(found.manifest.chunks.iter().cloned());
        manifests.push(found.manifest);
    }
    // The object's id is the SHA-256 of its bytes: read the parts once to compute it.
    let id = content_id(&gw.node, &manifests).await?;
    let size = manifests.iter().map(|m| m.size).sum();
    let manifest = Manifest { id, size, chunker: manifests[0].chunker, chunks, created_ms: unix_ms() };
    let etag = format!("{}-{}", hex::encode(md5::Md5::digest(&md5s)), parts.len());
    let attrs = Attrs {
        content_type: crate::content::content_type_for(record.content_type.as_deref(), &name),
        etag: Some(etag.clone()),
        headers: record.headers,
    };
    gw.node.link(manifest, name, attrs).await.map_err(s3_error)?;
    remove(&gw.node, &input.upload_id).await?;
    Ok(S3Response::new(CompleteMultipartUploadOutput {
        bucket: Some(input.bucket.clone()),
        key: Some(input.key.clone()),
        e_tag: Some(ETag::Strong(etag)),
        location: Some(format!("/{}/{}", input.bucket, input.key)),
        ..Default::default()
    }))
}

/// SHA-256 of the parts' bytes in order, hashed on a blocking thread as they are read.
async fn content_id(node: &Node, manifests: &[Manifest]) -> S3Result<FileId> {
    let (tx, rx) = async_channel::bounded::<bytes::Bytes>(4);
    let hasher = runtime::spawn(runtime::blocking(move || {
        let mut h = Sha256::new();
        while let Ok(piece) = rx.recv_blocking() {
            h.update(&piece);
        }
        FileId::from_bytes(h.finalize().into())
    }));
    for m in manifests {
        let pieces = node.read_pieces(m, 0, m.size).await.map_err(s3_error)?;
        while let Ok(piece) = pieces.recv().await {
            let piece = piece.map_err(|e| s3_error!(InternalError, "reading a part failed: {e}"))?;
            if tx.send(piece).await.is_err() {
                break;
            }
        }
    }
    drop(tx);
    Ok(hasher.await)
}

pub(crate) async fn abort(
    gw: &Gateway,
    req: S3Request<AbortMultipartUploadInput>,
) -> S3Result<S3Response<AbortMultipartUploadOutput>> {
    let input = &req.input;
    upload(&gw.node, &input.upload_id, &input.bucket, &input.key).await?;
    remove(&gw.node, &input.upload_id).await?;
    Ok(S3Response::new(AbortMultipartUploadOutput::default()))
}

pub(crate) async fn list_parts(
    gw: &Gateway,
    req: S3Request<ListPartsInput>,
) -> S3Result<S3Response<ListPartsOutput>> {
    let input = &req.input;
    upload(&gw.node, &input.upload_id, &input.bucket, &input.key).await?;
    let max = input.max_parts.unwrap_or(1000).clamp(0, 1000) as usize;
    let marker: i32 = input.part_number_marker.unwrap_or(0);
    let mut parts = Vec::new();
    let mut truncated = false;
    for entry in names_under(&gw.node, &part_prefix(&input.upload_id)).await? {
        let Some(number) = entry.name.rsplit('/').next().and_then(|n| n.parse::<i32>().ok()) else {
            continue;
        };
        if number <= marker {
            continue;
        }
        if parts.len() == max {
            truncated = true;
            break;
        }
        parts.push(Part {
            part_number: Some(number),
            e_tag: entry.record.etag.clone().map(ETag::Strong),
            size: Some(entry.record.size as i64),
            last_modified: Some(Timestamp::from(
                std::time::UNIX_EPOCH + Duration::from_millis(entry.record.modified_ms),
            )),
            ..Default::default()
        });
    }
    let next = truncated.then(|| parts.last().and_then(|p: &Part| p.part_number)).flatten();
    Ok(S3Response::new(ListPartsOutput {
        bucket: Some(input.bucket.clone()),
        key: Some(input.key.clone()),
        upload_id: Some(input.upload_id.clone()),
        part_number_marker: input.part_number_marker,
        next_part_number_marker: next,
        max_parts: Some(max as i32),
        is_truncated: Some(truncated),
        parts: Some(parts),
        ..Default::default()
    }))
}

pub(crate) async fn list_uploads(
    gw: &Gateway,
    req: S3Request<ListMultipartUploadsInput>,
) -> S3Result<S3Response<ListMultipartUploadsOutput>> {
    let input = &req.input;
    bucket(&gw.node, &input.bucket).await?;
    let prefix = input.prefix.clone().unwrap_or_default();
    let max = input.max_uploads.unwrap_or(1000).clamp(0, 1000) as usize;
    let mut all: Vec<(String, UploadRecord)> = uploads(&gw.node)
        .await?
        .into_iter()
        .filter(|(_, u)| u.bucket == input.bucket && u.key.starts_with(&prefix))
        .filter(|(id, u)| match (&input.key_marker, &input.upload_id_marker) {
            (Some(k), Some(i)) => (u.key.as_str(), id.as_str()) > (k.as_str(), i.as_str()),
            (Some(k), None) => u.key.as_str() > k.as_str(),
            _ => true,
        })
        .collect();
    all.sort_by(|(a_id, a), (b_id, b)| (&a.key, a.initiated_ms, a_id).cmp(&(&b.key, b.initiated_ms, b_id)));
    let truncated = all.len() > max;
    all.truncate(max);
    let (next_key, next_id) = match all.last() {
        Some((id, u)) if truncated => (Some(u.key.clone()), Some(id.clone())),
        _ => (None, None),
    };
    let uploads = all
        .into_iter()
        .map(|(id, u)| MultipartUpload {
            key: Some(u.key),
            upload_id: Some(id),
            initiated: Some(Timestamp::from(std::time::UNIX_EPOCH + Duration::from_millis(u.initiated_ms))),
            ..Default::default()
        })
        .collect();
    Ok(S3Response::new(ListMultipartUploadsOutput {
        bucket: Some(input.bucket.clone()),
        prefix: input.prefix.clone(),
        key_marker: input.key_marker.clone(),
        upload_id_marker: input.upload_id_marker.clone(),
        next_key_marker: next_key,
        next_upload_id_marker: next_id,
        max_uploads: Some(max as i32),
        is_truncated: Some(truncated),
        uploads: Some(uploads),
        ..Default::default()
    }))
}

/// Aborts uploads untouched for longer than `max_age`, checking every tenth of it.
pub(crate) fn start_collector(node: Arc<Node>, max_age: Duration) {
    let running = node.running("multipart collector");
    runtime::spawn(async move {
        let _running = running;
        loop {
            // Stops at shutdown like every background loop.
            let period = (max_age / 10).max(Duration::from_secs(1));
            let stop = futures_lite::future::or(
                async {
                    runtime::sleep(period).await;
                    false
                },
                async {
                    node.stopping().await;
                    true
                },
            );
            if stop.await {
                return;
            }
            match uploads(&node).await {
                Ok(all) => {
                    let now = unix_ms();
                    for (id, u) in all {
                        if now.saturating_sub(u.initiated_ms) > max_age.as_millis() as u64 {
                            match remove(&node, &id).await {
                                Ok(()) => log::info!(
                                    "s3: aborted multipart upload {id} of {}/{}: older than {max_age:?}",
                                    u.bucket,
                                    u.key
                                ),
                                Err(e) => log::warn!("s3: aborting the abandoned upload {id}: {e}"),
                            }
                        }
                    }
                }
                Err(e) => log::warn!("s3: listing multipart uploads: {e}"),
            }
        }
    });
}
