//! A development PDS with its own authorization server, on loopback, strict the way the
//! reference provider is: PAR required, PKCE S256, DPoP with server nonces on every
//! endpoint, `private_key_jwt` client authentication checked against the client's
//! published JWKS, single-use codes and refresh tokens (a reused refresh token is
//! refused and counted), revocation, and `/xrpc/*` as a DPoP-protected resource. Its
//! client manager ([`clients`]) checks client ids, metadata and JWKS as the reference
//! does (content types included), with the reference's dev-mode allowance for local
//! client ids only when [`ClientIds::AllowLocal`] is asked for. For `atgate demo`, tests
//! and trying a deployment; never for production.

pub mod clients;

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use parking_lot::Mutex;
use serde_json::{Value, json};
use tokio::net::TcpListener;

use crate::auth::AuthError;
use crate::auth::dpop::nonce::Nonces;
use crate::auth::dpop::verify::{KeyCache, ProofContext, verify_proof};
use crate::body::{self, Body};
use crate::jose::sign::random_id;
use crate::jose::{Alg, Jwk, jws, sha256_b64url};
use crate::net::Outbound;
pub use clients::ClientIds;

/// What `/oauth/authorize` does with a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Consent {
    /// Approve at once (tests).
    Approve,
    /// Decline at once (`error=access_denied`).
    Deny,
    /// Show a consent page with Allow and Deny buttons (browsers, the demo).
    Ask,
}

#[derive(Debug, Clone)]
struct Authorization {
    client_id: String,
    redirect_uri: String,
    state: String,
    challenge: String,
    scope: String,
    did: String,
    jkt: String,
}

#[derive(Debug, Clone)]
struct Grant {
    did: String,
    scope: String,
    jkt: String,
    client_id: String,
    expires: u64,
}

/// Counters a test reads.
#[derive(Debug, Default)]
pub struct Counters {
    /// Pushed authorization requests accepted.
    pub pars: AtomicU64,
    /// Codes exchanged.
    pub codes: AtomicU64,
    /// Refresh tokens used successfully.
    pub refreshes: AtomicU64,
    /// Refresh tokens presented a second time (refused).
    pub refresh_reuses: AtomicU64,
    /// Tokens revoked.
    pub revocations: AtomicU64,
    /// Resource requests served.
    pub resource_requests: AtomicU64,
    /// Client metadata fetches (client ids that passed the id rules).
    pub client_fetches: AtomicU64,
}

struct State {
    origin: String,
    client_ids: ClientIds,
    nonces: Nonces,
    keys: KeyCache,
    net: Outbound,
    accounts: Mutex<HashMap<String, String>>,
    requests: Mutex<HashMap<String, Authorization>>,
    codes: Mutex<HashMap<String, Authorization>>,
    refresh: Mutex<HashMap<String, Grant>>,
    used_refresh: Mutex<HashSet<String>>,
    access: Mutex<HashMap<String, Grant>>,
    seen_jtis: Mutex<HashSet<String>>,
    consent: Mutex<Consent>,
    sub_override: Mutex<Option<String>>,
    iss_override: Mutex<Option<String>>,
    access_lifetime: AtomicU64,
    counters: Counters,
}

/// A running dev PDS + authorization server.
#[derive(Clone)]
pub struct DevOAuth {
    state: Arc<State>,
}

impl std::fmt::Debug for DevOAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DevOAuth").field("origin", &self.state.origin).finish()
    }
}

impl DevOAuth {
    /// Starts serving on `addr` (use `127.0.0.1:0`), taking the `client_ids` given:
    /// [`ClientIds::AllowLocal`] for a client on loopback (tests, the demo).
    pub async fn spawn(addr: SocketAddr, client_ids: ClientIds) -> std::io::Result<DevOAuth> {
        let listener = TcpListener::bind(addr).await?;
        let local = listener.local_addr()?;
        let mut secret = [0u8; 32];
        aws_lc_rs::rand::fill(&mut secret).map_err(|_| std::io::Error::other("no randomness"))?;
        let policy =
            crate::config::OutboundConfig { allow_private_addresses: true, allow_http: true, ..Default::default() };
        let state = Arc::new(State {
            origin: format!("http://{local}"),
            client_ids,
            nonces: Nonces::new(&secret, std::time::Duration::from_secs(60)),
            keys: KeyCache::new(1000),
            net: Outbound::new(policy),
            accounts: Mutex::default(),
            requests: Mutex::default(),
            codes: Mutex::default(),
            refresh: Mutex::default(),
            used_refresh: Mutex::default(),
            access: Mutex::default(),
            seen_jtis: Mutex::default(),
            consent: Mutex::new(Consent::Approve),
            sub_override: Mutex::new(None),
            iss_override: Mutex::new(None),
            access_lifetime: AtomicU64::new(300),
            counters: Counters::default(),
        });
        super::serve_http1(listener, state.clone(), |s, req| async move { handle(&s, req).await });
        Ok(DevOAuth { state })
    }

    /// The PDS URL and issuer (`http://127.0.0.1:PORT`).
    pub fn origin(&self) -> &str {
        &self.state.origin
    }

    /// Lets `handle` (and its DID) sign in as `did`.
    pub fn add_account(&self, handle: &str, did: &str) {
        let mut accounts = self.state.accounts.lock();
        accounts.insert(handle.to_owned(), did.to_owned());
        accounts.insert(did.to_owned(), did.to_owned());
    }

    /// What `/oauth/authorize` does.
    pub fn set_consent(&self, consent: Consent) {
        *self.state.consent.lock() = consent;
    }

    /// Makes tokens name this `sub` whatever account signed in (an account mix-up).
    pub fn set_sub_override(&self, did: Option<&str>) {
        *self.state.sub_override.lock() = did.map(str::to_owned);
    }

    /// Makes the redirect carry this `iss` (a mix-up attack's answer).
    pub fn set_iss_override(&self, iss: Option<&str>) {
        *self.state.iss_override.lock() = iss.map(str::to_owned);
    }

    /// Seconds an access token lives (default 300).
    pub fn set_access_lifetime(&self, secs: u64) {
        self.state.access_lifetime.store(secs, Ordering::SeqCst);
    }

    /// The counters.
    pub fn counters(&self) -> &Counters {
        &self.state.counters
    }

    /// Whether a refresh token is still usable (not used, not revoked).
    pub fn refresh_tokens_live(&self) -> usize {
        self.state.refresh.lock().len()
    }

    /// Whether an access token is still accepted.
    pub fn access_tokens_live(&self) -> usize {
        self.state.access.lock().len()
    }
}

fn reply(status: StatusCode, value: &Value) -> Response<Body> {
    let mut res = Response::new(body::full(value.to_string()));
    *res.status_mut() = status;
    res.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    res
}

fn oauth_error(status: StatusCode, error: &str, description: &str) -> Response<Body> {
    reply(status, &json!({"error": error, "error_description": description}))
}

fn redirect(location: &str) -> Response<Body> {
    let mut res = Response::new(body::empty());
    *res.status_mut() = StatusCode::SEE_OTHER;
    if let Ok(v) = HeaderValue::from_str(location) {
        res.headers_mut().insert(header::LOCATION, v);
    }
    res
}

fn now() -> u64 {
    crate::auth::now_ms() / 1000
}

async fn handle(state: &State, req: Request<Incoming>) -> Response<Body> {
    let (parts, incoming) = req.into_parts();
    let body = match http_body_util::Limited::new(incoming, 64 * 1024).collect().await {
        Ok(c) => c.to_bytes(),
        Err(_) => return oauth_error(StatusCode::PAYLOAD_TOO_LARGE, "invalid_request", "body too large"),
    };
    let mut res = route(state, &parts, body).await;
    if let Ok(v) = HeaderValue::from_str(&state.nonces.current(crate::auth::now_ms())) {
        res.headers_mut().insert("dpop-nonce", v);
    }
    res
}

async fn route(state: &State, parts: &http::request::Parts, body: Bytes) -> Response<Body> {
    let form: HashMap<String, String> = url::form_urlencoded::parse(&body).into_owned().collect();
    let path = parts.uri.path();
    match (&parts.method, path) {
        (&Method::GET, "/.well-known/oauth-protected-resource") => {
            reply(StatusCode::OK, &json!({"resource": state.origin, "authorization_servers": [state.origin]}))
        }
        (&Method::GET, "/.well-known/oauth-authorization-server") => reply(StatusCode::OK, &metadata(&state.origin)),
        (&Method::POST, "/oauth/par") => par(state, parts, &form).await,
        (&Method::GET, "/oauth/authorize") => {
            let q: HashMap<String, String> =
                url::form_urlencoded::parse(parts.uri.query().unwrap_or("").as_bytes()).into_owned().collect();
            let request_uri = q.get("request_uri").cloned().unwrap_or_default();
            let consent = *state.consent.lock();
            match consent {
                Consent::Approve => decide(state, &request_uri, true),
                Consent::Deny => decide(state, &request_uri, false),
                Consent::Ask => consent_page(state, &request_uri),
            }
        }
        (&Method::POST, "/oauth/authorize") => {
            let request_uri = form.get("request_uri").cloned().unwrap_or_default();
            decide(state, &request_uri, form.get("decision").map(String::as_str) == Some("allow"))
        }
        (&Method::POST, "/oauth/token") => token(state, parts, &form).await,
        (&Method::POST, "/oauth/revoke") => {
            if let Err(res) = client_auth(state, &form).await {
                return *res;
            }
            let token = form.get("token").cloned().unwrap_or_default();
            let removed = state.refresh.lock().remove(&token).is_some() || state.access.lock().remove(&token).is_some();
            if removed {
                state.counters.revocations.fetch_add(1, Ordering::SeqCst);
            }
            reply(StatusCode::OK, &json!({}))
        }
        (_, p) if p.starts_with("/xrpc/") => resource(state, parts, &body),
        _ => oauth_error(StatusCode::NOT_FOUND, "not_found", "no such endpoint"),
    }
}

/// The grants this server supports (a client may register no others).
const GRANT_TYPES: [&str; 2] = ["authorization_code", "refresh_token"];

fn metadata(origin: &str) -> Value {
    json!({
        "issuer": origin,
        "authorization_endpoint": format!("{origin}/oauth/authorize"),
        "pushed_authorization_request_endpoint": format!("{origin}/oauth/par"),
        "require_pushed_authorization_requests": true,
        "token_endpoint": format!("{origin}/oauth/token"),
        "revocation_endpoint": format!("{origin}/oauth/revoke"),
        "response_types_supported": ["code"],
        "grant_types_supported": GRANT_TYPES,
        "code_challenge_methods_supported": ["S256"],
        "token_endpoint_auth_methods_supported": ["none", "private_key_jwt"],
        "token_endpoint_auth_signing_alg_values_supported": ["ES256"],
        "dpop_signing_alg_values_supported": ["ES256"],
        "scopes_supported": ["atproto", "transition:generic", "transition:chat.bsky"],
        "authorization_response_iss_parameter_supported": true,
        "client_id_metadata_document_supported": true,
    })
}

/// The proof on a request to the authorization server: its key's thumbprint, or the
/// answer to send (400 `use_dpop_nonce` included, as the reference provider does).
fn as_proof(state: &State, parts: &http::request::Parts) -> Result<String, Box<Response<Body>>> {
    let url = crate::auth::normalize_url(&format!("{}{}", state.origin, parts.uri.path()))
        .ok_or_else(|| Box::new(bad_proof()))?;
    let proof = parts.headers.get("dpop").and_then(|v| v.to_str().ok()).ok_or_else(|| Box::new(bad_proof()))?;
    let ctx = ProofContext { method: parts.method.as_str(), url: &url, ath: None, now_ms: crate::auth::now_ms() };
    match verify_proof(proof, &ctx, &state.nonces, &state.keys) {
        Ok(p) => Ok(p.jkt),
        Err(AuthError::UseNonce { .. }) => Err(Box::new(oauth_error(
            StatusCode::BAD_REQUEST,
            "use_dpop_nonce",
            "Authorization server requires nonce in DPoP proof",
        ))),
        Err(_) => Err(Box::new(bad_proof())),
    }
}

fn bad_proof() -> Response<Body> {
    oauth_error(StatusCode::BAD_REQUEST, "invalid_dpop_proof", "DPoP proof required")
}

/// `private_key_jwt`: the client loads as the reference's client manager loads it
/// ([`clients::load`]: 400 `invalid_client_metadata` otherwise), and the assertion
/// verifies with a key from its JWKS, names the client and this server, is at most a
/// minute old (`CLIENT_ASSERTION_MAX_AGE`) and its `jti` is single use.
async fn client_auth(state: &State, form: &HashMap<String, String>) -> Result<Value, Box<Response<Body>>> {
    let refuse = |m: &str| Box::new(oauth_error(StatusCode::UNAUTHORIZED, "invalid_client", m));
    let client_id = form.get("client_id").ok_or_else(|| refuse("client_id required"))?;
    let refused = |r: clients::Refusal| Box::new(oauth_error(StatusCode::BAD_REQUEST, r.error, &r.description));
    let url = clients::check_client_id(client_id, state.client_ids).map_err(refused)?;
    state.counters.client_fetches.fetch_add(1, Ordering::SeqCst);
    let client = clients::load(&state.net, client_id, &url, state.client_ids, &GRANT_TYPES).await.map_err(refused)?;
    if client.metadata.get("token_endpoint_auth_method").and_then(Value::as_str) != Some("private_key_jwt") {
        return Err(refuse("this server serves confidential clients only"));
    }
    if form.get("client_assertion_type").map(String::as_str)
        != Some("urn:ietf:params:oauth:client-assertion-type:jwt-bearer")
    {
        return Err(refuse("client_assertion_type must be jwt-bearer"));
    }
    let assertion = form.get("client_assertion").ok_or_else(|| refuse("client_assertion required"))?;
    let parsed = jws::parse(assertion).map_err(|_| refuse("malformed client assertion"))?;
    let kid = parsed.header.kid.as_deref().ok_or_else(|| refuse("client assertion has no kid"))?;
    let jwk = client
        .jwks
        .get("keys")
        .and_then(Value::as_array)
        .and_then(|keys| keys.iter().find(|k| k.get("kid").and_then(Value::as_str) == Some(kid)))
        .ok_or_else(|| refuse("unknown client key"))?;
    let key = Jwk::from_value(jwk).and_then(|j| j.public_key()).map_err(|_| refuse("bad client key"))?;
    if parsed.header.alg != "ES256"
        || !key.verify(Alg::Es256, parsed.signing_input.as_bytes(), &parsed.signature, false)
    {
        return Err(refuse("client assertion signature invalid"));
    }
    let c = &parsed.claims;
    let text = |n: &str| c.get(n).and_then(Value::as_str);
    if text("iss") != Some(client_id) || text("sub") != Some(client_id) || text("aud") != Some(&state.origin) {
        return Err(refuse("client assertion claims do not name this client and server"));
    }
    if c.get("exp").and_then(Value::as_u64).is_none_or(|e| e < now()) {
        return Err(refuse("client assertion expired"));
    }
    if c.get("iat").and_then(Value::as_u64).is_none_or(|iat| iat > now() || now() - iat > 60) {
        return Err(refuse("client assertion iat missing, in the future or older than a minute"));
    }
    let jti = text("jti").ok_or_else(|| refuse("client assertion has no jti"))?;
    if !state.seen_jtis.lock().insert(format!("client:{jti}")) {
        return Err(refuse("client assertion replayed"));
    }
    Ok(client.metadata)
}

async fn par(state: &State, parts: &http::request::Parts, form: &HashMap<String, String>) -> Response<Body> {
    let jkt = match as_proof(state, parts) {
        Ok(j) => j,
        Err(res) => return *res,
    };
    let meta = match client_auth(state, form).await {
        Ok(m) => m,
        Err(res) => return *res,
    };
    let bad = |m: &str| oauth_error(StatusCode::BAD_REQUEST, "invalid_request", m);
    let get = |n: &str| form.get(n).cloned().unwrap_or_default();
    if get("response_type") != "code" || get("code_challenge_method") != "S256" || get("code_challenge").len() != 43 {
        return bad("response_type code with a PKCE S256 challenge is required");
    }
    let redirect_uri = get("redirect_uri");
    let registered = meta.get("redirect_uris").and_then(Value::as_array);
    if !registered.is_some_and(|r| r.iter().any(|u| u.as_str() == Some(redirect_uri.as_str()))) {
        return bad("redirect_uri is not registered");
    }
    let scope = get("scope");
    let allowed = meta.get("scope").and_then(Value::as_str).unwrap_or("");
    if !scope.split(' ').any(|s| s == "atproto") || !scope.split(' ').all(|s| allowed.split(' ').any(|a| a == s)) {
        return oauth_error(StatusCode::BAD_REQUEST, "invalid_scope", "scope must include atproto and be registered");
    }
    let Some(did) = state.accounts.lock().get(&get("login_hint")).cloned() else {
        return bad("unknown login_hint");
    };
    let request_uri = format!("urn:ietf:params:oauth:request_uri:req-{}", random_id());
    state.requests.lock().insert(
        request_uri.clone(),
        Authorization {
            client_id: get("client_id"),
            redirect_uri,
            state: get("state"),
            challenge: get("code_challenge"),
            scope,
            did,
            jkt,
        },
    );
    state.counters.pars.fetch_add(1, Ordering::SeqCst);
    reply(StatusCode::CREATED, &json!({"request_uri": request_uri, "expires_in": 300}))
}

fn consent_page(state: &State, request_uri: &str) -> Response<Body> {
    let Some(auth) = state.requests.lock().get(request_uri).cloned() else {
        return oauth_error(StatusCode::BAD_REQUEST, "invalid_request", "unknown request_uri");
    };
    let esc = crate::oauth::pages::escape;
    let html = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Authorize</title>\
<style>body{{font:16px system-ui,sans-serif;background:#eef1f4}}main{{max-width:26rem;margin:12vh auto;padding:2rem;background:#fff;border-radius:12px}}\
button{{font:inherit;padding:.5rem 1.2rem;margin-right:.5rem}}</style></head><body><main>\
<h1>Dev PDS: authorize</h1><p><strong>{client}</strong> asks to act as <strong>{did}</strong> with <code>{scope}</code>.</p>\
<form method=\"post\" action=\"/oauth/authorize\"><input type=\"hidden\" name=\"request_uri\" value=\"{uri}\">\
<button id=\"allow\" name=\"decision\" value=\"allow\">Allow</button>\
<button id=\"deny\" name=\"decision\" value=\"deny\">Deny</button></form></main></body></html>",
        client = esc(&auth.client_id),
        did = esc(&auth.did),
        scope = esc(&auth.scope),
        uri = esc(request_uri),
    );
    let mut res = Response::new(body::full(html));
    res.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
    res
}

fn decide(state: &State, request_uri: &str, allow: bool) -> Response<Body> {
    let Some(auth) = state.requests.lock().remove(request_uri) else {
        return oauth_error(StatusCode::BAD_REQUEST, "invalid_request", "unknown or used request_uri");
    };
    let iss = state.iss_override.lock().clone().unwrap_or_else(|| state.origin.clone());
    let Ok(mut url) = url::Url::parse(&auth.redirect_uri) else {
        return oauth_error(StatusCode::BAD_REQUEST, "invalid_request", "bad redirect_uri");
    };
    {
        let mut q = url.query_pairs_mut();
        if allow {
            let code = format!("cod-{}", random_id());
            q.append_pair("code", &code);
            state.codes.lock().insert(code, auth.clone());
        } else {
            q.append_pair("error", "access_denied");
        }
        q.append_pair("state", &auth.state).append_pair("iss", &iss);
    }
    redirect(url.as_str())
}

async fn token(state: &State, parts: &http::request::Parts, form: &HashMap<String, String>) -> Response<Body> {
    let jkt = match as_proof(state, parts) {
        Ok(j) => j,
        Err(res) => return *res,
    };
    if let Err(res) = client_auth(state, form).await {
        return *res;
    }
    let get = |n: &str| form.get(n).cloned().unwrap_or_default();
    let grant = |m: &str| oauth_error(StatusCode::BAD_REQUEST, "invalid_grant", m);
    let (did, scope) = match get("grant_type").as_str() {
        "authorization_code" => {
            let Some(auth) = state.codes.lock().remove(&get("code")) else { return grant("unknown or used code") };
            if auth.client_id != get("client_id") || auth.redirect_uri != get("redirect_uri") {
                return grant("code issued to another client or redirect_uri");
            }
            if sha256_b64url(get("code_verifier").as_bytes()) != auth.challenge {
                return grant("PKCE verification failed");
            }
            if auth.jkt != jkt {
                return grant("DPoP key differs from the one used for PAR");
            }
            state.counters.codes.fetch_add(1, Ordering::SeqCst);
            (auth.did, auth.scope)
        }
        "refresh_token" => {
            let presented = get("refresh_token");
            let found = state.refresh.lock().remove(&presented);
            let Some(old) = found else {
                if state.used_refresh.lock().contains(&presented) {
                    state.counters.refresh_reuses.fetch_add(1, Ordering::SeqCst);
                }
                return grant("refresh token unknown, used or revoked");
            };
            state.used_refresh.lock().insert(presented);
            if old.jkt != jkt || old.client_id != get("client_id") {
                return grant("refresh token bound to another key or client");
            }
            state.counters.refreshes.fetch_add(1, Ordering::SeqCst);
            (old.did, old.scope)
        }
        _ => return oauth_error(StatusCode::BAD_REQUEST, "unsupported_grant_type", "unsupported grant_type"),
    };
    let did = state.sub_override.lock().clone().unwrap_or(did);
    let lifetime = state.access_lifetime.load(Ordering::SeqCst);
    let g =
        Grant { did: did.clone(), scope: scope.clone(), jkt, client_id: get("client_id"), expires: now() + lifetime };
    let access = format!("acc-{}", random_id());
    let refresh = format!("ref-{}", random_id());
    state.access.lock().insert(access.clone(), g.clone());
    state.refresh.lock().insert(refresh.clone(), Grant { expires: now() + 86_400, ..g });
    reply(
        StatusCode::OK,
        &json!({
            "access_token": access,
            "token_type": "DPoP",
            "refresh_token": refresh,
            "expires_in": lifetime,
            "scope": scope,
            "sub": did,
        }),
    )
}

/// `/xrpc/*`: the PDS side, a DPoP-protected resource (401 + `use_dpop_nonce` first).
fn resource(state: &State, parts: &http::request::Parts, body: &Bytes) -> Response<Body> {
    let unauthorized = |error: &str| {
        let mut res = reply(StatusCode::UNAUTHORIZED, &json!({"error": error, "message": error}));
        if let Ok(v) = HeaderValue::from_str(&format!(r#"DPoP algs="ES256", error="{error}""#)) {
            res.headers_mut().insert(header::WWW_AUTHENTICATE, v);
        }
        res
    };
    let token = match parts.headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()) {
        Some(v) if v.starts_with("DPoP ") => v[5..].to_owned(),
        _ => return unauthorized("invalid_token"),
    };
    let ath = sha256_b64url(token.as_bytes());
    let Some(url) = crate::auth::normalize_url(&format!("{}{}", state.origin, parts.uri.path())) else {
        return unauthorized("invalid_dpop_proof");
    };
    let Some(proof) = parts.headers.get("dpop").and_then(|v| v.to_str().ok()) else {
        return unauthorized("invalid_dpop_proof");
    };
    let ctx = ProofContext { method: parts.method.as_str(), url: &url, ath: Some(&ath), now_ms: crate::auth::now_ms() };
    let jkt = match verify_proof(proof, &ctx, &state.nonces, &state.keys) {
        Ok(p) => p.jkt,
        Err(AuthError::UseNonce { .. }) => return unauthorized("use_dpop_nonce"),
        Err(_) => return unauthorized("invalid_dpop_proof"),
    };
    let grant = state.access.lock().get(&token).cloned();
    let Some(grant) = grant.filter(|g| g.expires > now() && g.jkt == jkt) else {
        return unauthorized("invalid_token");
    };
    state.counters.resource_requests.fetch_add(1, Ordering::SeqCst);
    let echoed: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    reply(
        StatusCode::OK,
        &json!({
            "did": grant.did,
            "method": parts.uri.path().trim_start_matches("/xrpc/"),
            "query": parts.uri.query(),
            "body": echoed,
        }),
    )
}
