//! Header hygiene: identity headers, hop-by-hop headers and (from untrusted peers)
//! proxy-trust headers stripped at ingress; identity headers injected from the
//! authenticated principal; atgate's own cookies taken out before forwarding.
//!
//! Order matters: everything a client can use to delete or fake a header goes at ingress,
//! before routing, so that what injection writes is exactly what the upstream receives.

use http::{HeaderMap, HeaderName, HeaderValue, Request, Version, header};

use super::forwarded::ClientInfo;
use crate::auth::{Principal, VerifiedHandle};
use crate::body::Body;

/// Whether a header name is one atgate injects: every `x-atproto-*` and `x-atgate-*`
/// name, in any `_`/`-` spelling (names arrive lowercased).
pub fn is_identity_header(name: &str) -> bool {
    let b = name.as_bytes();
    let prefixed = |p: &[u8]| {
        b.len() > p.len() && b[..p.len()].iter().zip(p).all(|(&c, &want)| c == want || (want == b'-' && c == b'_'))
    };
    prefixed(b"x-atproto-") || prefixed(b"x-atgate-")
}

/// App-password credentials taken out of the request headers by the strip stage, for the
/// auth stage alone. `Debug` never shows the password.
#[derive(Clone, PartialEq, Eq)]
pub struct AppPasswordHeaders {
    /// The handle or DID header, if sent.
    pub identifier: Option<String>,
    /// The password header, if sent.
    pub password: Option<String>,
}

impl std::fmt::Debug for AppPasswordHeaders {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppPasswordHeaders")
            .field("identifier", &self.identifier)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// Ingress header hygiene, on every request before routing: removes hop-by-hop headers
/// (keeping a requested `Upgrade` as an [`UpgradeRequest`] extension), proxy-trust headers
/// from peers outside `trusted_proxies`, and every identity header a client sent (keeping
/// the app-password headers' values in an [`AppPasswordHeaders`] extension for the auth
/// stage).
pub struct Strip;

/// The protocols an HTTP/1.1 client asked to switch to (its `Upgrade` value, sent with
/// `Connection: upgrade`), taken out of the headers at ingress; the forwarder sends on
/// the ones the route allows.
#[derive(Debug, Clone)]
pub struct UpgradeRequest(pub HeaderValue);

/// Removes every identity header (any spelling) from `headers`; returns the values of the
/// app-password headers `names` (handle, password) when either was sent.
pub fn strip_identity(headers: &mut HeaderMap, names: (&HeaderName, &HeaderName)) -> Option<AppPasswordHeaders> {
    if !headers.keys().any(|k| is_identity_header(k.as_str())) {
        return None;
    }
    let text = |n: &HeaderName| headers.get(n).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let credentials = AppPasswordHeaders { identifier: text(names.0), password: text(names.1) };
    let spoofed: Vec<HeaderName> = headers.keys().filter(|k| is_identity_header(k.as_str())).cloned().collect();
    for name in spoofed {
        headers.remove(&name);
    }
    (credentials.identifier.is_some() || credentials.password.is_some()).then_some(credentials)
}

impl crate::layers::Stage for Strip {
    fn call<S: crate::layers::Next>(
        shared: &std::sync::Arc<crate::state::Shared>,
        mut req: Request<Body>,
        mut next: S,
    ) -> crate::body::HttpFuture {
        let version = req.version();
        if let Some(upgrade) = strip_hop_by_hop(req.headers_mut(), version) {
            req.extensions_mut().insert(UpgradeRequest(upgrade));
        }
        // One pass over the names finds both kinds; most requests carry neither.
        let (mut identity, mut overrides) = (false, false);
        for name in req.headers().keys() {
            identity |= is_identity_header(name.as_str());
            overrides |= NEVER_FORWARDED.contains(name);
        }
        if overrides {
            for name in &NEVER_FORWARDED {
                req.headers_mut().remove(name);
            }
        }
        let runtime = shared.runtime_of(req.extensions());
        let peer_trusted = req.extensions().get::<ClientInfo>().is_some_and(|c| c.peer_trusted);
        if !peer_trusted {
            super::forwarded::strip_untrusted(req.headers_mut(), &runtime.config.trusted_proxy_headers);
        }
        if identity {
            let a = &runtime.config.app_password;
            if let Some(credentials) = strip_identity(req.headers_mut(), (&a.handle_header, &a.password_header)) {
                req.extensions_mut().insert(credentials);
            }
        }
        next.call(req)
    }
}

/// Builds the strip stage.
pub fn strip_layer(shared: &std::sync::Arc<crate::state::Shared>) -> crate::layers::StageLayer<Strip> {
    crate::layers::StageLayer::new(shared)
}

/// An `Authorization` value atgate itself sends upstream (an app-password session's access
/// token on `forward_pds_session` routes); the forwarder sets it after dropping the client's.
#[derive(Clone)]
pub struct UpstreamAuthorization(pub HeaderValue);

/// Sets the identity headers for the principal the auth stage inserted.
pub fn inject_identity(mut req: Request<Body>) -> Request<Body> {
    let principal = req.extensions_mut().remove::<Principal>();
    let handle = req.extensions_mut().remove::<VerifiedHandle>();
    let names = req.extensions().get::<std::sync::Arc<crate::router::Route>>().map(|r| r.identity.clone());
    if let (Some(principal), Some(names)) = (principal, names) {
        principal.write_headers(&names, req.headers_mut());
        if let Some(v) = handle.and_then(|h| HeaderValue::from_str(&h.0).ok()) {
            req.headers_mut().insert(names.handle.clone(), v);
        }
        let route = req.extensions().get::<std::sync::Arc<crate::router::Route>>();
        let forward_session = route.is_some_and(|r| r.forward_pds_session);
        let assertion = route.filter(|r| r.assertion).and_then(|r| {
            let runtime = req.extensions().get::<crate::state::Pinned>()?;
            let asserter = runtime.0.assertion.as_ref()?;
            Some((asserter.header.clone(), asserter.sign(&principal, &r.upstream.config.name)?))
        });
        if let Some((name, value)) = assertion {
            req.headers_mut().insert(name, value);
        }
        if let (true, Principal::AppPassword(session)) = (forward_session, &principal) {
            if let Ok(v) = HeaderValue::from_str(session.pds.as_str().trim_end_matches('/')) {
                req.headers_mut().insert(names.pds.clone(), v);
            }
            if let Ok(v) = HeaderValue::from_str(&format!("Bearer {}", session.access_jwt)) {
                req.extensions_mut().insert(UpstreamAuthorization(v));
            }
        }
    }
    req
}

/// Headers that make an upstream run another handler than the one the route was chosen
/// for, removed from every request whoever sent it: method overrides (Express's
/// `method-override`, Rails, Symfony) turn a `POST` routed to a public route into the
/// `DELETE` of a protected one, and URL overrides (`X-Original-URL`, `X-Rewrite-URL`:
/// Symfony, Laminas, IIS rewrites) replace the routed path. atgate routes on neither, so
/// no hop, trusted or not, can legitimately supply them.
const NEVER_FORWARDED: [HeaderName; 5] = [
    HeaderName::from_static("x-http-method-override"),
    HeaderName::from_static("x-http-method"),
    HeaderName::from_static("x-method-override"),
    HeaderName::from_static("x-original-url"),
    HeaderName::from_static("x-rewrite-url"),
];

/// RFC 9110 §7.6.1 connection-specific headers, plus the legacy ones proxies also drop.
/// `Upgrade` is handled apart (it survives on an upgrade).
const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
];

/// Removes hop-by-hop headers from a client's request: the standard ones and every header
/// named in `Connection` (RFC 9110 §7.6.1). Runs at ingress, before injection, so that
/// `Connection` can only name headers the client sent itself. Returns the `Upgrade` value
/// when an HTTP/1.1 request asks to switch protocols (`Connection: upgrade`, RFC 9110
/// §7.8); `Upgrade` is removed from the headers either way.
pub fn strip_hop_by_hop(headers: &mut HeaderMap, version: Version) -> Option<HeaderValue> {
    let mut upgrade = false;
    // One `Connection` line is the common case: take it out without collecting.
    let mut lines = headers.get_all(header::CONNECTION).iter();
    match (lines.next().is_some(), lines.next().is_some()) {
        (false, _) => {}
        (true, false) => {
            if let Some(value) = headers.remove(header::CONNECTION) {
                upgrade |= remove_named(headers, &value);
            }
        }
        (true, true) => {
            let values: Vec<HeaderValue> = headers.get_all(header::CONNECTION).iter().cloned().collect();
            headers.remove(header::CONNECTION);
            for value in &values {
                upgrade |= remove_named(headers, value);
            }
        }
    }
    remove_fixed_hop_by_hop(headers);
    let offered = headers.remove(header::UPGRADE)?;
    (upgrade && version == Version::HTTP_11).then_some(offered)
}

/// Removes the headers one `Connection` value names; returns whether it has the
/// `upgrade` option. `Host` is never removed: it is end to end, and routing reads it.
fn remove_named(headers: &mut HeaderMap, connection: &HeaderValue) -> bool {
    let mut upgrade = false;
    for option in connection.as_bytes().split(|&b| b == b',') {
        let option = option.trim_ascii();
        if option.eq_ignore_ascii_case(b"upgrade") {
            upgrade = true;
        } else if let Ok(name) = std::str::from_utf8(option)
            && !name.eq_ignore_ascii_case("host")
        {
            // A `&str` key is matched case-insensitively without allocating.
            headers.remove(name);
        }
    }
    upgrade
}

fn remove_fixed_hop_by_hop(headers: &mut HeaderMap) {
    for name in &HOP_BY_HOP {
        headers.remove(name);
    }
}

/// Removes hop-by-hop headers from an upstream's response, including every header named in
/// `Connection`. With `upgrade` (a 101), `Upgrade` survives and `Connection: upgrade` is
/// set again.
pub fn remove_hop_by_hop(headers: &mut HeaderMap, upgrade: bool) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect();
    for name in named.iter().chain(HOP_BY_HOP.iter()) {
        if upgrade && name == header::UPGRADE {
            continue;
        }
        headers.remove(name);
    }
    if upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    } else {
        headers.remove(header::UPGRADE);
    }
}

/// The protocols of a client's `Upgrade` value that the route allows (`allowed` is lower
/// case; protocol names compare case-insensitively, a `/version` is kept), or `None` when
/// none is. The value is reused when every protocol is allowed.
pub fn allowed_upgrade(offered: &HeaderValue, allowed: &[String]) -> Option<HeaderValue> {
    let text = offered.to_str().ok()?;
    let is_allowed = |p: &&str| {
        let name = p.split('/').next().unwrap_or(p);
        allowed.iter().any(|a| a.eq_ignore_ascii_case(name))
    };
    let protocols = || text.split(',').map(str::trim).filter(|p| !p.is_empty());
    if protocols().all(|p| is_allowed(&p)) {
        return protocols().next().is_some().then(|| offered.clone());
    }
    let kept: Vec<&str> = protocols().filter(is_allowed).collect();
    if kept.is_empty() { None } else { HeaderValue::from_str(&kept.join(", ")).ok() }
}

/// Whether a cookie name is one of atgate's own: the session cookie `session` or its
/// sign-in flow cookie (`<session>_flow`), also under a `__Host-` or `__Secure-` prefix
/// (RFC 6265bis §4.1.3, matched case-insensitively as browsers do).
fn is_own_cookie(name: &str, session: &str) -> bool {
    let name = without_cookie_prefix(name);
    let session = without_cookie_prefix(session);
    name.strip_prefix(session).is_some_and(|rest| rest.is_empty() || rest == "_flow")
}

fn without_cookie_prefix(name: &str) -> &str {
    for prefix in ["__Host-", "__Secure-"] {
        if name.len() > prefix.len()
            && name.is_char_boundary(prefix.len())
            && name[..prefix.len()].eq_ignore_ascii_case(prefix)
        {
            return &name[prefix.len()..];
        }
    }
    name
}

/// Removes atgate's own cookies (see [`is_own_cookie`]; `session` is the configured session
/// cookie name, `None` without `oauth_client`) from the `Cookie` headers of a request about
/// to go upstream, keeping the client's other cookies in one `Cookie` header (RFC 9113
/// §8.2.3: h2 may split them over several fields, which must be joined for HTTP/1.1).
/// A single header without an own cookie is left as it is, without allocating.
pub fn strip_own_cookies(headers: &mut HeaderMap, session: Option<&str>) {
    let own = |pair: &[u8]| {
        let name = pair.split(|&b| b == b'=').next().unwrap_or(pair).trim_ascii();
        session.is_some_and(|s| std::str::from_utf8(name).is_ok_and(|n| is_own_cookie(n, s)))
    };
    let mut lines = headers.get_all(header::COOKIE).iter();
    let several = lines.next().is_some() && lines.next().is_some();
    let found = session.is_some()
        && headers.get_all(header::COOKIE).iter().any(|v| v.as_bytes().split(|&b| b == b';').any(own));
    if !found && !several {
        return;
    }
    let mut kept: Vec<u8> = Vec::new();
    for value in headers.get_all(header::COOKIE) {
        for pair in value.as_bytes().split(|&b| b == b';').map(<[u8]>::trim_ascii) {
            if pair.is_empty() || own(pair) {
                continue;
            }
            if !kept.is_empty() {
                kept.extend_from_slice(b"; ");
            }
            kept.extend_from_slice(pair);
        }
    }
    headers.remove(header::COOKIE);
    if let Ok(v) = HeaderValue::from_bytes(&kept)
        && !kept.is_empty()
    {
        headers.insert(header::COOKIE, v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_header_spellings() {
        for n in ["x-atproto-did", "x_atproto_did", "x-atproto_did", "x_atproto-scope", "x-atgate-assertion"] {
            assert!(is_identity_header(n), "{n}");
        }
        for n in ["x-atproto", "x-atprotodid", "atproto-proxy", "x-request-id", "authorization"] {
            assert!(!is_identity_header(n), "{n}");
        }
    }

    #[test]
    fn strips_all_spellings() {
        let req = Request::builder()
            .header("x-atproto-did", "did:plc:evil")
            .header("X_Atproto_Did", "did:plc:evil")
            .header("x-atproto-auth", "oauth")
            .header("accept", "*/*")
            .header("x-atproto-password", "abcd-efgh-ijkl-mn23")
            .body(crate::body::empty())
            .unwrap();
        let (handle, password) =
            (HeaderName::from_static("x-atproto-handle"), HeaderName::from_static("x-atproto-password"));
        let mut headers = req.headers().clone();
        let creds = strip_identity(&mut headers, (&handle, &password)).unwrap();
        assert_eq!(headers.len(), 1);
        assert!(headers.contains_key("accept"));
        assert_eq!((creds.identifier, creds.password.as_deref()), (None, Some("abcd-efgh-ijkl-mn23")));
        assert!(
            !format!("{:?}", AppPasswordHeaders { identifier: None, password: Some("secret".into()) })
                .contains("secret")
        );
    }

    #[test]
    fn hop_by_hop_and_connection_named() {
        let mut h = HeaderMap::new();
        h.insert("connection", "keep-alive, x-secret".parse().unwrap());
        h.insert("keep-alive", "timeout=5".parse().unwrap());
        h.insert("x-secret", "1".parse().unwrap());
        h.insert("te", "trailers".parse().unwrap());
        h.insert("upgrade", "websocket".parse().unwrap());
        h.insert("x-kept", "1".parse().unwrap());
        remove_hop_by_hop(&mut h, false);
        assert_eq!(h.keys().map(|k| k.as_str()).collect::<Vec<_>>(), vec!["x-kept"]);
    }

    fn map(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn ingress_strip_removes_connection_named_and_keeps_the_upgrade() {
        let mut h = map(&[
            ("connection", "keep-alive, X-Secret"),
            ("connection", " Upgrade ,host"),
            ("x-secret", "1"),
            ("keep-alive", "timeout=5"),
            ("proxy-connection", "keep-alive"),
            ("te", "trailers"),
            ("upgrade", "websocket"),
            ("host", "a.example"),
            ("x-kept", "1"),
        ]);
        let upgrade = strip_hop_by_hop(&mut h, Version::HTTP_11);
        assert_eq!(upgrade.as_ref().map(|v| v.as_bytes()), Some(&b"websocket"[..]));
        let mut left: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
        left.sort_unstable();
        assert_eq!(left, ["host", "x-kept"]);
        // Idempotent: a second pass finds nothing to take.
        let before = h.clone();
        assert!(strip_hop_by_hop(&mut h, Version::HTTP_11).is_none());
        assert_eq!(h, before);
    }

    #[test]
    fn upgrade_needs_the_connection_option_and_http_1_1() {
        let mut h = map(&[("upgrade", "websocket")]);
        assert!(strip_hop_by_hop(&mut h, Version::HTTP_11).is_none());
        assert!(h.is_empty());
        let mut h = map(&[("connection", "upgrade"), ("upgrade", "websocket")]);
        assert!(strip_hop_by_hop(&mut h, Version::HTTP_10).is_none());
        assert!(h.is_empty());
    }

    #[test]
    fn only_allowed_upgrade_protocols() {
        let ws = ["websocket".to_owned()];
        let offer = |v: &'static str| HeaderValue::from_static(v);
        assert_eq!(allowed_upgrade(&offer("WebSocket"), &ws), Some(offer("WebSocket")));
        assert_eq!(allowed_upgrade(&offer("h2c, websocket/13"), &ws), Some(offer("websocket/13")));
        for refused in ["h2c", "H2C", "HTTP/2.0", "", " , ", "websocketx"] {
            assert_eq!(allowed_upgrade(&offer(refused), &ws), None, "{refused}");
        }
        assert_eq!(allowed_upgrade(&offer("websocket"), &[]), None);
    }

    #[test]
    fn own_cookies_removed_others_kept_in_one_header() {
        let mut h = map(&[
            ("cookie", "a=1; atgate_session=s.sig;b=2"),
            ("cookie", "__Host-atgate_session=x; __secure-atgate_session_flow=y; atgate_session_flowx=k"),
            ("cookie", "Atgate_session=k; atgate_session2=k"),
        ]);
        strip_own_cookies(&mut h, Some("atgate_session"));
        let all: Vec<&str> = h.get_all("cookie").iter().map(|v| v.to_str().unwrap()).collect();
        assert_eq!(all, ["a=1; b=2; atgate_session_flowx=k; Atgate_session=k; atgate_session2=k"]);

        // A configured `__Host-` name covers the bare and other-prefixed spellings too.
        let mut h = map(&[("cookie", "atgate_session=1; __Secure-atgate_session=2; c=3")]);
        strip_own_cookies(&mut h, Some("__Host-atgate_session"));
        assert_eq!(h["cookie"], "c=3");

        // Nothing of atgate's, one header: left as it was (no rebuild).
        let mut h = map(&[("cookie", "a=1;b=2")]);
        strip_own_cookies(&mut h, Some("atgate_session"));
        assert_eq!(h["cookie"], "a=1;b=2");

        let mut h = map(&[("cookie", "atgate_session=1"), ("cookie", "atgate_session_flow=2")]);
        strip_own_cookies(&mut h, Some("atgate_session"));
        assert!(!h.contains_key("cookie"));

        // Without an oauth_client nothing is atgate's, but split cookies are still joined.
        let mut h = map(&[("cookie", "atgate_session=1"), ("cookie", "b=2")]);
        strip_own_cookies(&mut h, None);
        assert_eq!(h.get_all("cookie").iter().collect::<Vec<_>>(), ["atgate_session=1; b=2"]);
    }
}
