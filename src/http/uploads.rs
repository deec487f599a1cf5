//! `/api/v1/uploads`: resumable uploads, tus 1.0.0 core with the creation, termination and
//! expiration extensions.
//!
//! An upload's bytes are spooled to `DATA_DIR/uploads/` as they arrive: `<id>.info` (what the
//! creation said), `<id>.data` (the bytes, encrypted under a key of that upload derived from
//! the cluster secret: AES-CTR by offset) and `<id>.offset` (how many of them are durable).
//! The data is fsynced before the offset that counts it is written and fsynced, so an offset
//! once reported survives a dropped connection, `kill -9` and a restart; bytes past it are
//! cut off when the upload goes on. When the offset reaches the length, the spooled file goes
//! through the node's ordinary upload pipeline and is named exactly as a plain PUT would name
//! it (same id, chunks, dedup, durability); the final PATCH answers only after that commit.
//! A `<id>.done` marker with the file id then stands in for the data, so a client that lost
//! the final answer learns the outcome from HEAD. Abandoned uploads (no byte for
//! `--upload-expiry`) and old markers are removed by a sweeper loop.

use std::collections::HashSet;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use base64::Engine;
use futures_lite::AsyncReadExt;
use serde::{Deserialize, Serialize};
use tide::{Response, StatusCode};

use super::{ApiError, Req};
use crate::clock::unix_ms;
use crate::content::content_type_for;
use crate::crypto::SpoolCipher;
use crate::node::{Attrs, Node, NodeError};
use crate::runtime;

pub const PREFIX: &str = "/api/v1/uploads";
const TUS_VERSION: &str = "1.0.0";
const OFFSET_TYPE: &str = "application/offset+octet-stream";
/// Bytes received before they go to the spool file in one blocking write.
const WRITE_BLOCK: usize = 1024 * 1024;
/// Received bytes made durable (and reported by HEAD) at least this often during a PATCH, so
/// a connection dropping late in a long request loses at most this much.
const PERSIST_EVERY: u64 = 16 * 1024 * 1024;
/// How long a finished upload still answers HEAD and a repeated last PATCH with its id.
const DONE_KEPT: Duration = Duration::from_secs(3600);

/// Limits and place of the spool.
#[derive(Debug, Clone)]
pub struct UploadConfig {
    pub dir: PathBuf,
    /// Unfinished uploads older (since their last byte) than this are removed.
    pub expiry: Duration,
    /// Unfinished uploads at once.
    pub max_uploads: usize,
    /// Sum of the declared lengths of unfinished uploads.
    pub max_spool_bytes: u64,
}

/// What the creation request said, persisted as `<id>.info`.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Info {
    length: u64,
    name: String,
    /// Client modification time, unix ms (from the `mtime` metadata).
    mtime_ms: Option<u64>,
    content_type: Option<String>,
    created_ms: u64,
}

/// The spooled uploads of this node.
pub struct Spool {
    config: UploadConfig,
    /// Uploads a request is writing or finishing now: one at a time each, and the sweeper
    /// leaves them alone.
    busy: Mutex<HashSet<String>>,
    /// Creation counts and reserves under this lock (on a blocking thread, never across an
    /// await), so two creations cannot both take the last slot.
    creating: Mutex<()>,
}

/// Marks an upload busy until dropped.
struct Busy<'a> {
    spool: &'a Spool,
    id: String,
}

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        self.spool.busy.lock().unwrap_or_else(|e| e.into_inner()).remove(&self.id);
    }
}

/// Where an upload stands on disk.
enum Stage {
    Open { info: Info, offset: u64, expires: SystemTime },
    Done { info: Info, file_id: String },
}

impl Spool {
    pub fn open(config: UploadConfig) -> std::io::Result<Arc<Spool>> {
        std::fs::create_dir_all(&config.dir)?;
        Ok(Arc::new(Spool { config, busy: Mutex::default(), creating: Mutex::new(()) }))
    }

    fn path(&self, id: &str, ext: &str) -> PathBuf {
        self.config.dir.join(format!("{id}.{ext}"))
    }

    fn lock(&self, id: &str) -> Result<Busy<'_>, ApiError> {
        let mut busy = self.busy.lock().unwrap_or_else(|e| e.into_inner());
        if !busy.insert(id.to_owned()) {
            return Err(ApiError::Conflict(
                "another request is writing this upload; retry when it has ended".into(),
            ));
        }
        Ok(Busy { spool: self, id: id.to_owned() })
    }

    /// Blocking: the upload's state, `None` when unknown or expired.
    fn state(&self, id: &str) -> Result<Option<Stage>, ApiError> {
        let info: Info = match std::fs::read(self.path(id, "info")) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map_err(|e| ApiError::Internal(format!("upload {id}: unreadable record: {e}")))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_error(e)),
        };
        if let Ok(done) = std::fs::read_to_string(self.path(id, "done")) {
            return Ok(Some(Stage::Done { info, file_id: done.trim().to_owned() }));
        }
        let offset = read_offset(&self.path(id, "offset"))?;
        // The data file may hold bytes past the durable offset (written, not yet counted);
        // fewer would mean a damaged spool: count only what is there.
        let data_len = std::fs::metadata(self.path(id, "data")).map(|m| m.len()).unwrap_or(0);
        let expires = self.expires(id);
        Ok(Some(Stage::Open { offset: offset.min(data_len).min(info.length), info, expires }))
    }

    /// When the upload expires: its last durable byte (or creation) plus the expiry.
    fn expires(&self, id: &str) -> SystemTime {
        let last = std::fs::metadata(self.path(id, "offset"))
            .or_else(|_| std::fs::metadata(self.path(id, "info")))
            .and_then(|m| m.modified())
            .unwrap_or_else(|_| SystemTime::now());
        last + self.config.expiry
    }

    fn expired(&self, id: &str) -> bool {
        self.expires(id) < SystemTime::now()
    }

    /// Blocking: creates an upload within the limits.
    fn create(&self, info: &Info) -> Result<String, ApiError> {
        let _creating = self.creating.lock().unwrap_or_else(|e| e.into_inner());
        let (mut count, mut reserved) = (0usize, 0u64);
        for id in self.ids()? {
            if self.path(&id, "done").exists() {
                continue;
            }
            if let Ok(Some(Stage::Open { info, .. })) = self.state(&id)
                && !self.expired(&id)
            {
                count += 1;
                reserved += info.length;
            }
        }
        if count >= self.config.max_uploads {
            return Err(ApiError::Unavailable(format!(
                "too many unfinished uploads ({count}); finish or terminate some, or wait for them to expire"
            )));
        }
        if reserved.saturating_add(info.length) > self.config.max_spool_bytes {
            return Err(ApiError::InsufficientStorage(format!(
                "unfinished uploads already reserve {reserved} of {} bytes",
                self.config.max_spool_bytes
            )));
        }
        let id = crate::node::registry::random_text(32);
        let data = File::create(self.path(&id, "data")).map_err(io_error)?;
        data.sync_all().map_err(io_error)?;
        write_offset(&self.path(&id, "offset"), 0)?;
        // The record last: an upload without one does not exist (the sweeper removes the rest).
        let record = serde_json::to_vec(info).map_err(|e| ApiError::Internal(e.to_string()))?;
        let tmp = self.path(&id, "info.new");
        let mut file = File::create(&tmp).map_err(io_error)?;
        file.write_all(&record).and_then(|()| file.sync_all()).map_err(io_error)?;
        std::fs::rename(&tmp, self.path(&id, "info")).map_err(io_error)?;
        File::open(&self.config.dir).and_then(|d| d.sync_all()).map_err(io_error)?;
        Ok(id)
    }

    /// Blocking: removes every file of an upload (the record first, so a crash halfway leaves
    /// no upload that seems to exist).
    fn remove(&self, id: &str) {
        for ext in ["info", "done", "offset", "data", "info.new"] {
            let _ = std::fs::remove_file(self.path(id, ext));
        }
    }

    /// Blocking: ids of the uploads in the spool (by their files).
    fn ids(&self) -> Result<Vec<String>, ApiError> {
        let mut ids: Vec<String> = std::fs::read_dir(&self.config.dir)
            .map_err(io_error)?
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter_map(|n| n.split('.').next().map(str::to_owned))
            .filter(|id| valid_id(id))
            .collect();
        ids.sort();
        ids.dedup();
        Ok(ids)
    }

    /// Blocking: removes expired uploads and markers; returns how many. Uploads a request is
    /// working on are left alone.
    pub fn sweep(&self) -> Result<usize, ApiError> {
        let mut removed = 0;
        for id in self.ids()? {
            // Held while deciding and removing, so no request starts on it meanwhile.
            let Ok(_busy) = self.lock(&id) else { continue };
            // Files without a record are the remains of a creation or removal cut short.
            let orphan = !self.path(&id, "info").exists();
            let stale = orphan
                && std::fs::metadata(self.path(&id, "data"))
                    .and_then(|m| m.modified())
                    .is_ok_and(|t| t + Duration::from_secs(60) < SystemTime::now());
            let expired = !orphan && {
                // A finished upload's marker only has to outlive a client's retries.
                let (last, keep) = match std::fs::metadata(self.path(&id, "done")) {
                    Ok(m) => (m.modified(), self.config.expiry.min(DONE_KEPT)),
                    Err(_) => (
                        std::fs::metadata(self.path(&id, "offset"))
                            .or_else(|_| std::fs::metadata(self.path(&id, "info")))
                            .and_then(|m| m.modified()),
                        self.config.expiry,
                    ),
                };
                last.unwrap_or_else(|_| SystemTime::now()) + keep < SystemTime::now()
            };
            if stale || expired {
                log::info!("removing expired upload {id}");
                self.remove(&id);
                removed += 1;
            }
        }
        Ok(removed)
    }

    /// Runs [`Spool::sweep`] periodically until `shutdown` closes.
    pub async fn run_sweeper(self: Arc<Self>, shutdown: async_channel::Receiver<()>) {
        let period = (self.config.expiry / 4).clamp(Duration::from_millis(200), Duration::from_secs(60));
        loop {
            if runtime::timeout(period, shutdown.recv()).await.is_some() {
                return;
            }
            let spool = self.clone();
            match runtime::blocking(move || spool.sweep()).await {
                Ok(_) => {}
                Err(e) => log::warn!("sweeping expired uploads: {e}"),
            }
        }
    }
}

fn valid_id(id: &str) -> bool {
    id.len() == 32 && id.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
}

fn io_error(e: std::io::Error) -> ApiError {
    if e.raw_os_error() == Some(libc::ENOSPC) || e.raw_os_error() == Some(libc::EDQUOT) {
        ApiError::InsufficientStorage("the node's disk is full".into())
    } else {
        ApiError::Internal(format!("upload spool: {e}"))
    }
}

fn read_offset(path: &Path) -> Result<u64, ApiError> {
    let mut bytes = [0u8; 8];
    match File::open(path).and_then(|mut f| f.read_exact(&mut bytes)) {
        Ok(()) => Ok(u64::from_le_bytes(bytes)),
        // A record without an offset file has nothing durable yet.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Ok(0),
        Err(e) => Err(io_error(e)),
    }
}

/// Writes the durable offset in place: 8 bytes in one sector, so a crash leaves the old value
/// or the new one.
fn write_offset(path: &Path, offset: u64) -> Result<(), ApiError> {
    let mut file =
        std::fs::OpenOptions::new().write(true).create(true).truncate(false).open(path).map_err(io_error)?;
    file.write_all(&offset.to_le_bytes()).and_then(|()| file.sync_data()).map_err(io_error)
}

fn spool(req: &Req) -> Result<Arc<Spool>, ApiError> {
    req.state().uploads.clone().ok_or_else(|| ApiError::NotFound("resumable uploads are off".into()))
}

fn upload_id(req: &Req) -> Result<String, ApiError> {
    let id = req.url().path().strip_prefix(PREFIX).unwrap_or_default().trim_start_matches('/');
    if valid_id(id) { Ok(id.to_owned()) } else { Err(ApiError::NotFound("no such upload".into())) }
}

/// Every tus answer names the protocol version, errors included.
fn tus(mut res: Response) -> Response {
    res.insert_header("Tus-Resumable", TUS_VERSION);
    res.insert_header("Cache-Control", "no-store");
    res
}

fn check_version(req: &Req) -> Result<(), ApiError> {
    match req.header("Tus-Resumable").map(|v| v.as_str()) {
        Some(TUS_VERSION) => Ok(()),
        other => Err(ApiError::PreconditionFailed(format!(
            "Tus-Resumable must be {TUS_VERSION} (got {})",
            other.unwrap_or("none")
        ))),
    }
}

fn number_header(req: &Req, name: &str) -> Result<Option<u64>, ApiError> {
    req.header(name)
        .map(|v| {
            v.as_str()
                .trim()
                .parse::<u64>()
                .map_err(|_| ApiError::BadRequest(format!("{name} must be a non-negative integer")))
        })
        .transpose()
}

/// `Upload-Metadata`: comma-separated `key base64` pairs (a key alone has an empty value).
fn metadata(header: &str) -> Result<Vec<(String, String)>, ApiError> {
    let mut out = Vec::new();
    for pair in header.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once(' ').unwrap_or((pair, ""));
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(value.trim())
            .map_err(|_| ApiError::BadRequest(format!("Upload-Metadata: {key:?} is not base64")))?;
        let text = String::from_utf8(bytes)
            .map_err(|_| ApiError::BadRequest(format!("Upload-Metadata: {key:?} is not UTF-8")))?;
        out.push((key.to_owned(), text));
    }
    Ok(out)
}

/// Client modification time in unix seconds, decimals allowed (`X-DistStore-Mtime`, `mtime`),
/// as unix milliseconds.
fn parse_mtime(text: &str) -> Result<u64, ApiError> {
    crate::node::parse_mtime(text).ok_or_else(|| {
        ApiError::BadRequest(format!("mtime must be unix seconds up to the year 9999, got {text:?}"))
    })
}

fn expires_header(res: &mut Response, expires: SystemTime) {
    let at = expires.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    res.insert_header("Upload-Expires", super::serve_content::http_date(at.as_millis() as u64));
}

/// `OPTIONS /api/v1/uploads`: what this server speaks.
pub async fn options(req: Req) -> Result<Response, ApiError> {
    spool(&req)?;
    let mut res = Response::new(StatusCode::NoContent);
    res.insert_header("Tus-Version", TUS_VERSION);
    res.insert_header("Tus-Extension", "creation,termination,expiration");
    res.insert_header("Tus-Max-Size", req.state().node.max_upload_bytes().to_string());
    Ok(res)
}

/// `POST /api/v1/uploads`: creates an upload of `Upload-Length` bytes for the name in the
/// metadata.
pub async fn create(req: Req) -> Result<Response, ApiError> {
    let spool = spool(&req)?;
    check_version(&req)?;
    if req.header("Upload-Defer-Length").is_some() {
        return Err(ApiError::BadRequest("Upload-Defer-Length is not supported: give Upload-Length".into()));
    }
    let length = number_header(&req, "Upload-Length")?
        .ok_or_else(|| ApiError::BadRequest("Upload-Length is required".into()))?;
    let limit = req.state().node.max_upload_bytes();
    if length > limit {
        return Err(NodeError::TooLarge { limit }.into());
    }
    let meta = metadata(req.header("Upload-Metadata").map(|v| v.as_str()).unwrap_or(""))?;
    let field = |key: &str| meta.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone());
    let name = field("name")
        .ok_or_else(|| ApiError::BadRequest("Upload-Metadata must carry the file's name (`name`)".into()))?;
    let name = super::user_name(name)?;
    let mtime = field("mtime")
        .or_else(|| req.header("X-DistStore-Mtime").map(|v| v.as_str().to_owned()))
        .map(|t| parse_mtime(&t))
        .transpose()?;
    let info = Info {
        length,
        name: name.to_string(),
        mtime_ms: mtime,
        content_type: field("filetype").or_else(|| field("content_type")).filter(|t| !t.is_empty()),
        created_ms: unix_ms(),
    };
    let creating = (spool.clone(), info.clone());
    let id = runtime::blocking(move || creating.0.create(&creating.1)).await?;
    let mut res = Response::new(StatusCode::Created);
    res.insert_header("Location", format!("{PREFIX}/{id}"));
    if length == 0 {
        // Nothing to send: the upload is complete on creation.
        let _busy = spool.lock(&id)?;
        let file_id = finish(&req.state().node, &spool, &id, &info).await?;
        res.insert_header("X-DistStore-Id", file_id);
        res.insert_header("Upload-Offset", "0");
    } else {
        expires_header(&mut res, SystemTime::now() + spool.config.expiry);
    }
    Ok(res)
}

async fn state_of(spool: &Arc<Spool>, id: &str) -> Result<Stage, ApiError> {
    let (s, i) = (spool.clone(), id.to_owned());
    let state = runtime::blocking(move || s.state(&i)).await?;
    match state {
        Some(Stage::Open { expires, .. }) if expires < SystemTime::now() => {
            Err(ApiError::NotFound("the upload has expired".into()))
        }
        Some(state) => Ok(state),
        None => Err(ApiError::NotFound("no such upload (finished long ago, terminated or expired)".into())),
    }
}

/// `HEAD /api/v1/uploads/{id}`: how many bytes are durable.
pub async fn head(req: Req) -> Result<Response, ApiError> {
    let spool = spool(&req)?;
    check_version(&req)?;
    let id = upload_id(&req)?;
    let mut res = Response::new(StatusCode::Ok);
    match state_of(&spool, &id).await? {
        Stage::Open { info, offset, expires } => {
            res.insert_header("Upload-Offset", offset.to_string());
            res.insert_header("Upload-Length", info.length.to_string());
            expires_header(&mut res, expires);
        }
        Stage::Done { info, file_id } => {
            res.insert_header("Upload-Offset", info.length.to_string());
            res.insert_header("Upload-Length", info.length.to_string());
            res.insert_header("X-DistStore-Id", file_id);
        }
    }
    Ok(res)
}

/// `DELETE /api/v1/uploads/{id}`: terminates the upload and frees its space.
pub async fn terminate(req: Req) -> Result<Response, ApiError> {
    let spool = spool(&req)?;
    check_version(&req)?;
    let id = upload_id(&req)?;
    let _busy = spool.lock(&id)?;
    state_of(&spool, &id).await?;
    let (s, i) = (spool.clone(), id.clone());
    runtime::blocking(move || s.remove(&i)).await;
    Ok(Response::new(StatusCode::NoContent))
}

/// The spool file of an upload being written: encrypts and appends on blocking threads.
struct Writer {
    file: Arc<File>,
    /// Taken by each blocking write and given back.
    cipher: Option<SpoolCipher>,
    offset_path: PathBuf,
    /// Bytes in the file.
    written: u64,
    /// Bytes counted durable.
    durable: u64,
}

impl Writer {
    async fn append(&mut self, mut block: Vec<u8>) -> Result<(), ApiError> {
        let (file, at) = (self.file.clone(), self.written);
        let len = block.len() as u64;
        let mut cipher = self.cipher.take().ok_or_else(|| ApiError::Internal("spool cipher lost".into()))?;
        let (cipher, written) = runtime::blocking(move || {
            cipher.apply(at, &mut block);
            let written = (&*file).write_all(&block);
            (cipher, written)
        })
        .await;
        self.cipher = Some(cipher);
        written.map_err(io_error)?;
        self.written += len;
        Ok(())
    }

    /// Makes every written byte durable, then says so in the offset file.
    async fn persist(&mut self) -> Result<(), ApiError> {
        if self.durable == self.written {
            return Ok(());
        }
        let (file, path, written) = (self.file.clone(), self.offset_path.clone(), self.written);
        runtime::blocking(move || {
            file.sync_data().map_err(io_error)?;
            write_offset(&path, written)
        })
        .await?;
        self.durable = self.written;
        Ok(())
    }
}

/// `PATCH /api/v1/uploads/{id}`: appends the body at `Upload-Offset`. The answer's offset is
/// durable; the final PATCH answers once the file is stored under its name.
pub async fn patch(mut req: Req) -> Result<Response, ApiError> {
    let spool = spool(&req)?;
    check_version(&req)?;
    let id = upload_id(&req)?;
    if req.content_type().map(|m| m.essence().to_owned()).as_deref() != Some(OFFSET_TYPE) {
        return Err(ApiError::UnsupportedMediaType(format!("Content-Type must be {OFFSET_TYPE}")));
    }
    let claimed = number_header(&req, "Upload-Offset")?
        .ok_or_else(|| ApiError::BadRequest("Upload-Offset is required".into()))?;
    let busy = spool.lock(&id)?;
    let (info, offset) = match state_of(&spool, &id).await? {
        Stage::Done { info, file_id } if claimed == info.length => {
            let mut res = Response::new(StatusCode::NoContent);
            res.insert_header("Upload-Offset", info.length.to_string());
            res.insert_header("X-DistStore-Id", file_id);
            return Ok(res);
        }
        Stage::Done { info, .. } => {
            return Err(ApiError::Conflict(format!("the upload is complete at offset {}", info.length)));
        }
        Stage::Open { info, offset, .. } => (info, offset),
    };
    if claimed != offset {
        return Err(ApiError::Conflict(format!("Upload-Offset is {claimed}, but the upload is at {offset}")));
    }
    let remaining = info.length - offset;
    if let Some(len) = req.len()
        && len as u64 > remaining
    {
        return Err(ApiError::BadRequest(format!("the body is longer than the {remaining} bytes left")));
    }
    // Bytes past the durable offset are the remains of a request cut short: drop them.
    let (data_path, start) = (spool.path(&id, "data"), offset);
    let file = runtime::blocking(move || -> std::io::Result<File> {
        let mut file = std::fs::OpenOptions::new().write(true).open(data_path)?;
        file.set_len(start)?;
        file.seek(SeekFrom::Start(start))?;
        Ok(file)
    })
    .await
    .map_err(io_error)?;
    let mut writer = Writer {
        file: Arc::new(file),
        cipher: Some(req.state().node.spool_cipher(&id)),
        offset_path: spool.path(&id, "offset"),
        written: offset,
        durable: offset,
    };
    let received = receive(req.take_body(), &mut writer, info.length).await;
    // What arrived before an error or a dropped connection is kept, and counted.
    let persisted = writer.persist().await;
    received?;
    persisted?;
    let mut res = Response::new(StatusCode::NoContent);
    res.insert_header("Upload-Offset", writer.durable.to_string());
    if writer.durable == info.length {
        let file_id = finish(&req.state().node, &spool, &id, &info).await?;
        res.insert_header("X-DistStore-Id", file_id);
    } else if writer.durable > offset {
        // The offset file was just written: the clock starts again now.
        expires_header(&mut res, SystemTime::now() + spool.config.expiry);
    }
    drop(busy);
    Ok(res)
}

/// Copies the body into the spool, persisting every [`PERSIST_EVERY`] bytes.
async fn receive(
    mut body: impl futures_lite::AsyncRead + Unpin,
    writer: &mut Writer,
    length: u64,
) -> Result<(), ApiError> {
    let mut block = Vec::with_capacity(WRITE_BLOCK);
    let mut buf = vec![0u8; 64 * 1024];
    let mut since_persist = 0u64;
    loop {
        let n = match body.read(&mut buf).await {
            Ok(n) => n,
            Err(e) => {
                writer.append(std::mem::take(&mut block)).await?;
                return Err(NodeError::Body(e).into());
            }
        };
        if n == 0 {
            break;
        }
        if writer.written + (block.len() + n) as u64 > length {
            writer.append(std::mem::take(&mut block)).await?;
            return Err(ApiError::BadRequest("the body goes past Upload-Length".into()));
        }
        block.extend_from_slice(&buf[..n]);
        if block.len() >= WRITE_BLOCK {
            since_persist += block.len() as u64;
            writer.append(std::mem::replace(&mut block, Vec::with_capacity(WRITE_BLOCK))).await?;
            if since_persist >= PERSIST_EVERY {
                writer.persist().await?;
                since_persist = 0;
            }
        }
    }
    if !block.is_empty() {
        writer.append(block).await?;
    }
    Ok(())
}

/// Stores the complete spooled file under its name through the ordinary upload pipeline,
/// then replaces the data by a marker holding the file id.
async fn finish(node: &Arc<Node>, spool: &Arc<Spool>, id: &str, info: &Info) -> Result<String, ApiError> {
    let name = super::user_name(info.name.clone())?;
    let mut upload = node.upload().await?;
    let data_path = spool.path(id, "data");
    let file = runtime::blocking(move || File::open(data_path)).await.map_err(io_error)?;
    // The file and its cipher go to each blocking read and come back.
    let mut reader = Some((file, node.spool_cipher(id)));
    let mut at = 0u64;
    while at < info.length {
        let want = (info.length - at).min(WRITE_BLOCK as u64) as usize;
        let (mut f, mut cipher) = reader.take().expect("returned by every read");
        let (f, cipher, block) = runtime::blocking(move || {
            let mut block = vec![0u8; want];
            let read = f.read_exact(&mut block);
            cipher.apply(at, &mut block);
            (f, cipher, read.map(|()| block))
        })
        .await;
        reader = Some((f, cipher));
        upload.write(&block.map_err(io_error)?).await?;
        at += want as u64;
    }
    let staged = upload.finish().await?;
    let content_type = content_type_for(info.content_type.as_deref(), &name);
    let put = node.commit(staged, name, Attrs::typed(content_type).with_mtime(info.mtime_ms)).await?;
    let file_id = put.id.to_string();
    let (s, i, f) = (spool.clone(), id.to_owned(), file_id.clone());
    runtime::blocking(move || -> Result<(), ApiError> {
        let mut done = File::create(s.path(&i, "done")).map_err(io_error)?;
        done.write_all(f.as_bytes()).and_then(|()| done.sync_all()).map_err(io_error)?;
        let _ = std::fs::remove_file(s.path(&i, "data"));
        let _ = std::fs::remove_file(s.path(&i, "offset"));
        Ok(())
    })
    .await?;
    Ok(file_id)
}

/// Wraps a handler so every answer carries `Tus-Resumable`.
pub async fn respond(result: Result<Response, ApiError>) -> Response {
    tus(result.unwrap_or_else(ApiError::into_response))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_pairs() {
        let m = metadata("name YS9iIGMudHh0,mtime MTcwMDAwMDAwMC41, empty").unwrap();
        assert_eq!(m[0], ("name".into(), "a/b c.txt".into()));
        assert_eq!(m[1], ("mtime".into(), "1700000000.5".into()));
        assert_eq!(m[2], ("empty".into(), String::new()));
        assert!(metadata("name ***").is_err());
    }

    #[test]
    fn mtimes() {
        assert_eq!(parse_mtime("1700000000.25").unwrap(), 1_700_000_000_250);
        assert!(parse_mtime("-1").is_err());
        assert!(parse_mtime("NaN").is_err());
        assert!(parse_mtime("soon").is_err());
    }
}
