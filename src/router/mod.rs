//! Routing stage: picks the route for a request.
//!
//! Reads the current [`Runtime`](crate::state::Runtime) once per request, makes the path
//! and host canonical, and inserts the matched `Arc<Route>`, the [`NormalPath`] to forward
//! and (for `preserve_host` upstreams) the [`NormalHost`] into the request extensions (and
//! the route's name into the response extensions, for metrics and logs). No match: 404,
//! or 405 with `Allow` when the path matches but the method does not; a refused path,
//! host or method token: 400.

pub mod path;
pub mod pattern;

use std::sync::Arc;

use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, Uri};

use crate::layers::{Next, Stage, StageLayer};

use crate::body::{Body, HttpFuture};
use crate::config::{AuthMethods, IdentityHeaders, Lxm, PrincipalPolicy, Requirement, Rewrite, RouteConfig};
use crate::proxy::Upstream;
use crate::respond::{Reject, reject};
use crate::state::Shared;
use pattern::MatchKey;

/// A compiled route.
#[derive(Debug)]
pub struct Route {
    /// Name from the config; the metric label.
    pub name: RouteName,
    /// What it matches.
    pub key: MatchKey,
    /// Where it forwards.
    pub upstream: Arc<Upstream>,
    /// Credential kinds.
    pub auth: AuthMethods,
    /// The method a service JWT must name.
    pub lxm: Lxm,
    /// Whether a service JWT may be used more than once.
    pub allow_token_reuse: bool,
    /// Whether to inject the verified handle.
    pub inject_handle: bool,
    /// Who may use the route.
    pub policy: PrincipalPolicy,
    /// Permissions every request needs.
    pub require: Vec<Requirement>,
    /// Send the app-password session's PDS and access token upstream.
    pub forward_pds_session: bool,
    /// Whether `Authorization` and `DPoP` reach the upstream.
    pub forward_credentials: bool,
    /// Path change before forwarding.
    pub rewrite: Option<Rewrite>,
    /// Names of the identity headers to inject.
    pub identity: Arc<IdentityHeaders>,
    /// Rate limits with their buckets.
    pub rate_limits: Vec<Arc<crate::ratelimit::Limiter>>,
    /// Send a signed identity assertion.
    pub assertion: bool,
    /// Protocols an `Upgrade` may switch to (lower case).
    pub upgrades: Vec<String>,
    /// An exact pattern, shared by every request it forwards (no allocation per request).
    exact: Option<Arc<str>>,
}

impl Route {
    /// Compiles one route config against its upstream; rate-limit buckets are carried
    /// over from `old` (the same route before a reload) where the limit is unchanged.
    pub fn new(
        config: &RouteConfig,
        upstream: Arc<Upstream>,
        identity: Arc<IdentityHeaders>,
        old: Option<&Route>,
    ) -> Route {
        Route {
            name: crate::metrics::Name(config.name.as_str().into()),
            key: config.key.clone(),
            upstream,
            auth: config.auth,
            lxm: config.lxm.clone(),
            allow_token_reuse: config.allow_token_reuse,
            inject_handle: config.inject_handle,
            policy: config.policy.clone(),
            require: config.require.clone(),
            forward_pds_session: config.forward_pds_session,
            forward_credentials: config.forward_credentials,
            rewrite: config.rewrite.clone(),
            identity,
            rate_limits: crate::ratelimit::limiters(&config.rate_limits, old),
            assertion: config.assertion,
            upgrades: config.upgrades.clone(),
            exact: match &config.key.path {
                pattern::PathPattern::Exact(p) => Some(p.as_str().into()),
                _ => None,
            },
        }
    }

    /// The canonical path to forward for a request path this route matched.
    pub fn normal_path(&self, path: &str) -> NormalPath {
        match &self.exact {
            Some(p) => NormalPath(p.clone()),
            None => NormalPath(self.key.path.forwarded(path).into()),
        }
    }

    /// The path to send upstream (before the upstream's base path).
    pub fn upstream_path<'a>(&self, path: &'a str) -> std::borrow::Cow<'a, str> {
        use std::borrow::Cow;
        match &self.rewrite {
            None => Cow::Borrowed(path),
            Some(Rewrite::StripPrefix(p)) => match path.strip_prefix(p.as_str()) {
                Some(rest) if rest.starts_with('/') => Cow::Borrowed(rest),
                Some(rest) => Cow::Owned(format!("/{rest}")),
                None => Cow::Borrowed(path),
            },
            Some(Rewrite::Replace { matched, with }) => match path.strip_prefix(matched.as_str()) {
                Some(rest) => Cow::Owned(format!("{with}{rest}")),
                None => Cow::Borrowed(path),
            },
        }
    }
}

/// A route's name, cheap to clone; a response extension for metrics and logs.
pub type RouteName = crate::metrics::Name;

/// The canonical request path as the chosen route spells it, a request extension set by
/// the router: what the auth and scope stages read and what is forwarded.
#[derive(Debug, Clone)]
pub struct NormalPath(pub Arc<str>);

/// The canonical request host (`name` or `name:port`), a request extension set by the
/// router for `preserve_host` upstreams: the host the route was chosen on.
#[derive(Debug, Clone)]
pub struct NormalHost(pub http::HeaderValue);

/// Routes in match order, most specific first.
#[derive(Debug, Default)]
pub struct RouteTable {
    routes: Vec<Arc<Route>>,
    any_host: bool,
    preserve_host: bool,
}

impl RouteTable {
    /// Sorts routes by specificity (stable, so file order breaks exact ties that the
    /// config validator has already proven disjoint).
    pub fn new(mut routes: Vec<Arc<Route>>) -> RouteTable {
        routes.sort_by(|a, b| a.key.specificity_cmp(&b.key));
        let any_host = routes.iter().any(|r| r.key.host.is_some());
        let preserve_host = routes.iter().any(|r| r.upstream.config.preserve_host);
        RouteTable { routes, any_host, preserve_host }
    }

    /// The route called `name`.
    pub fn named(&self, name: &str) -> Option<&Arc<Route>> {
        self.routes.iter().find(|r| &*r.name.0 == name)
    }

    /// Every route, in match order.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<Route>> {
        self.routes.iter()
    }

    /// The route for a request.
    pub fn lookup(&self, host: Option<&str>, path: &str, method: &Method) -> Result<&Arc<Route>, RouteError> {
        let mut allowed: Option<Vec<Method>> = None;
        for route in &self.routes {
            if !route.key.matches_target(host, path) {
                continue;
            }
            if route.key.allows(method) {
                return Ok(route);
            }
            let allow = allowed.get_or_insert_with(Vec::new);
            for m in route.key.methods.iter().flatten() {
                if !allow.contains(m) {
                    allow.push(m.clone());
                }
            }
        }
        Err(match allowed {
            Some(allow) => RouteError::MethodNotAllowed { allow },
            None => RouteError::NotFound,
        })
    }

    /// Whether any route has a host pattern (else the host is not even parsed).
    pub fn uses_hosts(&self) -> bool {
        self.any_host
    }

    /// Whether any route forwards to a `preserve_host` upstream.
    pub fn preserves_host(&self) -> bool {
        self.preserve_host
    }

    /// All routes, in match order.
    pub fn routes(&self) -> &[Arc<Route>] {
        &self.routes
    }
}

/// Why no route was chosen.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    /// Nothing matches host and path.
    #[error("no route found for request")]
    NotFound,
    /// Host and path match, the method does not.
    #[error("method not allowed")]
    MethodNotAllowed {
        /// Methods that would have matched.
        allow: Vec<Method>,
    },
    /// The path was refused before matching.
    #[error("invalid request path")]
    BadPath(path::BadPath),
    /// `Host` is malformed, repeated, or names another host than the request target.
    #[error("invalid host")]
    BadHost(BadHost),
    /// A method token with lower-case letters (RFC 9110 §9.1: methods are case-sensitive).
    #[error("invalid method")]
    BadMethod,
}

/// Why a request's host was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BadHost {
    /// Not a host name, IP literal or `host:port`.
    Malformed,
    /// More than one `Host` header (RFC 9112 §3.2).
    Repeated,
    /// `Host` and the absolute-form target / `:authority` differ (RFC 9113 §8.3.1).
    Disagrees,
    /// No host at all, where routes or `preserve_host` need one (RFC 9112 §3.2).
    Missing,
}

impl Reject for RouteError {
    fn status(&self) -> StatusCode {
        match self {
            RouteError::NotFound => StatusCode::NOT_FOUND,
            RouteError::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            RouteError::BadPath(_) | RouteError::BadHost(_) | RouteError::BadMethod => StatusCode::BAD_REQUEST,
        }
    }
    fn error_name(&self) -> &'static str {
        match self {
            RouteError::NotFound => "NotFound",
            RouteError::MethodNotAllowed { .. } => "MethodNotAllowed",
            RouteError::BadPath(_) | RouteError::BadHost(_) | RouteError::BadMethod => "InvalidRequest",
        }
    }
    fn message(&self) -> String {
        match self {
            RouteError::BadPath(bad) => bad.message().into(),
            RouteError::BadHost(BadHost::Malformed) => "invalid Host header".into(),
            RouteError::BadHost(BadHost::Repeated) => "more than one Host header".into(),
            RouteError::BadHost(BadHost::Disagrees) => "the Host header differs from the request target's host".into(),
            RouteError::BadHost(BadHost::Missing) => "the request names no host".into(),
            RouteError::BadMethod => "method names are case-sensitive: use upper case, e.g. GET".into(),
            other => other.to_string(),
        }
    }
    fn reason(&self) -> &'static str {
        match self {
            RouteError::NotFound => "no_route",
            RouteError::MethodNotAllowed { .. } => "method_not_allowed",
            RouteError::BadPath(_) => "bad_path",
            RouteError::BadHost(_) => "bad_host",
            RouteError::BadMethod => "bad_method",
        }
    }
    fn headers(&self, headers: &mut HeaderMap) {
        if let RouteError::MethodNotAllowed { allow } = self {
            let list: Vec<&str> = allow.iter().map(Method::as_str).collect();
            if let Ok(v) = HeaderValue::from_str(&list.join(", ")) {
                headers.insert(http::header::ALLOW, v);
            }
        }
    }
}

/// A request's host: `name` lowercase without a trailing dot (IPv6 without brackets), and
/// the port if one was given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestHost {
    /// What host patterns match.
    pub name: String,
    /// The explicit port, if any.
    pub port: Option<u16>,
}

impl RequestHost {
    /// The `Host` value for a `preserve_host` upstream: the canonical host, not the
    /// client's spelling of it.
    pub fn header_value(&self) -> Option<HeaderValue> {
        HeaderValue::from_str(&self.text()).ok()
    }

    /// `host[:port]` (IPv6 in brackets), canonical: what routing chose the route on.
    pub fn text(&self) -> String {
        self.clone().into_text()
    }

    /// [`RequestHost::text`], reusing the name's allocation (this runs on every request).
    pub fn into_text(self) -> String {
        use std::fmt::Write;
        let mut text = self.name;
        if text.contains(':') {
            text.insert(0, '[');
            text.push(']');
        }
        if let Some(port) = self.port {
            let _ = write!(text, ":{port}");
        }
        text
    }
}

/// Splits `host[:port]` / `[v6][:port]` and makes the name canonical; no allocation.
fn split_host(raw: &str) -> Result<(&str, Option<u16>), BadHost> {
    let (name, port) = match raw.strip_prefix('[') {
        Some(v6) => {
            let (name, rest) = v6.split_once(']').ok_or(BadHost::Malformed)?;
            if !name.bytes().all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.') || name.is_empty() {
                return Err(BadHost::Malformed);
            }
            let port = match rest {
                "" => None,
                r => Some(r.strip_prefix(':').ok_or(BadHost::Malformed)?),
            };
            (name, port)
        }
        None => match raw.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (raw, None),
        },
    };
    let port = match port {
        Some(p) => Some(p.parse::<u16>().map_err(|_| BadHost::Malformed)?),
        None => None,
    };
    if raw.starts_with('[') {
        return Ok((name, port));
    }
    // DNS treats `example.com.` and `example.com` alike (RFC 1034 §3.1), so must routing.
    let name = name.strip_suffix('.').unwrap_or(name);
    let label_ok = |l: &str| !l.is_empty() && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if !name.split('.').all(label_ok) {
        return Err(BadHost::Malformed);
    }
    Ok((name, port))
}

/// The request's one canonical host, from `:authority` (HTTP/2, absolute-form) or `Host`;
/// when both are present they must name the same host (and port, when both give one).
pub fn request_host(uri: &Uri, headers: &HeaderMap) -> Result<Option<RequestHost>, RouteError> {
    let bad = RouteError::BadHost;
    let mut hosts = headers.get_all(http::header::HOST).iter();
    let header = hosts.next();
    if hosts.next().is_some() {
        return Err(bad(BadHost::Repeated));
    }
    let header = match header {
        // RFC 9112 §3.2: an empty Host is sent when the target has no authority.
        Some(v) if v.is_empty() => None,
        Some(v) => Some(split_host(v.to_str().map_err(|_| bad(BadHost::Malformed))?).map_err(bad)?),
        None => None,
    };
    let target = match uri.authority() {
        Some(a) => Some(split_host(a.as_str().rsplit('@').next().unwrap_or("")).map_err(bad)?),
        None => None,
    };
    let (name, port) = match (target, header) {
        (Some((t, tp)), Some((h, hp))) => {
            let ports_agree = tp.is_none() || hp.is_none() || tp == hp;
            if !t.eq_ignore_ascii_case(h) || !ports_agree {
                return Err(bad(BadHost::Disagrees));
            }
            (t, tp.or(hp))
        }
        (Some(one), None) | (None, Some(one)) => one,
        (None, None) => return Ok(None),
    };
    // Room for `[`, `]` and `:port`, so that `into_text` does not reallocate.
    let mut lower = String::with_capacity(name.len() + 8);
    lower.push_str(name);
    lower.make_ascii_lowercase();
    Ok(Some(RequestHost { name: lower, port }))
}

/// Whether a method token has lower-case letters: `get` is not `GET` (RFC 9110 §9.1),
/// but a GET-only route must not let it fall through to a broader route either.
fn lower_case_method(method: &Method) -> bool {
    method.as_str().bytes().any(|b| b.is_ascii_lowercase())
}

/// The routing stage: inserts `Arc<Route>` and `NormalPath`, or answers 400/404/405.
pub struct Router;

/// Builds the routing stage.
pub fn layer(shared: &Arc<Shared>) -> StageLayer<Router> {
    StageLayer::new(shared)
}

impl Stage for Router {
    fn call<S: Next>(shared: &Arc<Shared>, mut req: Request<Body>, next: S) -> HttpFuture {
        let runtime = shared.runtime_of(req.extensions());
        if req.method() == Method::GET || req.method() == Method::HEAD {
            let served = match req.uri().path() {
                "/.well-known/did.json" => runtime.did_document.clone().map(|d| (d, "application/did+ld+json")),
                crate::assertion::JWKS_PATH => {
                    runtime.assertion.as_ref().map(|a| (a.keys.jwks.clone(), "application/jwk-set+json"))
                }
                _ => None,
            };
            if let Some((doc, content_type)) = served {
                let res = well_known_response(doc, content_type);
                return Box::pin(async move { Ok(res) });
            }
        }
        if lower_case_method(req.method()) {
            return Box::pin(async move { Ok(reject(&RouteError::BadMethod)) });
        }
        let normal = path::normalize(req.uri().path()).map_err(RouteError::BadPath);
        if let (Some(client), Ok(p)) = (&runtime.oauth, &normal)
            && crate::oauth::is_own_path(client, p)
        {
            let (shared, runtime, path) = (shared.clone(), runtime.clone(), p.to_string());
            return Box::pin(async move {
                let mut res = crate::oauth::serve(shared, runtime, path, req).await;
                res.extensions_mut().insert(crate::metrics::Name("oauth".into()));
                Ok(res)
            });
        }
        let table = &runtime.routes;
        let found = normal.and_then(|p| {
            // Host and target are checked on every request that carries both, even when
            // no route has a host pattern; parsed only when a route or upstream needs it.
            let needs_host = table.uses_hosts() || table.preserves_host();
            let host = match needs_host
                || (req.uri().authority().is_some() && req.headers().contains_key(http::header::HOST))
            {
                true => request_host(req.uri(), req.headers())?,
                false => None,
            };
            // Without a host, host routes would be skipped for host-less ones, and a
            // `preserve_host` upstream would serve its default virtual host.
            if needs_host && host.is_none() {
                return Err(RouteError::BadHost(BadHost::Missing));
            }
            let name = host.as_ref().map(|h| h.name.as_str());
            let route = table.lookup(name, &p, req.method())?.clone();
            let forwarded_host = match route.upstream.config.preserve_host {
                true => host.and_then(|h| h.header_value()).map(NormalHost),
                false => None,
            };
            let normal = route.normal_path(&p);
            Ok((route, normal, forwarded_host))
        });
        match found {
            Ok((route, normal, host)) => {
                let name = route.name.clone();
                req.extensions_mut().insert(route);
                req.extensions_mut().insert(normal);
                if let Some(host) = host {
                    req.extensions_mut().insert(host);
                }
                let mut inner = next;
                Box::pin(async move {
                    let mut res = inner.call(req).await?;
                    res.extensions_mut().insert(name);
                    Ok(res)
                })
            }
            Err(e) => {
                tracing::debug!(error = %e, "request not routed");
                let res = reject(&e);
                Box::pin(async move { Ok(res) })
            }
        }
    }
}

/// A document atgate serves itself: its service DID document
/// (`service_auth.serve_did_document`), its assertion JWKS, its OAuth client metadata.
pub(crate) fn well_known_response(doc: bytes::Bytes, content_type: &'static str) -> Response<Body> {
    let mut res = Response::new(crate::body::full(doc));
    let headers = res.headers_mut();
    headers.insert(http::header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(http::header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=300"));
    headers.insert(http::header::ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*"));
    res.extensions_mut().insert(crate::metrics::Name("well-known".into()));
    res
}

#[cfg(test)]
mod tests;
