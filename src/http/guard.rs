//! Browser-borne attacks on a node: a page on another site sending requests to it (CSRF), and a
//! page whose host name resolves to the node (DNS rebinding). Both reach the node from the
//! user's own browser, so neither loopback nor the lack of CORS stops them.

use tide::{Next, Request, StatusCode};

use super::State;
use super::error::json_error;

/// The host names this node answers to, beside IP literals (which no rebinding can use) and
/// `localhost`: its advertised host and `--allowed-host`.
#[derive(Debug, Clone, Default)]
pub struct Hosts(pub Vec<String>);

impl Hosts {
    fn allows(&self, host: &str) -> bool {
        let name = strip_port(host);
        let bare = name.trim_start_matches('[').trim_end_matches(']');
        bare.parse::<std::net::IpAddr>().is_ok()
            || bare.eq_ignore_ascii_case("localhost")
            || self.0.iter().any(|h| h.eq_ignore_ascii_case(bare))
    }
}

fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        return host.split_once(']').map_or(host, |(h, _)| &host[..h.len() + 1]);
    }
    host.rsplit_once(':').filter(|(_, p)| p.bytes().all(|b| b.is_ascii_digit())).map_or(host, |(h, _)| h)
}

/// Whether a request that changes state was sent by a page of another site: its browser says
/// so (`Sec-Fetch-Site`), or names an `Origin` other than the node itself.
fn cross_site(req: &Request<State>) -> bool {
    if let Some(site) = req.header("Sec-Fetch-Site").map(|v| v.as_str())
        && site != "same-origin"
        && site != "none"
    {
        return true;
    }
    match (
        req.header("Origin").map(|v| v.as_str().to_owned()),
        req.header("Host").map(|v| v.as_str().to_owned()),
    ) {
        (None, _) => false,
        (Some(origin), Some(host)) => {
            url::Url::parse(&origin).ok().and_then(|u| {
                let h = u.host_str()?.to_owned();
                Some(match u.port() {
                    Some(p) => format!("{h}:{p}"),
                    None => h,
                })
            }) != Some(host)
        }
        (Some(_), None) => true,
    }
}

pub(super) fn guard<'a>(
    req: Request<State>,
    next: Next<'a, State>,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = tide::Result> + Send + 'a>> {
    Box::pin(async move {
        let host = req.header("Host").map(|v| v.as_str().to_owned()).unwrap_or_default();
        if !req.state().hosts.allows(&host) {
            return Ok(json_error(
                StatusCode::MisdirectedRequest,
                &format!(
                    "this node does not answer to the host name {:?}; reach it by IP address, \
                     localhost or its --advertise name, or add --allowed-host",
                    strip_port(&host)
                ),
            ));
        }
        let changes = !matches!(req.method(), tide::http::Method::Get | tide::http::Method::Head);
        if changes && cross_site(&req) {
            return Ok(json_error(
                StatusCode::Forbidden,
                "refused a request another site's page sent on your behalf (Origin / Sec-Fetch-Site)",
            ));
        }
        Ok(next.run(req).await)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_allowed_are_ip_literals_localhost_and_the_named_ones() {
        let hosts = Hosts(vec!["nas.example".into()]);
        for ok in
            ["127.0.0.1:8080", "10.1.2.3", "[::1]:8080", "localhost:8080", "LOCALHOST", "nas.example:8080"]
        {
            assert!(hosts.allows(ok), "{ok}");
        }
        for bad in ["evil.example", "evil.example:8080", "127.0.0.1.evil.example", "", "nas.example.evil"] {
            assert!(!hosts.allows(bad), "{bad}");
        }
    }
}
