//! The original program's API, kept for its clients: same routes, fields and success bodies.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use futures_util::StreamExt;
use serde_json::json;
use tide::{Response, StatusCode};

use super::files::check_declared_length;
use super::serve_content::{self, Presentation, disposition};
use super::{ApiError, Req, json, query};
use crate::content::FileName;
use crate::content::content_type_for;
use crate::node::{Attrs, NodeError};
use crate::storage::ListQuery;

/// Longest accepted `key` field, in bytes, before it is validated as a name.
const MAX_KEY_FIELD: u64 = 4096;

fn key_param(req: &Req) -> Result<FileName, ApiError> {
    let key = query(req, "key")
        .filter(|k| !k.is_empty())
        .ok_or_else(|| ApiError::BadRequest("`key` is required".into()))?;
    super::user_name(key)
}

fn multipart_error(e: multer::Error) -> ApiError {
    match e {
        multer::Error::StreamReadFailed(e) => {
            ApiError::BadRequest(format!("reading the request body failed: {e}"))
        }
        multer::Error::FieldSizeExceeded { field_name, .. } => {
            ApiError::BadRequest(format!("multipart field {:?} is too large", field_name.unwrap_or_default()))
        }
        other => ApiError::BadRequest(format!("malformed multipart body: {other}")),
    }
}

/// Bytes of a multipart body read, and handed out as field data.
#[derive(Default)]
struct Framing {
    read: AtomicU64,
    handed: AtomicU64,
    refused: AtomicBool,
}

impl Framing {
    fn buffered(&self) -> u64 {
        self.read.load(Ordering::Relaxed).saturating_sub(self.handed.load(Ordering::Relaxed))
    }

    fn handed(&self, n: usize) {
        self.handed.fetch_add(n as u64, Ordering::Relaxed);
    }

    fn error(&self, e: multer::Error, node: &crate::node::Node) -> ApiError {
        if self.refused.load(Ordering::Relaxed) {
            crate::limits::Limits::count(&node.limits().heads_refused);
            return ApiError::BadRequest(format!(
                "the multipart preamble and part headers are longer than the node accepts ({} bytes, --max-head-size)",
                node.limits().front.max_head_bytes
            ));
        }
        multipart_error(e)
    }
}

/// `POST /api/store`, multipart `key` + `file`, in either order. The file streams into the
/// store as it arrives; it is named only when both fields are complete.
pub async fn store(mut req: Req) -> Result<Response, ApiError> {
    check_declared_length(&req)?;
    let content_type = req.header("Content-Type").map(|v| v.as_str().to_owned()).unwrap_or_default();
    let boundary = multer::parse_boundary(&content_type)
        .map_err(|_| ApiError::BadRequest("expected a multipart/form-data body with a boundary".into()))?;
    let node = req.state().node.clone();
    let body = req.take_body();
    // Multer buffers a part's headers, and the preamble before the first part, until their
    // end: without a bound a client sends hundreds of MB of either. What was read but not
    // handed out as field data is exactly that framing (plus what an ignored field held).
    let framing_limit = node.limits().front.max_head_bytes as u64 + MAX_KEY_FIELD;
    let framing = Arc::new(Framing::default());
    let counted = framing.clone();
    let stream = futures_util::stream::unfold(body, move |mut body| {
        let framing = counted.clone();
        async move {
            if framing.buffered() > framing_limit {
                framing.refused.store(true, Ordering::Relaxed);
                let e = std::io::Error::other("the multipart preamble or part headers are too long");
                return Some((Err(e), body));
            }
            let mut buf = vec![0u8; 64 * 1024];
            match futures_lite::AsyncReadExt::read(&mut body, &mut buf).await {
                Ok(0) => None,
                Ok(n) => {
                    buf.truncate(n);
                    framing.read.fetch_add(n as u64, Ordering::Relaxed);
                    Some((Ok::<_, std::io::Error>(bytes::Bytes::from(buf)), body))
                }
                Err(e) => Some((Err(e), body)),
            }
        }
    });
    let constraints =
        multer::Constraints::new().size_limit(multer::SizeLimit::new().for_field("key", MAX_KEY_FIELD));
    let mut form = multer::Multipart::with_constraints(stream, boundary, constraints);

    let mut key = None;
    let mut staged = None;
    let mut file_type = None;
    while let Some(field) = form.next_field().await.map_err(|e| framing.error(e, &node))? {
        match field.name() {
            Some("key") => {
                let text = field.text().await.map_err(|e| framing.error(e, &node))?;
                framing.handed(text.len());
                key = Some(text);
            }
            Some("file") if staged.is_none() => {
                file_type = field.content_type().map(|m| m.essence_str().to_owned());
                let mut upload = node.upload().await?;
                let mut field = field;
                while let Some(piece) = field.next().await {
                    let piece = piece.map_err(|e| match e {
                        multer::Error::StreamReadFailed(e) => NodeError::Body(std::io::Error::other(e)),
                        other => NodeError::Body(std::io::Error::other(other.to_string())),
                    });
                    let piece = piece?;
                    framing.handed(piece.len());
                    upload.write(&piece).await?;
                }
                staged = Some(upload.finish().await?);
            }
            // Other fields (a submit button, a second file) are read past and ignored.
            _ => drop(field),
        }
    }
    let key =
        key.filter(|k| !k.is_empty()).ok_or_else(|| ApiError::BadRequest("missing `key` field".into()))?;
    let name = super::user_name(key)?;
    let staged = staged.ok_or_else(|| ApiError::BadRequest("missing `file` field".into()))?;
    let content_type = content_type_for(file_type.as_deref(), &name);
    node.commit(staged, name, Attrs::typed(content_type)).await?;
    Ok(Response::builder(StatusCode::Ok).content_type("text/plain").body("File stored successfully").build())
}

/// `GET /api/get?key=`: the content as an attachment named by the key.
pub async fn get(req: Req) -> Result<Response, ApiError> {
    let name = key_param(&req)?;
    let found = req.state().node.find(&name).await?;
    let how = Presentation {
        content_type: "application/octet-stream".into(),
        disposition: Some(disposition("attachment", name.base())),
        modified_ms: Some(found.record.modified_ms),
    };
    serve_content::respond(&req, &found.manifest, how).await
}

/// `DELETE /api/delete?key=`.
pub async fn delete(req: Req) -> Result<Response, ApiError> {
    let name = key_param(&req)?;
    req.state().node.delete(&name).await?;
    Ok(json(StatusCode::Ok, &json!({ "message": "File deleted successfully" })))
}

/// `GET /api/list`: every name, as a JSON array, streamed a page at a time: memory stays one
/// page per request whatever the number of names.
pub async fn list(req: Req) -> Result<Response, ApiError> {
    let node = req.state().node.clone();
    // The first page is read here, so an error is still a proper status.
    let first = node.list(ListQuery { limit: LIST_PAGE, ..ListQuery::default() }).await?;
    let (tx, rx) = async_channel::bounded::<std::io::Result<Vec<u8>>>(2);
    crate::runtime::spawn(async move {
        let mut page = first;
        let mut out = b"[".to_vec();
        let mut first_name = true;
        loop {
            for entry in &page.entries {
                if !std::mem::take(&mut first_name) {
                    out.push(b',');
                }
                // A name is a string; serializing it cannot fail.
                out.extend(serde_json::to_vec(&entry.name).unwrap_or_default());
            }
            let Some(after) = page.next.take() else { break };
            // The client went away: stop reading pages.
            if tx.send(Ok(std::mem::take(&mut out))).await.is_err() {
                return;
            }
            match node.list(ListQuery { after: Some(after), limit: LIST_PAGE, ..ListQuery::default() }).await
            {
                Ok(next) => page = next,
                Err(e) => {
                    // The status is sent already: cut the body short, so the client sees
                    // an incomplete array rather than a wrong one.
                    log::warn!("listing names failed midway: {e}");
                    let _ = tx.send(Err(std::io::Error::other(e.to_string()))).await;
                    return;
                }
            }
        }
        out.push(b']');
        let _ = tx.send(Ok(out)).await;
    });
    let reader = futures_util::TryStreamExt::into_async_read(Box::pin(rx));
    let mut res = Response::new(StatusCode::Ok);
    res.set_body(tide::Body::from_reader(reader, None));
    res.set_content_type(tide::http::mime::JSON);
    Ok(res)
}

/// Names per page of a streamed listing.
const LIST_PAGE: usize = 1000;
