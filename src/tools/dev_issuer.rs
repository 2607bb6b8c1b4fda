//! A development authorization server: serves RFC 8414 metadata and a JWKS on loopback
//! and mints DPoP-bound access tokens the way `@atproto/oauth-provider` does in stateless
//! mode. For `atgate demo`, tests and trying a deployment; never for production.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use http::{Request, Response, StatusCode, header};
use hyper::body::Incoming;
use parking_lot::RwLock;
use serde_json::{Value, json};
use tokio::net::TcpListener;

use crate::body::{self, Body};
use crate::jose::sign::SigningKey;

struct State {
    issuer: String,
    /// Newest first; tokens are signed with the first.
    keys: RwLock<Vec<(String, Arc<SigningKey>)>>,
    down: AtomicBool,
    jwks_fetches: AtomicU64,
    next_kid: AtomicU64,
}

/// A running dev issuer.
#[derive(Clone)]
pub struct DevIssuer {
    state: Arc<State>,
}

impl std::fmt::Debug for DevIssuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DevIssuer").field("issuer", &self.state.issuer).finish()
    }
}

impl DevIssuer {
    /// Starts serving on `addr` (use port 0) with one fresh signing key.
    pub async fn spawn(addr: SocketAddr) -> std::io::Result<DevIssuer> {
        let listener = TcpListener::bind(addr).await?;
        let local = listener.local_addr()?;
        let state = Arc::new(State {
            issuer: format!("http://{local}"),
            keys: RwLock::new(Vec::new()),
            down: AtomicBool::new(false),
            jwks_fetches: AtomicU64::new(0),
            next_kid: AtomicU64::new(1),
        });
        let issuer = DevIssuer { state: state.clone() };
        issuer.rotate();
        super::serve_http1(listener, state, |s, req| async move { handle(&s, &req) });
        Ok(issuer)
    }

    /// The issuer identifier (`http://127.0.0.1:PORT`).
    pub fn issuer(&self) -> &str {
        &self.state.issuer
    }

    /// Adds a new signing key (new `kid`) and signs with it from now on; returns the kid.
    pub fn rotate(&self) -> String {
        let kid = format!("dev-key-{}", self.state.next_kid.fetch_add(1, Ordering::SeqCst));
        self.state.keys.write().insert(0, (kid.clone(), Arc::new(SigningKey::generate())));
        kid
    }

    /// Removes the key `kid` from the JWKS (a key rotated out or revoked).
    pub fn retire(&self, kid: &str) {
        self.state.keys.write().retain(|(k, _)| k != kid);
    }

    /// Answers 503 to everything while `down`.
    pub fn set_down(&self, down: bool) {
        self.state.down.store(down, Ordering::SeqCst);
    }

    /// JWKS requests served so far.
    pub fn jwks_fetches(&self) -> u64 {
        self.state.jwks_fetches.load(Ordering::SeqCst)
    }

    /// Mints an access token for `sub`, bound to the DPoP key thumbprint `jkt`.
    pub fn mint(&self, sub: &str, jkt: &str, scope: &str, audience: &str, lifetime: Duration) -> String {
        let (kid, key) = self.state.keys.read()[0].clone();
        self.mint_with(&key, &kid, sub, jkt, scope, audience, lifetime)
    }

    /// Mints a token for another OAuth client than the demo's.
    pub fn mint_for_client(&self, client_id: &str, sub: &str, jkt: &str, audience: &str) -> String {
        let (kid, key) = self.state.keys.read()[0].clone();
        let token = self.mint_with(&key, &kid, sub, jkt, "atproto", audience, Duration::from_secs(600));
        let mut claims = crate::jose::jws::parse(&token).expect("own token parses").claims;
        claims.insert("client_id".into(), client_id.into());
        key.sign_jwt(json!({"typ": "at+jwt", "kid": kid}), &Value::Object(claims))
    }

    /// Mints with a given key and `kid` (tests use this to forge tokens).
    #[allow(clippy::too_many_arguments)]
    pub fn mint_with(
        &self,
        key: &SigningKey,
        kid: &str,
        sub: &str,
        jkt: &str,
        scope: &str,
        audience: &str,
        lifetime: Duration,
    ) -> String {
        let now = crate::auth::now_ms() / 1000;
        let claims = json!({
            "jti": format!("tok-{}", crate::jose::sign::random_id()),
            "sub": sub,
            "iat": now,
            "exp": now + lifetime.as_secs(),
            "aud": audience,
            "cnf": {"jkt": jkt},
            "scope": scope,
            "client_id": "http://localhost/demo-client",
            "iss": self.state.issuer,
        });
        key.sign_jwt(json!({"typ": "at+jwt", "kid": kid}), &claims)
    }
}

fn json_response(status: StatusCode, value: &Value) -> Response<Body> {
    let mut res = Response::new(body::full(value.to_string()));
    *res.status_mut() = status;
    res.headers_mut().insert(header::CONTENT_TYPE, http::HeaderValue::from_static("application/json"));
    res
}

fn handle(state: &State, req: &Request<Incoming>) -> Response<Body> {
    if state.down.load(Ordering::SeqCst) {
        return json_response(StatusCode::SERVICE_UNAVAILABLE, &json!({"error": "down"}));
    }
    match req.uri().path() {
        "/.well-known/oauth-authorization-server" => json_response(
            StatusCode::OK,
            &json!({
                "issuer": state.issuer,
                "jwks_uri": format!("{}/oauth/jwks", state.issuer),
                "scopes_supported": ["atproto", "transition:generic"],
                "dpop_signing_alg_values_supported": ["ES256"],
            }),
        ),
        "/oauth/jwks" => {
            state.jwks_fetches.fetch_add(1, Ordering::SeqCst);
            let keys: Vec<Value> = state
                .keys
                .read()
                .iter()
                .map(|(kid, key)| {
                    let mut jwk = key.public_jwk();
                    jwk["kid"] = json!(kid);
                    jwk["key_ops"] = json!(["verify"]);
                    jwk
                })
                .collect();
            json_response(StatusCode::OK, &json!({"keys": keys}))
        }
        _ => json_response(StatusCode::NOT_FOUND, &json!({"error": "NotFound"})),
    }
}
