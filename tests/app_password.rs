//! App-password credentials end to end: a mock PDS on loopback (createSession and
//! refreshSession with real HS256 JWTs), a DID document host and a DNS server for the
//! handle, atgate and an echo upstream.

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use atgate::app::Gateway;
use atgate::tools::dev_identity::{DevIdentity, DidKey, did_document};
use common::*;
use http::StatusCode;
use http_body_util::BodyExt;
use serde_json::{Value, json};

const ALICE: &str = "did:plc:ewvi7nxzyoun6zhxrhs64oiz";
const PASSWORD: &str = "abcd-efgh-ijkl-mn23";
const SECRET: &[u8] = b"test-jwt-secret";

/// Every log line of this test process, to prove the password never reaches one.
fn logs() -> &'static Arc<Mutex<Vec<u8>>> {
    static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOGS.get_or_init(|| {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let writer = buf.clone();
        let make = move || Capture(writer.clone());
        let _ = tracing_subscriber::fmt().with_max_level(tracing::Level::TRACE).with_writer(make).try_init();
        buf
    })
}

struct Capture(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Capture {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn hs256(claims: &Value, typ: &str) -> String {
    let b64 = |v: &Value| atgate::jose::b64url(v.to_string().as_bytes());
    let input = format!("{}.{}", b64(&json!({"typ": typ, "alg": "HS256"})), b64(claims));
    let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, SECRET);
    format!("{input}.{}", atgate::jose::b64url(aws_lc_rs::hmac::sign(&key, input.as_bytes()).as_ref()))
}

/// The mock PDS's behaviour and counters.
#[derive(Default)]
struct Pds {
    creates: AtomicU64,
    refreshes: AtomicU64,
    /// Seconds the access JWTs live.
    lifetime: AtomicU64,
    rate_limited: std::sync::atomic::AtomicBool,
    scope: Mutex<String>,
}

async fn pds(state: Arc<Pds>) -> std::net::SocketAddr {
    serve(move |req: http::Request<hyper::body::Incoming>| {
        let state = state.clone();
        async move {
            let path = req.uri().path().to_owned();
            let bearer = req.headers().get("authorization").map(|v| v.to_str().unwrap_or("").to_owned());
            let body = req.into_body().collect().await.map(|c| c.to_bytes()).unwrap_or_default();
            let reply = |status: StatusCode, v: Value| {
                let mut res = http::Response::new(atgate::body::full(v.to_string()));
                *res.status_mut() = status;
                res.headers_mut().insert("content-type", "application/json".parse().unwrap());
                res
            };
            let now = atgate::auth::now_ms() / 1000;
            let session = |state: &Pds| {
                let exp = now + state.lifetime.load(Ordering::SeqCst);
                let scope = state.scope.lock().unwrap().clone();
                json!({
                    "did": ALICE, "handle": "alice.test", "active": true,
                    "accessJwt": hs256(&json!({"scope": scope, "aud": "did:web:pds.test", "sub": ALICE, "iat": now, "exp": exp}), "at+jwt"),
                    "refreshJwt": hs256(&json!({"scope": "com.atproto.refresh", "sub": ALICE, "jti": format!("r{now}"), "exp": now + 86_400}), "refresh+jwt"),
                })
            };
            match path.as_str() {
                "/xrpc/com.atproto.server.createSession" => {
                    state.creates.fetch_add(1, Ordering::SeqCst);
                    if state.rate_limited.load(Ordering::SeqCst) {
                        let mut res = reply(StatusCode::TOO_MANY_REQUESTS, json!({"error": "RateLimitExceeded"}));
                        res.headers_mut().insert("retry-after", "30".parse().unwrap());
                        return res;
                    }
                    let req: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                    if req["identifier"] == "alice.test" && req["password"] == PASSWORD {
                        reply(StatusCode::OK, session(&state))
                    } else {
                        reply(StatusCode::UNAUTHORIZED, json!({"error": "AuthenticationRequired", "message": "Invalid identifier or password"}))
                    }
                }
                "/xrpc/com.atproto.server.refreshSession" if bearer.is_some_and(|b| b.starts_with("Bearer ")) => {
                    state.refreshes.fetch_add(1, Ordering::SeqCst);
                    reply(StatusCode::OK, session(&state))
                }
                _ => reply(StatusCode::NOT_FOUND, json!({"error": "NotFound"})),
            }
        }
    })
    .await
}

struct Setup {
    gw: Gateway,
    pds: Arc<Pds>,
}

async fn setup() -> Setup {
    logs();
    let state = Arc::new(Pds {
        lifetime: AtomicU64::new(7200),
        scope: Mutex::new("com.atproto.appPass".into()),
        ..Default::default()
    });
    let pds_addr = pds(state.clone()).await;
    let host = DevIdentity::spawn(loopback()).await.unwrap();
    host.publish(ALICE, did_document(ALICE, &DidKey::k256(), Some("alice.test"), &format!("http://{pds_addr}")));
    let records = HashMap::from([
        ("_atproto.alice.test".to_owned(), vec![format!("did={ALICE}")]),
        ("_atproto.mallory.test".to_owned(), vec![format!("did={ALICE}")]),
    ]);
    let (dns, _) = dns_server(records).await;
    let up = echo_upstream().await;
    let top = format!(
        "outbound: {{ allow_private_addresses: true, allow_http: true }}
identity: {{ plc_url: \"{}\", dns_servers: [\"{dns}\"], allow_test_handles: true }}
",
        host.plc_url()
    );
    let routes = "  - { name: tenants, match: { path: /api/ }, upstream: up, auth: app_password }
  - { name: session, match: { path: /pds/ }, upstream: up, auth: app_password, forward_pds_session: true }
  - { name: chat, match: { path: /xrpc/ }, upstream: up, auth: app_password, require: { rpc: { lxm: from_path, aud: \"did:web:chat.test#svc\" } } }
";
    let gw = Gateway::start(config_with(&top, &[("up", up)], routes)).await.unwrap();
    Setup { gw, pds: state }
}

impl Setup {
    async fn call(&self, path: &str, handle: &str, password: &str) -> (StatusCode, http::HeaderMap, Value) {
        let req = get(
            format!("http://{}{path}", self.gw.addrs()[0]),
            &[("x-atproto-handle", handle), ("x-atproto-password", password)],
        );
        let (parts, body) = send(&client(), req).await;
        (parts.status, parts.headers, json(&body))
    }

    fn creates(&self) -> u64 {
        self.pds.creates.load(Ordering::SeqCst)
    }
}

#[tokio::test]
async fn one_login_then_cached_sessions_with_verified_identity_headers() {
    let s = setup().await;
    let (status, _, body) = s.call("/api/x", "alice.test", PASSWORD).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let h = &body["headers"];
    assert_eq!(h["x-atproto-did"], ALICE);
    assert_eq!(h["x-atproto-auth"], "app-password");
    assert_eq!(h["x-atproto-handle"], "alice.test");
    assert!(h["x-atproto-password"].is_null() && h["authorization"].is_null());
    for _ in 0..10 {
        assert_eq!(s.call("/api/x", "Alice.Test", PASSWORD).await.0, StatusCode::OK);
    }
    assert_eq!(s.creates(), 1, "ten more requests reused the session");
    // The session's PDS and token go upstream only where the route asks.
    let (status, _, body) = s.call("/pds/x", "alice.test", PASSWORD).await;
    assert_eq!(status, StatusCode::OK);
    assert!(body["headers"]["authorization"].as_str().unwrap().starts_with("Bearer ey"));
    assert!(body["headers"]["x-atproto-pds"].as_str().unwrap().starts_with("http://127.0.0.1:"));
    // App passwords are transition:generic level: no chat.
    let (status, _, body) = s.call("/xrpc/chat.bsky.convo.getLog", "alice.test", PASSWORD).await;
    assert_eq!((status, body["error"].as_str()), (StatusCode::FORBIDDEN, Some("InsufficientScope")));
}

#[tokio::test]
async fn concurrent_first_requests_share_one_login() {
    let s = Arc::new(setup().await);
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move { s.call("/api/x", "alice.test", PASSWORD).await.0 }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), StatusCode::OK);
    }
    assert_eq!(s.creates(), 1);
}

#[tokio::test]
async fn wrong_passwords_are_refused_and_remembered() {
    let s = setup().await;
    for _ in 0..5 {
        let (status, _, body) = s.call("/api/x", "alice.test", "zzzz-zzzz-zzzz-zzzz").await;
        assert_eq!((status, body["error"].as_str()), (StatusCode::UNAUTHORIZED, Some("AuthenticationRequired")));
    }
    assert_eq!(s.creates(), 1, "one failed login, then negative-cached");
    // Not the app-password format: refused before any PDS call.
    let (status, _, body) = s.call("/api/x", "alice.test", "my main password").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(body["message"].as_str().unwrap().contains("app password"));
    assert_eq!(s.creates(), 1);
    // A handle whose DNS points at Alice but which her DID document does not claim.
    let (status, _, _) = s.call("/api/x", "mallory.test", PASSWORD).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    // No credentials, or both kinds.
    let (parts, _) = send(&client(), get(format!("http://{}/api/x", s.gw.addrs()[0]), &[])).await;
    assert_eq!(parts.status, StatusCode::UNAUTHORIZED);
    let both = get(
        format!("http://{}/api/x", s.gw.addrs()[0]),
        &[("authorization", "Bearer x"), ("x-atproto-handle", "alice.test"), ("x-atproto-password", PASSWORD)],
    );
    assert_eq!(send(&client(), both).await.0.status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn failed_logins_per_account_are_capped_below_the_pds_limit() {
    let s = setup().await;
    // Distinct wrong passwords for Alice's handle: ten reach the PDS, then atgate stops
    // asking (the PDS would lock the identifier out for every user of this gateway).
    for i in 0..15u8 {
        let letter = (b'a' + i) as char;
        let password = format!("zzzz-zzzz-zzzz-{}", letter.to_string().repeat(4));
        let (status, _, _) = s.call("/api/x", "alice.test", &password).await;
        let expected = if i < 10 { StatusCode::UNAUTHORIZED } else { StatusCode::TOO_MANY_REQUESTS };
        assert_eq!(status, expected, "attempt {i}");
    }
    assert_eq!(s.creates(), 10);
}

#[tokio::test]
async fn main_passwords_are_refused() {
    let s = setup().await;
    *s.pds.scope.lock().unwrap() = "com.atproto.access".into();
    let (status, _, body) = s.call("/api/x", "alice.test", PASSWORD).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(body["message"].as_str().unwrap().contains("main passwords"), "{body}");
}

#[tokio::test]
async fn rate_limits_are_passed_on_with_back_off() {
    let s = setup().await;
    s.pds.rate_limited.store(true, Ordering::SeqCst);
    let (status, headers, body) = s.call("/api/x", "alice.test", PASSWORD).await;
    assert_eq!((status, body["error"].as_str()), (StatusCode::TOO_MANY_REQUESTS, Some("RateLimitExceeded")));
    assert_eq!(headers["retry-after"], "30");
    // Backing off: other passwords for the same account do not reach the PDS either.
    let (status, _, _) = s.call("/api/x", "alice.test", "bbbb-bbbb-bbbb-bbbb").await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(s.creates(), 1);
}

#[tokio::test]
async fn expiring_sessions_are_refreshed() {
    let s = setup().await;
    // Access tokens that live 61 s are used for 1 s (atgate stops 60 s before exp).
    s.pds.lifetime.store(61, Ordering::SeqCst);
    assert_eq!(s.call("/api/x", "alice.test", PASSWORD).await.0, StatusCode::OK);
    tokio::time::sleep(Duration::from_millis(1600)).await;
    assert_eq!(s.call("/api/x", "alice.test", PASSWORD).await.0, StatusCode::OK);
    assert_eq!((s.creates(), s.pds.refreshes.load(Ordering::SeqCst)), (1, 1));
}

#[tokio::test]
async fn the_password_never_reaches_a_log_line() {
    let s = setup().await;
    let _ = s.call("/api/x", "alice.test", PASSWORD).await;
    let _ = s.call("/api/x", "alice.test", "zzzz-zzzz-zzzz-yyyy").await;
    let _ = s.call("/xrpc/chat.bsky.convo.getLog", "alice.test", PASSWORD).await;
    let text = String::from_utf8_lossy(&logs().lock().unwrap()).into_owned();
    assert!(!text.is_empty(), "logs were captured");
    assert!(!text.contains(PASSWORD) && !text.contains("zzzz-zzzz-zzzz-yyyy"), "a password was logged");
}
