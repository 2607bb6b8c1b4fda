//! Authorization stage: the route's requirements (`routes[i].require`) against the
//! principal's permissions (ATPROTO-AUTH.md §8.6). OAuth principals are checked against
//! their token's scopes; service-JWT principals were already held to the route's `lxm`
//! and `aud` (config validation allows nothing else on those routes).

use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request, StatusCode, header};
use http_body_util::BodyExt;
use serde_json::Value;

use crate::layers::{Next, Stage, StageLayer};

use super::resolve::SetResolver;
use super::{Check, Granted, RepoAction};
use crate::auth::{DPOP_ALGS, Principal};
use crate::body::{self, Body, HttpFuture};
use crate::config::{Lxm, Requirement, Source};
use crate::respond::{Reject, reject};
use crate::router::{NormalPath, Route};
use crate::state::Shared;

/// Why a request was not authorized.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScopeError {
    /// The principal lacks a permission: `needed` is the canonical scope that grants it.
    #[error("missing scope {needed}")]
    Insufficient {
        /// The scope that would grant the request.
        needed: String,
        /// The resource, for the metric label.
        resource: &'static str,
    },
    /// The request does not say what a requirement needs (no XRPC method, no collection
    /// in the body, no `Content-Type`).
    #[error("{0}")]
    Underivable(&'static str),
    /// The body that had to be read is larger than `limits.max_body`.
    #[error("request body too large")]
    TooLarge,
    /// A required permission set is not available (fail closed).
    #[error("permission set unavailable")]
    SetUnavailable,
}

impl Reject for ScopeError {
    fn status(&self) -> StatusCode {
        match self {
            ScopeError::Insufficient { .. } => StatusCode::FORBIDDEN,
            ScopeError::Underivable(_) => StatusCode::BAD_REQUEST,
            ScopeError::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ScopeError::SetUnavailable => StatusCode::SERVICE_UNAVAILABLE,
        }
    }
    fn error_name(&self) -> &'static str {
        match self {
            ScopeError::Insufficient { .. } => "InsufficientScope",
            ScopeError::Underivable(_) => "InvalidRequest",
            ScopeError::TooLarge => "PayloadTooLarge",
            ScopeError::SetUnavailable => "TemporarilyUnavailable",
        }
    }
    fn message(&self) -> String {
        match self {
            ScopeError::Insufficient { needed, .. } => format!("Missing required scope \"{needed}\""),
            other => other.to_string(),
        }
    }
    fn reason(&self) -> &'static str {
        match self {
            ScopeError::Insufficient { resource, .. } => match *resource {
                "repo" => "scope_repo",
                "rpc" => "scope_rpc",
                "blob" => "scope_blob",
                "account" => "scope_account",
                "identity" => "scope_identity",
                "include" => "scope_include",
                _ => "scope_other",
            },
            ScopeError::Underivable(_) => "scope_underivable",
            ScopeError::TooLarge => "body_too_large",
            ScopeError::SetUnavailable => "permission_set_unavailable",
        }
    }
    fn headers(&self, headers: &mut HeaderMap) {
        if let ScopeError::Insufficient { needed, .. } = self {
            // Scope strings never hold `"` or `\` (they would not parse).
            let value = format!(r#"DPoP algs="{DPOP_ALGS}", error="insufficient_scope", scope="{needed}""#);
            if let Ok(v) = HeaderValue::from_str(&value) {
                headers.insert(header::WWW_AUTHENTICATE, v);
            }
        }
    }
}

fn insufficient(check: &Check) -> ScopeError {
    ScopeError::Insufficient { needed: check.needed(), resource: check.resource() }
}

/// The checks a repo write call implies: `createRecord` -> create, `putRecord` -> create
/// and update (atgate cannot know whether the record exists, so it asks for both),
/// `deleteRecord` -> delete, `applyWrites` -> one per write.
pub fn repo_writes(method: &str, body: &Value) -> Result<Vec<(String, RepoAction)>, ScopeError> {
    let collection = |v: &Value| {
        v.get("collection")
            .and_then(Value::as_str)
            .filter(|c| crate::config::is_nsid(c))
            .map(str::to_owned)
            .ok_or(ScopeError::Underivable("the write names no valid collection"))
    };
    Ok(match method {
        "com.atproto.repo.createRecord" => vec![(collection(body)?, RepoAction::Create)],
        "com.atproto.repo.putRecord" => {
            let c = collection(body)?;
            vec![(c.clone(), RepoAction::Create), (c, RepoAction::Update)]
        }
        "com.atproto.repo.deleteRecord" => vec![(collection(body)?, RepoAction::Delete)],
        "com.atproto.repo.applyWrites" => {
            let writes = body
                .get("writes")
                .and_then(Value::as_array)
                .ok_or(ScopeError::Underivable("applyWrites without a writes array"))?;
            let mut out = Vec::with_capacity(writes.len());
            for w in writes {
                let action = match w.get("$type").and_then(Value::as_str) {
                    Some("com.atproto.repo.applyWrites#create") => RepoAction::Create,
                    Some("com.atproto.repo.applyWrites#update") => RepoAction::Update,
                    Some("com.atproto.repo.applyWrites#delete") => RepoAction::Delete,
                    _ => return Err(ScopeError::Underivable("an applyWrites entry has no known $type")),
                };
                out.push((collection(w)?, action));
            }
            out
        }
        _ => return Err(ScopeError::Underivable("repo requirements need a com.atproto.repo write method")),
    })
}

/// `Content-Type` as a concrete MIME type: parameters dropped, trimmed, lowercased.
pub fn content_type(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::CONTENT_TYPE)?.to_str().ok()?;
    let mime = value.split(';').next()?.trim().to_ascii_lowercase();
    super::parse::is_concrete_mime(&mime).then_some(mime)
}

/// Checks one request against the route's requirements; may read (and put back) the body.
async fn authorize(
    route: &Route,
    granted: &Granted,
    sets: &SetResolver,
    service: Option<&str>,
    max_body: usize,
    req: &mut Request<Body>,
) -> Result<(), ScopeError> {
    // The XRPC method the upstream will see (normalized path, after the route's rewrite).
    let method = {
        let path = req.extensions().get::<NormalPath>().map_or(req.uri().path(), |p| &p.0);
        let forwarded = route.upstream_path(path);
        crate::auth::service::xrpc_method(&forwarded).map(str::to_owned)
    };
    let method = || method.clone();
    let mut body_json: Option<Value> = None;
    for requirement in &route.require {
        let checks: Vec<Check> = match requirement {
            Requirement::Scope(scope) => {
                if !granted.covers(scope) {
                    return Err(ScopeError::Insufficient { needed: scope.canonical(), resource: "scopes" });
                }
                continue;
            }
            Requirement::Rpc { lxm, aud } => {
                let lxm = match lxm {
                    Lxm::Fixed(n) => n.clone(),
                    Lxm::FromPath => method().ok_or(ScopeError::Underivable("expected an XRPC path /xrpc/<nsid>"))?,
                };
                let aud = aud.as_deref().or(service).ok_or(ScopeError::Underivable("no service DID configured"))?;
                vec![Check::Rpc { lxm, aud: aud.to_owned() }]
            }
            Requirement::Repo { collection, action } => {
                let writes = match (collection, action) {
                    (Source::Fixed(c), Source::Fixed(a)) => vec![(c.clone(), *a)],
                    (collection, action) => {
                        let nsid = method().ok_or(ScopeError::Underivable("expected an XRPC path /xrpc/<nsid>"))?;
                        if body_json.is_none() {
                            body_json = Some(read_json(req, max_body).await?);
                        }
                        let mut writes = repo_writes(&nsid, body_json.as_ref().unwrap_or(&Value::Null))?;
                        for w in &mut writes {
                            if let Source::Fixed(c) = collection {
                                w.0 = c.clone();
                            }
                            if let Source::Fixed(a) = action {
                                w.1 = *a;
                            }
                        }
                        writes
                    }
                };
                writes.into_iter().map(|(collection, action)| Check::Repo { collection, action }).collect()
            }
            Requirement::Blob { mime } => {
                let mime = match mime {
                    Source::Fixed(m) => m.clone(),
                    Source::Request => content_type(req.headers())
                        .ok_or(ScopeError::Underivable("a blob upload needs a Content-Type like image/png"))?,
                };
                vec![Check::Blob { mime }]
            }
            Requirement::Include { nsid, aud } => {
                // Every permission the set grants; a set atgate cannot read fails closed.
                let set = sets.get(nsid).await.map_err(|_| ScopeError::SetUnavailable)?;
                if let Some(missing) = set.expand(aud.as_deref()).into_iter().find(|s| !granted.covers(s)) {
                    return Err(ScopeError::Insufficient { needed: missing.canonical(), resource: "include" });
                }
                continue;
            }
            Requirement::Account { attr, manage } => vec![Check::Account { attr: attr.clone(), manage: *manage }],
            Requirement::Identity { attr } => vec![Check::Identity { attr: attr.clone() }],
        };
        if let Some(missing) = checks.iter().find(|c| !granted.allows(c)) {
            return Err(insufficient(missing));
        }
    }
    Ok(())
}

/// Reads the whole body as JSON (bounded) and puts the same bytes back for the upstream.
async fn read_json(req: &mut Request<Body>, max: usize) -> Result<Value, ScopeError> {
    let mut taken = std::mem::replace(req.body_mut(), body::empty());
    let mut buf = bytes::BytesMut::new();
    while let Some(frame) = taken.frame().await {
        let Ok(frame) = frame else { return Err(ScopeError::Underivable("the request body could not be read")) };
        if let Ok(data) = frame.into_data() {
            if buf.len() + data.len() > max {
                return Err(ScopeError::TooLarge);
            }
            buf.extend_from_slice(&data);
        }
    }
    let bytes: Bytes = buf.freeze();
    let value = serde_json::from_slice(&bytes).map_err(|_| ScopeError::Underivable("the request body is not JSON"));
    *req.body_mut() = body::full(bytes);
    value
}

/// The authorization stage: answers 403 when the principal lacks a permission the route requires.
pub struct Authorize;

/// Builds the authorization stage.
pub fn layer(shared: &Arc<Shared>) -> StageLayer<Authorize> {
    StageLayer::new(shared)
}

impl Stage for Authorize {
    fn call<S: Next>(shared: &Arc<Shared>, mut req: Request<Body>, next: S) -> HttpFuture {
        let route = req.extensions().get::<Arc<Route>>().cloned();
        // What the principal holds: the token's scopes, or an app password's mapping (§12.3).
        // Service JWTs were held to the route's lxm and aud already.
        let granted = match req.extensions().get::<Principal>() {
            Some(Principal::OAuth { token, .. }) => Some(token.granted.clone()),
            Some(Principal::AppPassword(session)) => Some(session.granted.clone()),
            Some(Principal::Session(session)) => Some(session.granted.clone()),
            _ => None,
        };
        let mut inner = next;
        let (Some(route), Some(granted)) = (route.filter(|r| !r.require.is_empty()), granted) else {
            return inner.call(req);
        };
        let (service, max_body, sets) = {
            let runtime = shared.runtime_of(req.extensions());
            let sets = runtime.sets.clone();
            (runtime.config.service_auth.audience(), runtime.config.limits.max_body as usize, sets)
        };
        Box::pin(async move {
            match authorize(&route, &granted, &sets, service.as_deref(), max_body, &mut req).await {
                Ok(()) => inner.call(req).await,
                Err(e) => {
                    tracing::debug!(route = %route.name.0, error = %e, "not authorized");
                    Ok(reject(&e))
                }
            }
        })
    }
}
