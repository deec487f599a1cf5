//! The tide app: routes, the error map, auth, and the embedded UI.

mod assets;
mod blobs;
mod compat;
pub mod error;
mod files;
mod guard;
mod keys;
mod peer;
mod serve_content;
mod status;
pub mod uploads;

use std::sync::Arc;

use tide::{Next, Request, Response, StatusCode};

use crate::config::Config;
use crate::node::Node;
use crate::runtime;
pub use error::ApiError;

#[derive(Clone)]
pub struct State {
    pub node: Arc<Node>,
    api_token: Option<Arc<str>>,
    hosts: Arc<guard::Hosts>,
    /// Resumable uploads (`None` in apps built without a spool).
    uploads: Option<Arc<uploads::Spool>>,
}

pub type Req = Request<State>;

/// Turns a handler returning `Result<Response, ApiError>` into a tide endpoint.
macro_rules! endpoint {
    ($handler:path) => {
        |req: Req| async move { Ok($handler(req).await.unwrap_or_else(ApiError::into_response)) }
    };
}

/// As [`endpoint!`], for tus routes: every answer carries `Tus-Resumable`.
macro_rules! tus_endpoint {
    ($handler:path) => {
        |req: Req| async move { Ok(uploads::respond($handler(req).await).await) }
    };
}

pub fn app(
    node: Arc<Node>,
    api_token: Option<String>,
    hosts: guard::Hosts,
    uploads: Option<Arc<uploads::Spool>>,
) -> tide::Server<State> {
    let mut app = tide::with_state(State {
        node,
        api_token: api_token.map(Into::into),
        hosts: Arc::new(hosts),
        uploads,
    });
    app.with(tide::utils::After(json_errors));
    app.with(guard::guard);
    app.with(require_token);
    app.at("/health").get(health);
    app.at("/metrics").get(endpoint!(status::metrics));
    app.at("/api/v1/status").get(endpoint!(status::status));
    app.at("/api/v1/peer").get(endpoint!(peer::upgrade));
    app.at("/api/v1/events").get(tide::sse::endpoint(status::events));
    app.at("/api/v1/files").get(endpoint!(files::list));
    app.at("/api/v1/files/*name")
        .put(endpoint!(files::put))
        .get(endpoint!(files::get))
        .delete(endpoint!(files::delete));
    app.at(uploads::PREFIX).options(tus_endpoint!(uploads::options)).post(tus_endpoint!(uploads::create));
    app.at("/api/v1/uploads/:id")
        .head(tus_endpoint!(uploads::head))
        .patch(tus_endpoint!(uploads::patch))
        .delete(tus_endpoint!(uploads::terminate));
    app.at("/api/v1/info/*name").get(endpoint!(files::info));
    app.at("/api/v1/keys").post(endpoint!(keys::create)).get(endpoint!(keys::list));
    app.at("/api/v1/keys/*access_key").delete(endpoint!(keys::delete));
    app.at("/api/v1/buckets/*grant").put(endpoint!(keys::grant)).delete(endpoint!(keys::revoke));
    app.at("/api/v1/blobs/:id").get(endpoint!(blobs::get));
    app.at("/api/store").post(endpoint!(compat::store));
    app.at("/api/get").get(endpoint!(compat::get));
    app.at("/api/delete").delete(endpoint!(compat::delete));
    app.at("/api/list").get(endpoint!(compat::list));
    app.at("/").get(endpoint!(assets::index));
    app.at("/assets/*path").get(endpoint!(assets::file));
    app
}

/// Binds, starts the cluster with this node's URL, and serves connections until the
/// listener fails.
pub async fn serve(
    node: Arc<Node>,
    config: &Config,
    shutdown: async_channel::Receiver<()>,
) -> anyhow::Result<()> {
    let listener = runtime::net::TcpListener::bind(config.listen).await?;
    let bound = format!("http://{}", listener.local_addr()?);
    // Tests and scripts read this line to learn the port when listening on port 0.
    println!("diststore listening on {bound}");
    let url = config.advertise.clone().unwrap_or(bound);
    if config.advertise.is_none() && config.listen.ip().is_unspecified() {
        log::warn!(
            "listening on {} without --advertise: peers reach this node at the address its \
             connections come from; give --advertise http://ADDRESS:PORT if that is not reachable",
            config.listen
        );
    }
    node.cluster().start(url, shutdown.clone()).await;
    let mut names = config.allowed_hosts.clone();
    names.extend(
        config.advertise.as_deref().and_then(|a| url::Url::parse(a).ok()?.host_str().map(str::to_owned)),
    );
    let spool = uploads::Spool::open(uploads::UploadConfig {
        dir: config.data_dir.join("uploads"),
        expiry: config.upload_expiry,
        max_uploads: config.max_uploads,
        max_spool_bytes: config.upload_spool_bytes,
    })?;
    let running = node.running("upload expiry");
    let sweeper = spool.clone();
    runtime::spawn(async move {
        sweeper.run_sweeper(shutdown).await;
        drop(running);
    });
    let app = app(node, config.api_token.clone(), guard::Hosts(names), Some(spool));
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of file descriptors, or a connection reset before accept: keep serving.
                log::warn!("accept failed: {e}");
                runtime::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        // Without this, a response's head and body leave in two segments and Nagle's
        // algorithm meets the client's delayed ACK: 40 ms per request on a kept-alive link.
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        runtime::spawn(async move {
            // Known to handlers (the peer endpoint reaches a peer without --advertise by it).
            let peer = peer.to_string();
            let serve = |mut req: tide::http::Request| {
                req.set_peer_addr(Some(peer.clone()));
                let app = app.clone();
                async move { app.respond(req).await }
            };
            if let Err(e) = async_h1::accept(stream, serve).await {
                log::debug!("connection ended: {e}");
            }
        });
    }
}

/// `200 ok`, or `503` naming what stopped: the storage writer or a background loop.
async fn health(req: Req) -> tide::Result<Response> {
    let problems = req.state().node.problems();
    if problems.is_empty() {
        return Ok(Response::builder(StatusCode::Ok).body("ok\n").build());
    }
    Ok(error::json_error(StatusCode::ServiceUnavailable, &problems.join("; ")))
}

/// Errors tide produces itself (unknown route, wrong method) get the same JSON body as ours.
async fn json_errors(res: Response) -> tide::Result<Response> {
    let status = res.status();
    if status.is_client_error() && res.is_empty() != Some(false) && res.content_type().is_none() {
        let message = match status {
            StatusCode::NotFound => "no such route",
            StatusCode::MethodNotAllowed => "method not allowed on this route",
            other => other.canonical_reason(),
        };
        let mut out = error::json_error(status, message);
        for (name, values) in res.iter() {
            out.insert_header(name, values);
        }
        return Ok(out);
    }
    Ok(res)
}

fn require_token<'a>(
    req: Req,
    next: Next<'a, State>,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = tide::Result> + Send + 'a>> {
    Box::pin(async move {
        let Some(token) = req.state().api_token.clone() else {
            return Ok(next.run(req).await);
        };
        let path = req.url().path();
        // Peers authenticate with the cluster secret instead.
        if !(path.starts_with("/api/") || path == "/metrics") || path == "/api/v1/peer" {
            return Ok(next.run(req).await);
        }
        let bearer =
            req.header("Authorization").and_then(|v| v.as_str().strip_prefix("Bearer ").map(str::to_owned));
        // Browsers cannot set headers on EventSource or plain links, so a query token works too.
        let query = req.url().query_pairs().find(|(k, _)| k == "token").map(|(_, v)| v.into_owned());
        let given = bearer.or(query).unwrap_or_default();
        if constant_time_eq(given.as_bytes(), token.as_bytes()) {
            Ok(next.run(req).await)
        } else {
            Ok(ApiError::Unauthorized.into_response())
        }
    })
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The percent-decoded rest of the path after `prefix`.
fn path_rest(req: &Req, prefix: &str) -> Result<String, ApiError> {
    let raw = req.url().path().strip_prefix(prefix).unwrap_or_default();
    percent_decode(raw)
        .ok_or_else(|| ApiError::BadRequest("the name is not valid percent-encoded UTF-8".into()))
}

pub fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// A query parameter, decoded.
fn query(req: &Req, key: &str) -> Option<String> {
    req.url().query_pairs().find(|(k, _)| k == key).map(|(_, v)| v.into_owned())
}

fn json(status: StatusCode, value: &serde_json::Value) -> Response {
    let mut res = Response::new(status);
    res.set_body(value.clone());
    res
}

/// A name a client of the native API may use: the node's own metadata (`.diststore/`) is not
/// reachable through it.
pub fn user_name(raw: impl Into<String>) -> Result<crate::content::FileName, ApiError> {
    let name = crate::content::FileName::new(raw)?;
    if crate::node::registry::is_system(name.as_str()) {
        return Err(ApiError::BadRequest(format!(
            "names under {} are reserved for the node's own metadata",
            crate::node::registry::SYSTEM_PREFIX
        )));
    }
    Ok(name)
}

#[cfg(test)]
mod tests {
    use super::percent_decode;

    #[test]
    fn decodes_percent_escapes() {
        assert_eq!(percent_decode("a%20b/%C3%BC").as_deref(), Some("a b/ü"));
        assert_eq!(percent_decode("%zz"), None);
        assert_eq!(percent_decode("%C3"), None);
        assert_eq!(percent_decode("%4"), None);
    }
}
