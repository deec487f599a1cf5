//! `/api/v1/files`: the native API by name.

use serde_json::json;
use tide::{Response, StatusCode};

use super::serve_content::{self, Presentation, disposition};
use super::{ApiError, Req, json, path_rest, query};
use crate::clock::rfc3339;
use crate::content::FileId;
use crate::content::{FileName, content_type_for};
use crate::node::{Attrs, MTIME_HEADER, NodeError, Relocate, mtime_of, parse_mtime};
use crate::storage::{Expect, ListQuery, Match, NameEntry, SortBy};

const PREFIX: &str = "/api/v1/files/";

fn name_from_path(req: &Req, prefix: &str) -> Result<FileName, ApiError> {
    super::user_name(path_rest(req, prefix)?)
}

/// Refuses a body whose declared length is already over the limit, before reading any of it
/// (curl waits for `100 Continue`, which is never sent, and stops).
pub fn check_declared_length(req: &Req) -> Result<(), ApiError> {
    let limit = req.state().node.max_upload_bytes();
    match req.len() {
        Some(len) if len as u64 > limit => Err(NodeError::TooLarge { limit }.into()),
        _ => Ok(()),
    }
}

pub async fn put(mut req: Req) -> Result<Response, ApiError> {
    let name = name_from_path(&req, PREFIX)?;
    check_declared_length(&req)?;
    // A partial PUT would be stored as if it were the whole file (RFC 9110 §14.5 says to
    // refuse it when not supported); resuming is what the tus routes are for.
    if req.header("Content-Range").is_some() {
        return Err(ApiError::BadRequest(
            "a PUT with Content-Range (a partial upload) is not supported: send the whole file, or \
             resume with a resumable upload (POST /api/v1/uploads)"
                .into(),
        ));
    }
    let content_type = content_type_for(req.content_type().as_ref().map(|m| m.essence()), &name);
    let expect = expectation(&req);
    let mtime = client_mtime(&req)?;
    let node = req.state().node.clone();
    // Refused before the body is read when it already fails; the writer checks again as it
    // commits, which is the check that counts.
    if expect != Expect::default() {
        let current = match node.find(&name).await {
            Ok(found) => Some(found.manifest.id),
            Err(NodeError::NotFound) => None,
            Err(e) => return Err(e.into()),
        };
        if !expect.holds(current) {
            return Err(crate::node::precondition_failed().into());
        }
    }
    let declared = req.len();
    let mut upload = node.upload().await?;
    upload.read_from(req.take_body(), declared.map(|len| len as u64)).await?;
    if let Some(declared) = declared
        && upload.size() != declared as u64
    {
        return Err(ApiError::BadRequest("the body ended before its Content-Length".into()));
    }
    let staged = upload.finish().await?;
    let attrs = Attrs::typed(content_type).with_mtime(mtime);
    let put = node.commit_if(staged, name.clone(), attrs, expect).await?;
    Ok(json(
        StatusCode::Created,
        &json!({
            "name": name.as_str(),
            "id": put.id.to_string(),
            "size": put.size,
            "chunks": put.chunks,
            "new_bytes": put.new_bytes,
        }),
    ))
}

pub async fn get(req: Req) -> Result<Response, ApiError> {
    let name = name_from_path(&req, PREFIX)?;
    let found = req.state().node.find(&name).await?;
    let kind = if query(&req, "download").is_some_and(|v| v != "0") { "attachment" } else { "inline" };
    let how = Presentation {
        content_type: found.record.content_type.clone(),
        disposition: Some(disposition(kind, name.base())),
        modified_ms: Some(found.record.modified_ms),
    };
    let mut res = serve_content::respond(&req, &found.manifest, how).await?;
    if let Some(ms) = mtime_of(&found.record) {
        res.insert_header("X-DistStore-Mtime", crate::node::format_mtime(ms));
    }
    Ok(res)
}

pub async fn delete(req: Req) -> Result<Response, ApiError> {
    let name = name_from_path(&req, PREFIX)?;
    req.state().node.delete_if(&name, expectation(&req)).await?;
    Ok(Response::new(StatusCode::NoContent))
}

/// `If-Match` / `If-None-Match` of a write, for the writer to check as it writes. An ETag
/// that names no file id matches nothing (so `If-Match` with it always fails).
fn expectation(req: &Req) -> Expect {
    let parse = |header: &str| {
        let value = req.header(header)?.iter().map(|v| v.as_str()).collect::<Vec<_>>().join(",");
        if value.split(',').any(|t| t.trim() == "*") {
            return Some(Match::Any);
        }
        let ids = value
            .split(',')
            .filter_map(|t| t.trim().trim_start_matches("W/").trim_matches('"').parse::<FileId>().ok())
            .collect();
        Some(Match::Files(ids))
    };
    Expect { if_match: parse("If-Match"), if_none_match: parse("If-None-Match") }
}

/// The client's modification time (`X-DistStore-Mtime: <unix seconds>`), in unix ms.
fn client_mtime(req: &Req) -> Result<Option<u64>, ApiError> {
    let Some(value) = req.header(MTIME_HEADER) else { return Ok(None) };
    parse_mtime(value.as_str()).map(Some).ok_or_else(|| {
        ApiError::BadRequest(format!(
            "{MTIME_HEADER} must be unix seconds, decimals allowed (e.g. 1700000000.25); got {:?}",
            value.as_str()
        ))
    })
}

#[derive(serde::Deserialize)]
struct RelocateBody {
    from: String,
    to: String,
    #[serde(default = "yes")]
    overwrite: bool,
}

fn yes() -> bool {
    true
}

pub async fn relocate_move(req: Req) -> Result<Response, ApiError> {
    relocate(req, Relocate::Move, "moved").await
}

pub async fn relocate_copy(req: Req) -> Result<Response, ApiError> {
    relocate(req, Relocate::Copy, "copied").await
}

/// `POST /api/v1/move|copy {"from", "to", "overwrite"}`: one name, or with `from` ending in
/// `/` every name under it. Metadata only: no stored bytes are added.
async fn relocate(mut req: Req, how: Relocate, key: &str) -> Result<Response, ApiError> {
    let body: RelocateBody =
        super::small_json(&mut req, r#"{"from": "...", "to": "...", "overwrite": true}"#).await?;
    let node = req.state().node.clone();
    let count = if body.from.ends_with('/') {
        if !body.to.ends_with('/') {
            return Err(ApiError::BadRequest(
                "when `from` is a prefix (ends in /), `to` must end in / too".into(),
            ));
        }
        // Both must be valid name prefixes outside the reserved one; a name under them is checked too.
        super::user_name(format!("{}x", body.from))?;
        super::user_name(format!("{}x", body.to))?;
        node.relocate_prefix(how, &body.from, &body.to, body.overwrite).await?
    } else {
        let (from, to) = (super::user_name(body.from)?, super::user_name(body.to)?);
        node.relocate(how, &from, &to, body.overwrite).await?;
        1
    };
    Ok(json(StatusCode::Ok, &json!({ key: count })))
}

pub fn entry_json(e: &NameEntry) -> serde_json::Value {
    let mut out = json!({
        "name": e.name,
        "id": e.record.file_id().map(|id| id.to_string()),
        "size": e.record.size,
        "modified": rfc3339(e.record.modified_ms),
        "content_type": e.record.content_type,
    });
    if let Some(ms) = mtime_of(&e.record) {
        out["mtime"] = rfc3339(ms).into();
    }
    out
}

const DEFAULT_LIMIT: usize = 100;
const MAX_LIMIT: usize = 1000;
/// Deepest page of a listing ordered by size, time or descending name.
const MAX_SORTED_OFFSET: usize = 10_000;

pub async fn list(req: Req) -> Result<Response, ApiError> {
    let number = |key: &str| -> Result<Option<usize>, ApiError> {
        query(&req, key)
            .map(|v| {
                v.parse().map_err(|_| ApiError::BadRequest(format!("`{key}` must be a non-negative integer")))
            })
            .transpose()
    };
    let limit = number("limit")?.unwrap_or(DEFAULT_LIMIT);
    if limit == 0 || limit > MAX_LIMIT {
        return Err(ApiError::BadRequest(format!("`limit` must be between 1 and {MAX_LIMIT}")));
    }
    let sort = match query(&req, "sort").as_deref() {
        None | Some("name") => SortBy::Name,
        Some("size") => SortBy::Size,
        Some("modified") => SortBy::Modified,
        Some(other) => {
            return Err(ApiError::BadRequest(format!("unknown sort {other:?} (name, size, modified)")));
        }
    };
    let descending = match query(&req, "order").as_deref() {
        None | Some("asc") => false,
        Some("desc") => true,
        Some(other) => {
            return Err(ApiError::BadRequest(format!("unknown order {other:?} (asc, desc)")));
        }
    };
    let offset = number("offset")?.unwrap_or(0);
    // Any order but by name keeps the entries up to the offset in memory while it scans.
    if (sort != SortBy::Name || descending) && offset > MAX_SORTED_OFFSET {
        return Err(ApiError::BadRequest(format!(
            "`offset` must be at most {MAX_SORTED_OFFSET} unless listing by name in ascending order (page with `after` there)"
        )));
    }
    let q = ListQuery {
        prefix: query(&req, "prefix").unwrap_or_default(),
        after: query(&req, "after").filter(|a| !a.is_empty()),
        offset,
        limit,
        sort,
        descending,
        hidden: None,
        count: true,
        delimiter: match query(&req, "delimiter").as_deref() {
            None | Some("") => false,
            Some("/") => true,
            Some(_) => return Err(ApiError::BadRequest("the only `delimiter` is /".into())),
        },
        search: query(&req, "search").filter(|s| !s.is_empty()),
    };
    let page = req.state().node.list(q).await?;
    let files: Vec<_> = page.entries.iter().map(entry_json).collect();
    Ok(json(
        StatusCode::Ok,
        &json!({ "files": files, "folders": page.folders, "next": page.next, "total": page.total }),
    ))
}

pub async fn info(req: Req) -> Result<Response, ApiError> {
    let name = name_from_path(&req, "/api/v1/info/")?;
    let node = &req.state().node;
    let info = node.info(&name).await?;
    let m = &info.found.manifest;
    let holders: Vec<_> = info
        .holders
        .iter()
        .map(|(id, url, chunks)| {
            json!({ "node_id": id.to_string(), "url": url, "chunks": chunks, "self": *id == node.node_id() })
        })
        .collect();
    Ok(json(
        StatusCode::Ok,
        &json!({
            "name": name.as_str(),
            "id": m.id.to_string(),
            "size": m.size,
            "content_type": info.found.record.content_type,
            "modified": rfc3339(info.found.record.modified_ms),
            "chunks": m.chunks.len(),
            "distinct_chunks": info.distinct_chunks,
            "shared_bytes": info.shared_bytes,
            "unique_bytes": m.size.saturating_sub(info.shared_bytes),
            "holders": holders,
        }),
    ))
}
