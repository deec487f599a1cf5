//! The connection under the HTTP parser, bounded: async-h1 reads a head line by line and
//! checks its length only once a line ends, and it neither times out a body nor limits the
//! unread body it discards after a response. [`Guarded`] sits between the socket and the
//! parser and enforces what it cannot:
//!
//! - a head (up to its blank line) longer than `--max-head-size` fails the read before it is
//!   buffered, and the connection gets `431`;
//! - a head must arrive within `--header-timeout` (also the idle time of a kept-alive
//!   connection);
//! - a body read that gets nothing for `--body-idle-timeout` fails, which fails the request
//!   (an upload is dropped) and closes the connection;
//! - a body the handler did not read is drained after the response only up to [`DRAIN_MAX`],
//!   under the idle timeout, and the response says `Connection: close`.
//!
//! The phase follows the request: the reader sees the head's end itself; the endpoint wrapper
//! ([`Guarded::after_response`]) says whether the body was read to its end.
//!
//! Writes of a large sized response are gathered ([`Guarded::gather_writes`]): async-h1 copies
//! a body through an 8 KiB buffer, and a send per 8 KiB cost more CPU than the whole
//! decryption of a download. The gathered bytes go out when [`GATHER`] is full and at the
//! flush that ends every response; nothing else is held back (a `100 Continue`, a peer link's
//! frames and a streamed body of unknown length are written as they come).

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures_lite::io::{AsyncBufRead, AsyncRead, AsyncWrite};

use crate::limits::{FrontLimits, Limits};
use crate::runtime;

/// Unread body bytes read past after a response before the connection is simply closed.
/// Most clients send their whole body before they read the answer, and a close while they
/// still send loses the answer to a reset: this lets a refused upload of modest size end
/// cleanly, while the idle timeout keeps a stalled one from holding the connection.
pub const DRAIN_MAX: u64 = 64 << 20;

type Timer = Pin<Box<dyn Future<Output = ()> + Send>>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Reading a head: `bytes` of it so far, `matched` bytes of its closing `\r\n\r\n` seen,
    /// since the parser first asked for it (not since the last response, which may have taken
    /// long to send).
    Head { started: Option<Instant>, bytes: usize, matched: u8 },
    /// Reading a body: each read must make progress within the idle timeout.
    Body,
    /// Reading past a body the handler left: at most `left` more bytes.
    Drain { left: u64 },
    /// Upgraded (a peer link): the protocol on top has its own liveness checks.
    Open,
}

/// Why the connection failed, if the guard failed it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    HeadTooLarge,
    HeaderTimeout,
    BodyTimeout,
    /// The request target has a `.` or `..` path segment, which the parser would resolve to
    /// another path: `a/../victim` would act on `victim`.
    DotSegment,
}

struct State {
    phase: Phase,
    timer: Option<Timer>,
    refusal: Option<Refusal>,
    /// The request line of the head being read, until its end is seen (then checked).
    request_line: Vec<u8>,
    line_done: bool,
}

/// Bytes gathered before a send while a large response is written.
pub const GATHER: usize = 256 * 1024;

/// Response bytes accepted but not yet sent: `buf[sent..]`. Gathering only while `on`.
#[derive(Default)]
struct Outgoing {
    on: bool,
    buf: Vec<u8>,
    sent: usize,
}

/// A socket whose reads are bounded as the module says. Clones share the state.
#[derive(Clone)]
pub struct Guarded {
    io: runtime::net::TcpStream,
    limits: Arc<Limits>,
    state: Arc<Mutex<State>>,
    out: Arc<Mutex<Outgoing>>,
}

impl Guarded {
    pub fn new(io: runtime::net::TcpStream, limits: Arc<Limits>) -> Guarded {
        let state =
            State { phase: head(), timer: None, refusal: None, request_line: Vec::new(), line_done: false };
        Guarded { io, limits, state: Arc::new(Mutex::new(state)), out: Arc::default() }
    }

    /// Gathers the writes of the response about to be sent into sends of up to [`GATHER`]
    /// bytes, until the flush that ends it. Only for a body of known length, which async-h1
    /// writes to its end and then flushes: a body that streams events as they happen must
    /// not wait in the buffer.
    pub fn gather_writes(&self) {
        self.out.lock().unwrap_or_else(|p| p.into_inner()).on = true;
    }

    fn front(&self) -> &FrontLimits {
        &self.limits.front
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn refusal(&self) -> Option<Refusal> {
        self.lock().refusal
    }

    /// Called when the endpoint has answered: with the body read to its end (or none) the
    /// next head may follow; an upgrade hands the socket on; otherwise what is left of the
    /// body is drained within bounds, and the caller closes the connection after the response.
    pub fn after_response(&self, body_done: bool, upgraded: bool) {
        let mut state = self.lock();
        state.timer = None;
        state.phase = if upgraded {
            Phase::Open
        } else if body_done {
            state.request_line.clear();
            state.line_done = false;
            head()
        } else {
            Phase::Drain { left: DRAIN_MAX }
        };
    }
}

fn head() -> Phase {
    Phase::Head { started: None, bytes: 0, matched: 0 }
}

impl AsyncRead for Guarded {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let front = *this.front();
        let mut state = this.state.lock().unwrap_or_else(|p| p.into_inner());
        if state.refusal.is_some() {
            return Poll::Ready(Err(io::Error::other("the connection was refused")));
        }
        // Never ask for more than the head may still hold, so a long line is refused
        // before it is read, not after.
        if let Phase::Head { started: started @ None, .. } = &mut state.phase {
            *started = Some(Instant::now());
        }
        let want = match state.phase {
            Phase::Head { bytes, .. } => {
                buf.len().min(front.max_head_bytes + 1 - bytes.min(front.max_head_bytes))
            }
            Phase::Drain { left: 0 } => {
                return Poll::Ready(Err(io::Error::other("the unread request body is too long to drain")));
            }
            _ => buf.len(),
        };
        match Pin::new(&mut this.io).poll_read(cx, &mut buf[..want]) {
            Poll::Ready(Ok(n)) => {
                if matches!(state.phase, Phase::Head { .. }) && !state.line_done {
                    let read = &buf[..n];
                    let line_end = read.iter().position(|&b| b == b'\n');
                    state.request_line.extend_from_slice(&read[..line_end.unwrap_or(read.len())]);
                    if line_end.is_some() {
                        state.line_done = true;
                        if has_dot_segment(&state.request_line) {
                            state.refusal = Some(Refusal::DotSegment);
                            return Poll::Ready(Err(io::Error::new(
                                io::ErrorKind::InvalidData,
                                "the request path has a dot segment",
                            )));
                        }
                    }
                }
                match &mut state.phase {
                    Phase::Head { bytes, matched, .. } => {
                        if let Some(end) = head_end(&buf[..n], matched) {
                            *bytes += end;
                            state.phase = Phase::Body;
                            state.timer = None;
                        } else {
                            *bytes += n;
                            if *bytes > front.max_head_bytes {
                                state.refusal = Some(Refusal::HeadTooLarge);
                                Limits::count(&this.limits.heads_refused);
                                return Poll::Ready(Err(io::Error::new(
                                    io::ErrorKind::InvalidData,
                                    "the request head is too long",
                                )));
                            }
                        }
                    }
                    Phase::Body => state.timer = None,
                    Phase::Drain { left } => {
                        *left = left.saturating_sub(n as u64);
                        state.timer = None;
                    }
                    Phase::Open => {}
                }
                this.limits.bytes_received.fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
                Poll::Ready(Ok(n))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => {
                let (limit, refusal) = match state.phase {
                    Phase::Head { started, .. } => {
                        let waited = started.map_or(Duration::ZERO, |s| s.elapsed());
                        (front.header_timeout.saturating_sub(waited), Refusal::HeaderTimeout)
                    }
                    Phase::Body | Phase::Drain { .. } => (front.body_idle_timeout, Refusal::BodyTimeout),
                    Phase::Open => return Poll::Pending,
                };
                let timer = state.timer.get_or_insert_with(|| Box::pin(runtime::sleep(limit)));
                if timer.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                state.timer = None;
                let timed_out = io::Error::new(io::ErrorKind::TimedOut, "the client sent nothing in time");
                match (refusal, state.phase) {
                    // An idle kept-alive connection that sent nothing of a next request just
                    // ends, unanswered; only a started head counts as timed out.
                    (Refusal::HeaderTimeout, Phase::Head { bytes: 0, .. }) => {
                        return Poll::Ready(Err(timed_out));
                    }
                    (Refusal::HeaderTimeout, _) => Limits::count(&this.limits.header_timeouts),
                    _ => Limits::count(&this.limits.body_timeouts),
                }
                state.refusal = Some(refusal);
                Poll::Ready(Err(timed_out))
            }
        }
    }
}

/// Whether a request line's target has a `.` or `..` path segment, also written with `%2e`
/// (which URL parsers resolve the same way).
fn has_dot_segment(line: &[u8]) -> bool {
    let mut parts = line.split(|&b| b == b' ');
    let (Some(_method), Some(target)) = (parts.next(), parts.next()) else { return false };
    let path = target.split(|&b| b == b'?' || b == b'#').next().unwrap_or_default();
    path.split(|&b| b == b'/').any(|segment| {
        let lower = segment.to_ascii_lowercase();
        let dots = lower.windows(3).filter(|w| *w == b"%2e").count();
        let plain = lower.iter().filter(|&&b| b == b'.').count();
        let rest = lower.len() - 3 * dots - plain;
        rest == 0 && (1..=2).contains(&(dots + plain))
    })
}

/// Where in `data` the head's closing blank line ends (bytes of the head in `data`), carrying
/// how much of `\r\n\r\n` was matched across reads in `matched`.
fn head_end(data: &[u8], matched: &mut u8) -> Option<usize> {
    for (i, &b) in data.iter().enumerate() {
        *matched = match (*matched, b) {
            (0 | 2, b'\r') => *matched + 1,
            (1 | 3, b'\n') => *matched + 1,
            (_, b'\r') => 1,
            _ => 0,
        };
        if *matched == 4 {
            *matched = 0;
            return Some(i + 1);
        }
    }
    None
}

/// Sends what `out` holds; `Ready(Ok)` once all of it is sent.
fn poll_send_gathered(
    io: &mut runtime::net::TcpStream,
    out: &mut Outgoing,
    cx: &mut Context<'_>,
) -> Poll<io::Result<()>> {
    while out.sent < out.buf.len() {
        match Pin::new(&mut *io).poll_write(cx, &out.buf[out.sent..]) {
            Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
            Poll::Ready(Ok(n)) => out.sent += n,
            Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
            Poll::Pending => return Poll::Pending,
        }
    }
    out.buf.clear();
    out.sent = 0;
    Poll::Ready(Ok(()))
}

impl Guarded {
    /// Takes `buf` into the gathered sends of a large response, or writes it straight through.
    fn write_gathered(&mut self, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let mut out = self.out.lock().unwrap_or_else(|p| p.into_inner());
        if !out.on && out.buf.is_empty() {
            drop(out);
            return Pin::new(&mut self.io).poll_write(cx, buf);
        }
        if out.buf.len() + buf.len() > GATHER {
            // Full: send it before taking more, so the order of bytes stays.
            std::task::ready!(poll_send_gathered(&mut self.io, &mut out, cx))?;
        }
        if !out.on || buf.len() >= GATHER {
            drop(out);
            return Pin::new(&mut self.io).poll_write(cx, buf);
        }
        if out.buf.capacity() == 0 {
            out.buf.reserve_exact(GATHER);
        }
        out.buf.extend_from_slice(buf);
        Poll::Ready(Ok(buf.len()))
    }
}

impl AsyncWrite for Guarded {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let written = this.write_gathered(cx, buf);
        if let Poll::Ready(Ok(n)) = written {
            this.limits.bytes_sent.fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
        }
        written
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        {
            let mut out = this.out.lock().unwrap_or_else(|p| p.into_inner());
            std::task::ready!(poll_send_gathered(&mut this.io, &mut out, cx))?;
            // The response is out: the next one is written as it comes unless it asks again,
            // and the buffer is not kept for a connection that may idle.
            *out = Outgoing::default();
        }
        Pin::new(&mut this.io).poll_flush(cx)
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        {
            let mut out = this.out.lock().unwrap_or_else(|p| p.into_inner());
            std::task::ready!(poll_send_gathered(&mut this.io, &mut out, cx))?;
        }
        Pin::new(&mut this.io).poll_close(cx)
    }
}

/// A request body that notes when it has been read to its end: its declared length, or the
/// end of a chunked one. (The `Body` around it stops at its length without asking for more,
/// so the end of a sized body is seen by counting.)
pub struct Tracked {
    body: tide::Body,
    left: Option<usize>,
    done: Arc<AtomicBool>,
}

impl Tracked {
    /// Wraps `req`'s body; the flag says whether it was read to its end.
    pub fn wrap(req: &mut tide::http::Request) -> Arc<AtomicBool> {
        let body = req.take_body();
        let len = body.len();
        let done = Arc::new(AtomicBool::new(len == Some(0)));
        let mime = body.mime().clone();
        let mut tracked = tide::Body::from_reader(Tracked { body, left: len, done: done.clone() }, len);
        tracked.set_mime(mime);
        req.set_body(tracked);
        done
    }

    fn advance(&mut self, n: usize, asked: bool) {
        match &mut self.left {
            Some(left) => {
                *left = left.saturating_sub(n);
                if *left == 0 {
                    self.done.store(true, Ordering::Release);
                }
            }
            None if n == 0 && asked => self.done.store(true, Ordering::Release),
            None => {}
        }
    }
}

impl AsyncRead for Tracked {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let read = Pin::new(&mut this.body).poll_read(cx, buf);
        if let Poll::Ready(Ok(n)) = read {
            this.advance(n, !buf.is_empty());
        }
        read
    }
}

impl AsyncBufRead for Tracked {
    fn poll_fill_buf(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<&[u8]>> {
        let this = self.get_mut();
        let filled = Pin::new(&mut this.body).poll_fill_buf(cx);
        if let Poll::Ready(Ok([])) = filled {
            this.done.store(true, Ordering::Release);
        }
        filled
    }

    fn consume(self: Pin<&mut Self>, amt: usize) {
        let this = self.get_mut();
        Pin::new(&mut this.body).consume(amt);
        this.advance(amt, false);
    }
}

#[cfg(test)]
mod tests {
    use super::head_end;

    #[test]
    fn dot_segments_are_seen_in_every_spelling() {
        use super::has_dot_segment;
        for bad in [
            "GET /api/v1/files/a/../victim HTTP/1.1",
            "DELETE /api/v1/files/./x HTTP/1.1",
            "GET /api/v1/files/a/%2E%2e/victim HTTP/1.1",
            "GET /api/v1/files/a/.%2e HTTP/1.1",
            "GET /.. HTTP/1.1",
            "PUT /api/v1/files/x/..?y=1 HTTP/1.1",
        ] {
            assert!(has_dot_segment(bad.as_bytes()), "{bad}");
        }
        for good in [
            "GET /api/v1/files/a..b HTTP/1.1",
            "GET /api/v1/files/.hidden/x HTTP/1.1",
            "GET /api/v1/files/... HTTP/1.1",
            "GET /api/v1/files?prefix=../ HTTP/1.1",
            "GET / HTTP/1.1",
        ] {
            assert!(!has_dot_segment(good.as_bytes()), "{good}");
        }
    }

    #[test]
    fn the_end_of_a_head_is_found_across_reads() {
        let mut matched = 0;
        assert_eq!(head_end(b"GET / HTTP/1.1\r\nHost: x\r\n\r\nbody", &mut matched), Some(27));
        let mut matched = 0;
        assert_eq!(head_end(b"GET / HTTP/1.1\r\n\r", &mut matched), None);
        assert_eq!(head_end(b"\nrest", &mut matched), Some(1));
        let mut matched = 0;
        assert_eq!(head_end(b"a\r\r\n\r\n", &mut matched), Some(6));
    }
}
