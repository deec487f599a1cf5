//! Share links: `/share/<token>` serves one file, read-only, until the link expires or every
//! link is revoked, on any node of the cluster, without the API token.
//!
//! A link token is `base64url(version, epoch, expires, name) "." base64url(HMAC)`, the HMAC
//! under a key derived from the cluster secret (so every node checks it, and nobody without the
//! secret makes one). The epoch is the cluster's revocation epoch when the link was made
//! ([`Node::share_epoch`]); `DELETE /api/v1/shares` bumps it, which voids every earlier link.
//!
//! [`Node::share_epoch`]: crate::node::Node::share_epoch

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use serde_json::json;
use tide::{Response, StatusCode};

use super::serve_content::{self, Presentation, disposition};
use super::{ApiError, Req, json, query};
use crate::clock::{rfc3339, unix_ms};
use crate::content::FileName;

const VERSION: u8 = 1;
const DEFAULT_EXPIRY_SECS: u64 = 24 * 3600;
const MAX_EXPIRY_SECS: u64 = 365 * 24 * 3600;
/// Longest token accepted: the payload of the longest name plus the MAC, in base64.
const MAX_TOKEN: usize = 2048;

struct Link {
    epoch: u64,
    /// Unix seconds.
    expires: u64,
    name: String,
}

impl Link {
    fn payload(&self) -> Vec<u8> {
        let mut out = vec![VERSION];
        out.extend(self.epoch.to_le_bytes());
        out.extend(self.expires.to_le_bytes());
        out.extend(self.name.as_bytes());
        out
    }

    fn token(&self, req: &Req) -> String {
        let payload = self.payload();
        let mac = req.state().node.share_mac(&[b"share link", &payload]);
        format!("{}.{}", B64.encode(&payload), B64.encode(mac))
    }

    /// The link a token stands for, when its MAC is ours; `None` for anything forged or garbled.
    fn open(req: &Req, token: &str) -> Option<Link> {
        if token.len() > MAX_TOKEN {
            return None;
        }
        let (payload, mac) = token.split_once('.')?;
        let (payload, mac) = (B64.decode(payload).ok()?, B64.decode(mac).ok()?);
        let expected = req.state().node.share_mac(&[b"share link", &payload]);
        if !crate::crypto::macs_equal(&<[u8; 32]>::try_from(mac.as_slice()).ok()?, &expected) {
            return None;
        }
        let (&version, rest) = payload.split_first()?;
        if version != VERSION || rest.len() < 16 {
            return None;
        }
        let epoch = u64::from_le_bytes(rest[..8].try_into().ok()?);
        let expires = u64::from_le_bytes(rest[8..16].try_into().ok()?);
        let name = String::from_utf8(rest[16..].to_vec()).ok()?;
        Some(Link { epoch, expires, name })
    }
}

#[derive(serde::Deserialize)]
struct CreateBody {
    name: String,
    expires_in: Option<u64>,
}

/// `POST /api/v1/shares {"name", "expires_in"}` → `201 {"url", "path", "expires"}`.
pub async fn create(mut req: Req) -> Result<Response, ApiError> {
    let body: CreateBody = super::small_json(&mut req, r#"{"name": "...", "expires_in": SECONDS}"#).await?;
    let secs = body.expires_in.unwrap_or(DEFAULT_EXPIRY_SECS);
    if secs == 0 || secs > MAX_EXPIRY_SECS {
        return Err(ApiError::BadRequest(format!("`expires_in` must be 1 to {MAX_EXPIRY_SECS} seconds")));
    }
    let name = super::user_name(body.name)?;
    let node = req.state().node.clone();
    // A link to nothing helps nobody: the name must exist now (it may go away later).
    node.find(&name).await?;
    // Rounded up: a link lasts at least what was asked.
    let expires = unix_ms().div_ceil(1000) + secs;
    let link = Link { epoch: node.share_epoch().await?, expires, name: name.to_string() };
    let path = format!("/share/{}", link.token(&req));
    let url = req.url();
    let origin = url.origin().ascii_serialization();
    Ok(json(
        StatusCode::Created,
        &json!({ "url": format!("{origin}{path}"), "path": path, "expires": rfc3339(expires * 1000) }),
    ))
}

/// `DELETE /api/v1/shares`: voids every link made so far, cluster-wide.
pub async fn revoke(req: Req) -> Result<Response, ApiError> {
    req.state().node.revoke_shares().await?;
    Ok(Response::new(StatusCode::NoContent))
}

/// `GET|HEAD /share/<token>`: the file, as `GET /api/v1/files/{name}` serves it.
pub async fn get(req: Req) -> Result<Response, ApiError> {
    let token = req.param("token").unwrap_or_default();
    let forbidden = |why: &str| ApiError::Forbidden(format!("this share link {why}"));
    let link = Link::open(&req, token).ok_or_else(|| forbidden("is not valid"))?;
    if link.expires <= unix_ms() / 1000 {
        return Err(forbidden("has expired"));
    }
    let node = &req.state().node;
    if link.epoch != node.share_epoch().await? {
        return Err(forbidden("was revoked"));
    }
    let name = FileName::new(link.name).map_err(|_| forbidden("is not valid"))?;
    let found = node.find(&name).await?;
    let kind = if query(&req, "download").is_some_and(|v| v != "0") { "attachment" } else { "inline" };
    let how = Presentation {
        content_type: found.record.content_type.clone(),
        disposition: Some(disposition(kind, name.base())),
        modified_ms: Some(found.record.modified_ms),
    };
    serve_content::respond(&req, &found.manifest, how).await
}
