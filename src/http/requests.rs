//! Every request, observed: counted and timed for `/metrics` by route template, and, with
//! `--access-log`, logged as one line.
//!
//! The outermost middleware, so it sees the status clients get, refusals by the guard and
//! auth included. Times run from the request's head to its response's head: a download's
//! body streams after that, and its bytes show in `diststore_http_sent_bytes_total`.

use std::time::Instant;

use tide::Next;

use super::{Req, State};

/// Log target of access lines (`--log-level diststore::access=off` silences them).
pub const ACCESS_TARGET: &str = "diststore::access";

pub(super) fn observe<'a>(
    req: Req,
    next: Next<'a, State>,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = tide::Result> + Send + 'a>> {
    Box::pin(async move {
        let started = Instant::now();
        let method = method_name(req.method());
        let route = route(req.url().path());
        let state = req.state().clone();
        let in_flight = state.http.start();
        let res = next.run(req).await;
        drop(in_flight);
        let seconds = started.elapsed().as_secs_f64();
        let status = u16::from(res.status());
        state.http.finish(method, route, status, seconds);
        if state.access_log {
            // Microseconds are as fine as a log reader needs.
            let duration_ms = (seconds * 1e6).round() / 1e3;
            // A body streamed without a length has no size to give: no `bytes` field.
            match res.len() {
                Some(bytes) => log::info!(
                    target: ACCESS_TARGET,
                    method, route, status, bytes, duration_ms; "request"
                ),
                None => log::info!(target: ACCESS_TARGET, method, route, status, duration_ms; "request"),
            }
        }
        Ok(res)
    })
}

fn method_name(method: tide::http::Method) -> &'static str {
    use tide::http::Method::*;
    match method {
        Get => "GET",
        Head => "HEAD",
        Put => "PUT",
        Post => "POST",
        Delete => "DELETE",
        Patch => "PATCH",
        Options => "OPTIONS",
        _ => "other",
    }
}

/// The route template a path falls under: a fixed string, so a label never carries a name,
/// an id or a token. Paths that match no route are `other`.
pub fn route(path: &str) -> &'static str {
    const EXACT: &[&str] = &[
        "/",
        "/health",
        "/metrics",
        "/api/v1/status",
        "/api/v1/peer",
        "/api/v1/events",
        "/api/v1/session",
        "/api/v1/openapi.json",
        "/api/v1/files",
        "/api/v1/move",
        "/api/v1/copy",
        "/api/v1/shares",
        "/api/v1/uploads",
        "/api/v1/keys",
        "/api/v1/nodes",
        "/api/store",
        "/api/get",
        "/api/delete",
        "/api/list",
    ];
    const UNDER: &[(&str, &str)] = &[
        ("/api/v1/files/", "/api/v1/files/{name}"),
        ("/api/v1/info/", "/api/v1/info/{name}"),
        ("/api/v1/uploads/", "/api/v1/uploads/{id}"),
        ("/api/v1/blobs/", "/api/v1/blobs/{id}"),
        ("/api/v1/keys/", "/api/v1/keys/{access_key}"),
        ("/api/v1/buckets/", "/api/v1/buckets/{grant}"),
        ("/share/", "/share/{token}"),
        ("/assets/", "/assets/{path}"),
    ];
    if let Some(exact) = EXACT.iter().find(|r| **r == path) {
        return exact;
    }
    if let Some(rest) = path.strip_prefix("/api/v1/nodes/") {
        // One path segment (the id), then the operation.
        match rest.split_once('/') {
            Some((id, "drain")) if !id.is_empty() => return "/api/v1/nodes/{id}/drain",
            Some((id, "remove")) if !id.is_empty() => return "/api/v1/nodes/{id}/remove",
            _ => return "other",
        }
    }
    UNDER
        .iter()
        .find(|(prefix, _)| path.len() > prefix.len() && path.starts_with(prefix))
        .map_or("other", |(_, t)| t)
}

#[cfg(test)]
mod tests {
    use super::route;

    #[test]
    fn paths_map_to_templates_and_never_to_themselves() {
        assert_eq!(route("/api/v1/files/photos/IMG_1.jpg"), "/api/v1/files/{name}");
        assert_eq!(route("/api/v1/files"), "/api/v1/files");
        assert_eq!(route("/api/v1/nodes/00ff/drain"), "/api/v1/nodes/{id}/drain");
        assert_eq!(route("/api/v1/nodes/00ff/remove"), "/api/v1/nodes/{id}/remove");
        assert_eq!(route("/api/v1/nodes/00ff/other"), "other");
        assert_eq!(route("/api/v1/files/"), "other");
        assert_eq!(route("/share/abc.def"), "/share/{token}");
        assert_eq!(route("/metrics"), "/metrics");
        assert_eq!(route("/wp-admin/setup.php"), "other");
        assert_eq!(route("/healthz"), "other");
    }
}
