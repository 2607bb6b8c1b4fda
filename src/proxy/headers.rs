//! Header hygiene: identity headers stripped at ingress, hop-by-hop headers removed in
//! both directions, and identity headers injected from the authenticated principal.

use http::{HeaderMap, HeaderName, HeaderValue, Request, header};

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

/// Removes every identity header a client sent (keeping the app-password headers' values
/// in an [`AppPasswordHeaders`] extension for the auth stage). Runs on every request,
/// before routing.
pub struct Strip;

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
        if req.headers().keys().any(|k| is_identity_header(k.as_str())) {
            let runtime = shared.runtime_of(req.extensions());
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

/// RFC 9110 §7.6.1 connection-specific headers, plus the legacy ones proxies also drop.
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

/// Removes hop-by-hop headers, including every header named in `Connection`. With
/// `upgrade`, the `Upgrade` header survives and `Connection: upgrade` is set again.
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
}
