//! Browser sign-in: atgate as a confidential atproto OAuth client (a backend-for-frontend)
//! in front of web apps, the way oauth2-proxy fronts them with OIDC.
//!
//! Under `oauth_client.path_prefix` (default `/oauth`) atgate serves its client metadata
//! (`/client-metadata.json`, which is the `client_id`), its public keys (`/jwks.json`),
//! the sign-in page (`/login`), the redirect target (`/callback`), sign-out (`/logout`)
//! and the current session as JSON (`/session`). A browser on an `oauth_session` route
//! without a session is sent to the sign-in page; after the authorization server's
//! consent it holds one opaque, signed, HttpOnly cookie, while the tokens stay in the
//! session store. See docs/browser-sign-in.md.

pub mod client;
pub mod error;
pub mod pages;
pub mod store;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::BodyExt;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::body::{self, Body};
use crate::jose::b64url;
use crate::jose::sign::{SigningKey, random_id};
use crate::respond::Reject;
use crate::scope::Granted;
use crate::state::{Runtime, Shared};
pub use client::{AuthServer, CookieNames, OAuthClient};
pub use error::FlowError;
use store::SessionStore;

/// How long a sign-in may take between the sign-in form and the callback.
const FLOW_TTL: Duration = Duration::from_secs(600);
/// Longest a refresh may hold the cross-replica lock.
const LOCK_TTL: Duration = Duration::from_secs(30);
/// A session's life in the store is extended at most this often per replica, or at half
/// the session's idle time when that is shorter (sliding expiry without a store write per
/// request).
pub(crate) const TOUCH_EVERY: Duration = Duration::from_secs(60);
/// RFC 6265bis §4.1.3.2: a `__Host-` cookie must be `Secure`, have `Path=/` and no
/// `Domain`; browsers then refuse it from http pages and sibling subdomains.
const HOST_PREFIX: &str = "__Host-";
/// Largest form body read (sign-in, sign-out).
const MAX_FORM: usize = 8 * 1024;

/// A signed-in browser session, as stored.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Session {
    /// The account.
    pub did: String,
    /// Its handle, verified both ways at sign-in.
    pub handle: Option<String>,
    /// Its PDS.
    pub pds: String,
    /// The authorization server.
    pub server: AuthServer,
    /// The DPoP-bound access token.
    pub access_token: String,
    /// The single-use refresh token.
    pub refresh_token: Option<String>,
    /// Unix seconds when the access token expires.
    pub expires_at: u64,
    /// Granted scope.
    pub scope: String,
    /// The session's own DPoP key (private JWK).
    pub dpop_key: Value,
    /// Unix seconds of sign-in.
    pub created_at: u64,
}

/// A sign-in in progress, stored under its `state` until the callback.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Pending {
    did: String,
    handle: Option<String>,
    pds: String,
    server: AuthServer,
    verifier: String,
    dpop_key: Value,
    return_to: String,
}

/// The principal of an `oauth_session` route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionPrincipal {
    /// The account.
    pub did: String,
    /// Its verified handle.
    pub handle: Option<String>,
    /// Granted scope.
    pub scope: String,
    /// The scope, parsed for route requirements.
    pub granted: Granted,
}

fn now() -> u64 {
    crate::auth::now_ms() / 1000
}

impl OAuthClient {
    fn path(&self, name: &str) -> String {
        format!("{}/{name}", self.config.path_prefix)
    }

    /// `id.signature`: the cookie value for a session id (or a state).
    fn sign(&self, purpose: &str, id: &str) -> String {
        let tag = aws_lc_rs::hmac::sign(&self.cookie_key, format!("{purpose}:{id}").as_bytes());
        format!("{id}.{}", b64url(tag.as_ref()))
    }

    /// The id inside a cookie value, if its signature holds.
    fn verify<'a>(&self, purpose: &str, value: &'a str) -> Option<&'a str> {
        let (id, tag) = value.split_once('.')?;
        let tag = crate::jose::b64url_decode(tag)?;
        if id.is_empty() || id.len() > 64 {
            return None;
        }
        aws_lc_rs::hmac::verify(&self.cookie_key, format!("{purpose}:{id}").as_bytes(), &tag).ok()?;
        Some(id)
    }

    /// The store key of a session (`s`), sign-in (`p`) or refresh lock (`l`): a digest of
    /// the id, so that key names reveal nothing that opens the values.
    fn store_key(&self, kind: &str, id: &str) -> String {
        format!("{kind}:{}", crate::jose::sha256_b64url(format!("atgate-{kind}:{id}").as_bytes()))
    }

    /// AES-256-GCM under a key derived from the cookie secret and the id only the browser
    /// holds: a dump of the store (Redis) alone opens no session and shows no token.
    fn seal_key(&self, kind: &str, id: &str) -> Option<aws_lc_rs::aead::LessSafeKey> {
        let tag = aws_lc_rs::hmac::sign(&self.cookie_key, format!("seal:{kind}:{id}").as_bytes());
        let key = aws_lc_rs::aead::UnboundKey::new(&aws_lc_rs::aead::AES_256_GCM, tag.as_ref()).ok()?;
        Some(aws_lc_rs::aead::LessSafeKey::new(key))
    }

    /// `nonce || ciphertext || tag`.
    fn seal(&self, kind: &str, id: &str, plain: &[u8]) -> Option<Bytes> {
        let key = self.seal_key(kind, id)?;
        let mut nonce = [0u8; aws_lc_rs::aead::NONCE_LEN];
        aws_lc_rs::rand::fill(&mut nonce).ok()?;
        let mut data = plain.to_vec();
        let aad = aws_lc_rs::aead::Aad::from(kind.as_bytes());
        key.seal_in_place_append_tag(aws_lc_rs::aead::Nonce::assume_unique_for_key(nonce), aad, &mut data).ok()?;
        let mut out = Vec::with_capacity(nonce.len() + data.len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&data);
        Some(out.into())
    }

    /// The plaintext of [`Self::seal`]'s output; `None` if it was changed or sealed for
    /// another id or key.
    fn open(&self, kind: &str, id: &str, sealed: &[u8]) -> Option<Vec<u8>> {
        let key = self.seal_key(kind, id)?;
        let (nonce, data) = sealed.split_at_checked(aws_lc_rs::aead::NONCE_LEN)?;
        let nonce = aws_lc_rs::aead::Nonce::try_assume_unique_for_key(nonce).ok()?;
        let mut data = data.to_vec();
        let aad = aws_lc_rs::aead::Aad::from(kind.as_bytes());
        let plain = key.open_in_place(nonce, aad, &mut data).ok()?;
        Some(plain.to_vec())
    }

    /// The sign-in flow cookie's name.
    fn flow_cookie(&self) -> &str {
        &self.cookie_names.flow
    }

    /// The flow cookie's path: the callback, unless the `__Host-` prefix requires `/`.
    fn flow_cookie_path(&self) -> String {
        if self.cookie_names.flow.starts_with(HOST_PREFIX) { "/".to_owned() } else { self.path("callback") }
    }

    /// Every name under which a request may carry one of atgate's cookies for this
    /// config: the session and flow cookies as set, and their spellings with and without
    /// the `__Host-` prefix. The proxy strips all of them (compared case-insensitively)
    /// from forwarded requests, so that no upstream sees a session credential.
    pub fn own_cookie_names(&self) -> Vec<String> {
        let base = self.config.cookie_name.strip_prefix(HOST_PREFIX).unwrap_or(&self.config.cookie_name);
        let mut names = vec![self.cookie_names.session.clone(), self.cookie_names.flow.clone()];
        for name in [base.to_owned(), format!("{base}_flow")] {
            names.push(format!("{HOST_PREFIX}{name}"));
            names.push(name);
        }
        names.sort();
        names.dedup();
        names
    }

    /// A `Set-Cookie` value; `None` as the value clears the cookie.
    fn set_cookie(&self, name: &str, value: Option<&str>, path: &str, max_age: Duration) -> HeaderValue {
        let (value, age) = match value {
            Some(v) => (v, max_age.as_secs()),
            None => ("", 0),
        };
        let secure = if self.secure { "; Secure" } else { "" };
        let text = format!("{name}={value}; Path={path}; Max-Age={age}; HttpOnly; SameSite=Lax{secure}");
        HeaderValue::from_str(&text).unwrap_or_else(|_| HeaderValue::from_static("invalid=; Max-Age=0"))
    }

    /// The session cookie's value for a session id (`id.signature`).
    pub fn session_cookie(&self, id: &str) -> String {
        self.sign("session", id)
    }

    /// The session id from the request's cookies (the first correctly signed one).
    pub fn session_id<'a>(&self, headers: &'a HeaderMap) -> Option<&'a str> {
        cookies(headers, &self.cookie_names.session).into_iter().find_map(|v| self.verify("session", v))
    }

    /// The session cookie's name (`__Host-` prefixed when `Secure`).
    pub fn session_cookie_name(&self) -> &str {
        &self.cookie_names.session
    }
}

/// Values of the cookies named `name` in every `Cookie` header.
fn cookies<'h>(headers: &'h HeaderMap, name: &str) -> Vec<&'h str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| {
            let (k, v) = pair.trim().split_once('=')?;
            (k == name).then_some(v)
        })
        .collect()
}

/// Removes atgate's own cookies from the request before it goes upstream: the web app
/// never sees the session credential.
pub fn strip_own_cookies(client: &OAuthClient, headers: &mut HeaderMap) {
    let names = client.own_cookie_names();
    let own = |pair: &str| {
        let name = pair.trim().split_once('=').map_or(pair.trim(), |(k, _)| k).trim();
        names.iter().any(|n| n.eq_ignore_ascii_case(name))
    };
    let kept: Vec<String> = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter(|p| !p.trim().is_empty() && !own(p))
        .map(|p| p.trim().to_owned())
        .collect();
    headers.remove(header::COOKIE);
    if !kept.is_empty()
        && let Ok(v) = HeaderValue::from_str(&kept.join("; "))
    {
        headers.insert(header::COOKIE, v);
    }
}

/// Whether the client prefers a page to JSON.
pub fn wants_html(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("text/html") && !a.starts_with("application/json"))
}

/// CSRF defence for state-changing requests: `Origin` (or, without it, `Referer`) must
/// be atgate's own origin. `SameSite=Lax` already keeps the cookie off cross-site POSTs;
/// this also covers same-site sibling origins and old browsers.
pub fn same_origin(client: &OAuthClient, method: &Method, headers: &HeaderMap) -> Result<(), FlowError> {
    if matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS) {
        return Ok(());
    }
    // Fetch Metadata: a browser that marks the request cross-site or same-site (a
    // sibling origin) is refused whatever its Origin says.
    if headers.get("sec-fetch-site").is_some_and(|v| !matches!(v.as_bytes(), b"same-origin" | b"none")) {
        return Err(FlowError::Csrf);
    }
    let origin = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok());
    let ok = match origin {
        Some(o) => o == client.origin,
        None => headers
            .get(header::REFERER)
            .and_then(|v| v.to_str().ok())
            .and_then(|r| url::Url::parse(r).ok())
            .is_some_and(|u| u.origin().ascii_serialization() == client.origin),
    };
    if ok { Ok(()) } else { Err(FlowError::Csrf) }
}

/// A local path to return to after sign-in: absolute path, not `//` or `/\`, bounded.
fn safe_return(to: Option<&str>) -> String {
    match to {
        Some(p)
            if p.starts_with('/')
                && !p.starts_with("//")
                && !p.starts_with("/\\")
                && p.len() <= 2048
                && !p.chars().any(|c| c.is_control()) =>
        {
            p.to_owned()
        }
        _ => "/".to_owned(),
    }
}

fn see_other(location: &str) -> Response<Body> {
    let mut res = Response::new(body::empty());
    *res.status_mut() = StatusCode::SEE_OTHER;
    if let Ok(v) = HeaderValue::from_str(location) {
        res.headers_mut().insert(header::LOCATION, v);
    }
    res.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    res
}

fn json_response(value: &Value, cache: &'static str) -> Response<Body> {
    let mut res = Response::new(body::full(value.to_string()));
    res.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    res.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    res
}

/// Answers a failure: a page for browsers (`html`, see [`wants_html`]), XRPC JSON otherwise.
pub fn respond(client: &OAuthClient, error: &FlowError, html: bool) -> Response<Body> {
    let mut res = if html {
        let mut page = pages::error(error.status(), error.title(), &error.message(), &client.path("login"));
        error.headers(page.headers_mut());
        page
    } else {
        crate::respond::reject(error)
    };
    res.extensions_mut().insert(crate::respond::Outcome(error.reason()));
    res
}

/// The query parameters of a request.
fn query(req: &http::request::Parts) -> Vec<(String, String)> {
    url::form_urlencoded::parse(req.uri.query().unwrap_or("").as_bytes()).into_owned().collect()
}

fn param<'a>(pairs: &'a [(String, String)], name: &str) -> Option<&'a str> {
    pairs.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

/// The whole body, or `TooLarge` past `max` bytes.
async fn read_body(mut body: Body, max: usize) -> Result<Bytes, FlowError> {
    let mut buf = bytes::BytesMut::new();
    while let Some(frame) = body.frame().await {
        let Ok(frame) = frame else { return Err(FlowError::TooLarge) };
        if let Ok(data) = frame.into_data() {
            if buf.len() + data.len() > max {
                return Err(FlowError::TooLarge);
            }
            buf.extend_from_slice(&data);
        }
    }
    Ok(buf.freeze())
}

async fn read_form(body: Body) -> Result<Vec<(String, String)>, FlowError> {
    let bytes = read_body(body, MAX_FORM).await?;
    Ok(url::form_urlencoded::parse(&bytes).into_owned().collect())
}

/// Whether the request is for one of the client's own endpoints or its PDS proxy.
pub fn is_own_path(client: &OAuthClient, path: &str) -> bool {
    let under = |prefix: &str| path.strip_prefix(prefix).is_some_and(|rest| rest.is_empty() || rest.starts_with('/'));
    under(&client.config.path_prefix) || client.config.pds_proxy.as_deref().is_some_and(under)
}

/// Serves the client's endpoints and the PDS proxy; `path` is the normalized path.
pub async fn serve(shared: Arc<Shared>, runtime: Arc<Runtime>, path: String, req: Request<Body>) -> Response<Body> {
    let Some(client) = runtime.oauth.clone() else {
        return crate::respond::reject(&FlowError::NotFound);
    };
    let store = shared.sessions.clone();
    let html = wants_html(req.headers());
    let result = match path.strip_prefix(&client.config.path_prefix) {
        Some(rest) if rest.is_empty() || rest.starts_with('/') => endpoint(&runtime, &client, &*store, rest, req).await,
        _ => pds_proxy(&runtime, &client, &*store, &path, req).await,
    };
    result.unwrap_or_else(|e| respond(&client, &e, html))
}

async fn endpoint(
    runtime: &Runtime,
    client: &OAuthClient,
    store: &dyn SessionStore,
    rest: &str,
    req: Request<Body>,
) -> Result<Response<Body>, FlowError> {
    let (req, body) = req.into_parts();
    match (rest, req.method.clone()) {
        ("/client-metadata.json", Method::GET | Method::HEAD) => {
            Ok(crate::router::well_known_response(client.metadata.clone(), "application/json"))
        }
        ("/jwks.json", Method::GET | Method::HEAD) => {
            // The reference provider fetches `jwks_uri` accepting only `application/json`
            // (@atproto/oauth-provider client-manager.ts), not RFC 7517 §8.5's jwk-set+json.
            Ok(crate::router::well_known_response(client.keys.jwks.clone(), "application/json"))
        }
        ("/login", Method::GET) => {
            let q = query(&req);
            let return_to = safe_return(param(&q, "return_to"));
            match param(&q, "login_hint").filter(|h| !h.is_empty()) {
                // A link must not send the browser to whatever authorization server the
                // hinted account names: the hint only fills in the form, and only the
                // form's same-origin POST starts a sign-in.
                Some(hint) => {
                    let hint: String = hint.chars().take(256).collect();
                    Ok(pages::sign_in(&client.config.client_name, &client.path("login"), &return_to, &hint, None))
                }
                // Already signed in: straight back.
                None if load(client, store, &req.headers).await?.is_some() => Ok(see_other(&return_to)),
                None => Ok(pages::sign_in(&client.config.client_name, &client.path("login"), &return_to, "", None)),
            }
        }
        ("/login", Method::POST) => {
            same_origin(client, &req.method, &req.headers)?;
            let form = read_form(body).await?;
            let return_to = safe_return(param(&form, "return_to"));
            let handle = param(&form, "handle").unwrap_or("");
            match start(client, store, &req, handle, &return_to).await {
                // A typo or unknown handle goes back to the form, with what went wrong.
                Err(e @ (FlowError::BadHandle | FlowError::UnknownAccount(_) | FlowError::NoPds)) => {
                    let mut res = pages::sign_in(
                        &client.config.client_name,
                        &client.path("login"),
                        &return_to,
                        handle,
                        Some(&e.message()),
                    );
                    res.extensions_mut().insert(crate::respond::Outcome(e.reason()));
                    Ok(res)
                }
                other => other,
            }
        }
        ("/callback", Method::GET) => callback(runtime, client, store, &req).await,
        ("/logout", Method::GET) => match load(client, store, &req.headers).await? {
            Some((_, s)) => Ok(pages::sign_out(&client.path("logout"), s.handle.as_deref().unwrap_or(&s.did))),
            None => Ok(see_other(&client.path("login"))),
        },
        ("/logout", Method::POST) => {
            same_origin(client, &req.method, &req.headers)?;
            logout(client, store, &req.headers).await
        }
        ("/session", Method::GET) => match load(client, store, &req.headers).await? {
            Some((_, s)) => Ok(json_response(
                &json!({"did": s.did, "handle": s.handle, "scope": s.scope, "pds": s.pds}),
                "no-store",
            )),
            None => Err(FlowError::SessionExpired),
        },
        _ => Err(FlowError::NotFound),
    }
}

/// Resolves the account, pushes the authorization request and sends the browser to the
/// authorization server, remembering the flow under its `state`.
async fn start(
    client: &OAuthClient,
    store: &dyn SessionStore,
    req: &http::request::Parts,
    input: &str,
    return_to: &str,
) -> Result<Response<Body>, FlowError> {
    // Each sign-in costs resolutions and a PAR request: limited per client address.
    if let Some(info) = req.extensions.get::<crate::proxy::forwarded::ClientInfo>() {
        client
            .sign_ins
            .check(&crate::ratelimit::Key::ip(info.ip))
            .map_err(|e| FlowError::RateLimited(e.retry_after))?;
    }
    let account = client.discover(input).await?;
    let state = random_id();
    let verifier = client::pkce_verifier();
    let key = SigningKey::generate();
    let hint = account.handle.clone().unwrap_or_else(|| account.did.clone());
    let location = client.push_request(&account, &hint, &state, &verifier, &key).await?;
    let pending = Pending {
        did: account.did,
        handle: account.handle,
        pds: account.pds.to_string(),
        server: account.server,
        verifier,
        dpop_key: key.private_jwk(),
        return_to: return_to.to_owned(),
    };
    let sealed = serde_json::to_vec(&pending).ok().and_then(|plain| client.seal("p", &state, &plain));
    let sealed = sealed.ok_or_else(|| FlowError::Store(store::StoreError("cannot seal the sign-in".into())))?;
    store.set(&client.store_key("p", &state), sealed, FLOW_TTL).await?;
    let mut res = see_other(&location);
    let cookie = client.set_cookie(
        client.flow_cookie(),
        Some(&client.sign("flow", &state)),
        &client.flow_cookie_path(),
        FLOW_TTL,
    );
    res.headers_mut().append(header::SET_COOKIE, cookie);
    Ok(res)
}

/// The redirect back from the authorization server.
async fn callback(
    runtime: &Runtime,
    client: &OAuthClient,
    store: &dyn SessionStore,
    req: &http::request::Parts,
) -> Result<Response<Body>, FlowError> {
    let q = query(req);
    let state = param(&q, "state").ok_or(FlowError::StateUnknown)?;
    // The flow cookie binds the callback to the browser that started it (login CSRF).
    let flow = client.flow_cookie();
    if !cookies(&req.headers, flow).into_iter().any(|v| client.verify("flow", v) == Some(state)) {
        return Err(FlowError::StateMismatch);
    }
    let sealed = store.take(&client.store_key("p", state)).await?.ok_or(FlowError::StateUnknown)?;
    let pending: Pending = client
        .open("p", state, &sealed)
        .and_then(|plain| serde_json::from_slice(&plain).ok())
        .ok_or(FlowError::StateUnknown)?;
    // RFC 9207: the answer must come from the server the request went to (mix-up).
    if param(&q, "iss") != Some(pending.server.issuer.as_str()) {
        return Err(FlowError::IssuerMismatch);
    }
    if let Some(code) = param(&q, "error") {
        return Err(match code {
            "access_denied" => FlowError::Denied,
            other => FlowError::AuthorizationFailed(other.chars().filter(char::is_ascii_graphic).take(64).collect()),
        });
    }
    let code = param(&q, "code").ok_or_else(|| FlowError::AuthorizationFailed("no code".into()))?;
    let key = SigningKey::from_jwk(&pending.dpop_key).map_err(|_| FlowError::StateUnknown)?;
    let tokens = client.exchange_code(&pending.server, code, &pending.verifier, &key).await.map_err(|e| match e {
        client::TokenFailure::Refused(r) => r.log(&pending.server.issuer, "token", r.sign_in_outcome("token")),
        client::TokenFailure::Unavailable(m) => {
            tracing::warn!(issuer = %pending.server.issuer, error = %m, "token request failed");
            FlowError::TokenRefused("no usable answer".into())
        }
    })?;
    if tokens.sub != pending.did {
        revoke_quietly(client, &pending.server, tokens.refresh_token.as_deref(), &tokens.access_token, &key).await;
        return Err(FlowError::AccountMismatch("the token is for another account than the one that signed in"));
    }
    // The account's own PDS must name this authorization server (resolved again, now).
    let doc = match runtime.resolver.as_ref() {
        Some(r) => match r.refresh(&tokens.sub).await {
            Some(doc) => Some(doc),
            None => r.resolve(&tokens.sub).await.ok(),
        },
        None => None,
    };
    let pds = doc.and_then(|d| d.pds.clone());
    let named = match &pds {
        Some(pds) => client.authorization_server(pds).await.ok().map(|s| s.issuer),
        None => None,
    };
    if named.as_deref() != Some(pending.server.issuer.as_str()) {
        revoke_quietly(client, &pending.server, tokens.refresh_token.as_deref(), &tokens.access_token, &key).await;
        return Err(FlowError::AccountMismatch("the account's PDS does not name this authorization server"));
    }
    let session = Session {
        did: pending.did,
        handle: pending.handle,
        pds: pds.map_or(pending.pds, String::from),
        server: pending.server,
        access_token: tokens.access_token,
        refresh_token: tokens.refresh_token,
        expires_at: tokens.expires_at,
        scope: tokens.scope,
        dpop_key: pending.dpop_key,
        created_at: now(),
    };
    let id = b64url(&crate::jose::sign::random_secret());
    save(client, store, &id, &session).await?;
    tracing::info!(did = %session.did, issuer = %session.server.issuer, "browser signed in");
    client.events.sign_ins.fetch_add(1, Ordering::Relaxed);
    let mut res = see_other(&pending.return_to);
    let h = res.headers_mut();
    let cookie = client.sign("session", &id);
    h.append(
        header::SET_COOKIE,
        client.set_cookie(client.session_cookie_name(), Some(&cookie), "/", client.config.session_ttl),
    );
    h.append(header::SET_COOKIE, client.set_cookie(flow, None, &client.flow_cookie_path(), Duration::ZERO));
    Ok(res)
}

/// Revokes a grant's tokens at the server, refresh token first; failures are logged.
async fn revoke_quietly(
    client: &OAuthClient,
    server: &AuthServer,
    refresh: Option<&str>,
    access: &str,
    key: &SigningKey,
) {
    for token in refresh.into_iter().chain([access]) {
        if let Err(e) = client.revoke(server, token, key).await {
            tracing::warn!(error = %e, "token revocation failed");
        }
    }
}

/// Stores `session` under `id` (sealed, for `session_ttl`).
pub async fn save(
    client: &OAuthClient,
    store: &dyn SessionStore,
    id: &str,
    session: &Session,
) -> Result<(), FlowError> {
    let sealed = serde_json::to_vec(session).ok().and_then(|plain| client.seal("s", id, &plain));
    let sealed = sealed.ok_or_else(|| FlowError::Store(store::StoreError("cannot seal the session".into())))?;
    store.set(&client.store_key("s", id), sealed, client.config.session_ttl).await?;
    Ok(())
}

/// The stored session; `None` when absent, or when it does not open or parse.
async fn read(client: &OAuthClient, store: &dyn SessionStore, id: &str) -> Result<Option<Session>, FlowError> {
    let sealed = store.get(&client.store_key("s", id)).await?;
    Ok(sealed.and_then(|b| client.open("s", id, &b)).and_then(|plain| serde_json::from_slice(&plain).ok()))
}

/// The request's session, if its cookie is valid and the session alive; sliding expiry.
async fn load<'h>(
    client: &OAuthClient,
    store: &dyn SessionStore,
    headers: &'h HeaderMap,
) -> Result<Option<(&'h str, Session)>, FlowError> {
    let Some(id) = client.session_id(headers) else { return Ok(None) };
    let Some(session) = read(client, store, id).await? else { return Ok(None) };
    // Sliding expiry: the store entry's life is extended, never rewritten, so a touch
    // cannot undo a refresh that another request or replica just saved. Measured on the
    // store's clock, the one its expiry follows.
    let now = store.clock().now_ms();
    let every = u64::try_from(client.touch_every.as_millis()).unwrap_or(u64::MAX);
    if client.touched.get(id).is_none_or(|last| now.saturating_sub(last) >= every) {
        store.touch(&client.store_key("s", id), client.config.session_ttl).await?;
        client.touched.insert(id.to_owned(), now);
    }
    Ok(Some((id, session)))
}

fn needs_refresh(client: &OAuthClient, s: &Session) -> bool {
    s.expires_at <= now() + client.config.refresh_before.as_secs()
}

/// The session with an access token good for at least `refresh_before`: refreshed when
/// needed, once per session across replicas. Refresh tokens are single-use, so one
/// replica takes the store's lock, the others wait and read the result.
async fn fresh(
    client: &OAuthClient,
    store: &dyn SessionStore,
    id: &str,
    session: Session,
) -> Result<Session, FlowError> {
    if !needs_refresh(client, &session) {
        return Ok(session);
    }
    let local = client.refreshing.get_with(id.to_owned(), || Arc::new(tokio::sync::Mutex::new(())));
    let _one_here = local.lock().await;
    let lock_key = client.store_key("l", id);
    let owner = Bytes::from(random_id());
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let current = read(client, store, id).await?.ok_or(FlowError::SessionExpired)?;
        if !needs_refresh(client, &current) {
            return Ok(current);
        }
        if store.set_nx(&lock_key, owner.clone(), LOCK_TTL).await? {
            break;
        }
        if Instant::now() > deadline {
            return still_usable(current);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let result = refresh_locked(client, store, id).await;
    store.delete_if(&lock_key, owner).await?;
    result
}

async fn refresh_locked(client: &OAuthClient, store: &dyn SessionStore, id: &str) -> Result<Session, FlowError> {
    // Read again under the lock: another replica may have just finished.
    let mut session = read(client, store, id).await?.ok_or(FlowError::SessionExpired)?;
    if !needs_refresh(client, &session) {
        return Ok(session);
    }
    let Some(refresh_token) = session.refresh_token.clone() else {
        return still_usable(session);
    };
    let key = SigningKey::from_jwk(&session.dpop_key).map_err(|_| FlowError::SessionExpired)?;
    match client.refresh(&session.server, &refresh_token, &key).await {
        Ok(t) if t.sub == session.did => {
            session.access_token = t.access_token;
            session.refresh_token = t.refresh_token;
            session.expires_at = t.expires_at;
            session.scope = t.scope;
            save(client, store, id, &session).await?;
            tracing::debug!(did = %session.did, "session refreshed");
            client.events.refreshes.fetch_add(1, Ordering::Relaxed);
            Ok(session)
        }
        Ok(_) => {
            store.delete(&client.store_key("s", id)).await?;
            Err(FlowError::AccountMismatch("a refresh returned another account"))
        }
        // The grant is gone (revoked, expired, used): so is the session.
        Err(client::TokenFailure::Refused(r)) if r.error == "invalid_grant" => {
            tracing::info!(did = %session.did, error_description = %r.description, "refresh refused (invalid_grant); session ended");
            client.events.ended.fetch_add(1, Ordering::Relaxed);
            store.delete(&client.store_key("s", id)).await?;
            Err(FlowError::SessionExpired)
        }
        // Anything else (invalid_client, ...) is atgate's or the server's problem, not the
        // user's: keep the session and its current token.
        Err(client::TokenFailure::Refused(r)) => {
            r.log(&session.server.issuer, "token", FlowError::TokenRefused(r.error.clone()));
            tracing::warn!(did = %session.did, "refresh refused; keeping the current token while it lasts");
            client.events.refresh_failures.fetch_add(1, Ordering::Relaxed);
            still_usable(session)
        }
        Err(client::TokenFailure::Unavailable(m)) => {
            tracing::warn!(did = %session.did, error = %m, "refresh failed; keeping the current token while it lasts");
            client.events.refresh_failures.fetch_add(1, Ordering::Relaxed);
            still_usable(session)
        }
    }
}

fn still_usable(session: Session) -> Result<Session, FlowError> {
    if session.expires_at > now() {
        Ok(session)
    } else {
        Err(FlowError::Unreachable { what: "authorization server", cause: crate::net::NetError::Timeout })
    }
}

/// The auth stage's check for `oauth_session` routes: a valid session cookie, a live
/// session (refreshed if due), and for state-changing methods a same-origin request.
pub async fn authenticate(
    client: &OAuthClient,
    store: &dyn SessionStore,
    method: &Method,
    headers: &HeaderMap,
) -> Result<SessionPrincipal, FlowError> {
    let (id, session) = load(client, store, headers).await?.ok_or(FlowError::SessionExpired)?;
    same_origin(client, method, headers)?;
    let session = fresh(client, store, id, session).await?;
    Ok(SessionPrincipal {
        granted: Granted::parse(&session.scope),
        did: session.did,
        handle: session.handle,
        scope: session.scope,
    })
}

/// Where an unauthenticated browser is sent: the sign-in page, returning to `path`.
pub fn login_redirect(client: &OAuthClient, path_and_query: &str) -> Response<Body> {
    let mut url = format!("{}?", client.path("login"));
    url.push_str(
        &url::form_urlencoded::Serializer::new(String::new()).append_pair("return_to", path_and_query).finish(),
    );
    see_other(&url)
}

async fn logout(
    client: &OAuthClient,
    store: &dyn SessionStore,
    headers: &HeaderMap,
) -> Result<Response<Body>, FlowError> {
    if let Some(id) = client.session_id(headers)
        && let Some(session) = read(client, store, id).await?
    {
        store.delete(&client.store_key("s", id)).await?;
        if let Ok(key) = SigningKey::from_jwk(&session.dpop_key) {
            revoke_quietly(client, &session.server, session.refresh_token.as_deref(), &session.access_token, &key)
                .await;
        }
        tracing::info!(did = %session.did, "browser signed out");
        client.events.sign_outs.fetch_add(1, Ordering::Relaxed);
    }
    let mut res = see_other(&client.path("login"));
    res.headers_mut()
        .append(header::SET_COOKIE, client.set_cookie(client.session_cookie_name(), None, "/", Duration::ZERO));
    Ok(res)
}

/// Request headers passed on to the PDS (everything else stays here, cookies above all).
const PDS_HEADERS: [&str; 6] =
    ["accept", "accept-language", "content-type", "atproto-accept-labelers", "atproto-proxy", "if-none-match"];
/// Response headers passed back from the PDS.
const PDS_RESPONSE_HEADERS: [&str; 6] =
    ["content-type", "cache-control", "etag", "atproto-content-labelers", "atproto-repo-rev", "retry-after"];

/// `<pds_proxy>/<nsid>` -> the user's PDS at `/xrpc/<nsid>`, with the session's
/// DPoP-bound token; the web app never holds a token.
async fn pds_proxy(
    runtime: &Runtime,
    client: &OAuthClient,
    store: &dyn SessionStore,
    normal: &str,
    req: Request<Body>,
) -> Result<Response<Body>, FlowError> {
    let (parts, body) = req.into_parts();
    // Exactly one NSID after the prefix: nothing else of the PDS is reachable with the
    // user's token (the path is normalized, and an NSID has no `/`).
    let prefix = client.config.pds_proxy.as_deref().unwrap_or("/xrpc");
    let rest = normal.strip_prefix(prefix).unwrap_or("");
    let path = format!("/xrpc{rest}");
    let nsid = crate::auth::service::xrpc_method(&path).ok_or(FlowError::NotFound)?;
    let (id, session) = load(client, store, &parts.headers).await?.ok_or(FlowError::SessionExpired)?;
    same_origin(client, &parts.method, &parts.headers)?;
    let session = fresh(client, store, id, session).await?;
    let mut url = url::Url::parse(&session.pds)
        .and_then(|u| u.join(&format!("/xrpc/{nsid}")))
        .map_err(|_| FlowError::BadServer("invalid PDS URL".into()))?;
    url.set_query(parts.uri.query());
    let max = runtime.config.limits.max_body as usize;
    let body = read_body(body, max).await?;
    let key = SigningKey::from_jwk(&session.dpop_key).map_err(|_| FlowError::SessionExpired)?;
    let origin = url.origin().ascii_serialization();
    let mut retried = false;
    loop {
        let mut headers = HeaderMap::new();
        for name in PDS_HEADERS {
            if let Some(v) = parts.headers.get(name) {
                headers.insert(name, v.clone());
            }
        }
        let nonce = client.nonce(&origin);
        let token = Some(session.access_token.as_str());
        let proof = crate::tools::dpop_proof(&key, parts.method.as_str(), url.as_str(), token, nonce.as_deref(), now());
        let (Ok(auth), Ok(proof)) =
            (HeaderValue::from_str(&format!("DPoP {}", session.access_token)), HeaderValue::from_str(&proof))
        else {
            return Err(FlowError::SessionExpired);
        };
        headers.insert(header::AUTHORIZATION, auth);
        headers.insert("dpop", proof);
        let reply = client
            .net
            .exchange(parts.method.clone(), &url, headers, body.clone())
            .await
            .map_err(|cause| FlowError::Unreachable { what: "PDS", cause })?;
        let fresh_nonce = client.remember_nonce(&origin, &reply.headers);
        if !retried && fresh_nonce && client::is_nonce_error(&reply) {
            retried = true;
            continue;
        }
        let mut res = Response::new(body::full(reply.body));
        *res.status_mut() = reply.status;
        for name in PDS_RESPONSE_HEADERS {
            if let Some(v) = reply.headers.get(name) {
                res.headers_mut().insert(name, v.clone());
            }
        }
        res.headers_mut().entry(header::CACHE_CONTROL).or_insert(HeaderValue::from_static("private"));
        return Ok(res);
    }
}

#[cfg(test)]
mod tests;
