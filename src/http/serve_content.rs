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

/// An IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`) as unix seconds; `None` for anything
/// else, which the conditional headers then ignore (as RFC 9110 says).
fn parse_http_date(s: &str) -> Option<u64> {
    const MONTHS: [&str; 12] =
        ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
    let parts: Vec<&str> = s.split_whitespace().collect();
    let [_, day, month, year, time, "GMT"] = parts.as_slice() else { return None };
    let day: u32 = day.parse().ok()?;
    let month = MONTHS.iter().position(|m| m == month)? as u32 + 1;
    let year: i64 = year.parse().ok()?;
    let mut hms = time.split(':').map(|p| p.parse::<u64>().ok());
    let (h, m, sec) = (hms.next()??, hms.next()??, hms.next()??);
    if !(1..=31).contains(&day) || h > 23 || m > 59 || sec > 60 || !(1970..=9999).contains(&year) {
        return None;
    }
    let days = crate::clock::days_from_civil(year, month, day);
    Some(days as u64 * 86_400 + h * 3600 + m * 60 + sec)
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
    // RFC 9110 13.2.2: If-Match, else If-Unmodified-Since; then If-None-Match, else
    // If-Modified-Since. Dates compare at whole seconds, as Last-Modified states them.
    let tags =
        |name: &str| req.header(name).map(|v| v.iter().map(|v| v.as_str().to_owned()).collect::<Vec<_>>());
    let hit = |values: &[String], weak_ok: bool| {
        values
            .iter()
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .any(|t| t == "*" || t == etag || (weak_ok && t.strip_prefix("W/") == Some(etag.as_str())))
    };
    let modified_secs = how.modified_ms.map(|ms| ms / 1000);
    let since = |name: &str| req.header(name).and_then(|v| parse_http_date(v.as_str()));
    let precondition_failed = match tags("If-Match") {
        Some(values) => !hit(&values, false),
        None => since("If-Unmodified-Since").zip(modified_secs).is_some_and(|(since, m)| m > since),
    };
    if precondition_failed {
        return Err(ApiError::PreconditionFailed("the precondition failed: the content changed".into()));
    }
    let not_modified = match tags("If-None-Match") {
        Some(values) => hit(&values, true),
        None => since("If-Modified-Since").zip(modified_secs).is_some_and(|(since, m)| m <= since),
    };
    if not_modified {
        res.set_status(StatusCode::NotModified);
        return Ok(res);
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

#[cfg(test)]
mod tests {
    #[test]
    fn http_dates_round_trip() {
        let ms = 1_795_509_923_000;
        assert_eq!(super::parse_http_date(&super::http_date(ms)), Some(ms / 1000));
        assert_eq!(super::parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT"), Some(784_111_777));
        assert_eq!(super::parse_http_date("yesterday"), None);
        assert_eq!(super::parse_http_date("Sun, 06 Nov 1994 08:49 GMT"), None);
    }
}
