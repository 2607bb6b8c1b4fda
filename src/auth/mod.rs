//! Authentication stage: credentials -> [`Principal`].
//!
//! Reads the `Arc<Route>` the router inserted and runs the route's verifier; inserts a
//! `Principal` into the request extensions, or answers with the verifier's error.
//! Verifiers are plain `async fn`s, testable without tower.

pub mod app_password;
pub mod dpop;
mod error;
pub mod issuer;
pub mod service;
pub mod token;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use http::{HeaderMap, HeaderName, HeaderValue, Request, Response, header, request::Parts};

use crate::layers::{Next, Stage, StageLayer};

pub use error::{AuthError, DPOP_ALGS, ProofError, Scheme, TokenError, challenge};

use crate::body::{Body, HttpFuture};
use crate::config::{IdentityHeaders, Lxm};
use crate::jose::b64url;
use crate::proxy::forwarded::ClientInfo;
use crate::respond::reject;
use crate::router::{NormalPath, Route};
use crate::state::{DpopState, Runtime, Shared};
use dpop::verify::{ProofContext, REPLAY_TTL, verify_proof};
use token::VerifiedToken;

/// Who is making the request, as far as atgate has verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    /// A public route: nobody was authenticated.
    Anonymous,
    /// A DPoP-bound OAuth access token from a trusted issuer.
    OAuth {
        /// The verified token.
        token: Arc<VerifiedToken>,
        /// Thumbprint of the proof key (equal to the token's `cnf.jkt`).
        jkt: String,
    },
    /// An inter-service JWT signed by the user's DID key.
    Service(service::ServiceToken),
    /// An app-password session opened with the user's PDS.
    AppPassword(Arc<app_password::AppSession>),
    /// A browser session from atgate's own OAuth sign-in (`oauth_session`).
    Session(Arc<crate::oauth::SessionPrincipal>),
}

/// The principal's handle, verified both ways (DID document and handle resolution);
/// in the request extensions when the route injects it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedHandle(pub String);

impl Principal {
    /// Writes the identity headers the upstream receives for this principal, DID first.
    pub fn write_headers(&self, names: &IdentityHeaders, out: &mut HeaderMap) {
        let mut put = |name: &HeaderName, value: &str| {
            if let Ok(v) = HeaderValue::from_str(value) {
                out.insert(name.clone(), v);
            }
        };
        match self {
            Principal::Anonymous => {}
            Principal::OAuth { token, jkt } => {
                put(&names.did, &token.sub);
                put(&names.auth, self.kind());
                if let Some(client) = &token.client_id {
                    put(&names.client_id, client);
                }
                put(&names.scope, &token.scope);
                put(&names.jkt, jkt);
            }
            Principal::Service(token) => {
                put(&names.did, &token.did);
                put(&names.auth, self.kind());
                if let Some(lxm) = &token.lxm {
                    put(&names.lxm, lxm);
                }
                put(&names.aud, &token.aud);
            }
            Principal::AppPassword(session) => {
                put(&names.did, &session.did);
                put(&names.auth, self.kind());
                if let Some(handle) = &session.handle {
                    put(&names.handle, handle);
                }
            }
            Principal::Session(session) => {
                put(&names.did, &session.did);
                put(&names.auth, self.kind());
                if let Some(handle) = &session.handle {
                    put(&names.handle, handle);
                }
                put(&names.scope, &session.scope);
            }
        }
    }

    /// The `x-atproto-auth` value: `oauth`, `service`, `app-password`, `oauth-session`,
    /// or `none`.
    pub fn kind(&self) -> &'static str {
        match self {
            Principal::Anonymous => "none",
            Principal::OAuth { .. } => "oauth",
            Principal::Service(_) => "service",
            Principal::AppPassword(_) => "app-password",
            Principal::Session(_) => "oauth-session",
        }
    }

    /// The principal's DID, if authenticated.
    pub fn did(&self) -> Option<&str> {
        match self {
            Principal::Anonymous => None,
            Principal::OAuth { token, .. } => Some(&token.sub),
            Principal::Service(token) => Some(&token.did),
            Principal::AppPassword(session) => Some(&session.did),
            Principal::Session(session) => Some(&session.did),
        }
    }
}

/// Unix time now, in milliseconds.
pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// Runs the route's verifier against the runtime the request was routed with.
pub async fn authenticate(
    shared: &Shared,
    runtime: &Runtime,
    route: &Route,
    req: &Parts,
) -> Result<Principal, AuthError> {
    let kinds = route.auth;
    if kinds.is_public() {
        return Ok(Principal::Anonymous);
    }
    // A browser route: the session cookie, unless the request carries API credentials
    // another method of the route takes.
    let api_credentials = req.headers.contains_key(header::AUTHORIZATION)
        || (kinds.app_password && req.extensions.get::<crate::proxy::headers::AppPasswordHeaders>().is_some());
    if kinds.oauth_session && !api_credentials {
        let client = runtime.oauth.as_ref().ok_or(AuthError::NotRouted)?;
        let session = crate::oauth::authenticate(client, &*shared.sessions, &req.method, &req.headers)
            .await
            .map_err(AuthError::Session)?;
        if !route.policy.admits(&session.did) {
            return Err(AuthError::Denied);
        }
        return Ok(Principal::Session(Arc::new(session)));
    }
    if kinds.oauth_session && !kinds.dpop && !kinds.service_auth && !kinds.app_password {
        return Err(AuthError::Session(crate::oauth::FlowError::SessionExpired));
    }
    if kinds.app_password {
        match req.extensions.get::<crate::proxy::headers::AppPasswordHeaders>() {
            Some(_) if req.headers.contains_key(header::AUTHORIZATION) => return Err(AuthError::Ambiguous),
            Some(creds) => {
                let sessions = runtime.sessions.as_ref().ok_or(AuthError::NotRouted)?;
                // Failed logins are capped per client address (the first untrusted hop).
                let client = req.extensions.get::<ClientInfo>().map_or(IpAddr::from([0, 0, 0, 0]), |c| c.ip);
                let session = sessions.authenticate(creds, client).await?;
                if !route.policy.admits(&session.did) {
                    return Err(AuthError::Denied);
                }
                return Ok(Principal::AppPassword(session));
            }
            None if !kinds.dpop && !kinds.service_auth => {
                return Err(AuthError::AppPassword(app_password::LoginError::Invalid(
                    "both the handle and the app password headers are required",
                )));
            }
            None => {}
        }
    }
    let mut values = req.headers.get_all(header::AUTHORIZATION).iter();
    let service_token = match (values.next(), values.next()) {
        (None, _) if !kinds.dpop => return Err(AuthError::ServiceMissing),
        (Some(_), Some(_)) if !kinds.dpop => return Err(AuthError::BadHeader),
        (Some(value), None) if kinds.service_auth => match parse_authorization(value)? {
            (Scheme::Bearer, token) if !kinds.dpop || service::looks_like_service_jwt(token) => Some(token),
            (Scheme::Dpop, _) if !kinds.dpop => return Err(AuthError::Service(service::ServiceError::Scheme)),
            _ => None,
        },
        // The DPoP path reports missing, repeated and malformed headers itself.
        _ => None,
    };
    let principal = match service_token {
        Some(token) => {
            let verifier = runtime.service.as_ref().ok_or(AuthError::NotRouted)?;
            // `from_path` reads the method the upstream will see: the normalized path
            // after the route's rewrite.
            let forwarded;
            let lxm = match &route.lxm {
                Lxm::Fixed(nsid) => nsid.as_str(),
                Lxm::FromPath => {
                    let normal = req.extensions.get::<NormalPath>().map_or(req.uri.path(), |p| &p.0);
                    forwarded = route.upstream_path(normal);
                    service::xrpc_method(&forwarded).ok_or(AuthError::NotXrpc)?
                }
            };
            let expect = service::Expect { lxm, single_use: !route.allow_token_reuse, policy: &route.policy };
            let token = service::verify(verifier, shared.replay.as_ref(), token, expect, now_ms() / 1000).await?;
            Principal::Service(token)
        }
        None => {
            let dpop = runtime.dpop.as_ref().ok_or(AuthError::NotRouted)?;
            let external = external_url(runtime.config.public_url.as_ref(), req);
            let principal = authenticate_dpop(shared.replay.as_ref(), dpop, req, external.as_deref(), now_ms()).await?;
            if !principal.did().is_some_and(|did| route.policy.admits(did)) {
                return Err(AuthError::Denied);
            }
            principal
        }
    };
    Ok(principal)
}

/// The URL the client addressed: `public_url`, or without one the scheme and host a
/// trusted proxy reports (`X-Forwarded-Proto/-Host`, else its `Host`), plus the request
/// path as sent. Never a `Host` from an untrusted peer (ATPROTO-AUTH.md §3.5): a proof
/// made for another site must not become valid here by naming that site in `Host`.
pub fn external_url(public: Option<&url::Url>, req: &Parts) -> Option<String> {
    let path = req.uri.path();
    let origin = match public {
        Some(u) => u.origin().ascii_serialization(),
        None => {
            let client = req.extensions.get::<ClientInfo>().filter(|c| c.peer_trusted)?;
            format!("{}://{}", client.proto, client.host.as_deref()?)
        }
    };
    if public.is_some() && is_plain_path(path) {
        // An origin's serialization followed by a path the parser leaves alone is
        // normalized already; parsing it would give it back unchanged.
        return Some(origin + path);
    }
    normalize_url(&format!("{origin}{path}"))
}

/// The WHATWG serialization of `text` up to its path (origin and path, no query or
/// fragment), or `None` if it is not a URL.
pub fn normalize_url(text: &str) -> Option<String> {
    url::Url::parse(text).ok().map(|u| u[..url::Position::AfterPath].to_owned())
}

/// A path WHATWG URL parsing keeps as it is: absolute, only unreserved characters and
/// sub-delimiters (nothing it percent-encodes, no `%` whose `%2e` could be a dot, no `\`),
/// no `.` or `..` segment.
fn is_plain_path(path: &str) -> bool {
    path.starts_with('/')
        && path.bytes().all(|b| b.is_ascii_alphanumeric() || b"/-._~!$&'()*+,;=:@".contains(&b))
        && path.split('/').all(|segment| segment != "." && segment != "..")
}

/// Splits `Authorization` into scheme and token: exactly two parts separated by one space
/// (ATPROTO-AUTH.md §2); schemes case-insensitive.
pub fn parse_authorization(value: &HeaderValue) -> Result<(Scheme, &str), AuthError> {
    let text = value.to_str().map_err(|_| AuthError::BadHeader)?;
    let mut parts = text.split(' ');
    let (Some(scheme), Some(token), None) = (parts.next(), parts.next(), parts.next()) else {
        return Err(AuthError::BadHeader);
    };
    if token.is_empty() {
        return Err(AuthError::BadHeader);
    }
    let scheme = if scheme.eq_ignore_ascii_case("dpop") {
        Scheme::Dpop
    } else if scheme.eq_ignore_ascii_case("bearer") {
        Scheme::Bearer
    } else {
        return Err(AuthError::BadHeader);
    };
    Ok((scheme, token))
}

/// The DPoP path: proof, token (cached), binding, then replay.
pub async fn authenticate_dpop(
    replay: &dyn dpop::replay::ReplayStore,
    dpop: &DpopState,
    req: &Parts,
    external: Option<&str>,
    now_ms: u64,
) -> Result<Principal, AuthError> {
    let mut values = req.headers.get_all(header::AUTHORIZATION).iter();
    let value = values.next().ok_or(AuthError::Missing)?;
    if values.next().is_some() {
        return Err(AuthError::BadHeader);
    }
    let (scheme, token) = parse_authorization(value)?;
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, token.as_bytes());
    let mut hash = [0u8; 32];
    hash.copy_from_slice(digest.as_ref());
    let now = now_ms / 1000;

    if scheme == Scheme::Bearer {
        // atproto clients must use DPoP; say which way the token is wrong.
        let verified = verified_token(dpop, token, &hash, scheme, now).await?;
        let reason = if verified.jkt.is_some() { TokenError::BoundAsBearer } else { TokenError::Unbound };
        return Err(AuthError::Token { scheme, reason });
    }

    let mut proofs = req.headers.get_all("dpop").iter();
    let proof = proofs.next().ok_or(AuthError::Proof(ProofError::Required))?;
    if proofs.next().is_some() {
        return Err(AuthError::Proof(ProofError::Multiple));
    }
    if proof.is_empty() {
        return Err(AuthError::Proof(ProofError::Empty));
    }
    if proof.len() > dpop.max_proof_bytes {
        return Err(AuthError::Proof(ProofError::TooLarge));
    }
    let proof = proof.to_str().map_err(|_| AuthError::Proof(ProofError::Malformed))?;
    let ath = b64url(&hash);
    let url = external.ok_or(AuthError::Proof(ProofError::HtuMismatch))?;
    let ctx = ProofContext { method: req.method.as_str(), url, ath: Some(&ath), now_ms };
    let proof = verify_proof(proof, &ctx, &dpop.nonces, &dpop.proof_keys)?;
    let verified = verified_token(dpop, token, &hash, scheme, now).await?;
    match &verified.jkt {
        None => return Err(AuthError::Token { scheme, reason: TokenError::Unbound }),
        Some(jkt) if *jkt != proof.jkt => return Err(AuthError::Token { scheme, reason: TokenError::Binding }),
        Some(_) => {}
    }
    // Only now, with the token verified and bound to the proof key (and `ath` binding the
    // proof to the token), is the `jti` recorded: proofs carrying junk tokens must not
    // fill the store, or the Redis that also holds browser sessions.
    match replay.insert_if_absent(proof.replay_key, REPLAY_TTL).await {
        Ok(true) => Ok(Principal::OAuth { token: verified, jkt: proof.jkt }),
        Ok(false) => Err(AuthError::Proof(ProofError::Replayed)),
        Err(e) => Err(AuthError::replay(e)),
    }
}

async fn verified_token(
    dpop: &DpopState,
    token: &str,
    hash: &[u8; 32],
    scheme: Scheme,
    now: u64,
) -> Result<Arc<VerifiedToken>, AuthError> {
    if let Some(t) = dpop.tokens.get(hash, now, &dpop.issuers) {
        return Ok(t);
    }
    let (verified, by) = token::verify_token_by_key(token, scheme, &dpop.issuers, now).await?;
    let verified = Arc::new(verified);
    dpop.tokens.insert(*hash, verified.clone(), by);
    Ok(verified)
}

/// How an `oauth_session` route refuses: a browser asking for a page without a session
/// goes to the sign-in page (and back afterwards); other failures get a page or JSON.
fn session_refusal(runtime: &Runtime, parts: &Parts, error: &crate::oauth::FlowError) -> Response<Body> {
    let Some(client) = runtime.oauth.as_deref() else { return reject(&AuthError::NotRouted) };
    let page = matches!(parts.method, http::Method::GET | http::Method::HEAD);
    let html = crate::oauth::wants_html(&parts.headers);
    if *error == crate::oauth::FlowError::SessionExpired && page && html {
        let target = parts.uri.path_and_query().map_or("/", |p| p.as_str());
        let mut res = crate::oauth::login_redirect(client, target);
        res.extensions_mut().insert(crate::respond::Outcome("session_required"));
        return res;
    }
    crate::oauth::respond(client, error, html)
}

/// Adds what every response on the DPoP path carries (ATPROTO-AUTH.md §3.7, §5): a fresh
/// `DPoP-Nonce`, CORS exposure of it and of `WWW-Authenticate`, and no shared caching.
pub fn decorate_dpop_response(res: &mut Response<Body>, dpop: &DpopState) {
    let headers = res.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&dpop.nonces.current(now_ms())) {
        headers.insert(HeaderName::from_static("dpop-nonce"), v);
    }
    let expose =
        if headers.contains_key(header::WWW_AUTHENTICATE) { "DPoP-Nonce, WWW-Authenticate" } else { "DPoP-Nonce" };
    headers.append(header::ACCESS_CONTROL_EXPOSE_HEADERS, HeaderValue::from_static(expose));
    headers.append(header::VARY, HeaderValue::from_static("Authorization"));
    if !headers.contains_key(header::CACHE_CONTROL) {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("private"));
    }
}

/// The authentication stage: inserts a `Principal`, or answers the verifier's error.
pub struct Auth;

/// Builds the authentication stage.
pub fn layer(shared: &Arc<Shared>) -> StageLayer<Auth> {
    StageLayer::new(shared)
}

impl Stage for Auth {
    fn call<S: Next>(shared: &Arc<Shared>, req: Request<Body>, next: S) -> HttpFuture {
        let mut inner = next;
        let shared = shared.clone();
        Box::pin(async move {
            // Verifiers see the request head only; the body streams on untouched.
            let (mut parts, body) = req.into_parts();
            let Some(route) = parts.extensions.get::<Arc<Route>>().cloned() else {
                return Ok(reject(&AuthError::NotRouted));
            };
            // The verifier and the nonce it answers with come from the runtime the request
            // started on, even if a reload lands meanwhile.
            let runtime = shared.runtime_of(&parts.extensions);
            let result = authenticate(&shared, &runtime, &route, &parts).await;
            if let Err(e) = &result {
                tracing::debug!(route = %route.name.0, error = %e, "authentication failed");
            }
            let mut res = match result {
                Err(AuthError::Session(e)) if route.auth.oauth_session && runtime.oauth.is_some() => {
                    session_refusal(&runtime, &parts, &e)
                }
                Ok(principal) => {
                    if let (Principal::Session(_), Some(client)) = (&principal, runtime.oauth.as_deref()) {
                        crate::oauth::strip_own_cookies(client, &mut parts.headers);
                    }
                    if route.inject_handle
                        && let (Some(resolver), Some(did)) = (runtime.resolver.as_ref(), principal.did())
                        && let Some(handle) = resolver.verified_handle(did).await
                    {
                        parts.extensions.insert(VerifiedHandle(handle));
                    }
                    parts.extensions.insert(principal);
                    inner.call(Request::from_parts(parts, body)).await?
                }
                Err(e) => reject(&e),
            };
            if route.auth.dpop
                && let Some(dpop) = runtime.dpop.as_ref()
            {
                decorate_dpop_response(&mut res, dpop);
            }
            Ok(res)
        })
    }
}

#[cfg(test)]
mod tests;
