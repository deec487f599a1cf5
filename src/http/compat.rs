//! The original program's API, kept for its clients: same routes, fields and success bodies.

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

/// `POST /api/store`, multipart `key` + `file`, in either order. The file streams into the
/// store as it arrives; it is named only when both fields are complete.
pub async fn store(mut req: Req) -> Result<Response, ApiError> {
    check_declared_length(&req)?;
    let content_type = req.header("Content-Type").map(|v| v.as_str().to_owned()).unwrap_or_default();
    let boundary = multer::parse_boundary(&content_type)
        .map_err(|_| ApiError::BadRequest("expected a multipart/form-data body with a boundary".into()))?;
    let node = req.state().node.clone();
    let body = req.take_body();
    let stream = futures_util::stream::unfold(body, |mut body| async move {
        let mut buf = vec![0u8; 64 * 1024];
        match futures_lite::AsyncReadExt::read(&mut body, &mut buf).await {
            Ok(0) => None,
            Ok(n) => {
                buf.truncate(n);
                Some((Ok::<_, std::io::Error>(bytes::Bytes::from(buf)), body))
            }
            Err(e) => Some((Err(e), body)),
        }
    });
    let constraints =
        multer::Constraints::new().size_limit(multer::SizeLimit::new().for_field("key", MAX_KEY_FIELD));
    let mut form = multer::Multipart::with_constraints(stream, boundary, constraints);

    let mut key = None;
    let mut staged = None;
    let mut file_type = None;
    while let Some(field) = form.next_field().await.map_err(multipart_error)? {
        match field.name() {
            Some("key") => key = Some(field.text().await.map_err(multipart_error)?),
            Some("file") if staged.is_none() => {
                file_type = field.content_type().map(|m| m.essence_str().to_owned());
                let mut upload = node.upload().await?;
                let mut field = field;
                while let Some(piece) = field.next().await {
                    let piece = piece.map_err(|e| match e {
                        multer::Error::StreamReadFailed(e) => NodeError::Body(std::io::Error::other(e)),
                        other => NodeError::Body(std::io::Error::other(other.to_string())),
                    });
                    upload.write(&piece?).await?;
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

/// `GET /api/list`: every name, as a JSON array.
pub async fn list(req: Req) -> Result<Response, ApiError> {
    let node = &req.state().node;
    let mut names = Vec::new();
    let mut after = None;
    loop {
        let page = node.list(ListQuery { after, limit: 10_000, ..ListQuery::default() }).await?;
        names.extend(page.entries.into_iter().map(|e| e.name));
        match page.next {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    Ok(json(StatusCode::Ok, &json!(names)))
}
