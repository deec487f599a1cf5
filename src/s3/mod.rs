//! The S3 endpoint: a second listener speaking the S3 REST API over the same store.
//!
//! `s3s` parses requests into typed inputs, verifies SigV4 (headers, presigned URLs,
//! aws-chunked bodies with per-chunk signatures) and writes S3 XML; `service.rs` maps each
//! operation onto the node's use cases. `s3s` is a hyper service, so this listener runs on a
//! small tokio runtime of its own, in its own threads; the node's futures it awaits run on
//! any executor. The object `k` of bucket `b` is the file `b/k`.

mod access;
mod errors;
mod multipart;
mod service;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioIo, TokioTimer};

use crate::limits::Limits;
use crate::node::Node;
use crate::node::registry::AccessKey;

/// Threads serving S3 connections (the store's work runs on its own threads).
const WORKERS: usize = 2;

#[derive(Debug, Clone)]
pub struct S3Config {
    pub listen: SocketAddr,
    /// With a domain, `bucket.DOMAIN` addresses a bucket (virtual-host style) too.
    pub domain: Option<String>,
    pub region: String,
    /// Multipart uploads untouched this long are aborted.
    pub multipart_max_age: Duration,
}

/// Binds the S3 listener and serves it on its own threads until the process ends. Returns
/// the bound address.
pub fn start(node: Arc<Node>, config: S3Config) -> anyhow::Result<SocketAddr> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(WORKERS)
        .thread_name("s3")
        .enable_all()
        .build()?;
    let listener = runtime.block_on(tokio::net::TcpListener::bind(config.listen))?;
    let bound = listener.local_addr()?;
    let service = service::build(node.clone(), &config);
    let limits = node.limits().clone();
    std::thread::Builder::new().name("s3-accept".into()).spawn(move || {
        runtime.block_on(serve(listener, service, limits));
    })?;
    multipart::start_collector(node, config.multipart_max_age);
    Ok(bound)
}

/// hyper reads heads and bodies into one buffer; it must hold a whole head, and below this
/// size body reads get small (more system calls per byte uploaded).
const MIN_BUF: usize = 64 * 1024;

async fn serve(listener: tokio::net::TcpListener, service: s3s::service::S3Service, limits: Arc<Limits>) {
    let front = limits.front;
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                log::warn!("s3: accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        // Full: the connection closes at once (hyper has no cheap way to answer first).
        let Some(pass) = limits.s3_connections.try_enter() else {
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let service = service.clone();
        let handler = hyper::service::service_fn(move |req| handle(service.clone(), req));
        let connection = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(front.header_timeout)
            .max_buf_size(front.max_head_bytes.max(MIN_BUF))
            .serve_connection(TokioIo::new(Idle::new(stream, front.body_idle_timeout)), handler);
        tokio::spawn(async move {
            let _pass = pass;
            if let Err(e) = connection.await {
                log::debug!("s3 connection ended: {e}");
            }
        });
    }
}

/// A connection that fails once nothing moved either way for `limit` while a read waits:
/// hyper has no body timeout, and a stalled body would hold its connection (and upload)
/// forever. Writes count as progress, so a long download whose client sends nothing is
/// not cut; hyper reads a body only while the service wants more, so slow processing is not
/// taken for a stall either.
struct Idle {
    io: tokio::net::TcpStream,
    limit: Duration,
    last: tokio::time::Instant,
    timer: std::pin::Pin<Box<tokio::time::Sleep>>,
}

impl Idle {
    fn new(io: tokio::net::TcpStream, limit: Duration) -> Idle {
        let last = tokio::time::Instant::now();
        Idle { io, limit, last, timer: Box::pin(tokio::time::sleep_until(last + limit)) }
    }
}

impl tokio::io::AsyncRead for Idle {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        use std::task::Poll;
        let this = &mut *self;
        match std::pin::Pin::new(&mut this.io).poll_read(cx, buf) {
            Poll::Pending => {
                let deadline = this.last + this.limit;
                if this.timer.deadline() != deadline {
                    this.timer.as_mut().reset(deadline);
                }
                match this.timer.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Err(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        "the client sent nothing in time",
                    ))),
                    Poll::Pending => Poll::Pending,
                }
            }
            ready => {
                this.last = tokio::time::Instant::now();
                ready
            }
        }
    }
}

impl tokio::io::AsyncWrite for Idle {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        data: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let written = std::pin::Pin::new(&mut self.io).poll_write(cx, data);
        if let std::task::Poll::Ready(Ok(n)) = written
            && n > 0
        {
            self.last = tokio::time::Instant::now();
        }
        written
    }

    fn poll_write_vectored(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let written = std::pin::Pin::new(&mut self.io).poll_write_vectored(cx, bufs);
        if let std::task::Poll::Ready(Ok(n)) = written
            && n > 0
        {
            self.last = tokio::time::Instant::now();
        }
        written
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// Every answer carries `x-amz-request-id`, as S3's do, and every error body names its
/// `Resource`, `RequestId` and a `Message`, wherever in the stack it was raised.
async fn handle(
    service: s3s::service::S3Service,
    req: http::Request<hyper::body::Incoming>,
) -> Result<s3s::HttpResponse, s3s::HttpError> {
    let id = crate::node::registry::random_text(16).to_uppercase();
    let resource = req.uri().path().to_owned();
    let mut res = service.call(req.map(s3s::Body::from)).await?;
    if let Ok(value) = http::HeaderValue::from_str(&id) {
        res.headers_mut().insert("x-amz-request-id", value);
    }
    if res.status().as_u16() >= 400 {
        // Error bodies are small XML documents s3s has already made in full.
        if let Some(body) = res.body_mut().take_bytes() {
            let completed = errors::complete_error_xml(&body, &resource, &id);
            res.headers_mut().remove(http::header::CONTENT_LENGTH);
            *res.body_mut() = s3s::Body::from(completed);
        }
    }
    Ok(res)
}

/// Makes sure a root key exists: the one given (imported as is), else a generated one whose
/// secret goes to `secret_file`. Retries in the background until the cluster takes the write.
pub fn ensure_root_key(node: Arc<Node>, given: Option<(String, String)>, secret_file: std::path::PathBuf) {
    crate::runtime::spawn(async move {
        loop {
            match try_root_key(&node, given.clone(), &secret_file).await {
                Ok(()) => return,
                Err(e) => {
                    log::warn!("s3: could not set up the root key yet ({e}); retrying");
                    crate::runtime::sleep(Duration::from_secs(2)).await;
                }
            }
        }
    });
}

async fn try_root_key(
    node: &Arc<Node>,
    given: Option<(String, String)>,
    secret_file: &std::path::Path,
) -> anyhow::Result<()> {
    if let Some((access_key, secret_key)) = given {
        let existing = node.access_key(&access_key).await?;
        if existing.as_ref().is_none_or(|k| k.secret_key != secret_key || !k.root) {
            let key = Node::new_access_key("root".into(), Some(access_key.clone()), Some(secret_key));
            node.put_access_key(&AccessKey { root: true, ..key }).await?;
        }
        log::info!("s3: root access key {access_key} (given at start)");
        return Ok(());
    }
    if node.access_keys().await?.iter().any(|k| k.root) {
        return Ok(());
    }
    let key = AccessKey { root: true, ..Node::new_access_key("root".into(), None, None) };
    node.put_access_key(&key).await?;
    let text = format!("access_key={}\nsecret_key={}\n", key.access_key, key.secret_key);
    crate::private_file::write_private_replacing(secret_file, text.as_bytes())?;
    log::info!(
        "s3: generated the root access key {}; its secret is in {}",
        key.access_key,
        secret_file.display()
    );
    println!("s3 root access key {} (secret in {})", key.access_key, secret_file.display());
    Ok(())
}
