//! The API token: where it may travel, how it is compared, and how often it may be wrong.
//!
//! The token is accepted only in `Authorization: Bearer`, or as the UI's session cookie
//! that `POST /api/v1/session` sets after checking it once. A token in a URL ends up in
//! logs, browser history and `Referer` headers, so `?token=` is refused outright. Wrong
//! tokens (or cookies) count against the source address; past a limit that address gets
//! `429` until its window ends, right token or not, so guessing stays slow.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::Deserialize;
use sha2::{Digest, Sha256};
use tide::{Next, Response, StatusCode};

use super::{ApiError, Req, State};
use crate::clock::unix_ms;

/// Cookie holding the UI's session after sign-in.
const COOKIE: &str = "diststore_session";
/// How long a UI session lasts before the token is asked for again.
const SESSION: Duration = Duration::from_secs(12 * 3600);
/// Wrong tokens an address may send per window before it is refused for the rest of it.
const MAX_FAILURES: u32 = 10;
const WINDOW: Duration = Duration::from_secs(60);
/// Addresses tracked at most: a flood from many addresses cannot grow the map past this.
const MAX_TRACKED: usize = 10_000;

/// The configured token, kept only as what comparisons need.
pub struct Token {
    /// SHA-256 of the token: comparing digests takes the same time whatever the length.
    digest: [u8; 32],
    /// Key of the session cookies' MACs: they prove the token was given, without being it.
    session_key: [u8; 32],
}

impl Token {
    pub fn new(token: &str) -> Self {
        let session_key =
            crate::crypto::peer_mac(&Sha256::digest(token).into(), &[b"diststore ui session v1"]);
        Self { digest: Sha256::digest(token).into(), session_key }
    }

    fn matches(&self, given: &str) -> bool {
        crate::crypto::macs_equal(&Sha256::digest(given).into(), &self.digest)
    }

    fn session_mac(&self, expires: u64) -> [u8; 32] {
        crate::crypto::peer_mac(&self.session_key, &[b"session", &expires.to_le_bytes()])
    }

    /// A cookie value valid until `expires` (unix seconds).
    fn session_cookie(&self, expires: u64) -> String {
        format!("{expires}.{}", hex::encode(self.session_mac(expires)))
    }

    fn session(&self, value: &str, now_secs: u64) -> Session {
        let Some((expires, mac)) = value.split_once('.') else { return Session::Forged };
        let (Ok(expires), Ok(mac)) = (expires.parse::<u64>(), hex::decode(mac)) else {
            return Session::Forged;
        };
        let Ok(mac) = <[u8; 32]>::try_from(mac.as_slice()) else { return Session::Forged };
        if !crate::crypto::macs_equal(&mac, &self.session_mac(expires)) {
            Session::Forged
        } else if expires <= now_secs {
            Session::Expired
        } else {
            Session::Valid
        }
    }

    #[cfg(test)]
    fn session_valid(&self, value: &str, now_secs: u64) -> bool {
        self.session(value, now_secs) == Session::Valid
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Session {
    Valid,
    /// Ours, but over: not a guess, so not counted against the address (the UI's event
    /// stream retries with it on its own, and must not lock its user out).
    Expired,
    Forged,
}

/// Failed attempts per source address, in fixed windows.
#[derive(Default)]
pub struct Limiter {
    failures: Mutex<HashMap<IpAddr, (Instant, u32)>>,
}

impl Limiter {
    /// `Some(seconds to wait)` while `ip` is over the limit.
    fn blocked(&self, ip: IpAddr, now: Instant) -> Option<u64> {
        let map = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        let (start, count) = *map.get(&ip)?;
        let left = WINDOW.checked_sub(now.duration_since(start)).filter(|l| !l.is_zero())?;
        // Rounded up: a client that waits what Retry-After says is let in.
        (count >= MAX_FAILURES).then(|| left.as_secs() + u64::from(left.subsec_nanos() > 0))
    }

    fn fail(&self, ip: IpAddr, now: Instant) {
        let mut map = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        if !map.contains_key(&ip) && map.len() >= MAX_TRACKED {
            map.retain(|_, (start, _)| now.duration_since(*start) < WINDOW);
            if map.len() >= MAX_TRACKED {
                // Still full of live windows: the oldest one goes (an O(n) pass, only then).
                if let Some(oldest) = map.iter().min_by_key(|(_, (start, _))| *start).map(|(ip, _)| *ip) {
                    map.remove(&oldest);
                }
            }
        }
        let entry = map.entry(ip).or_insert((now, 0));
        if now.duration_since(entry.0) >= WINDOW {
            *entry = (now, 0);
        }
        entry.1 += 1;
    }
}

/// Where the client connects from (the TCP peer, never a header a client writes). An IPv6
/// client counts by its /64, which one host usually has whole: per address, it could rotate
/// past the limit.
fn source(req: &Req) -> IpAddr {
    let ip = req
        .peer_addr()
        .and_then(|a| a.parse::<std::net::SocketAddr>().ok())
        .map_or(IpAddr::from([0, 0, 0, 0]), |a| a.ip().to_canonical());
    match ip {
        IpAddr::V6(v6) => IpAddr::V6(std::net::Ipv6Addr::from(u128::from(v6) & !u128::from(u64::MAX))),
        v4 => v4,
    }
}

fn cookie(req: &Req, name: &str) -> Option<String> {
    let header = req.header("Cookie")?;
    header
        .iter()
        .flat_map(|v| v.as_str().split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_owned())
}

enum Credential {
    None,
    Valid,
    Wrong,
}

fn credential(req: &Req, token: &Token) -> Credential {
    if let Some(auth) = req.header("Authorization") {
        return match auth.as_str().strip_prefix("Bearer ") {
            Some(given) if token.matches(given.trim()) => Credential::Valid,
            _ => Credential::Wrong,
        };
    }
    match cookie(req, COOKIE).map(|value| token.session(&value, unix_ms() / 1000)) {
        Some(Session::Valid) => Credential::Valid,
        Some(Session::Forged) => Credential::Wrong,
        Some(Session::Expired) | None => Credential::None,
    }
}

/// Paths the token guards: the API and the metrics. Peers prove the cluster secret instead;
/// the OpenAPI document describes the API and holds nothing secret; signing in is how a token
/// is given (and rate-limited like any other attempt).
fn guarded(path: &str) -> bool {
    (path.starts_with("/api/") || path == "/metrics")
        && !matches!(path, "/api/v1/peer" | "/api/v1/openapi.json" | "/api/v1/session")
}

pub fn require_token<'a>(
    req: Req,
    next: Next<'a, State>,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = tide::Result> + Send + 'a>> {
    Box::pin(async move {
        let Some(token) = req.state().api_token.clone() else {
            return Ok(next.run(req).await);
        };
        if !guarded(req.url().path()) {
            return Ok(next.run(req).await);
        }
        if req.url().query_pairs().any(|(k, _)| k == "token") {
            return Ok(ApiError::Unauthorized(
                "the API token is not accepted in the URL (?token=), where logs and browser history keep it; \
                 send it as Authorization: Bearer <token>"
                    .into(),
            )
            .into_response());
        }
        let ip = source(&req);
        let now = Instant::now();
        let limiter = &req.state().limiter;
        if let Some(wait) = limiter.blocked(ip, now) {
            return Ok(too_many(wait).into_response());
        }
        match credential(&req, &token) {
            Credential::Valid => Ok(next.run(req).await),
            Credential::Wrong => {
                limiter.fail(ip, now);
                Ok(ApiError::Unauthorized("the API token (or session) is not valid".into()).into_response())
            }
            Credential::None => Ok(ApiError::Unauthorized(
                "a valid API token is required (Authorization: Bearer <token>)".into(),
            )
            .into_response()),
        }
    })
}

fn too_many(wait: u64) -> ApiError {
    ApiError::TooManyRequests {
        message: format!("too many wrong API tokens from this address; try again in {wait} s"),
        retry_after_secs: wait,
    }
}

#[derive(Deserialize)]
struct SignIn {
    token: String,
}

/// `POST /api/v1/session` `{"token": "..."}`: checks the token once and sets the UI's session
/// cookie (`HttpOnly`: page scripts never read it; `SameSite=Strict`: other sites' pages never
/// send it). Without a configured token there is nothing to sign in to.
pub async fn sign_in(mut req: Req) -> Result<Response, ApiError> {
    let Some(token) = req.state().api_token.clone() else {
        return Ok(Response::new(StatusCode::NoContent));
    };
    let ip = source(&req);
    let now = Instant::now();
    if let Some(wait) = req.state().limiter.blocked(ip, now) {
        return Err(too_many(wait));
    }
    let body: SignIn = super::small_json(&mut req, r#"{"token": "..."}"#).await?;
    if !token.matches(body.token.trim()) {
        req.state().limiter.fail(ip, now);
        return Err(ApiError::Unauthorized("that API token is not valid".into()));
    }
    let expires = unix_ms() / 1000 + SESSION.as_secs();
    let mut res = Response::new(StatusCode::NoContent);
    res.insert_header(
        "Set-Cookie",
        format!(
            "{COOKIE}={}; Path=/; Max-Age={}; HttpOnly; SameSite=Strict",
            token.session_cookie(expires),
            SESSION.as_secs()
        ),
    );
    Ok(res)
}

/// `DELETE /api/v1/session`: clears the cookie.
pub async fn sign_out(_req: Req) -> Result<Response, ApiError> {
    let mut res = Response::new(StatusCode::NoContent);
    res.insert_header("Set-Cookie", format!("{COOKIE}=; Path=/; Max-Age=0; HttpOnly; SameSite=Strict"));
    Ok(res)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_and_limits() {
        let t = Token::new("0123456789abcdef0123456789abcdef");
        assert!(t.matches("0123456789abcdef0123456789abcdef") && !t.matches("0123456789abcdef"));
        let s = t.session_cookie(2000);
        assert!(t.session_valid(&s, 1999));
        assert_eq!(t.session(&s, 2000), Session::Expired);
        assert!(!t.session_valid(&s.replace("2000.", "2001."), 1999), "forged expiry");
        assert!(!Token::new("another token, another key 000000").session_valid(&s, 1999));
        assert!(!t.session_valid("garbage", 0) && !t.session_valid("1.zz", 0));

        let l = Limiter::default();
        let (ip, now) = (IpAddr::from([10, 0, 0, 1]), Instant::now());
        for _ in 0..MAX_FAILURES {
            assert_eq!(l.blocked(ip, now), None);
            l.fail(ip, now);
        }
        assert!(l.blocked(ip, now).is_some());
        assert_eq!(l.blocked(IpAddr::from([10, 0, 0, 2]), now), None);
        assert_eq!(l.blocked(ip, now + WINDOW), None, "the window ends");
    }

    #[test]
    fn the_limiter_tracks_a_bounded_number_of_addresses() {
        let l = Limiter::default();
        let now = Instant::now();
        for i in 0..(MAX_TRACKED as u32 + 500) {
            l.fail(IpAddr::from(i.to_be_bytes()), now + Duration::from_micros(u64::from(i)));
        }
        let map = l.failures.lock().unwrap();
        assert_eq!(map.len(), MAX_TRACKED);
        assert!(
            map.contains_key(&IpAddr::from((MAX_TRACKED as u32 + 499).to_be_bytes())),
            "the newest is kept"
        );
        assert!(!map.contains_key(&IpAddr::from(0u32.to_be_bytes())), "the oldest went");
    }
}
