//! The S3 operations, each mapped onto the node's use cases. An object `k` of bucket `b` is
//! the file `b/k`; its ETag is the MD5 S3 clients expect when it was written through S3, else
//! its file id (SHA-256), which no client mistakes for an MD5. Every object carries its file id
//! in `x-amz-meta-sha256` too.

use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use futures_util::StreamExt;
use s3s::dto::*;
use s3s::{S3, S3Error, S3ErrorCode, S3Request, S3Response, S3Result, s3_error};

use super::access::{Access, Auth, Host, caller, check_bucket};
use super::errors::{body_error, s3_error};
use super::{S3Config, multipart};
use crate::clock::unix_ms;
use crate::content::FileName;
use crate::node::registry::Bucket as BucketRecord;
use crate::node::{Attrs, Found, Node, NodeError, Staged, Upload};
use crate::storage::ListQuery;

pub(crate) fn build(node: Arc<Node>, config: &S3Config) -> s3s::service::S3Service {
    let mut builder =
        s3s::service::S3ServiceBuilder::new(Gateway { node: node.clone(), region: config.region.clone() });
    builder.set_auth(Auth(node.clone()));
    builder.set_access(Access(node));
    builder.set_host(Host(config.domain.clone()));
    builder.build()
}

pub(crate) struct Gateway {
    pub(crate) node: Arc<Node>,
    region: String,
}

/// Response headers an object keeps (beside `Content-Type`), as S3 stores them.
const KEPT: [&str; 5] =
    ["cache-control", "content-disposition", "content-encoding", "content-language", "expires"];
const META: &str = "x-amz-meta-";

pub(crate) fn object_name(bucket: &str, key: &str) -> S3Result<FileName> {
    if key.is_empty() {
        return Err(s3_error!(InvalidArgument, "An object key must not be empty."));
    }
    if key.len() > 1024 {
        return Err(s3_error!(KeyTooLongError, "Your key is too long."));
    }
    FileName::new(format!("{bucket}/{key}")).map_err(|e| s3_error!(KeyTooLongError, "invalid key: {e}"))
}

fn timestamp(ms: u64) -> Timestamp {
    Timestamp::from(UNIX_EPOCH + Duration::from_millis(ms))
}

fn millis(ts: &Timestamp) -> u64 {
    let t: time::OffsetDateTime = ts.clone().into();
    u64::try_from(t.unix_timestamp_nanos() / 1_000_000).unwrap_or(0)
}

/// The ETag of a found file (unquoted).
pub(crate) fn etag_of(found: &Found) -> String {
    record_etag(&found.record)
}

/// A record's ETag: the one S3 wrote, else the file id.
fn record_etag(record: &crate::storage::NameRecord) -> String {
    record.etag.clone().unwrap_or_else(|| record.file_id().map(|f| f.to_string()).unwrap_or_default())
}

/// Everything an object was written with, from a request's fields.
pub(crate) struct Written {
    pub content_type: Option<String>,
    pub headers: Vec<(String, String)>,
}

impl Written {
    pub(crate) fn new(
        content_type: Option<String>,
        kept: [Option<String>; 5],
        metadata: Option<Metadata>,
    ) -> Self {
        let mut headers: Vec<(String, String)> =
            KEPT.iter().zip(kept).filter_map(|(k, v)| v.map(|v| ((*k).to_owned(), v))).collect();
        let mut meta: Vec<(String, String)> = metadata
            .unwrap_or_default()
            .into_iter()
            .map(|(k, v)| (format!("{META}{}", k.to_lowercase()), v))
            .collect();
        meta.sort();
        headers.extend(meta);
        Self { content_type, headers }
    }

    pub(crate) fn attrs(self, name: &FileName, etag: String) -> Attrs {
        Attrs {
            content_type: crate::content::content_type_for(self.content_type.as_deref(), name),
            etag: Some(etag),
            headers: self.headers,
        }
    }
}

fn expires_text(e: Option<Timestamp>) -> Option<String> {
    let mut out = Vec::new();
    e?.format(TimestampFormat::HttpDate, &mut out).ok()?;
    String::from_utf8(out).ok()
}

/// The user metadata of a record.
fn metadata(headers: &[(String, String)]) -> Option<Metadata> {
    let m: Metadata =
        headers.iter().filter_map(|(k, v)| k.strip_prefix(META).map(|k| (k.to_owned(), v.clone()))).collect();
    (!m.is_empty()).then_some(m)
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

/// The checks an upload's input asks for: PutObject and UploadPart carry the same fields in
/// different types.
macro_rules! checks_of {
    ($input:expr) => {
        Checks::new(
            $input.content_md5.as_deref(),
            Checksum {
                checksum_crc32: $input.checksum_crc32.take(),
                checksum_crc32c: $input.checksum_crc32c.take(),
                checksum_crc64nvme: $input.checksum_crc64nvme.take(),
                checksum_sha1: $input.checksum_sha1.take(),
                checksum_sha256: $input.checksum_sha256.take(),
                ..Default::default()
            },
            $input.checksum_algorithm.as_ref().map(|a| a.as_str()),
        )
    };
}
pub(crate) use checks_of;

/// Checksums a client asked us to verify, with what we compute alongside the upload.
pub(crate) struct Checks {
    md5: Option<Vec<u8>>,
    hasher: s3s::checksum::ChecksumHasher,
    expected: Checksum,
}

impl Checks {
    pub(crate) fn new(
        content_md5: Option<&str>,
        expected: Checksum,
        algorithm: Option<&str>,
    ) -> S3Result<Self> {
        let md5 = match content_md5 {
            Some(text) => Some(
                B64.decode(text.trim())
                    .ok()
                    .filter(|d| d.len() == 16)
                    .ok_or_else(|| s3_error!(InvalidDigest, "The Content-MD5 you specified was invalid."))?,
            ),
            None => None,
        };
        let algorithm = algorithm.map(str::to_ascii_uppercase);
        let wants =
            |name: &str, given: &Option<String>| given.is_some() || algorithm.as_deref() == Some(name);
        let hasher = s3s::checksum::ChecksumHasher {
            crc32: wants("CRC32", &expected.checksum_crc32).then(Default::default),
            crc32c: wants("CRC32C", &expected.checksum_crc32c).then(Default::default),
            sha1: wants("SHA1", &expected.checksum_sha1).then(Default::default),
            sha256: wants("SHA256", &expected.checksum_sha256).then(Default::default),
            crc64nvme: wants("CRC64NVME", &expected.checksum_crc64nvme).then(Default::default),
        };
        Ok(Self { md5, hasher, expected })
    }

    fn update(&mut self, data: &[u8]) {
        self.hasher.update(data);
    }

    /// Compares what was computed with what the client sent (headers or trailers); returns the
    /// checksums to answer with.
    fn verify(self, md5: &[u8; 16], trailers: Option<&http::HeaderMap>) -> S3Result<Checksum> {
        if self.md5.as_deref().is_some_and(|given| given != md5) {
            return Err(s3_error!(
                BadDigest,
                "The Content-MD5 you specified did not match what we received."
            ));
        }
        let mut expected = self.expected;
        if let Some(trailers) = trailers {
            let get = |n: &str| trailers.get(n).and_then(|v| v.to_str().ok()).map(str::to_owned);
            expected.checksum_crc32 = expected.checksum_crc32.or_else(|| get("x-amz-checksum-crc32"));
            expected.checksum_crc32c = expected.checksum_crc32c.or_else(|| get("x-amz-checksum-crc32c"));
            expected.checksum_sha1 = expected.checksum_sha1.or_else(|| get("x-amz-checksum-sha1"));
            expected.checksum_sha256 = expected.checksum_sha256.or_else(|| get("x-amz-checksum-sha256"));
            expected.checksum_crc64nvme =
                expected.checksum_crc64nvme.or_else(|| get("x-amz-checksum-crc64nvme"));
        }
        let computed = self.hasher.finalize();
        let pairs = [
            (&expected.checksum_crc32, &computed.checksum_crc32, "CRC32"),
            (&expected.checksum_crc32c, &computed.checksum_crc32c, "CRC32C"),
            (&expected.checksum_sha1, &computed.checksum_sha1, "SHA1"),
            (&expected.checksum_sha256, &computed.checksum_sha256, "SHA256"),
            (&expected.checksum_crc64nvme, &computed.checksum_crc64nvme, "CRC64NVME"),
        ];
        for (given, ours, name) in pairs {
            if let (Some(given), Some(ours)) = (given, ours)
                && given != ours
            {
                return Err(s3_error!(
                    BadDigest,
                    "The {name} you specified did not match the calculated checksum."
                ));
            }
        }
        Ok(computed)
    }
}

/// Streams a request body into an upload (computing MD5 beside it) and checks it against the
/// declared length and the client's checksums. Nothing is named yet: a failure here stores
/// nothing a client can see.
pub(crate) async fn receive(
    node: &Arc<Node>,
    body: Option<StreamingBlob>,
    declared: Option<i64>,
    mut checks: Checks,
    trailers: Option<&s3s::TrailingHeaders>,
) -> S3Result<(Staged, Checksum)> {
    let mut upload: Upload = node.upload().await.map_err(s3_error)?.with_md5();
    if let Some(len) = declared
        && len as u64 > node.max_upload_bytes()
    {
        return Err(s3_error!(
            EntityTooLarge,
            "Your proposed upload exceeds the maximum allowed object size."
        ));
    }
    if let Some(mut body) = body {
        while let Some(piece) = body.next().await {
            let piece = piece.map_err(|e| body_error(&*e))?;
            checks.update(&piece);
            upload.write(&piece).await.map_err(s3_error)?;
        }
    }
    if let Some(len) = declared
        && upload.size() != len as u64
    {
        return Err(s3_error!(
            IncompleteBody,
            "You did not provide the number of bytes specified by the Content-Length HTTP header."
        ));
    }
    let staged = upload.finish().await.map_err(s3_error)?;
    let md5 = staged.md5.expect("asked for");
    let trailers = trailers.and_then(|t| t.take());
    let checksum = checks.verify(&md5, trailers.as_ref())?;
    Ok((staged, checksum))
}

/// An existing bucket, or `NoSuchBucket`.
pub(crate) async fn bucket(node: &Node, name: &str) -> S3Result<BucketRecord> {
    node.bucket(name)
        .await
        .map_err(s3_error)?
        .ok_or_else(|| s3_error!(NoSuchBucket, "The specified bucket does not exist."))
}

/// An object, or `NoSuchKey`.
pub(crate) async fn object(node: &Node, bucket_name: &str, key: &str) -> S3Result<Found> {
    bucket(node, bucket_name).await?;
    match node.find(&object_name(bucket_name, key)?).await {
        Ok(found) => Ok(found),
        Err(NodeError::NotFound) => Err(s3_error!(NoSuchKey, "The specified key does not exist.")),
        Err(e) => Err(s3_error(e)),
    }
}

/// Evaluates `If-Match`, `If-None-Match`, `If-Modified-Since` and `If-Unmodified-Since` as
/// RFC 9110 orders them.
fn preconditions(
    found: &Found,
    if_match: Option<&ETagCondition>,
    if_none_match: Option<&ETagCondition>,
    modified_since: Option<&Timestamp>,
    unmodified_since: Option<&Timestamp>,
) -> S3Result<()> {
    let etag = etag_of(found);
    let matches = |c: &ETagCondition| c.is_any() || c.as_etag().is_some_and(|e| e.value() == etag);
    // HTTP dates have whole seconds.
    let modified_s = found.record.modified_ms / 1000;
    let secs = |t: &Timestamp| millis(t) / 1000;
    if let Some(c) = if_match {
        if !matches(c) {
            return Err(s3_error!(
                PreconditionFailed,
                "At least one of the pre-conditions you specified did not hold"
            ));
        }
    } else if unmodified_since.is_some_and(|t| modified_s > secs(t)) {
        return Err(s3_error!(
            PreconditionFailed,
            "At least one of the pre-conditions you specified did not hold"
        ));
    }
    if let Some(c) = if_none_match {
        if matches(c) {
            return Err(not_modified(found));
        }
    } else if modified_since.is_some_and(|t| modified_s <= secs(t)) {
        return Err(not_modified(found));
    }
    Ok(())
}

fn not_modified(found: &Found) -> S3Error {
    let mut err = S3Error::new(S3ErrorCode::NotModified);
    let mut headers = http::HeaderMap::new();
    if let Ok(v) = http::HeaderValue::from_str(&format!("\"{}\"", etag_of(found))) {
        headers.insert("etag", v);
    }
    err.set_headers(headers);
    err
}

fn url_encode(s: &str) -> String {
    const KEEP: &percent_encoding::AsciiSet =
        &percent_encoding::NON_ALPHANUMERIC.remove(b'-').remove(b'_').remove(b'.').remove(b'~').remove(b'/');
    percent_encoding::utf8_percent_encode(s, KEEP).to_string()
}

/// One page of a bucket listing.
pub(crate) struct Listing {
    pub objects: Vec<(String, Listed)>,
    pub prefixes: Vec<String>,
    pub truncated: bool,
    /// The last key or common prefix returned: where the next page starts after.
    pub last: Option<String>,
}

/// A listed object: its record (no manifest needed to list).
pub(crate) struct Listed {
    pub size: u64,
    pub modified_ms: u64,
    pub etag: String,
}

/// Lists the keys of `bucket` under `prefix` after `after`, folding keys that continue past
/// `delimiter` into common prefixes, up to `max` entries.
pub(crate) async fn list(
    node: &Node,
    bucket: &str,
    prefix: &str,
    delimiter: Option<&str>,
    after: Option<&str>,
    max: usize,
) -> S3Result<Listing> {
    let base = format!("{bucket}/");
    let mut out = Listing { objects: Vec::new(), prefixes: Vec::new(), truncated: false, last: None };
    let delimiter = delimiter.filter(|d| !d.is_empty());
    // A page that ended on a common prefix continues after everything under it (a key inside
    // one, as a start-after may be, continues right after that key, as on S3).
    let mut cursor = after.map(|a| match delimiter {
        Some(d)
            if a.starts_with(prefix)
                && a.len() > prefix.len()
                && a.ends_with(d)
                && a[prefix.len()..].find(d) == Some(a.len() - prefix.len() - d.len()) =>
        {
            format!("{base}{a}\u{10FFFF}")
        }
        _ => format!("{base}{a}"),
    });
    loop {
        let want = max.saturating_sub(out.objects.len() + out.prefixes.len()) + 1;
        let query = ListQuery {
            prefix: format!("{base}{prefix}"),
            after: cursor.clone(),
            limit: want.clamp(1, 1000),
            ..Default::default()
        };
        let page = node.list(query).await.map_err(s3_error)?;
        if page.entries.is_empty() {
            return Ok(out);
        }
        for entry in page.entries {
            let key = &entry.name[base.len()..];
            if out.objects.len() + out.prefixes.len() == max {
                out.truncated = true;
                return Ok(out);
            }
            let folded = delimiter
                .and_then(|d| key[prefix.len()..].find(d).map(|i| &key[..prefix.len() + i + d.len()]));
            match folded {
                Some(common) => {
                    out.prefixes.push(common.to_owned());
                    out.last = Some(common.to_owned());
                    // Skip every other key under it: nothing sorts after this suffix.
                    cursor = Some(format!("{base}{common}\u{10FFFF}"));
                    break;
                }
                None => {
                    let record = &entry.record;
                    out.objects.push((
                        key.to_owned(),
                        Listed {
                            size: record.size,
                            modified_ms: record.modified_ms,
                            etag: record_etag(record),
                        },
                    ));
                    out.last = Some(key.to_owned());
                    cursor = Some(entry.name.clone());
                }
            }
        }
        if out.objects.len() + out.prefixes.len() >= max && page.next.is_none() && !out.truncated {
            // Everything fit exactly; one more query tells whether anything is left.
            continue;
        }
    }
}

/// One page of a listing operation, with the options every listing shares.
struct Page {
    listing: Listing,
    prefix: String,
    max: usize,
    /// `encoding-type=url`: keys and prefixes go out percent-encoded.
    encode: bool,
}

impl Page {
    /// Checks the bucket and the options, then lists from `after`.
    async fn fetch(
        node: &Node,
        bucket_name: &str,
        prefix: &Option<String>,
        delimiter: Option<&str>,
        after: Option<&str>,
        max: Option<i32>,
        encoding: &Option<EncodingType>,
    ) -> S3Result<Page> {
        bucket(node, bucket_name).await?;
        let encode = wants_url(encoding)?;
        let max = max_keys(max)?;
        let prefix = prefix.clone().unwrap_or_default();
        let listing = list(node, bucket_name, &prefix, delimiter, after, max).await?;
        Ok(Page { listing, prefix, max, encode })
    }

    fn enc(&self, s: String) -> String {
        if self.encode { url_encode(&s) } else { s }
    }

    fn objects(&mut self) -> Vec<Object> {
        let encode = self.encode;
        std::mem::take(&mut self.listing.objects).into_iter().map(|(k, o)| s3_object(k, o, encode)).collect()
    }

    fn common_prefixes(&mut self) -> Vec<CommonPrefix> {
        let prefixes = std::mem::take(&mut self.listing.prefixes);
        prefixes.into_iter().map(|p| CommonPrefix { prefix: Some(self.enc(p)) }).collect()
    }
}

fn s3_object(key: String, o: Listed, encode: bool) -> Object {
    Object {
        key: Some(if encode { url_encode(&key) } else { key }),
        size: Some(o.size as i64),
        last_modified: Some(timestamp(o.modified_ms)),
        e_tag: Some(ETag::Strong(o.etag)),
        storage_class: Some(ObjectStorageClass::from_static(ObjectStorageClass::STANDARD)),
        ..Default::default()
    }
}

fn max_keys(given: Option<i32>) -> S3Result<usize> {
    match given {
        Some(n) if n < 0 => Err(s3_error!(InvalidArgument, "max-keys must be non-negative")),
        Some(n) => Ok((n as usize).min(1000)),
        None => Ok(1000),
    }
}

fn wants_url(encoding: &Option<EncodingType>) -> S3Result<bool> {
    match encoding {
        None => Ok(false),
        Some(e) if e.as_str() == EncodingType::URL => Ok(true),
        Some(e) => {
            Err(s3_error!(InvalidArgument, "Invalid Encoding Method specified in Request: {}", e.as_str()))
        }
    }
}

#[async_trait::async_trait]
impl S3 for Gateway {
    async fn list_buckets(
        &self,
        req: S3Request<ListBucketsInput>,
    ) -> S3Result<S3Response<ListBucketsOutput>> {
        let key = caller(&self.node, &req.credentials.as_ref().expect("signed").access_key).await?;
        let buckets = self.node.buckets().await.map_err(s3_error)?;
        let buckets = buckets
            .into_iter()
            .filter(|b| b.access(&key).is_some())
            .map(|b| s3s::dto::Bucket {
                name: Some(b.name),
                creation_date: Some(timestamp(b.created_ms)),
                bucket_region: Some(self.region.clone()),
            })
            .collect();
        Ok(S3Response::new(ListBucketsOutput {
            buckets: Some(buckets),
            owner: Some(Owner { id: Some(key.access_key.clone()), display_name: Some(key.name.clone()) }),
            ..Default::default()
        }))
    }

    async fn create_bucket(
        &self,
        req: S3Request<CreateBucketInput>,
    ) -> S3Result<S3Response<CreateBucketOutput>> {
        let key = caller(&self.node, &req.credentials.as_ref().expect("signed").access_key).await?;
        let name = req.input.bucket.clone();
        if let Some(location) =
            req.input.create_bucket_configuration.as_ref().and_then(|c| c.location_constraint.as_ref())
            && location.as_str() != self.region
            && !(location.as_str().is_empty() && self.region == "us-east-1")
        {
            return Err(s3_error!(
                InvalidLocationConstraint,
                "The specified location-constraint is not valid: this endpoint is {}.",
                self.region
            ));
        }
        if let Some(existing) = self.node.bucket(&name).await.map_err(s3_error)? {
            return Err(if existing.owner == key.access_key {
                s3_error!(
                    BucketAlreadyOwnedByYou,
                    "Your previous request to create the named bucket succeeded and you already own it."
                )
            } else {
                s3_error!(BucketAlreadyExists, "The requested bucket name is not available.")
            });
        }
        let record = BucketRecord {
            name: name.clone(),
            owner: key.access_key,
            created_ms: unix_ms(),
            grants: Vec::new(),
        };
        self.node.put_bucket(&record).await.map_err(s3_error)?;
        Ok(S3Response::new(CreateBucketOutput { location: Some(format!("/{name}")) }))
    }

    async fn head_bucket(&self, req: S3Request<HeadBucketInput>) -> S3Result<S3Response<HeadBucketOutput>> {
        bucket(&self.node, &req.input.bucket).await?;
        Ok(S3Response::new(HeadBucketOutput {
            bucket_region: Some(self.region.clone()),
            ..Default::default()
        }))
    }

    async fn delete_bucket(
        &self,
        req: S3Request<DeleteBucketInput>,
    ) -> S3Result<S3Response<DeleteBucketOutput>> {
        let name = &req.input.bucket;
        bucket(&self.node, name).await?;
        let some = list(&self.node, name, "", None, None, 1).await?;
        if !some.objects.is_empty() || multipart::any_in(&self.node, name).await? {
            return Err(s3_error!(BucketNotEmpty, "The bucket you tried to delete is not empty"));
        }
        self.node.delete_bucket_record(name).await.map_err(s3_error)?;
        Ok(S3Response::new(DeleteBucketOutput {}))
    }

    async fn get_bucket_location(
        &self,
        req: S3Request<GetBucketLocationInput>,
    ) -> S3Result<S3Response<GetBucketLocationOutput>> {
        bucket(&self.node, &req.input.bucket).await?;
        let location_constraint =
            (self.region != "us-east-1").then(|| BucketLocationConstraint::from(self.region.clone()));
        Ok(S3Response::new(GetBucketLocationOutput { location_constraint }))
    }

    async fn get_bucket_versioning(
        &self,
        req: S3Request<GetBucketVersioningInput>,
    ) -> S3Result<S3Response<GetBucketVersioningOutput>> {
        bucket(&self.node, &req.input.bucket).await?;
        Ok(S3Response::new(GetBucketVersioningOutput::default()))
    }

    async fn put_object(&self, mut req: S3Request<PutObjectInput>) -> S3Result<S3Response<PutObjectOutput>> {
        let input = &mut req.input;
        bucket(&self.node, &input.bucket).await?;
        let name = object_name(&input.bucket, &input.key)?;
        // Conditional writes: If-None-Match: * creates only; If-Match replaces only that version.
        let current = match self.node.find(&name).await {
            Ok(found) => Some(etag_of(&found)),
            Err(NodeError::NotFound) => None,
            Err(e) => return Err(s3_error(e)),
        };
        if let Some(c) = &input.if_match
            && !(current.is_some()
                && (c.is_any() || c.as_etag().is_some_and(|e| Some(e.value()) == current.as_deref())))
        {
            return Err(if current.is_none() {
                s3_error!(NoSuchKey, "The specified key does not exist.")
            } else {
                s3_error!(PreconditionFailed, "At least one of the pre-conditions you specified did not hold")
            });
        }
        if let Some(c) = &input.if_none_match
            && c.is_any()
            && current.is_some()
        {
            return Err(s3_error!(
                PreconditionFailed,
                "At least one of the pre-conditions you specified did not hold"
            ));
        }
        let checks = checks_of!(input)?;
        let written = Written::new(
            input.content_type.take(),
            [
                input.cache_control.take(),
                input.content_disposition.take(),
                input.content_encoding.take(),
                input.content_language.take(),
                expires_text(input.expires.take()),
            ],
            input.metadata.take(),
        );
        let body = input.body.take();
        let declared = input.content_length;
        let (staged, checksum) =
            receive(&self.node, body, declared, checks, req.trailing_headers.as_ref()).await?;
        let etag = hex::encode(staged.md5.expect("asked for"));
        self.node.commit(staged, name.clone(), written.attrs(&name, etag.clone())).await.map_err(s3_error)?;
        Ok(S3Response::new(PutObjectOutput {
            e_tag: Some(ETag::Strong(etag)),
            checksum_crc32: checksum.checksum_crc32,
            checksum_crc32c: checksum.checksum_crc32c,
            checksum_sha1: checksum.checksum_sha1,
            checksum_sha256: checksum.checksum_sha256,
            checksum_crc64nvme: checksum.checksum_crc64nvme,
            ..Default::default()
        }))
    }

    async fn get_object(&self, req: S3Request<GetObjectInput>) -> S3Result<S3Response<GetObjectOutput>> {
        let input = &req.input;
        let found = object(&self.node, &input.bucket, &input.key).await?;
        preconditions(
            &found,
            input.if_match.as_ref(),
            input.if_none_match.as_ref(),
            input.if_modified_since.as_ref(),
            input.if_unmodified_since.as_ref(),
        )?;
        let size = found.manifest.size;
        let (range, content_range) = match &input.range {
            Some(r) => {
                let r = r
                    .check(size)
                    .map_err(|_| s3_error!(InvalidRange, "The requested range is not satisfiable"))?;
                let text = format!("bytes {}-{}/{size}", r.start, r.end - 1);
                (r, Some(text))
            }
            None => (0..size, None),
        };
        let pieces = if range.is_empty() {
            None
        } else {
            Some(self.node.read_pieces(&found.manifest, range.start, range.end).await.map_err(s3_error)?)
        };
        let body = pieces.map(StreamingBlob::wrap);
        let (head, h) = object_head(&found);
        Ok(S3Response::new(GetObjectOutput {
            body,
            content_length: Some((range.end - range.start) as i64),
            content_range,
            accept_ranges: Some("bytes".into()),
            content_type: head.content_type,
            e_tag: head.e_tag,
            last_modified: head.last_modified,
            metadata: head.metadata,
            cache_control: h[0].clone(),
            content_disposition: h[1].clone(),
            content_encoding: h[2].clone(),
            content_language: h[3].clone(),
            expires: head.expires,
            ..Default::default()
        }))
    }

    async fn head_object(&self, req: S3Request<HeadObjectInput>) -> S3Result<S3Response<HeadObjectOutput>> {
        let input = &req.input;
        let found = object(&self.node, &input.bucket, &input.key).await?;
        preconditions(
            &found,
            input.if_match.as_ref(),
            input.if_none_match.as_ref(),
            input.if_modified_since.as_ref(),
            input.if_unmodified_since.as_ref(),
        )?;
        let size = found.manifest.size;
        let (mut head, h) = object_head(&found);
        if let Some(r) = &input.range {
            let r = r
                .check(size)
                .map_err(|_| s3_error!(InvalidRange, "The requested range is not satisfiable"))?;
            head.content_length = Some((r.end - r.start) as i64);
            head.content_range = Some(format!("bytes {}-{}/{size}", r.start, r.end - 1));
        }
        head.cache_control = h[0].clone();
        head.content_disposition = h[1].clone();
        head.content_encoding = h[2].clone();
        head.content_language = h[3].clone();
        Ok(S3Response::new(head))
    }

    async fn delete_object(
        &self,
        req: S3Request<DeleteObjectInput>,
    ) -> S3Result<S3Response<DeleteObjectOutput>> {
        bucket(&self.node, &req.input.bucket).await?;
        let name = object_name(&req.input.bucket, &req.input.key)?;
        match self.node.delete(&name).await {
            // Deleting what is not there succeeds, as on S3.
            Ok(()) | Err(NodeError::NotFound) => Ok(S3Response::new(DeleteObjectOutput::default())),
            Err(e) => Err(s3_error(e)),
        }
    }

    async fn delete_objects(
        &self,
        req: S3Request<DeleteObjectsInput>,
    ) -> S3Result<S3Response<DeleteObjectsOutput>> {
        bucket(&self.node, &req.input.bucket).await?;
        if req.input.delete.objects.len() > 1000 {
            return Err(s3_error!(MalformedXML, "at most 1000 keys per request"));
        }
        let quiet = req.input.delete.quiet.unwrap_or(false);
        let (mut deleted, mut errors) = (Vec::new(), Vec::new());
        for o in &req.input.delete.objects {
            let outcome = match object_name(&req.input.bucket, &o.key) {
                Ok(name) => match self.node.delete(&name).await {
                    Ok(()) | Err(NodeError::NotFound) => Ok(()),
                    Err(e) => Err(s3_error(e)),
                },
                Err(e) => Err(e),
            };
            match outcome {
                Ok(()) if quiet => {}
                Ok(()) => deleted.push(DeletedObject { key: Some(o.key.clone()), ..Default::default() }),
                Err(e) => errors.push(s3s::dto::Error {
                    key: Some(o.key.clone()),
                    code: Some(e.code().as_str().to_owned()),
                    message: e.message().map(str::to_owned),
                    ..Default::default()
                }),
            }
        }
        Ok(S3Response::new(DeleteObjectsOutput {
            deleted: Some(deleted),
            errors: Some(errors),
            ..Default::default()
        }))
    }

    async fn copy_object(&self, req: S3Request<CopyObjectInput>) -> S3Result<S3Response<CopyObjectOutput>> {
        let input = &req.input;
        let CopySource::Bucket { bucket: src_bucket, key: src_key, .. } = &input.copy_source else {
            return Err(s3_error!(NotImplemented, "Only bucket copy sources are supported."));
        };
        let key = caller(&self.node, &req.credentials.as_ref().expect("signed").access_key).await?;
        check_bucket(&self.node, &key, src_bucket, false).await?;
        let source = object(&self.node, src_bucket, src_key).await?;
        preconditions(
            &source,
            input.copy_source_if_match.as_ref(),
            input.copy_source_if_none_match.as_ref(),
            input.copy_source_if_modified_since.as_ref(),
            input.copy_source_if_unmodified_since.as_ref(),
        )
        .map_err(|e| match e.code() {
            // A copy's failed conditions are all 412.
            S3ErrorCode::NotModified => {
                s3_error!(PreconditionFailed, "At least one of the pre-conditions you specified did not hold")
            }
            _ => e,
        })?;
        bucket(&self.node, &input.bucket).await?;
        let name = object_name(&input.bucket, &input.key)?;
        let replace =
            input.metadata_directive.as_ref().is_some_and(|d| d.as_str() == MetadataDirective::REPLACE);
        let same = name.as_str() == format!("{src_bucket}/{src_key}");
        if same && !replace {
            return Err(s3_error!(
                InvalidRequest,
                "This copy request is illegal because it is trying to copy an object to itself without changing the object's metadata, storage class, website redirect location or encryption attributes."
            ));
        }
        let etag = etag_of(&source);
        let attrs = if replace {
            Written::new(
                input.content_type.clone(),
                [
                    input.cache_control.clone(),
                    input.content_disposition.clone(),
                    input.content_encoding.clone(),
                    input.content_language.clone(),
                    expires_text(input.expires.clone()),
                ],
                input.metadata.clone(),
            )
            .attrs(&name, etag.clone())
        } else {
            Attrs {
                content_type: source.record.content_type.clone(),
                etag: Some(etag.clone()),
                headers: source.record.headers.clone(),
            }
        };
        self.node.link(source.manifest, name, attrs).await.map_err(s3_error)?;
        Ok(S3Response::new(CopyObjectOutput {
            copy_object_result: Some(CopyObjectResult {
                e_tag: Some(ETag::Strong(etag)),
                last_modified: Some(timestamp(unix_ms())),
                ..Default::default()
            }),
            ..Default::default()
        }))
    }

    async fn list_objects_v2(
        &self,
        req: S3Request<ListObjectsV2Input>,
    ) -> S3Result<S3Response<ListObjectsV2Output>> {
        let input = &req.input;
        let token = match &input.continuation_token {
            Some(t) => {
                Some(B64.decode(t).ok().and_then(|b| String::from_utf8(b).ok()).ok_or_else(|| {
                    s3_error!(InvalidArgument, "The continuation token provided is incorrect")
                })?)
            }
            None => None,
        };
        let after = token.as_deref().or(input.start_after.as_deref());
        let delimiter = input.delimiter.as_deref();
        let mut page = Page::fetch(
            &self.node,
            &input.bucket,
            &input.prefix,
            delimiter,
            after,
            input.max_keys,
            &input.encoding_type,
        )
        .await?;
        let l = &page.listing;
        let key_count = (l.objects.len() + l.prefixes.len()) as i32;
        let next_continuation_token = l.truncated.then(|| l.last.as_ref().map(|k| B64.encode(k))).flatten();
        let truncated = l.truncated;
        Ok(S3Response::new(ListObjectsV2Output {
            name: Some(input.bucket.clone()),
            prefix: Some(page.enc(page.prefix.clone())),
            delimiter: input.delimiter.clone().map(|d| page.enc(d)),
            max_keys: Some(page.max as i32),
            key_count: Some(key_count),
            continuation_token: input.continuation_token.clone(),
            next_continuation_token,
            start_after: input.start_after.clone().map(|s| page.enc(s)),
            is_truncated: Some(truncated),
            contents: Some(page.objects()),
            common_prefixes: Some(page.common_prefixes()),
            encoding_type: input.encoding_type.clone(),
            ..Default::default()
        }))
    }

    async fn list_objects(
        &self,
        req: S3Request<ListObjectsInput>,
    ) -> S3Result<S3Response<ListObjectsOutput>> {
        let input = &req.input;
        let (delimiter, marker) = (input.delimiter.as_deref(), input.marker.as_deref());
        let mut page = Page::fetch(
            &self.node,
            &input.bucket,
            &input.prefix,
            delimiter,
            marker,
            input.max_keys,
            &input.encoding_type,
        )
        .await?;
        let truncated = page.listing.truncated;
        // NextMarker only with a delimiter, as S3 (clients use the last key otherwise).
        let next_marker = (truncated && delimiter.is_some())
            .then(|| page.listing.last.clone().map(|l| page.enc(l)))
            .flatten();
        Ok(S3Response::new(ListObjectsOutput {
            name: Some(input.bucket.clone()),
            prefix: Some(page.enc(page.prefix.clone())),
            marker: Some(input.marker.clone().unwrap_or_default()),
            next_marker,
            delimiter: input.delimiter.clone().map(|d| page.enc(d)),
            max_keys: Some(page.max as i32),
            is_truncated: Some(truncated),
            contents: Some(page.objects()),
            common_prefixes: Some(page.common_prefixes()),
            encoding_type: input.encoding_type.clone(),
            ..Default::default()
        }))
    }

    async fn list_object_versions(
        &self,
        req: S3Request<ListObjectVersionsInput>,
    ) -> S3Result<S3Response<ListObjectVersionsOutput>> {
        let input = &req.input;
        let (delimiter, marker) = (input.delimiter.as_deref(), input.key_marker.as_deref());
        let mut page = Page::fetch(
            &self.node,
            &input.bucket,
            &input.prefix,
            delimiter,
            marker,
            input.max_keys,
            &input.encoding_type,
        )
        .await?;
        let truncated = page.listing.truncated;
        // Unversioned: every object is its one `null` version.
        let versions = std::mem::take(&mut page.listing.objects)
            .into_iter()
            .map(|(k, o)| ObjectVersion {
                key: Some(page.enc(k)),
                version_id: Some("null".into()),
                is_latest: Some(true),
                e_tag: Some(ETag::Strong(o.etag)),
                size: Some(o.size as i64),
                last_modified: Some(timestamp(o.modified_ms)),
                storage_class: Some(ObjectVersionStorageClass::from_static(
                    ObjectVersionStorageClass::STANDARD,
                )),
                ..Default::default()
            })
            .collect();
        Ok(S3Response::new(ListObjectVersionsOutput {
            name: Some(input.bucket.clone()),
            prefix: Some(page.enc(page.prefix.clone())),
            key_marker: input.key_marker.clone(),
            next_key_marker: truncated.then(|| page.listing.last.clone().map(|l| page.enc(l))).flatten(),
            next_version_id_marker: truncated.then(|| "null".to_owned()),
            max_keys: Some(page.max as i32),
            delimiter: input.delimiter.clone().map(|d| page.enc(d)),
            is_truncated: Some(truncated),
            versions: Some(versions),
            common_prefixes: Some(page.common_prefixes()),
            encoding_type: input.encoding_type.clone(),
            ..Default::default()
        }))
    }

    async fn create_multipart_upload(
        &self,
        req: S3Request<CreateMultipartUploadInput>,
    ) -> S3Result<S3Response<CreateMultipartUploadOutput>> {
        multipart::create(self, req).await
    }

    async fn upload_part(&self, req: S3Request<UploadPartInput>) -> S3Result<S3Response<UploadPartOutput>> {
        multipart::upload_part(self, req).await
    }

    async fn upload_part_copy(
        &self,
        req: S3Request<UploadPartCopyInput>,
    ) -> S3Result<S3Response<UploadPartCopyOutput>> {
        multipart::upload_part_copy(self, req).await
    }

    async fn complete_multipart_upload(
        &self,
        req: S3Request<CompleteMultipartUploadInput>,
    ) -> S3Result<S3Response<CompleteMultipartUploadOutput>> {
        multipart::complete(self, req).await
    }

    async fn abort_multipart_upload(
        &self,
        req: S3Request<AbortMultipartUploadInput>,
    ) -> S3Result<S3Response<AbortMultipartUploadOutput>> {
        multipart::abort(self, req).await
    }

    async fn list_parts(&self, req: S3Request<ListPartsInput>) -> S3Result<S3Response<ListPartsOutput>> {
        multipart::list_parts(self, req).await
    }

    async fn list_multipart_uploads(
        &self,
        req: S3Request<ListMultipartUploadsInput>,
    ) -> S3Result<S3Response<ListMultipartUploadsOutput>> {
        multipart::list_uploads(self, req).await
    }
}

/// The headers of an object, and its kept headers in `KEPT` order.
fn object_head(found: &Found) -> (HeadObjectOutput, [Option<String>; 4]) {
    let h = &found.record.headers;
    let mut metadata = metadata(h).unwrap_or_default();
    metadata.insert("sha256".into(), found.manifest.id.to_string());
    let head = HeadObjectOutput {
        content_length: Some(found.manifest.size as i64),
        content_type: Some(found.record.content_type.clone()),
        e_tag: Some(ETag::Strong(etag_of(found))),
        last_modified: Some(timestamp(found.record.modified_ms)),
        accept_ranges: Some("bytes".into()),
        metadata: Some(metadata),
        expires: header(h, "expires").and_then(|e| Timestamp::parse(TimestampFormat::HttpDate, e).ok()),
        ..Default::default()
    };
    let kept = [
        header(h, "cache-control").map(str::to_owned),
        header(h, "content-disposition").map(str::to_owned),
        header(h, "content-encoding").map(str::to_owned),
        header(h, "content-language").map(str::to_owned),
    ];
    (head, kept)
}
