//! Replicas sharing the replay store: two gateways and one real `redis-server` on
//! 127.0.0.1. A service JWT used at one replica is refused at the other; when Redis goes
//! away, `fail_closed` answers 503 and `fail_open_local` keeps serving from memory.
//!
//! The Redis timeout is 1 s, not a few ms: the failure cases wait it out once per call,
//! and a loaded machine cannot turn a slow answer from a healthy Redis into a 503.

mod common;

use std::time::Duration;

use atgate::app::Gateway;
use atgate::tools::dev_identity::{DevIdentity, DidKey, did_document};
use common::*;
use http::StatusCode;

const ALICE: &str = "did:plc:ewvi7nxzyoun6zhxrhs64oiz";
const AUD: &str = "did:web:api.gateway.test#svc";

async fn gateway(host: &DevIdentity, url_file: &std::path::Path, failure: &str) -> Gateway {
    let up = echo_upstream().await;
    let top = format!(
        "outbound: {{ allow_private_addresses: true, allow_http: true }}
identity: {{ plc_url: \"{}\" }}
service_auth: {{ did: did:web:api.gateway.test, service_id: svc }}
replay: {{ store: redis, redis: {{ url_file: \"{}\" }}, failure: {failure}, timeout: 1s }}
",
        host.plc_url(),
        url_file.display()
    );
    let routes = "  - { name: xrpc, match: { path: /xrpc/ }, upstream: up, auth: service_auth }\n";
    Gateway::start(config_with(&top, &[("up", up)], routes)).await.unwrap()
}

async fn call(gw: &Gateway, token: &str) -> (StatusCode, serde_json::Value) {
    let auth = format!("Bearer {token}");
    let req = get(format!("http://{}/xrpc/com.example.getThing", gw.addrs()[0]), &[("authorization", &auth)]);
    let (parts, body) = send(&client(), req).await;
    (parts.status, json(&body))
}

#[tokio::test]
async fn replicas_share_replay_state_and_fail_as_configured() {
    let mut redis = Redis::start();
    let dir = tempfile::tempdir().unwrap();
    let url = dir.path().join("redis-url");
    std::fs::write(&url, format!("redis://127.0.0.1:{}/\n", redis.port)).unwrap();
    let host = DevIdentity::spawn(loopback()).await.unwrap();
    let alice = DidKey::k256();
    host.publish(ALICE, did_document(ALICE, &alice, None, "https://pds.example.com"));
    let one = gateway(&host, &url, "fail_closed").await;
    let two = gateway(&host, &url, "fail_closed").await;
    let open = gateway(&host, &url, "fail_open_local").await;

    let token = alice.service_jwt(ALICE, AUD, Some("com.example.getThing"), 60);
    assert_eq!(call(&one, &token).await.0, StatusCode::OK);
    let (status, body) = call(&two, &token).await;
    assert_eq!((status, body["message"].as_str()), (StatusCode::UNAUTHORIZED, Some("jwt has been used before")));
    assert_eq!(call(&open, &token).await.0, StatusCode::UNAUTHORIZED);

    redis.stop();
    let fresh = alice.service_jwt(ALICE, AUD, Some("com.example.getThing"), 60);
    let (status, body) = call(&one, &fresh).await;
    assert_eq!((status, body["error"].as_str()), (StatusCode::SERVICE_UNAVAILABLE, Some("TemporarilyUnavailable")));
    // fail_open_local: this replica's memory takes over, replays still caught locally.
    assert_eq!(call(&open, &fresh).await.0, StatusCode::OK);
    assert_eq!(call(&open, &fresh).await.0, StatusCode::UNAUTHORIZED);
    let admin = format!("http://{}/metrics", open.admin_addr().unwrap());
    let metrics = String::from_utf8(send(&client(), get(admin, &[])).await.1.to_vec()).unwrap();
    assert!(metrics.lines().any(|l| l == "atgate_replay_fallbacks_total 2"), "{metrics}");
    assert!(metrics.lines().any(|l| l == "atgate_replay_local_entries 1"), "{metrics}");
}

#[tokio::test]
async fn an_unreachable_redis_is_a_start_error() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let dir = tempfile::tempdir().unwrap();
    let url = dir.path().join("redis-url");
    std::fs::write(&url, format!("redis://127.0.0.1:{port}/")).unwrap();
    let host = DevIdentity::spawn(loopback()).await.unwrap();
    let up = echo_upstream().await;
    let top = format!(
        "identity: {{ plc_url: \"{}\" }}
service_auth: {{ did: did:web:api.gateway.test }}
replay: {{ store: redis, redis: {{ url_file: \"{}\" }} }}
",
        host.plc_url(),
        url.display()
    );
    let config =
        config_with(&top, &[("up", up)], "  - { name: x, match: { path: / }, upstream: up, auth: service_auth }\n");
    let err = Gateway::start(config).await.err().expect("start fails").to_string();
    assert!(err.contains("Redis"), "{err}");
}

/// Two DPoP replicas with one nonce secret and one Redis: nonces travel between them,
/// proofs do not; with Redis restarted, shared replay protection comes back.
#[tokio::test]
async fn dpop_replicas_agree_on_nonces_and_share_proof_replay() {
    use atgate::jose::sign::SigningKey;
    use atgate::tools::DpopSigner;
    use atgate::tools::dev_issuer::DevIssuer;

    let mut redis = Redis::start();
    let dir = tempfile::tempdir().unwrap();
    let url = dir.path().join("redis-url");
    std::fs::write(&url, format!("redis://127.0.0.1:{}/\n", redis.port)).unwrap();
    let secret = dir.path().join("nonce-secret");
    std::fs::write(&secret, "7f".repeat(32)).unwrap();
    let issuer = DevIssuer::spawn(loopback()).await.unwrap();
    let up = echo_upstream().await;
    let top = format!(
        "public_url: http://gateway.test
outbound: {{ allow_private_addresses: true, allow_http: true }}
issuers:
  - {{ issuer: \"{}\", discovery: true, audiences: [did:web:gateway.test] }}
dpop: {{ nonce_secret_file: \"{}\" }}
replay: {{ store: redis, redis: {{ url_file: \"{}\" }}, failure: fail_closed, timeout: 1s }}
",
        issuer.issuer(),
        secret.display(),
        url.display()
    );
    let routes = "  - { name: api, match: { path: /xrpc/ }, upstream: up, auth: dpop }\n";
    let a = Gateway::start(config_with(&top, &[("up", up)], routes)).await.unwrap();
    let b = Gateway::start(config_with(&top, &[("up", up)], routes)).await.unwrap();
    for gw in [&a, &b] {
        wait_ready(gw).await;
    }
    let signer = DpopSigner { key: SigningKey::generate() };
    let token =
        issuer.mint(ALICE, &signer.key.thumbprint(), "atproto", "did:web:gateway.test", Duration::from_secs(600));
    let htu = "http://gateway.test/xrpc/com.example.getThing";
    let send_proof = |gw: &Gateway, proof: &str| {
        let auth = format!("DPoP {token}");
        let req = get(
            format!("http://{}/xrpc/com.example.getThing", gw.addrs()[0]),
            &[("authorization", &auth), ("dpop", proof)],
        );
        async move { send(&client(), req).await }
    };
    let proof = |nonce: &str| signer.proof("GET", htu, Some(&token), Some(nonce), atgate::auth::now_ms() / 1000);

    // A nonce from A...
    let (parts, _) = send_proof(&a, &signer.proof("GET", htu, Some(&token), None, atgate::auth::now_ms() / 1000)).await;
    assert_eq!(parts.status, StatusCode::UNAUTHORIZED);
    let nonce = parts.headers["dpop-nonce"].to_str().unwrap().to_owned();
    // ...is good at B; a proof used at A is refused at B.
    assert_eq!(send_proof(&b, &proof(&nonce)).await.0.status, StatusCode::OK);
    let once = proof(&nonce);
    assert_eq!(send_proof(&a, &once).await.0.status, StatusCode::OK);
    let (parts, body) = send_proof(&b, &once).await;
    assert_eq!(
        (parts.status, json(&body)["message"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("DPoP proof replayed"))
    );

    // Redis away: fail_closed answers 503, with a nonce still on it.
    redis.stop();
    let (parts, body) = send_proof(&a, &proof(&nonce)).await;
    assert_eq!(parts.status, StatusCode::SERVICE_UNAVAILABLE, "{}", String::from_utf8_lossy(&body));
    assert!(parts.headers.contains_key("dpop-nonce"));

    // Redis back on the same port: the connection comes back by itself.
    let _back = Redis::start_on(redis.port);
    // The connection manager reconnects with its own back-off: wait for that event with a
    // bound far above it, not for a fixed time.
    let mut used = None;
    for _ in 0..2400 {
        let p = proof(&nonce);
        if send_proof(&a, &p).await.0.status == StatusCode::OK {
            used = Some(p);
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let used = used.expect("replica A never recovered after Redis came back");
    let (parts, _) = send_proof(&b, &used).await;
    assert_eq!(parts.status, StatusCode::UNAUTHORIZED, "shared replay protection did not resume");

    let admin = format!("http://{}/metrics", a.admin_addr().unwrap());
    let metrics = String::from_utf8(send(&client(), get(admin, &[])).await.1.to_vec()).unwrap();
    let value = |name: &str| {
        metrics.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse::<f64>().ok()).unwrap_or(0.0)
    };
    assert!(value(r#"atgate_replay_checks_total{result="error"}"#) >= 1.0, "{metrics}");
    assert!(value(r#"atgate_replay_checks_total{result="fresh"}"#) >= 2.0);
    assert!(value("atgate_replay_duration_seconds_count") >= 3.0);
}
