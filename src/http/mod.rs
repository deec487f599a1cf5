//! The tide app: routes, the error map, auth, and the embedded UI.

mod assets;
mod auth;
mod blobs;
mod compat;
mod conn;
pub mod error;
mod files;
mod guard;
mod keys;
mod metrics;
mod nodes;
mod peer;
mod requests;
mod serve_content;
mod shares;
mod status;
pub mod uploads;
mod zip;

use std::sync::Arc;

use tide::{Request, Response, StatusCode};

use crate::config::Config;
use crate::node::Node;
use crate::runtime;
pub use error::ApiError;

#[derive(Clone)]
pub struct State {
    pub node: Arc<Node>,
    api_token: Option<Arc<auth::Token>>,
    limiter: Arc<auth::Limiter>,
    hosts: Arc<guard::Hosts>,
    /// Resumable uploads (`None` in apps built without a spool).
    uploads: Option<Arc<uploads::Spool>>,
    /// Requests served, for `/metrics`.
    http: Arc<metrics::HttpMetrics>,
    /// Log a line per request (`--access-log`).
    access_log: bool,
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
    access_log: bool,
) -> tide::Server<State> {
    let mut app = tide::with_state(State {
        node,
        api_token: api_token.map(|t| Arc::new(auth::Token::new(&t))),
        limiter: Default::default(),
        hosts: Arc::new(hosts),
        uploads,
        http: Default::default(),
        access_log,
    });
    app.with(requests::observe);
    app.with(tide::utils::After(json_errors));
    app.with(guard::guard);
    app.with(auth::require_token);
    app.at("/health").get(health);
    app.at("/metrics").get(endpoint!(metrics::metrics));
    app.at("/api/v1/status").get(endpoint!(status::status));
    app.at("/api/v1/peer").get(endpoint!(peer::upgrade));
    app.at("/api/v1/events").get(tide::sse::endpoint(status::events));
    app.at("/api/v1/session").post(endpoint!(auth::sign_in)).delete(endpoint!(auth::sign_out));
    app.at("/api/v1/openapi.json").get(endpoint!(assets::openapi));
    app.at("/api/v1/files").get(endpoint!(files::list));
    app.at("/api/v1/move").post(endpoint!(files::relocate_move));
    app.at("/api/v1/copy").post(endpoint!(files::relocate_copy));
    app.at("/api/v1/zip").post(endpoint!(zip::download));
    app.at("/api/v1/shares").post(endpoint!(shares::create)).delete(endpoint!(shares::revoke));
    app.at("/share/:token").get(endpoint!(shares::get));
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
    app.at("/api/v1/nodes").get(endpoint!(nodes::list));
    app.at("/api/v1/nodes/:id/drain").post(endpoint!(nodes::drain));
    app.at("/api/v1/nodes/:id/remove").post(endpoint!(nodes::remove));
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

/// Binds, starts the cluster with this node's URL, and serves connections until a shutdown
/// begins ([`Node::begin_shutdown`]).
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
    let limits = node.limits().clone();
    let spool = uploads::Spool::open(uploads::UploadConfig {
        dir: config.data_dir.join("uploads"),
        expiry: config.upload_expiry,
        max_uploads: config.max_resumable_uploads,
        max_spool_bytes: config.upload_spool_bytes,
    })?;
    let running = node.running("upload expiry");
    let sweeper = spool.clone();
    let sweeper_stop = shutdown.clone();
    runtime::spawn(async move {
        sweeper.run_sweeper(sweeper_stop).await;
        drop(running);
    });
    let app =
        app(node.clone(), config.api_token.clone(), guard::Hosts(names), Some(spool), config.access_log);
    // Connections being told 503: each holds its socket for at most REFUSE_FOR.
    let refusing = crate::limits::Gate::new(REFUSING_MAX);
    loop {
        // A shutdown stops accepting here (the listener closes as this returns); requests on
        // connections already open go on, and new uploads among them get 503.
        let accepted = futures_lite::future::or(async { Some(listener.accept().await) }, async {
            node.stopping().await;
            None
        })
        .await;
        let Some(accepted) = accepted else { return Ok(()) };
        let (stream, peer) = match accepted {
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
        let Some(pass) = limits.http_connections.try_enter() else {
            // Full: a short 503 where that costs little, else the connection just closes.
            if let Some(refusal) = refusing.try_enter() {
                runtime::spawn(async move {
                    let _refusal = refusal;
                    refuse(
                        stream,
                        "503 Service Unavailable",
                        "the node serves as many connections as it may; retry later",
                    )
                    .await;
                });
            }
            continue;
        };
        let app = app.clone();
        let limits = limits.clone();
        runtime::spawn(async move {
            let _pass = pass;
            let io = conn::Guarded::new(stream.clone(), limits);
            let guarded = io.clone();
            // Known to handlers (the peer endpoint reaches a peer without --advertise by it).
            let peer = peer.to_string();
            let serve = |mut req: tide::http::Request| {
                req.set_peer_addr(Some(peer.clone()));
                let body_done = conn::Tracked::wrap(&mut req);
                let app = app.clone();
                let guarded = guarded.clone();
                async move {
                    let mut res: tide::http::Response = app.respond(req).await?;
                    let upgraded = res.status() == StatusCode::SwitchingProtocols;
                    if !upgraded && res.len().is_some_and(|len| len >= conn::GATHER) {
                        guarded.gather_writes();
                    }
                    let body_done = body_done.load(std::sync::atomic::Ordering::Acquire);
                    guarded.after_response(body_done, upgraded);
                    if !body_done && !upgraded {
                        // What is left of the body is read past only so far: the client
                        // must not send another request on this connection.
                        res.insert_header("Connection", "close");
                    }
                    Ok(res)
                }
            };
            if let Err(e) = async_h1::accept(io.clone(), serve).await {
                log::debug!("connection ended: {e}");
            }
            match io.refusal() {
                Some(conn::Refusal::HeadTooLarge) => {
                    let message = "the request head is longer than the node accepts (--max-head-size)";
                    refuse(stream, "431 Request Header Fields Too Large", message).await;
                }
                Some(conn::Refusal::HeaderTimeout) => {
                    refuse(stream, "408 Request Timeout", "the request head did not arrive in time").await;
                }
                Some(conn::Refusal::DotSegment) => {
                    let message = "the request path has a \".\" or \"..\" segment, which would \
                                   act on another path";
                    refuse(stream, "400 Bad Request", message).await;
                }
                _ => {}
            }
        });
    }
}

/// Connections being refused with a status at once, beyond the limit of open ones.
const REFUSING_MAX: usize = 64;
/// What a refused connection may still send that is read past (its request, in part).
const REFUSE_DRAIN: u64 = 1 << 20;
/// How long a refused connection may take to receive its answer.
const REFUSE_FOR: std::time::Duration = std::time::Duration::from_secs(1);

/// Answers a connection the node will not serve with `status` and an error body, then closes
/// it. What the client sent is read past briefly so the answer is not lost to a reset.
async fn refuse(mut stream: runtime::net::TcpStream, status: &str, message: &str) {
    use futures_lite::{AsyncReadExt, AsyncWriteExt};
    let body = serde_json::json!({ "error": message }).to_string();
    let head = format!(
        "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    );
    let answer = async {
        stream.write_all(head.as_bytes()).await?;
        stream.write_all(body.as_bytes()).await?;
        stream.flush().await?;
        let _ = stream.shutdown(std::net::Shutdown::Write);
        let mut sink = [0u8; 4096];
        let mut left = REFUSE_DRAIN;
        while left > 0 {
            let n = stream.read(&mut sink).await?;
            if n == 0 {
                break;
            }
            left = left.saturating_sub(n as u64);
        }
        Ok::<_, std::io::Error>(())
    };
    let _ = runtime::timeout(REFUSE_FOR, answer).await;
}

/// `200 ok`, or `503` naming what is wrong: the storage writer stopped or is reopening the
/// database, the disk is below its reserve, or a background loop stopped.
async fn health(req: Req) -> tide::Result<Response> {
    let problems = req.state().node.problems().await;
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

/// Largest JSON request body read (a move's two names, a share, a sign-in).
const MAX_JSON: u64 = 64 * 1024;

/// A small JSON request body, read with a bound (`body_json` reads any length into memory).
/// `shape` says what was expected, for the error.
async fn small_json<T: serde::de::DeserializeOwned>(req: &mut Req, shape: &str) -> Result<T, ApiError> {
    let bytes = bounded_body(req, MAX_JSON).await?;
    serde_json::from_slice(&bytes).map_err(|e| ApiError::BadRequest(format!("expected JSON {shape}: {e}")))
}

/// A request body of at most `limit` bytes, else `413` before more than that is read.
async fn bounded_body(req: &mut Req, limit: u64) -> Result<Vec<u8>, ApiError> {
    use futures_lite::AsyncReadExt;
    let mut bytes = Vec::new();
    req.take_body()
        .take(limit + 1)
        .read_to_end(&mut bytes)
        .await
        .map_err(|e| ApiError::BadRequest(format!("reading the request body failed: {e}")))?;
    if bytes.len() as u64 > limit {
        return Err(ApiError::TooLarge(format!("a request body here is at most {limit} bytes")));
    }
    Ok(bytes)
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
