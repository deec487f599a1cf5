//! Serving stored content: shared by name, blob and compatibility reads.
//! ETag is the content id, so conditional and range requests work the same on every route.

use http_range_header::{RangeInvalid, RangeUnsatisfiableError, parse_range_header};
use tide::http::Method;
use tide::{Body, Response, StatusCode};

use super::{ApiError, Req};
use crate::content::Manifest;

pub struct Presentation {
    pub content_type: String,
    /// Full `Content-Disposition` value, if any.
    pub disposition: Option<String>,
    pub modified_ms: Option<u64>,
}

/// `Content-Disposition` with a name safe in a quoted string, plus the RFC 5987 UTF-8 form.
pub fn disposition(kind: &str, file_name: &str) -> String {
    let ascii: String = file_name
        .chars()
        .map(|c| if c.is_ascii_graphic() && c != '"' && c != '\\' || c == ' ' { c } else { '_' })
        .collect();
    let encoded: String = file_name
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect();
    format!("{kind}; filename=\"{ascii}\"; filename*=UTF-8''{encoded}")
}

/// The byte range a request asks for: `None` for the whole content.
fn requested_range(req: &Req, size: u64) -> Result<Option<(u64, u64)>, ApiError> {
    let Some(header) = req.header("Range") else {
        return Ok(None);
    };
    match parse_range_header(header.as_str()).and_then(|r| r.validate(size)) {
        Ok(ranges) if ranges.len() == 1 => Ok(Some((*ranges[0].start(), *ranges[0].end() + 1))),
        // Several ranges (multipart/byteranges) are not supported; the whole body is a valid answer.
        Ok(_) => Ok(None),
        // Not a `bytes=` range at all: the spec says ignore it.
        Err(RangeUnsatisfiableError::Invalid(RangeInvalid::DoesNotStartWithToken)) => Ok(None),
        Err(RangeUnsatisfiableError::Invalid(e)) => {
            Err(ApiError::BadRequest(format!("bad Range header: {}", RangeUnsatisfiableError::Invalid(e))))
        }
        Err(_) => Err(ApiError::RangeNotSatisfiable { size }),
    }
}

pub(super) fn http_date(ms: u64) -> String {
    httpdate(std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms))
}

fn httpdate(t: std::time::SystemTime) -> String {
    let secs = t.duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = crate::clock::civil_from_days(days as i64);
    const WEEKDAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] =
        ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
    format!(
        "{}, {:02} {} {} {:02}:{:02}:{:02} GMT",
        WEEKDAYS[(days % 7) as usize],
        d,
        MONTHS[(m - 1) as usize],
        y,
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

pub async fn respond(req: &Req, manifest: &Manifest, how: Presentation) -> Result<Response, ApiError> {
    let etag = format!("\"{}\"", manifest.id);
    let mut res = Response::new(StatusCode::Ok);
    res.insert_header("ETag", etag.as_str());
    res.insert_header("Accept-Ranges", "bytes");
    res.insert_header("Cache-Control", "no-cache");
    // Stored content is the users', not ours: an uploaded HTML page shown inline must not
    // run scripts on the UI's origin (where the API token lives), nor be sniffed into one.
    res.insert_header("Content-Security-Policy", "sandbox");
    res.insert_header("X-Content-Type-Options", "nosniff");
    if let Some(ms) = how.modified_ms {
        res.insert_header("Last-Modified", http_date(ms));
    }
    if let Some(inm) = req.header("If-None-Match") {
        let hit =
            inm.as_str().split(',').map(str::trim).any(|t| t == "*" || t == etag || t == format!("W/{etag}"));
        if hit {
            res.set_status(StatusCode::NotModified);
            return Ok(res);
        }
    }
    res.insert_header("Content-Type", how.content_type.as_str());
    if let Some(d) = how.disposition {
        res.insert_header("Content-Disposition", d);
    }
    let size = manifest.size;
    let (start, end) = match requested_range(req, size)? {
        Some((start, end)) => {
            res.set_status(StatusCode::PartialContent);
            res.insert_header("Content-Range", format!("bytes {start}-{}/{size}", end - 1));
            (start, end)
        }
        None => (0, size),
    };
    let len = end - start;
    let body = if req.method() == Method::Head || len == 0 {
        // async-h1 sends no body for HEAD but takes Content-Length from this length.
        Body::from_reader(futures_lite::io::empty(), Some(len as usize))
    } else {
        let stream = req.state().node.read(manifest, start, end).await?;
        Body::from_reader(stream, Some(len as usize))
    };
    res.set_body(body);
    // set_body replaces the content type; restore ours.
    res.insert_header("Content-Type", how.content_type.as_str());
    Ok(res)
}
