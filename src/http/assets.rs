//! The browser UI, embedded at build time so the single binary serves it anywhere.

use rust_embed::RustEmbed;
use tide::{Response, StatusCode};

use super::{ApiError, Req, path_rest};

#[derive(RustEmbed)]
#[folder = "assets/"]
struct Assets;

fn serve(req: &Req, path: &str) -> Result<Response, ApiError> {
    let file = Assets::get(path).ok_or_else(|| ApiError::NotFound(format!("no asset {path:?}")))?;
    let etag = format!("\"{}\"", hex::encode(&file.metadata.sha256_hash()[..16]));
    // Names are not fingerprinted, so browsers revalidate (cheaply, by ETag) on every load.
    let mut res = Response::new(StatusCode::Ok);
    res.insert_header("ETag", etag.as_str());
    res.insert_header("Cache-Control", "no-cache");
    res.insert_header("X-Content-Type-Options", "nosniff");
    // No other site may frame the UI (clickjacking its buttons).
    res.insert_header("Content-Security-Policy", "frame-ancestors 'none'");
    res.insert_header("X-Frame-Options", "DENY");
    if req.header("If-None-Match").is_some_and(|v| v.as_str() == etag) {
        res.set_status(StatusCode::NotModified);
        return Ok(res);
    }
    let mime = mime_guess::from_path(path).first_or_octet_stream();
    res.set_body(file.data.into_owned());
    let text = mime.type_() == "text" || mime.subtype() == "javascript" || mime.subtype() == "json";
    let content_type =
        if text { format!("{}; charset=utf-8", mime.essence_str()) } else { mime.essence_str().to_owned() };
    res.insert_header("Content-Type", content_type);
    Ok(res)
}

pub async fn index(req: Req) -> Result<Response, ApiError> {
    serve(&req, "index.html")
}

pub async fn file(req: Req) -> Result<Response, ApiError> {
    let path = path_rest(&req, "/assets/")?;
    serve(&req, &path)
}

/// The OpenAPI 3 description of the native API (hand-written, `assets/openapi.json`).
pub async fn openapi(req: Req) -> Result<Response, ApiError> {
    serve(&req, "openapi.json")
}
