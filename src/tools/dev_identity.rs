//! A development identity host on loopback: a PLC-directory-style document server
//! (`GET /<did>`) that also serves `/.well-known/did.json` for its own
//! `did:web:localhost%3A<port>`, with DID keys that sign service-auth JWTs the way a PDS
//! does; and a development PDS that opens app-password sessions the way the reference
//! does (ATPROTO-AUTH.md §12.1). For `atgate demo`, tests and benches; never for production.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use http::{Request, Response, StatusCode, header};
use hyper::body::Incoming;
use parking_lot::RwLock;
use serde_json::{Value, json};
use tokio::net::TcpListener;

use crate::body::{self, Body};
use crate::jose::b64url;

/// A DID signing key on either atproto curve.
#[derive(Clone)]
pub enum DidKey {
    /// secp256k1 (`ES256K`), what PDSes use.
    K256(k256::ecdsa::SigningKey),
    /// P-256 (`ES256`).
    P256(p256::ecdsa::SigningKey),
}

impl std::fmt::Debug for DidKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            DidKey::K256(_) => "DidKey::K256",
            DidKey::P256(_) => "DidKey::P256",
        })
    }
}

impl DidKey {
    /// A fresh secp256k1 key.
    pub fn k256() -> DidKey {
        DidKey::K256(k256::ecdsa::SigningKey::random(&mut k256::elliptic_curve::rand_core::OsRng))
    }

    /// A fresh P-256 key.
    pub fn p256() -> DidKey {
        DidKey::P256(p256::ecdsa::SigningKey::random(&mut p256::elliptic_curve::rand_core::OsRng))
    }

    /// From 32 secret bytes (the spec's test keys).
    pub fn from_bytes(k256: bool, secret: &[u8]) -> Option<DidKey> {
        if k256 {
            k256::ecdsa::SigningKey::from_slice(secret).ok().map(DidKey::K256)
        } else {
            p256::ecdsa::SigningKey::from_slice(secret).ok().map(DidKey::P256)
        }
    }

    /// The JWS `alg`.
    pub fn alg(&self) -> &'static str {
        match self {
            DidKey::K256(_) => "ES256K",
            DidKey::P256(_) => "ES256",
        }
    }

    /// The public key as a `Multikey` `publicKeyMultibase` (`z` + base58btc).
    pub fn multikey(&self) -> String {
        let (codec, point) = match self {
            DidKey::K256(k) => ([0xe7, 0x01], k.verifying_key().to_encoded_point(true).as_bytes().to_vec()),
            DidKey::P256(k) => {
                ([0x80, 0x24], p256::ecdsa::VerifyingKey::from(k).to_encoded_point(true).as_bytes().to_vec())
            }
        };
        let bytes: Vec<u8> = codec.into_iter().chain(point).collect();
        format!("z{}", bs58::encode(bytes).into_string())
    }

    /// Signs bytes: ECDSA over SHA-256, raw `r||s`, low-S (repository commits).
    pub fn sign_bytes(&self, message: &[u8]) -> Vec<u8> {
        match self {
            DidKey::K256(k) => {
                use k256::ecdsa::signature::Signer;
                let s: k256::ecdsa::Signature = k.sign(message);
                s.to_bytes().to_vec()
            }
            DidKey::P256(k) => {
                use p256::ecdsa::signature::Signer;
                let s: p256::ecdsa::Signature = k.sign(message);
                s.normalize_s().unwrap_or(s).to_bytes().to_vec()
            }
        }
    }

    /// Signs a JWT with `{"typ":"JWT","alg":...}`, low-S, raw `r||s`.
    pub fn sign_jwt(&self, claims: &Value) -> String {
        let header = json!({"typ": "JWT", "alg": self.alg()});
        let input = format!("{}.{}", b64url(header.to_string().as_bytes()), b64url(claims.to_string().as_bytes()));
        let sig = self.sign_bytes(input.as_bytes());
        format!("{input}.{}", b64url(&sig))
    }

    /// A service-auth JWT as a PDS mints it (§10.1): `iat`, `iss`, `aud`, `exp`, `lxm`, `jti`.
    pub fn service_jwt(&self, iss: &str, aud: &str, lxm: Option<&str>, lifetime_secs: u64) -> String {
        let now = crate::auth::now_ms() / 1000;
        let mut claims = json!({"iat": now, "iss": iss, "aud": aud, "exp": now + lifetime_secs});
        if let Some(l) = lxm {
            claims["lxm"] = json!(l);
        }
        claims["jti"] = json!(crate::jose::sign::random_id());
        self.sign_jwt(&claims)
    }
}

/// A DID document with an `#atproto` key, a handle and a PDS, as PLC serves them.
pub fn did_document(did: &str, key: &DidKey, handle: Option<&str>, pds: &str) -> Value {
    json!({
        "@context": ["https://www.w3.org/ns/did/v1", "https://w3id.org/security/multikey/v1"],
        "id": did,
        "alsoKnownAs": handle.map(|h| vec![format!("at://{h}")]).unwrap_or_default(),
        "verificationMethod": [{
            "id": format!("{did}#atproto"),
            "type": "Multikey",
            "controller": did,
            "publicKeyMultibase": key.multikey(),
        }],
        "service": [{"id": "#atproto_pds", "type": "AtprotoPersonalDataServer", "serviceEndpoint": pds}],
    })
}

struct State {
    web_did: String,
    docs: RwLock<HashMap<String, Value>>,
    down: AtomicBool,
    fetches: AtomicU64,
}

/// A running identity host.
#[derive(Clone)]
pub struct DevIdentity {
    state: Arc<State>,
    addr: SocketAddr,
}

impl std::fmt::Debug for DevIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DevIdentity").field("addr", &self.addr).finish()
    }
}

impl DevIdentity {
    /// Starts serving on `addr` (use `127.0.0.1:0`).
    pub async fn spawn(addr: SocketAddr) -> std::io::Result<DevIdentity> {
        let listener = TcpListener::bind(addr).await?;
        let local = listener.local_addr()?;
        let state = Arc::new(State {
            web_did: format!("did:web:localhost%3A{}", local.port()),
            docs: RwLock::new(HashMap::new()),
            down: AtomicBool::new(false),
            fetches: AtomicU64::new(0),
        });
        let serving = state.clone();
        super::serve_http1(listener, serving, |s, req| async move { handle(&s, &req) });
        Ok(DevIdentity { state, addr: local })
    }

    /// The PLC directory URL to configure (`http://127.0.0.1:PORT`).
    pub fn plc_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The `did:web` this host serves at `/.well-known/did.json`.
    pub fn web_did(&self) -> &str {
        &self.state.web_did
    }

    /// Publishes (or replaces) a DID's document.
    pub fn publish(&self, did: &str, doc: Value) {
        self.state.docs.write().insert(did.to_owned(), doc);
    }

    /// Removes a DID's document (404 from now on).
    pub fn remove(&self, did: &str) {
        self.state.docs.write().remove(did);
    }

    /// Answers 503 to everything while `down`.
    pub fn set_down(&self, down: bool) {
        self.state.down.store(down, Ordering::SeqCst);
    }

    /// Document requests served so far (any status).
    pub fn fetches(&self) -> u64 {
        self.state.fetches.load(Ordering::SeqCst)
    }
}

fn handle(state: &State, req: &Request<Incoming>) -> Response<Body> {
    state.fetches.fetch_add(1, Ordering::SeqCst);
    let reply = |status: StatusCode, value: Value| {
        let mut res = Response::new(body::full(value.to_string()));
        *res.status_mut() = status;
        res.headers_mut().insert(header::CONTENT_TYPE, http::HeaderValue::from_static("application/did+ld+json"));
        res
    };
    if state.down.load(Ordering::SeqCst) {
        return reply(StatusCode::SERVICE_UNAVAILABLE, json!({"message": "down"}));
    }
    let path = req.uri().path();
    let did = if path == "/.well-known/did.json" {
        state.web_did.clone()
    } else {
        path.trim_start_matches('/').replace("%3A", ":").replace("%3a", ":")
    };
    match state.docs.read().get(&did) {
        Some(doc) => reply(StatusCode::OK, doc.clone()),
        None => reply(StatusCode::NOT_FOUND, json!({"message": format!("DID not registered: {did}")})),
    }
}

/// One account of the [`DevPds`].
#[derive(Debug, Clone)]
struct DevAccount {
    did: String,
    handle: String,
    password: String,
}

struct PdsState {
    accounts: RwLock<Vec<DevAccount>>,
    secret: [u8; 32],
    lifetime: AtomicU64,
    scope: RwLock<String>,
    exp: RwLock<Option<Value>>,
    retry_after: RwLock<Option<u64>>,
    refresh_revoked: AtomicBool,
    holding: AtomicBool,
    release: tokio::sync::Semaphore,
    creates: tokio::sync::watch::Sender<u64>,
    refreshes: AtomicU64,
    identifiers: RwLock<Vec<String>>,
}

/// A running development PDS: `com.atproto.server.createSession` (identifier = handle or
/// DID, lower-cased as the reference does) and `refreshSession`, with HS256 access tokens
/// of the reference's shape. Switches make it rate-limit (429 with `Retry-After`), revoke
/// refresh tokens, write any `exp`, or hold logins until released.
#[derive(Clone)]
pub struct DevPds {
    state: Arc<PdsState>,
    addr: SocketAddr,
}

impl std::fmt::Debug for DevPds {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DevPds").field("addr", &self.addr).finish()
    }
}

impl DevPds {
    /// Starts serving on `addr` (use `127.0.0.1:0`): sessions of 2 hours, scope
    /// `com.atproto.appPass`.
    pub async fn spawn(addr: SocketAddr) -> std::io::Result<DevPds> {
        let listener = TcpListener::bind(addr).await?;
        let local = listener.local_addr()?;
        let mut secret = [0u8; 32];
        aws_lc_rs::rand::fill(&mut secret).map_err(|_| std::io::Error::other("no RNG"))?;
        let state = Arc::new(PdsState {
            accounts: RwLock::new(Vec::new()),
            secret,
            lifetime: AtomicU64::new(7200),
            scope: RwLock::new("com.atproto.appPass".into()),
            exp: RwLock::new(None),
            retry_after: RwLock::new(None),
            refresh_revoked: AtomicBool::new(false),
            holding: AtomicBool::new(false),
            release: tokio::sync::Semaphore::new(0),
            creates: tokio::sync::watch::Sender::new(0),
            refreshes: AtomicU64::new(0),
            identifiers: RwLock::new(Vec::new()),
        });
        super::serve_http1(listener, state.clone(), |s, req| async move { pds_handle(&s, req).await });
        Ok(DevPds { state, addr: local })
    }

    /// The PDS URL (`http://127.0.0.1:PORT`).
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Adds an account with an app password.
    pub fn add_account(&self, did: &str, handle: &str, password: &str) {
        let account = DevAccount { did: did.into(), handle: handle.to_ascii_lowercase(), password: password.into() };
        self.state.accounts.write().push(account);
    }

    /// How long access tokens live from now on, in seconds.
    pub fn set_lifetime(&self, secs: u64) {
        self.state.lifetime.store(secs, Ordering::SeqCst);
    }

    /// The access tokens' `scope` from now on.
    pub fn set_scope(&self, scope: &str) {
        *self.state.scope.write() = scope.into();
    }

    /// Writes this value as the access tokens' `exp` (any JSON), or the lifetime's when `None`.
    pub fn set_access_exp(&self, exp: Option<Value>) {
        *self.state.exp.write() = exp;
    }

    /// Answers every `createSession` 429 with this `Retry-After` while `Some`.
    pub fn set_rate_limited(&self, retry_after: Option<u64>) {
        *self.state.retry_after.write() = retry_after;
    }

    /// Refuses every refresh token (400 `ExpiredToken`, as after a revocation) while set.
    pub fn set_refresh_revoked(&self, revoked: bool) {
        self.state.refresh_revoked.store(revoked, Ordering::SeqCst);
    }

    /// Holds every `createSession` answer until [`DevPds::release`].
    pub fn hold(&self) {
        self.state.holding.store(true, Ordering::SeqCst);
    }

    /// Answers the held logins and stops holding.
    pub fn release(&self) {
        self.state.holding.store(false, Ordering::SeqCst);
        self.state.release.add_permits(tokio::sync::Semaphore::MAX_PERMITS / 2);
    }

    /// `createSession` calls so far (counted on arrival, held or not).
    pub fn creates(&self) -> u64 {
        *self.state.creates.borrow()
    }

    /// Watches the `createSession` count.
    pub fn watch_creates(&self) -> tokio::sync::watch::Receiver<u64> {
        self.state.creates.subscribe()
    }

    /// `refreshSession` calls so far.
    pub fn refreshes(&self) -> u64 {
        self.state.refreshes.load(Ordering::SeqCst)
    }

    /// The `identifier` of every `createSession` so far.
    pub fn identifiers(&self) -> Vec<String> {
        self.state.identifiers.read().clone()
    }
}

fn hs256(secret: &[u8], header: &Value, claims: &Value) -> String {
    let input = format!("{}.{}", b64url(header.to_string().as_bytes()), b64url(claims.to_string().as_bytes()));
    format!("{input}.{}", hs256_signature(secret, &input))
}

fn hs256_signature(secret: &[u8], input: &str) -> String {
    let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, secret);
    b64url(aws_lc_rs::hmac::sign(&key, input.as_bytes()).as_ref())
}

/// The session answer of the reference (§12.1).
fn pds_session(state: &PdsState, account: &DevAccount) -> Value {
    let now = crate::auth::now_ms() / 1000;
    let exp = state.exp.read().clone().unwrap_or_else(|| json!(now + state.lifetime.load(Ordering::SeqCst)));
    let scope = state.scope.read().clone();
    let access = json!({"scope": scope, "aud": "did:web:pds.dev", "sub": account.did, "iat": now, "exp": exp});
    let refresh = json!({"scope": "com.atproto.refresh", "sub": account.did, "jti": crate::jose::sign::random_id(), "exp": now + 90 * 86_400});
    json!({
        "did": account.did, "handle": account.handle, "active": true,
        "accessJwt": hs256(&state.secret, &json!({"typ": "at+jwt", "alg": "HS256"}), &access),
        "refreshJwt": hs256(&state.secret, &json!({"typ": "refresh+jwt", "alg": "HS256"}), &refresh),
    })
}

async fn pds_handle(state: &PdsState, req: Request<Incoming>) -> Response<Body> {
    use http_body_util::BodyExt;
    let reply = |status: StatusCode, value: Value| {
        let mut res = Response::new(body::full(value.to_string()));
        *res.status_mut() = status;
        res.headers_mut().insert(header::CONTENT_TYPE, http::HeaderValue::from_static("application/json"));
        res
    };
    let path = req.uri().path().to_owned();
    let bearer = req.headers().get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let body = req.into_body().collect().await.map(|c| c.to_bytes()).unwrap_or_default();
    let invalid = || {
        reply(
            StatusCode::UNAUTHORIZED,
            json!({"error": "AuthenticationRequired", "message": "Invalid identifier or password"}),
        )
    };
    match path.as_str() {
        "/xrpc/com.atproto.server.createSession" => {
            state.creates.send_modify(|n| *n += 1);
            if state.holding.load(Ordering::SeqCst)
                && let Ok(permit) = state.release.acquire().await
            {
                permit.forget();
            }
            if let Some(retry) = *state.retry_after.read() {
                let mut res = reply(
                    StatusCode::TOO_MANY_REQUESTS,
                    json!({"error": "RateLimitExceeded", "message": "Rate Limit Exceeded"}),
                );
                res.headers_mut().insert(header::RETRY_AFTER, retry.into());
                return res;
            }
            let request: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            let (Some(identifier), Some(password)) = (request["identifier"].as_str(), request["password"].as_str())
            else {
                return reply(
                    StatusCode::BAD_REQUEST,
                    json!({"error": "InvalidRequest", "message": "Input must have the property \"identifier\""}),
                );
            };
            // The reference lower-cases the identifier and takes a handle or a DID.
            let identifier = identifier.to_ascii_lowercase();
            state.identifiers.write().push(identifier.clone());
            let account = state
                .accounts
                .read()
                .iter()
                .find(|a| (a.handle == identifier || a.did == identifier) && a.password == password)
                .cloned();
            match account {
                Some(account) => reply(StatusCode::OK, pds_session(state, &account)),
                None => invalid(),
            }
        }
        "/xrpc/com.atproto.server.refreshSession" => {
            state.refreshes.fetch_add(1, Ordering::SeqCst);
            let token = bearer.as_deref().and_then(|b| b.strip_prefix("Bearer ")).unwrap_or_default();
            let claims = token
                .rsplit_once('.')
                .filter(|(input, sig)| hs256_signature(&state.secret, input) == *sig)
                .and_then(|(input, _)| crate::jose::b64url_decode(input.split_once('.')?.1))
                .and_then(|b| serde_json::from_slice::<Value>(&b).ok());
            let account = claims.and_then(|c| {
                let did = c["sub"].as_str()?.to_owned();
                state.accounts.read().iter().find(|a| a.did == did).cloned()
            });
            match account {
                Some(_) if state.refresh_revoked.load(Ordering::SeqCst) => reply(
                    StatusCode::BAD_REQUEST,
                    json!({"error": "ExpiredToken", "message": "Token has been revoked"}),
                ),
                Some(account) => reply(StatusCode::OK, pds_session(state, &account)),
                None => reply(
                    StatusCode::BAD_REQUEST,
                    json!({"error": "InvalidToken", "message": "Token could not be verified"}),
                ),
            }
        }
        _ => {
            reply(StatusCode::NOT_FOUND, json!({"error": "MethodNotImplemented", "message": "Method Not Implemented"}))
        }
    }
}
