//! `/api/v1/keys` and bucket grants: S3 access, managed through the native API (behind its
//! token).

use serde::Deserialize;
use serde_json::json;
use tide::{Response, StatusCode};

use super::{ApiError, Req, json, path_rest};
use crate::node::Node;
use crate::node::registry::Grant;

#[derive(Deserialize)]
struct NewKey {
    name: String,
    access_key: Option<String>,
    secret_key: Option<String>,
}

/// `POST /api/v1/keys {"name", "access_key"?, "secret_key"?}`: given values are imported as
/// they are, missing ones generated. Answers the key with its secret, the only time it is shown.
pub async fn create(mut req: Req) -> Result<Response, ApiError> {
    let body: NewKey = req
        .body_json()
        .await
        .map_err(|e| ApiError::BadRequest(format!("expected {{\"name\": ...}}: {e}")))?;
    if body.name.trim().is_empty() || body.name.len() > 256 {
        return Err(ApiError::BadRequest("a key needs a name of 1 to 256 bytes".into()));
    }
    if body.secret_key.as_ref().is_some_and(|s| s.len() < 8 || s.len() > 256) {
        return Err(ApiError::BadRequest("a secret key is 8 to 256 bytes".into()));
    }
    let node = req.state().node.clone();
    if let Some(ak) = &body.access_key
        && node.access_key(ak).await?.is_some()
    {
        return Err(ApiError::Conflict(format!("access key {ak} exists")));
    }
    let key = Node::new_access_key(body.name, body.access_key, body.secret_key);
    node.put_access_key(&key).await?;
    Ok(json(
        StatusCode::Created,
        &json!({ "name": key.name, "access_key": key.access_key, "secret_key": key.secret_key }),
    ))
}

/// `GET /api/v1/keys`: every key, never its secret.
pub async fn list(req: Req) -> Result<Response, ApiError> {
    let keys = req.state().node.access_keys().await?;
    let keys: Vec<_> =
        keys.iter().map(|k| json!({ "name": k.name, "access_key": k.access_key, "root": k.root })).collect();
    Ok(json(StatusCode::Ok, &json!({ "keys": keys })))
}

/// `DELETE /api/v1/keys/{access_key}`.
pub async fn delete(req: Req) -> Result<Response, ApiError> {
    let access_key = path_rest(&req, "/api/v1/keys/")?;
    req.state().node.delete_access_key(&access_key).await?;
    Ok(Response::new(StatusCode::NoContent))
}

#[derive(Deserialize)]
struct GrantBody {
    access: String,
}

/// `PUT /api/v1/buckets/{bucket}/grants/{access_key}` with `{"access": "read"|"read-write"}`:
/// lets another key read (or also change) a bucket.
pub async fn grant(mut req: Req) -> Result<Response, ApiError> {
    let body: GrantBody = req.body_json().await.map_err(|e| {
        ApiError::BadRequest(format!("expected {{\"access\": \"read\"|\"read-write\"}}: {e}"))
    })?;
    let grant = match body.access.as_str() {
        "read" => Grant::Read,
        "read-write" => Grant::ReadWrite,
        other => return Err(ApiError::BadRequest(format!("unknown access {other:?} (read, read-write)"))),
    };
    let (bucket, access_key) = bucket_and_key(&req)?;
    let node = req.state().node.clone();
    if node.access_key(&access_key).await?.is_none() {
        return Err(ApiError::NotFound(format!("no access key {access_key}")));
    }
    let mut record =
        node.bucket(&bucket).await?.ok_or_else(|| ApiError::NotFound(format!("no bucket {bucket}")))?;
    record.grants.retain(|(k, _)| *k != access_key);
    record.grants.push((access_key, grant));
    node.put_bucket(&record).await?;
    Ok(Response::new(StatusCode::NoContent))
}

/// `DELETE /api/v1/buckets/{bucket}/grants/{access_key}`.
pub async fn revoke(req: Req) -> Result<Response, ApiError> {
    let (bucket, access_key) = bucket_and_key(&req)?;
    let node = req.state().node.clone();
    let mut record =
        node.bucket(&bucket).await?.ok_or_else(|| ApiError::NotFound(format!("no bucket {bucket}")))?;
    let before = record.grants.len();
    record.grants.retain(|(k, _)| *k != access_key);
    if record.grants.len() == before {
        return Err(ApiError::NotFound(format!("{access_key} has no grant on {bucket}")));
    }
    node.put_bucket(&record).await?;
    Ok(Response::new(StatusCode::NoContent))
}

fn bucket_and_key(req: &Req) -> Result<(String, String), ApiError> {
    let rest = path_rest(req, "/api/v1/buckets/")?;
    match rest.split_once("/grants/") {
        Some((bucket, key)) if !bucket.is_empty() && !key.is_empty() && !bucket.contains('/') => {
            Ok((bucket.to_owned(), key.to_owned()))
        }
        _ => Err(ApiError::BadRequest("expected /api/v1/buckets/{bucket}/grants/{access_key}".into())),
    }
}
