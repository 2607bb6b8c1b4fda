//! A development identity host on loopback: a PLC-directory-style document server
//! (`GET /<did>`) that also serves `/.well-known/did.json` for its own
//! `did:web:localhost%3A<port>`, with DID keys that sign service-auth JWTs the way a PDS
//! does. For `atgate demo`, tests and benches; never for production.

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
