//! Who the client is: the connection peer, or what trusted proxies in front of atgate say.
//!
//! `X-Forwarded-For/-Proto/-Host` are believed only from peers in `trusted_proxies`;
//! from anyone else they are replaced when forwarding, and the other proxy-trust headers
//! (`trusted_proxy_headers`: `X-Real-IP`, `X-Original-URL`, ...) are removed at ingress.
//! Behind trusted proxies, `X-Forwarded-Proto/-Host` are the value the nearest proxy set
//! (the last one), as `X-Forwarded-For` is walked from the right: the leftmost values are
//! whatever the client sent the first proxy.

use std::net::{IpAddr, SocketAddr};

use http::HeaderMap;
use ipnet::IpNet;

/// The accepted connection; a request extension set by the server.
#[derive(Debug, Clone, Copy)]
pub struct ConnInfo {
    /// The peer's address.
    pub peer: SocketAddr,
    /// The local address it connected to.
    pub local: SocketAddr,
    /// Whether the connection is TLS.
    pub tls: bool,
}

/// The client as atgate believes it; a request extension set by the trace stage.
#[derive(Debug, Clone)]
pub struct ClientInfo {
    /// The client's IP (the first untrusted hop).
    pub ip: IpAddr,
    /// `http` or `https` as the client used it.
    pub proto: &'static str,
    /// The host the client asked for, when known.
    pub host: Option<String>,
    /// Whether the direct peer is a trusted proxy (so its `X-Forwarded-For` is kept).
    pub peer_trusted: bool,
}

fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// Whether `ip` is inside one of the trusted networks.
pub fn is_trusted(ip: IpAddr, trusted: &[IpNet]) -> bool {
    let ip = canonical(ip);
    trusted.iter().any(|n| n.contains(&ip))
}

/// Works out the client from the connection and, behind trusted proxies, the headers.
pub fn client_info(conn: &ConnInfo, uri: &http::Uri, headers: &HeaderMap, trusted: &[IpNet]) -> ClientInfo {
    let own_proto = if conn.tls { "https" } else { "http" };
    // The canonical host routing chooses on (lower case, no trailing dot, no userinfo),
    // never the client's spelling: it becomes `X-Forwarded-Host` and the DPoP `htu` host.
    let own_host = || Some(crate::router::request_host(uri, headers).ok()??.into_text());
    let peer = canonical(conn.peer.ip());
    if trusted.is_empty() || !is_trusted(peer, trusted) {
        return ClientInfo { ip: peer, proto: own_proto, host: own_host(), peer_trusted: false };
    }
    // Walk X-Forwarded-For from the right: the first hop that is not a trusted proxy is
    // the client. A malformed entry ends the walk at the last hop we could trust.
    let mut ip = peer;
    'walk: for value in headers.get_all("x-forwarded-for").iter().rev() {
        let Ok(list) = value.to_str() else { break };
        for hop in list.rsplit(',') {
            match hop.trim().parse::<IpAddr>() {
                Ok(hop) => {
                    ip = canonical(hop);
                    if !is_trusted(ip, trusted) {
                        break 'walk;
                    }
                }
                Err(_) => break 'walk,
            }
        }
    }
    let proto = match nearest(headers, "x-forwarded-proto") {
        Some(p) if p.eq_ignore_ascii_case("https") => "https",
        Some(p) if p.eq_ignore_ascii_case("http") => "http",
        _ => own_proto,
    };
    let host = nearest(headers, "x-forwarded-host").map(str::to_owned).or_else(own_host);
    ClientInfo { ip, proto, host, peer_trusted: true }
}

/// The value the nearest proxy set for a list header: the last element of its last line.
/// A proxy either replaces the header or appends to it; either way its own value is last,
/// and what comes before it is what the client sent (the same walk as `X-Forwarded-For`).
fn nearest<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    let last = headers.get_all(name).iter().next_back()?.to_str().ok()?;
    last.rsplit(',').next().map(str::trim).filter(|v| !v.is_empty())
}

/// Removes the proxy-trust headers `names` (`trusted_proxy_headers`) from a request whose
/// peer is not a trusted proxy: upstreams read them as the client's address or the URL it
/// asked for, which only a trusted proxy may say.
pub fn strip_untrusted(headers: &mut HeaderMap, names: &[http::HeaderName]) {
    for name in names {
        headers.remove(name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_host_is_the_canonical_one() {
        let host = |uri: &str, host: &str| {
            let h = headers(&[("host", host)]);
            client_info(&conn("203.0.113.9:5000"), &uri.parse().unwrap(), &h, &[]).host
        };
        assert_eq!(host("/x", "Public.Example.COM.").as_deref(), Some("public.example.com"));
        assert_eq!(host("/x", "public.example.com:8080").as_deref(), Some("public.example.com:8080"));
        assert_eq!(
            host("http://admin.example.com@public.example.com/x", "public.example.com").as_deref(),
            Some("public.example.com")
        );
        // Host and target disagree: no host of the client's choosing (routing refuses it).
        assert_eq!(host("http://public.example.com/x", "admin.example.com"), None);
    }

    fn conn(peer: &str) -> ConnInfo {
        ConnInfo { peer: peer.parse().unwrap(), local: "127.0.0.1:8080".parse().unwrap(), tls: false }
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn untrusted_peer_is_the_client() {
        let h = headers(&[("x-forwarded-for", "1.2.3.4"), ("x-forwarded-proto", "https"), ("host", "a.example")]);
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        let info = client_info(&conn("192.0.2.1:5000"), &"/".parse().unwrap(), &h, &trusted);
        assert_eq!(info.ip, "192.0.2.1".parse::<IpAddr>().unwrap());
        assert_eq!(info.proto, "http");
        assert_eq!(info.host.as_deref(), Some("a.example"));
        assert!(!info.peer_trusted);
    }

    #[test]
    fn trusted_chain_walks_to_first_untrusted_hop() {
        let h = headers(&[
            ("x-forwarded-for", "6.6.6.6, 198.51.100.7"),
            ("x-forwarded-for", "10.0.0.2"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "gw.example.com"),
        ]);
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        let info = client_info(&conn("[::ffff:10.0.0.1]:5000"), &"/".parse().unwrap(), &h, &trusted);
        assert_eq!(info.ip, "198.51.100.7".parse::<IpAddr>().unwrap());
        assert_eq!(info.proto, "https");
        assert_eq!(info.host.as_deref(), Some("gw.example.com"));
        assert!(info.peer_trusted);
    }

    #[test]
    fn garbage_hop_stops_the_walk() {
        let h = headers(&[("x-forwarded-for", "1.1.1.1, nonsense")]);
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        let info = client_info(&conn("10.0.0.1:1"), &"/".parse().unwrap(), &h, &trusted);
        assert_eq!(info.ip, "10.0.0.1".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn forwarded_host_and_proto_are_the_nearest_hops() {
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        let h = headers(&[
            ("x-forwarded-host", "evil.example, also-client.example"),
            ("x-forwarded-host", "evil2.example,gw.example.com"),
            ("x-forwarded-proto", "http,https"),
        ]);
        let info = client_info(&conn("10.0.0.1:1"), &"/".parse().unwrap(), &h, &trusted);
        assert_eq!(info.host.as_deref(), Some("gw.example.com"));
        assert_eq!(info.proto, "https");
        // An empty last element is not a value: the peer's own view is used.
        let h = headers(&[("x-forwarded-host", "evil.example,"), ("host", "own.example")]);
        let info = client_info(&conn("10.0.0.1:1"), &"/".parse().unwrap(), &h, &trusted);
        assert_eq!(info.host.as_deref(), Some("own.example"));
    }

    #[test]
    fn untrusted_proxy_headers_are_removed() {
        let mut h = headers(&[("x-real-ip", "6.6.6.6"), ("X-Original-URL", "/admin"), ("x-kept", "1")]);
        let names: Vec<http::HeaderName> =
            crate::config::DEFAULT_TRUSTED_PROXY_HEADERS.iter().map(|n| http::HeaderName::from_static(n)).collect();
        strip_untrusted(&mut h, &names);
        assert_eq!(h.keys().map(|k| k.as_str()).collect::<Vec<_>>(), ["x-kept"]);
    }
}
