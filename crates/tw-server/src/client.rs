//! Who is calling: the TCP peer, or, when the peer is a trusted proxy, the address that proxy
//! reports in `X-Forwarded-For`.
//!
//! `X-Forwarded-For` is sender-chosen text: it is read only when the connection comes from one of
//! the operator's trusted proxies (`--trusted-proxy CIDR`), and then from the right, skipping
//! trusted hops, so a client cannot pick the address it is counted under by prepending entries.

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::HeaderMap;
use axum::http::request::Parts;
use ipnet::IpNet;
use std::convert::Infallible;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

/// The proxies whose `X-Forwarded-For` is believed.
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies(Vec<IpNet>);

impl TrustedProxies {
    pub fn new(nets: Vec<IpNet>) -> TrustedProxies {
        TrustedProxies(nets)
    }

    /// Parses `10.0.0.0/8` or a bare address (`192.0.2.7`, a /32 or /128).
    pub fn parse_cidr(s: &str) -> Result<IpNet, String> {
        let s = s.trim();
        s.parse::<IpNet>()
            .or_else(|_| s.parse::<IpAddr>().map(IpNet::from))
            .map_err(|_| format!("'{s}' is not an address or CIDR range (e.g. 10.0.0.0/8 or 192.0.2.7)"))
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        self.0.iter().any(|n| n.contains(&ip))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The client's address for a request from `peer` with these headers.
    pub fn client_ip(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let peer = canonical(peer);
        if !self.contains(peer) {
            return peer;
        }
        // Every X-Forwarded-For header, in order, as one list; walked from the nearest hop. Split
        // as bytes and each hop decoded alone: a proxy appends the address it saw to the line the
        // client sent, so one stray byte of the client's (not UTF-8, not visible ASCII) must not
        // make the whole line unreadable and the proxy's own address the client's.
        let mut hops: Vec<&[u8]> = Vec::new();
        for v in headers.get_all("x-forwarded-for") {
            hops.extend(v.as_bytes().split(|b| *b == b',').map(<[u8]>::trim_ascii).filter(|h| !h.is_empty()));
        }
        let mut client = peer;
        for hop in hops.iter().rev().take(32) {
            match parse_hop(hop) {
                Some(ip) if self.contains(ip) => client = ip,
                Some(ip) => return ip,
                // Garbage from a hop we cannot vouch for: stop at the last address we can.
                None => return client,
            }
        }
        client
    }
}

/// `192.0.2.7`, `192.0.2.7:5000`, `2001:db8::1`, `[2001:db8::1]`, `[2001:db8::1]:5000`;
/// anything else (including bytes that are not text) is `None`.
fn parse_hop(hop: &[u8]) -> Option<IpAddr> {
    let hop = std::str::from_utf8(hop).ok()?;
    let bare = hop.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(hop);
    if let Ok(ip) = bare.parse::<IpAddr>() {
        return Some(canonical(ip));
    }
    hop.parse::<SocketAddr>().ok().map(|s| canonical(s.ip()))
}

/// IPv4-mapped IPv6 (`::ffff:192.0.2.7`, as a dual-stack listener reports IPv4 peers) as IPv4.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// Behind a reverse proxy that no `--trusted-proxy` names, every client has the proxy's address:
/// they share one failure budget, so one attacker's failures would throttle every sender. Said
/// once per process, when the first forwarded request shows it.
fn warn_untrusted_forwarding(peer: IpAddr) {
    use std::sync::atomic::{AtomicBool, Ordering};
    static WARNED: AtomicBool = AtomicBool::new(false);
    if !WARNED.swap(true, Ordering::Relaxed) {
        tracing::warn!(target: "auth", %peer, "requests carry X-Forwarded-For but no --trusted-proxy is set: clients are counted by the TCP peer, so all clients behind that proxy share one rate-limit and failure budget; name the proxy with --trusted-proxy");
    }
}

/// The caller's address, as an extractor: `ClientIp(ip)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientIp(pub IpAddr);

impl ClientIp {
    /// From request parts; a request without connection info (a router driven in-process,
    /// without a socket) counts as 0.0.0.0.
    pub fn of(parts: &Parts, proxies: &TrustedProxies) -> ClientIp {
        let peer = parts.extensions.get::<ConnectInfo<SocketAddr>>().map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |c| c.0.ip());
        if proxies.is_empty() && parts.headers.contains_key("x-forwarded-for") {
            warn_untrusted_forwarding(peer);
        }
        ClientIp(proxies.client_ip(peer, &parts.headers))
    }
}

/// Whether the browser reached us over TLS. This server speaks plain HTTP itself (TLS ends at a
/// proxy in front of it), so only a trusted proxy's `X-Forwarded-Proto: https` says so; the
/// header from anyone else is sender-chosen text. The console marks its cookies `Secure` by it.
pub fn over_tls(parts: &Parts, proxies: &TrustedProxies) -> bool {
    let peer = parts.extensions.get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip());
    forwarded_https(peer, &parts.headers, proxies)
}

fn forwarded_https(peer: Option<IpAddr>, headers: &HeaderMap, proxies: &TrustedProxies) -> bool {
    // The nearest proxy's word: the last value of the last header.
    let proto = headers.get_all("x-forwarded-proto").iter().next_back().and_then(|v| v.to_str().ok()).and_then(|v| v.rsplit(',').next());
    peer.is_some_and(|p| proxies.contains(p)) && proto.is_some_and(|p| p.trim().eq_ignore_ascii_case("https"))
}

/// Extracted with the trusted proxies of the server's state, which hands them over as `AsRef`:
/// the state carries a [`TrustedProxies`], so this module does not import the state back.
impl<S: AsRef<TrustedProxies> + Send + Sync> FromRequestParts<S> for ClientIp {
    type Rejection = Infallible;
    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        Ok(ClientIp::of(parts, state.as_ref()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_trusted_proxy_says_the_request_came_over_tls() {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-proto", "https".parse().unwrap());
        let trusted = proxies(&["10.0.0.0/8"]);
        let proxy: IpAddr = "10.1.2.3".parse().unwrap();
        let stranger: IpAddr = "192.0.2.7".parse().unwrap();
        assert!(forwarded_https(Some(proxy), &h, &trusted));
        assert!(!forwarded_https(Some(stranger), &h, &trusted), "anyone can send the header");
        assert!(!forwarded_https(None, &h, &trusted));
        assert!(!forwarded_https(Some(proxy), &HeaderMap::new(), &trusted));
        h.insert("x-forwarded-proto", "https, http".parse().unwrap());
        assert!(!forwarded_https(Some(proxy), &h, &trusted), "the nearest hop said http");
    }

    fn headers(xff: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in xff {
            h.append("x-forwarded-for", v.parse().unwrap());
        }
        h
    }

    fn proxies(list: &[&str]) -> TrustedProxies {
        TrustedProxies::new(list.iter().map(|s| TrustedProxies::parse_cidr(s).unwrap()).collect())
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn an_untrusted_peer_is_the_client_whatever_it_claims() {
        let p = proxies(&["10.0.0.0/8"]);
        assert_eq!(p.client_ip(ip("203.0.113.9"), &headers(&["198.51.100.1"])), ip("203.0.113.9"));
        assert_eq!(TrustedProxies::default().client_ip(ip("10.0.0.1"), &headers(&["198.51.100.1"])), ip("10.0.0.1"));
    }

    #[test]
    fn a_trusted_proxy_reports_the_nearest_untrusted_hop() {
        let p = proxies(&["10.0.0.0/8", "192.0.2.7"]);
        // The client prepended a fake entry; the proxies appended the real one.
        let h = headers(&["1.2.3.4, 203.0.113.50", "10.1.1.1"]);
        assert_eq!(p.client_ip(ip("192.0.2.7"), &h), ip("203.0.113.50"));
        assert_eq!(p.client_ip(ip("10.0.0.2"), &headers(&["[2001:db8::5]:443"])), ip("2001:db8::5"));
        assert_eq!(p.client_ip(ip("10.0.0.2"), &headers(&["198.51.100.2:5000"])), ip("198.51.100.2"));
    }

    #[test]
    fn garbage_or_nothing_falls_back_to_the_last_address_vouched_for() {
        let p = proxies(&["10.0.0.0/8"]);
        assert_eq!(p.client_ip(ip("10.0.0.2"), &headers(&[])), ip("10.0.0.2"));
        assert_eq!(p.client_ip(ip("10.0.0.2"), &headers(&["203.0.113.1, garbage, 10.9.9.9"])), ip("10.9.9.9"));
        assert_eq!(p.client_ip(ip("10.0.0.2"), &headers(&["10.3.3.3"])), ip("10.3.3.3"));
    }

    #[test]
    fn a_stray_byte_in_the_clients_part_does_not_hide_the_address_the_proxy_appended() {
        let p = proxies(&["10.0.0.0/8"]);
        // The client sent `X-Forwarded-For: \x80`; the proxy appended the address it saw.
        let mut h = HeaderMap::new();
        h.append("x-forwarded-for", axum::http::HeaderValue::from_bytes(b"\x80, 203.0.113.5").unwrap());
        assert_eq!(p.client_ip(ip("10.0.0.2"), &h), ip("203.0.113.5"));
        // In a header of its own, likewise.
        let mut h = HeaderMap::new();
        h.append("x-forwarded-for", axum::http::HeaderValue::from_bytes(b"198.51.100.1\xff").unwrap());
        h.append("x-forwarded-for", "203.0.113.6".parse().unwrap());
        assert_eq!(p.client_ip(ip("10.0.0.2"), &h), ip("203.0.113.6"));
        // A garbage hop behind a trusted one stops the walk at the last address vouched for.
        let mut h = HeaderMap::new();
        h.append("x-forwarded-for", axum::http::HeaderValue::from_bytes(b"203.0.113.1, \xe9t\xe9, 10.9.9.9").unwrap());
        assert_eq!(p.client_ip(ip("10.0.0.2"), &h), ip("10.9.9.9"));
    }

    #[test]
    fn a_bracketed_ipv6_hop_without_a_port_is_read() {
        let p = proxies(&["10.0.0.0/8"]);
        assert_eq!(p.client_ip(ip("10.0.0.2"), &headers(&["[2001:db8::1]"])), ip("2001:db8::1"));
        assert_eq!(p.client_ip(ip("10.0.0.2"), &headers(&["[::ffff:203.0.113.4]"])), ip("203.0.113.4"));
        assert_eq!(p.client_ip(ip("10.0.0.2"), &headers(&["[203.0.113.4"])), ip("10.0.0.2"), "half a bracket is garbage");
    }

    #[test]
    fn ipv4_mapped_peers_match_ipv4_ranges() {
        let p = proxies(&["127.0.0.1"]);
        assert_eq!(p.client_ip(ip("::ffff:127.0.0.1"), &headers(&["203.0.113.8"])), ip("203.0.113.8"));
    }

    #[test]
    fn ranges_parse_or_explain() {
        assert!(TrustedProxies::parse_cidr("10.0.0.0/8").is_ok());
        assert!(TrustedProxies::parse_cidr("2001:db8::/32").is_ok());
        assert!(TrustedProxies::parse_cidr("192.0.2.7").is_ok());
        assert!(TrustedProxies::parse_cidr("10.0.0.0/33").unwrap_err().contains("CIDR"));
    }
}
