//! The original program's API, kept for its clients: same routes, fields and success bodies.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

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

/// Bytes read from the body at a time.
const FORM_READ: usize = 64 * 1024;

/// A multipart body as the stream multer reads. Multer keeps the preamble before the first
/// part, and a part's headers, in memory until their end, and reads on while more is ready:
/// without a bound a client sends hundreds of MB of either. [`Framing`] follows the parts as
/// the bytes pass and refuses a preamble or a part's headers longer than `limit`; a yield to
/// multer after every read makes it parse what it has before it asks again, so it holds at
/// most a read or two of field data.
struct FormBody {
    body: tide::Body,
    buf: Vec<u8>,
    framing: Framing,
    /// Set by a read: the next poll yields instead (reads and yields alternate, so a multer
    /// that needs more bytes still gets them).
    yield_next: bool,
    refused: Arc<AtomicBool>,
}

impl futures_util::Stream for FormBody {
    type Item = std::io::Result<bytes::Bytes>;

    fn poll_next(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        use std::task::Poll;
        let this = self.get_mut();
        if std::mem::take(&mut this.yield_next) {
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        match futures_lite::AsyncRead::poll_read(std::pin::Pin::new(&mut this.body), cx, &mut this.buf) {
            Poll::Ready(Ok(0)) => Poll::Ready(None),
            Poll::Ready(Ok(n)) => {
                if !this.framing.pass(&this.buf[..n]) {
                    this.refused.store(true, Ordering::Relaxed);
                    let e = std::io::Error::other("the multipart preamble or part headers are too long");
                    return Poll::Ready(Some(Err(e)));
                }
                this.yield_next = true;
                Poll::Ready(Some(Ok(bytes::Bytes::copy_from_slice(&this.buf[..n]))))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Some(Err(e))),
            Poll::Pending => Poll::Pending,
        }
    }
}

/// Where a multipart body is, followed byte by byte: in the preamble or a part's headers
/// (each bounded by `limit`), or in a part's data (unbounded: it streams on).
struct Framing {
    /// `--BOUNDARY` (what ends the preamble) and `\r\n--BOUNDARY` (what ends a part's data).
    first: Vec<u8>,
    delimiter: Vec<u8>,
    in_data: bool,
    /// Preamble or header bytes of the current stretch.
    framing: usize,
    limit: usize,
    /// The last bytes seen, so a delimiter split across reads is found.
    carry: Vec<u8>,
}

impl Framing {
    fn new(boundary: &str, limit: usize) -> Self {
        Framing {
            first: format!("--{boundary}").into_bytes(),
            delimiter: format!("\r\n--{boundary}").into_bytes(),
            in_data: false,
            framing: 0,
            limit,
            carry: Vec::new(),
        }
    }

    /// Follows `data`; false once a preamble or a part's headers is longer than the limit.
    fn pass(&mut self, data: &[u8]) -> bool {
        let mut window = std::mem::take(&mut self.carry);
        window.extend_from_slice(data);
        let mut at = 0;
        loop {
            let rest = &window[at..];
            if self.in_data {
                match memchr::memmem::find(rest, &self.delimiter) {
                    Some(i) => {
                        at += i + self.delimiter.len();
                        self.in_data = false;
                        self.framing = 0;
                    }
                    None => break,
                }
            } else {
                // The preamble ends at the first boundary; a part's headers at a blank line.
                let end: &[u8] = if self.first.is_empty() { b"\r\n\r\n" } else { &self.first };
                match memchr::memmem::find(rest, end) {
                    Some(i) => {
                        self.framing += i;
                        if self.framing > self.limit {
                            return false;
                        }
                        at += i + end.len();
                        if self.first.is_empty() {
                            self.in_data = true;
                        } else {
                            self.first.clear();
                        }
                        self.framing = 0;
                    }
                    None => {
                        self.framing += rest.len();
                        if self.framing > self.limit {
                            return false;
                        }
                        break;
                    }
                }
            }
        }
        // Keep what could be the start of a delimiter; it was counted already (as data, or
        // as framing, which then counts it again: a few bytes of slack).
        let keep = self.delimiter.len().min(window.len() - at);
        self.carry = window[window.len() - keep..].to_vec();
        if !self.in_data {
            self.framing = self.framing.saturating_sub(keep);
        }
        true
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
    let refused = Arc::new(AtomicBool::new(false));
    let stream = FormBody {
        body,
        buf: vec![0u8; FORM_READ],
        framing: Framing::new(&boundary, node.limits().front.max_head_bytes),
        yield_next: false,
        refused: refused.clone(),
    };
    // Refusals become one clear error, and count as refused heads.
    let framing_error = |e: multer::Error| {
        if !refused.load(Ordering::Relaxed) {
            return multipart_error(e);
        }
        crate::limits::Limits::count(&node.limits().heads_refused);
        ApiError::BadRequest(format!(
            "the multipart preamble or a part's headers are longer than the node accepts ({} bytes, --max-head-size)",
            node.limits().front.max_head_bytes
        ))
    };
    let constraints =
        multer::Constraints::new().size_limit(multer::SizeLimit::new().for_field("key", MAX_KEY_FIELD));
    let mut form = multer::Multipart::with_constraints(stream, boundary, constraints);

    let mut key = None;
    let mut staged = None;
    let mut file_type = None;
    while let Some(field) = form.next_field().await.map_err(framing_error)? {
        match field.name() {
            Some("key") => {
                key = Some(field.text().await.map_err(framing_error)?);
            }
            Some("file") if staged.is_none() => {
                file_type = field.content_type().map(|m| m.essence_str().to_owned());
                let mut upload = node.upload().await?;
                let mut field = field;
                while let Some(piece) = field.next().await {
                    let piece = match piece {
                        Ok(piece) => piece,
                        Err(e) if refused.load(Ordering::Relaxed) => return Err(framing_error(e)),
                        Err(multer::Error::StreamReadFailed(e)) => {
                            return Err(NodeError::Body(std::io::Error::other(e)).into());
                        }
                        Err(other) => {
                            return Err(NodeError::Body(std::io::Error::other(other.to_string())).into());
                        }
                    };
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

#[cfg(test)]
mod tests {
    use super::Framing;

    fn form(preamble: &str, header: &str, data: &str) -> Vec<u8> {
        format!("{preamble}--B\r\nContent-Disposition: form-data; name=\"file\"{header}\r\n\r\n{data}\r\n--B--\r\n")
            .into_bytes()
    }

    /// Feeds `bytes` in pieces of `step`; whether every piece passed.
    fn passes(bytes: &[u8], step: usize, limit: usize) -> bool {
        let mut framing = Framing::new("B", limit);
        bytes.chunks(step).all(|piece| framing.pass(piece))
    }

    #[test]
    fn data_streams_while_preambles_and_headers_are_bounded() {
        let data = "x".repeat(100_000);
        for step in [1, 3, 7, 64, 100_000] {
            assert!(passes(&form("", "", &data), step, 100), "step {step}");
            assert!(passes(&form(&"p".repeat(90), "", "d"), step, 100), "step {step}");
            assert!(!passes(&form(&"p".repeat(200), "", "d"), step, 100), "step {step}");
            assert!(!passes(&form("", &"h".repeat(200), "d"), step, 100), "step {step}");
        }
        // A second part's headers count on their own.
        let part = |header: &str, data: &str| format!("--B\r\nX: {header}\r\n\r\n{data}\r\n");
        let two = format!("{}{}--B--\r\n", part(&"h".repeat(80), &data), part(&"h".repeat(80), "d"));
        assert!(passes(two.as_bytes(), 5, 100));
        let two = format!("{}{}--B--\r\n", part(&"h".repeat(80), &data), part(&"h".repeat(120), "d"));
        assert!(!passes(two.as_bytes(), 5, 100));
    }
}
