//! Routing stage: picks the route for a request.
//!
//! Reads the current [`Runtime`](crate::state::Runtime) once per request, normalizes the
//! path, and inserts the matched `Arc<Route>` into the request extensions (and the route's
//! name into the response extensions, for metrics and logs). No match: 404, or 405 with
//! `Allow` when the path matches but the method does not; a refused path: 400.

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

/// The normalized request path, a request extension set by the router.
#[derive(Debug, Clone)]
pub struct NormalPath(pub Arc<str>);

/// Routes in match order, most specific first.
#[derive(Debug, Default)]
pub struct RouteTable {
    routes: Vec<Arc<Route>>,
    any_host: bool,
}

impl RouteTable {
    /// Sorts routes by specificity (stable, so file order breaks exact ties that the
    /// config validator has already proven disjoint).
    pub fn new(mut routes: Vec<Arc<Route>>) -> RouteTable {
        routes.sort_by(|a, b| a.key.specificity_cmp(&b.key));
        let any_host = routes.iter().any(|r| r.key.host.is_some());
        RouteTable { routes, any_host }
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
}

impl Reject for RouteError {
    fn status(&self) -> StatusCode {
        match self {
            RouteError::NotFound => StatusCode::NOT_FOUND,
            RouteError::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            RouteError::BadPath(_) => StatusCode::BAD_REQUEST,
        }
    }
    fn error_name(&self) -> &'static str {
        match self {
            RouteError::NotFound => "NotFound",
            RouteError::MethodNotAllowed { .. } => "MethodNotAllowed",
            RouteError::BadPath(_) => "InvalidRequest",
        }
    }
    fn message(&self) -> String {
        match self {
            RouteError::BadPath(path::BadPath::EncodedSeparator) => {
                "invalid request path: encoded slashes and backslashes are not allowed".into()
            }
            other => other.to_string(),
        }
    }
    fn reason(&self) -> &'static str {
        match self {
            RouteError::NotFound => "no_route",
            RouteError::MethodNotAllowed { .. } => "method_not_allowed",
            RouteError::BadPath(_) => "bad_path",
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

/// The request's host, lowercased and without port: `:authority` (HTTP/2, absolute-form)
/// or `Host`.
pub fn request_host<'a>(uri: &'a Uri, headers: &'a HeaderMap) -> Option<String> {
    let raw = match uri.host() {
        Some(h) => h,
        None => headers.get(http::header::HOST)?.to_str().ok()?,
    };
    let host = match raw.strip_prefix('[') {
        Some(v6) => v6.split_once(']').map_or(v6, |(h, _)| h),
        None => raw.rsplit_once(':').map_or(raw, |(h, _)| h),
    };
    Some(host.to_ascii_lowercase())
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
            let host = if table.uses_hosts() { request_host(req.uri(), req.headers()) } else { None };
            let route = table.lookup(host.as_deref(), &p, req.method())?.clone();
            Ok((route, NormalPath(p.into())))
        });
        match found {
            Ok((route, normal)) => {
                let name = route.name.clone();
                req.extensions_mut().insert(route);
                req.extensions_mut().insert(normal);
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
