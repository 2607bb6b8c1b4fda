//! App-password credentials end to end: the development PDS on loopback (createSession and
//! refreshSession with real HS256 JWTs), a DID document host and a DNS server for the
//! handle, atgate and an echo upstream. No test waits for time to pass: session expiry is
//! driven by the access tokens' `exp`, concurrency by holding the PDS's answers.

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use atgate::app::Gateway;
use atgate::tools::dev_identity::{DevIdentity, DevPds, DidKey, did_document};
use common::*;
use http::StatusCode;
use serde_json::{Value, json};

const ALICE: &str = "did:plc:ewvi7nxzyoun6zhxrhs64oiz";
const BOB: &str = "did:plc:bbbbbbbbbbbbbbbbbbbbbbbb";
const PASSWORD: &str = "abcd-efgh-ijkl-mn23";

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

struct Setup {
    gw: Gateway,
    pds: DevPds,
}

async fn setup() -> Setup {
    logs();
    let pds = DevPds::spawn(loopback()).await.unwrap();
    pds.add_account(ALICE, "alice.test", PASSWORD);
    pds.add_account(BOB, "bob.test", PASSWORD);
    let host = DevIdentity::spawn(loopback()).await.unwrap();
    host.publish(ALICE, did_document(ALICE, &DidKey::k256(), Some("alice.test"), &pds.url()));
    // Bob's document claims a handle whose DNS does not point back: not verified.
    host.publish(BOB, did_document(BOB, &DidKey::k256(), Some("bob.test"), &pds.url()));
    let records = HashMap::from([
        ("_atproto.alice.test".to_owned(), vec![format!("did={ALICE}")]),
        ("_atproto.mallory.test".to_owned(), vec![format!("did={ALICE}")]),
        ("_atproto.bob.test".to_owned(), vec!["did=did:plc:cccccccccccccccccccccccc".to_owned()]),
    ]);
    let (dns, _) = dns_server(records).await;
    let up = echo_upstream().await;
    // Behind a trusted proxy (the test client), so X-Forwarded-For names the client.
    let top = format!(
        "trusted_proxies: [127.0.0.1]
outbound: {{ allow_private_addresses: true, allow_http: true }}
identity: {{ plc_url: \"{}\", dns_servers: [\"{dns}\"], allow_test_handles: true }}
",
        host.plc_url()
    );
    let routes = "  - { name: tenants, match: { path: /api/ }, upstream: up, auth: app_password }
  - { name: session, match: { path: /pds/ }, upstream: up, auth: app_password, forward_pds_session: true }
  - { name: chat, match: { path: /xrpc/ }, upstream: up, auth: app_password, require: { rpc: { lxm: from_path, aud: \"did:web:chat.test#svc\" } } }
";
    let gw = Gateway::start(config_with(&top, &[("up", up)], routes)).await.unwrap();
    Setup { gw, pds }
}

impl Setup {
    async fn call(&self, path: &str, handle: &str, password: &str) -> (StatusCode, http::HeaderMap, Value) {
        self.call_from(path, handle, password, "127.0.0.1").await
    }

    /// A request from client address `ip` (as the trusted proxy reports it).
    async fn call_from(
        &self,
        path: &str,
        handle: &str,
        password: &str,
        ip: &str,
    ) -> (StatusCode, http::HeaderMap, Value) {
        let req = get(
            format!("http://{}{path}", self.gw.addrs()[0]),
            &[("x-atproto-handle", handle), ("x-atproto-password", password), ("x-forwarded-for", ip)],
        );
        let (parts, body) = send(&client(), req).await;
        (parts.status, parts.headers, json(&body))
    }

    fn creates(&self) -> u64 {
        self.pds.creates()
    }
}

/// A distinct wrong password in the app-password format.
fn wrong(i: u32) -> String {
    let letters: Vec<char> = ('a'..='z').collect();
    let pick = |n: u32| letters[(n % 26) as usize].to_string().repeat(4);
    format!("zzzz-{}-{}-{}", pick(i / 676), pick(i / 26), pick(i))
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
    for i in 0..15 {
        let (status, _, _) = s.call("/api/x", "alice.test", &wrong(i)).await;
        let expected = if i < 10 { StatusCode::UNAUTHORIZED } else { StatusCode::TOO_MANY_REQUESTS };
        assert_eq!(status, expected, "attempt {i}");
    }
    assert_eq!(s.creates(), 10);
}

#[tokio::test]
async fn main_passwords_are_refused() {
    let s = setup().await;
    s.pds.set_scope("com.atproto.access");
    let (status, _, body) = s.call("/api/x", "alice.test", PASSWORD).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(body["message"].as_str().unwrap().contains("main passwords"), "{body}");
}

#[tokio::test]
async fn rate_limits_are_passed_on_with_back_off() {
    let s = setup().await;
    s.pds.set_rate_limited(Some(30));
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
    // Access tokens that live 60 s are not reused (atgate stops 60 s before exp): the
    // next request renews the session with the refresh token, no second login.
    s.pds.set_lifetime(60);
    assert_eq!(s.call("/api/x", "alice.test", PASSWORD).await.0, StatusCode::OK);
    assert_eq!(s.call("/api/x", "alice.test", PASSWORD).await.0, StatusCode::OK);
    assert_eq!((s.creates(), s.pds.refreshes()), (1, 1));
    // Refresh tokens revoked: a new login.
    s.pds.set_refresh_revoked(true);
    assert_eq!(s.call("/api/x", "alice.test", PASSWORD).await.0, StatusCode::OK);
    assert_eq!((s.creates(), s.pds.refreshes()), (2, 2));
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

#[tokio::test]
async fn concurrent_wrong_passwords_beyond_the_cap_never_reach_the_pds() {
    const TRIES: u64 = 40;
    let s = Arc::new(setup().await);
    // The PDS holds its answers, so every try is in flight before any has failed.
    s.pds.hold();
    let mut arrived = s.pds.watch_creates();
    let mut tries = tokio::task::JoinSet::new();
    for i in 0..TRIES {
        let s = s.clone();
        tries.spawn(async move { s.call("/api/x", "alice.test", &wrong(i as u32)).await.0 });
    }
    // Wait until every try either reached the PDS or was answered without it.
    let mut answered = Vec::new();
    while answered.len() as u64 + *arrived.borrow() < TRIES {
        tokio::select! {
            done = tries.join_next() => answered.push(done.unwrap().unwrap()),
            _ = arrived.changed() => {}
        }
    }
    let reached = s.creates();
    s.pds.release();
    answered.extend(tries.join_all().await);
    assert_eq!(reached, 10, "at most the cap reaches the PDS");
    let count = |code| answered.iter().filter(|s| **s == code).count() as u64;
    assert_eq!((count(StatusCode::UNAUTHORIZED), count(StatusCode::TOO_MANY_REQUESTS)), (10, TRIES - 10));
}

#[tokio::test]
async fn a_strangers_failures_never_lock_the_owner_out() {
    let s = setup().await;
    // Alice logs in from her address; her sessions live 60 s, so every request logs in
    // again (refresh tokens revoked), and each time the password is checked by the PDS.
    s.pds.set_lifetime(60);
    s.pds.set_refresh_revoked(true);
    assert_eq!(s.call_from("/api/x", "alice.test", PASSWORD, "198.51.100.7").await.0, StatusCode::OK);
    // A stranger elsewhere spends the cap for Alice's account from their address...
    for i in 0..10 {
        assert_eq!(s.call_from("/api/x", "alice.test", &wrong(i), "203.0.113.9").await.0, StatusCode::UNAUTHORIZED);
    }
    let (status, _, _) = s.call_from("/api/x", "alice.test", &wrong(10), "203.0.113.9").await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "the stranger is capped");
    // ...which caps only them: Alice, from her address, still gets in.
    assert_eq!(s.call_from("/api/x", "alice.test", PASSWORD, "198.51.100.7").await.0, StatusCode::OK);
    // A stranger sharing Alice's address (one NAT) spends the cap there too: the password
    // that worked before still works, new ones from there are capped.
    for i in 20..30 {
        assert_eq!(s.call_from("/api/x", "alice.test", &wrong(i), "198.51.100.7").await.0, StatusCode::UNAUTHORIZED);
    }
    assert_eq!(s.call_from("/api/x", "alice.test", &wrong(30), "198.51.100.7").await.0, StatusCode::TOO_MANY_REQUESTS);
    let before = s.creates();
    assert_eq!(s.call_from("/api/x", "alice.test", PASSWORD, "198.51.100.7").await.0, StatusCode::OK);
    assert_eq!(s.creates(), before + 1, "the known-good password was checked by the PDS again");
}

#[tokio::test]
async fn cached_sessions_are_served_while_the_pds_backs_off() {
    let s = setup().await;
    assert_eq!(s.call("/api/x", "alice.test", PASSWORD).await.0, StatusCode::OK);
    // The PDS starts rate-limiting; a wrong password sets atgate's back-off for Alice.
    s.pds.set_rate_limited(Some(30));
    assert_eq!(s.call("/api/x", "alice.test", &wrong(0)).await.0, StatusCode::TOO_MANY_REQUESTS);
    // Alice's open session needs no PDS: served.
    let (status, _, body) = s.call("/api/x", "alice.test", PASSWORD).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["headers"]["x-atproto-did"], ALICE);
    // New passwords still back off without asking the PDS.
    assert_eq!(s.call("/api/x", "alice.test", &wrong(1)).await.0, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(s.creates(), 2);
}

#[tokio::test]
async fn a_did_logs_in_without_a_verified_handle() {
    let s = setup().await;
    // Bob's handle does not resolve back to his DID; the PDS takes the DID itself.
    let (status, _, body) = s.call("/api/x", BOB, PASSWORD).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["headers"]["x-atproto-did"], BOB);
    assert!(body["headers"]["x-atproto-handle"].is_null(), "an unverified handle is not sent");
    assert_eq!(s.pds.identifiers(), vec![BOB.to_owned()], "logged in with the DID");
    // Alice's DID: her handle verifies both ways and is sent.
    let (status, _, body) = s.call("/api/x", ALICE, PASSWORD).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["headers"]["x-atproto-handle"], "alice.test");
    // did:plc is lower case by definition: an upper-case spelling is refused, not folded.
    let upper = BOB.replace("bbbb", "BBBB");
    assert_eq!(s.call("/api/x", &upper, PASSWORD).await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(s.creates(), 2);
}

#[tokio::test]
async fn extreme_access_token_exp_values_never_panic() {
    let s = setup().await;
    let now = atgate::auth::now_ms() / 1000;
    // (exp, accepted): far futures are capped, pasts are refused; none panics.
    let cases = [
        (json!(i64::MAX), true),
        (json!(u64::MAX), true),
        (json!(1e300), true),
        (json!(now as f64 + 7200.5), true),
        (json!(-1), false),
        (json!(i64::MIN), false),
        (json!(-1e300), false),
        (json!(1_000_000_000), false),
        (json!("soon"), false),
    ];
    for (i, (exp, accepted)) in cases.into_iter().enumerate() {
        s.pds.set_access_exp(Some(exp.clone()));
        // A fresh password each time: a new login reads the new token.
        let password = wrong(1000 + i as u32);
        s.pds.add_account(ALICE, "alice.test", &password);
        let (status, _, body) = s.call("/api/x", "alice.test", &password).await;
        let expected = if accepted { StatusCode::OK } else { StatusCode::UNAUTHORIZED };
        assert_eq!(status, expected, "exp {exp}: {body}");
    }
    // The gateway is still serving.
    s.pds.set_access_exp(None);
    assert_eq!(s.call("/api/x", "alice.test", PASSWORD).await.0, StatusCode::OK);
}
