//! Operating atgate: rate limits by each key kind, the signed identity assertion, hot
//! reload under load, and the metrics ops scrape. Everything on 127.0.0.1.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use atgate::app::Gateway;
use atgate::config::Config;
use atgate::jose::Jwk;
use atgate::jose::sign::SigningKey;
use atgate::tools::DpopSigner;
use atgate::tools::dev_identity::{DevIdentity, DidKey, did_document};
use atgate::tools::dev_issuer::DevIssuer;
use common::*;
use http::StatusCode;

const ALICE: &str = "did:plc:ewvi7nxzyoun6zhxrhs64oiz";
const BOB: &str = "did:plc:bobbobbobbobbobbobbobbob";
const AUD: &str = "did:web:api.gateway.test#svc";

fn header<'a>(parts: &'a http::response::Parts, name: &str) -> &'a str {
    parts.headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or_else(|| panic!("no {name} header"))
}

async fn admin_get(gw: &Gateway, path: &str) -> (StatusCode, String) {
    let (parts, body) = send(&client(), get(format!("http://{}{path}", gw.admin_addr().unwrap()), &[])).await;
    (parts.status, String::from_utf8(body.to_vec()).unwrap())
}

/// The value of one sample in the Prometheus text, e.g. `atgate_reloads_total{kind="config",result="success"}`.
fn sample(metrics: &str, name_and_labels: &str) -> Option<f64> {
    metrics.lines().find_map(|l| l.strip_prefix(name_and_labels)?.strip_prefix(' ')?.trim().parse().ok())
}

#[tokio::test]
async fn ip_limits_run_before_auth_and_count_forwarded_clients_apart() {
    let up = echo_upstream().await;
    let routes = "  - name: api
    match: { path: /xrpc/ }
    upstream: up
    auth: service_auth
    rate_limits: [{ by: ip, rate: 2/m }]
  - name: open
    match: { path: /open/ }
    upstream: up
    auth: none
    rate_limits: [{ by: ip, rate: 1/h, burst: 3 }]
";
    let top = "trusted_proxies: [127.0.0.1]\nservice_auth: { did: did:web:api.gateway.test, service_id: svc }\n";
    let gw = Gateway::start(config_with(top, &[("up", up)], routes)).await.unwrap();
    let c = client();
    let url = |p: &str| format!("http://{}{p}", gw.addrs()[0]);

    // Unauthenticated requests spend the bucket: the third is refused before any
    // verification would run.
    for expected in ["1", "0"] {
        let (parts, _) = send(&c, get(url("/xrpc/com.example.get"), &[("x-forwarded-for", "198.51.100.7")])).await;
        assert_eq!(parts.status, StatusCode::UNAUTHORIZED);
        assert_eq!(header(&parts, "ratelimit-remaining"), expected);
        assert_eq!(header(&parts, "ratelimit-limit"), "2");
        assert_eq!(header(&parts, "ratelimit-policy"), "2;w=60");
    }
    let (parts, body) = send(&c, get(url("/xrpc/com.example.get"), &[("x-forwarded-for", "198.51.100.7")])).await;
    assert_eq!(parts.status, StatusCode::TOO_MANY_REQUESTS);
    let retry: u64 = header(&parts, "retry-after").parse().unwrap();
    assert!((1..=30).contains(&retry), "retry-after {retry}");
    assert_eq!(header(&parts, "ratelimit-remaining"), "0");
    assert_eq!(json(&body)["error"], "RateLimitExceeded");

    // Another client behind the same proxy has its own bucket; so does another route.
    let (parts, _) = send(&c, get(url("/xrpc/com.example.get"), &[("x-forwarded-for", "198.51.100.8")])).await;
    assert_eq!(parts.status, StatusCode::UNAUTHORIZED);
    let open: Vec<StatusCode> = {
        let mut v = Vec::new();
        for _ in 0..4 {
            v.push(send(&c, get(url("/open/x"), &[("x-forwarded-for", "198.51.100.7")])).await.0.status);
        }
        v
    };
    assert_eq!(open, [StatusCode::OK, StatusCode::OK, StatusCode::OK, StatusCode::TOO_MANY_REQUESTS]);

    let (_, metrics) = admin_get(&gw, "/metrics").await;
    assert_eq!(
        sample(&metrics, r#"atgate_requests_total{route="api",method="GET",status="4xx",outcome="rate_limited_ip"}"#),
        Some(1.0),
        "{metrics}"
    );
    assert_eq!(sample(&metrics, r#"atgate_cache_entries{cache="rate_limit_buckets"}"#), Some(3.0));
}

#[tokio::test]
async fn did_limits_count_each_principal_apart() {
    let host = DevIdentity::spawn(loopback()).await.unwrap();
    let (alice, bob) = (DidKey::k256(), DidKey::p256());
    host.publish(ALICE, did_document(ALICE, &alice, None, "https://pds.example.com"));
    host.publish(BOB, did_document(BOB, &bob, None, "https://pds.example.com"));
    let up = echo_upstream().await;
    let top = format!(
        "outbound: {{ allow_private_addresses: true, allow_http: true }}
identity: {{ plc_url: \"{}\" }}
service_auth: {{ did: did:web:api.gateway.test, service_id: svc }}
",
        host.plc_url()
    );
    let routes = "  - name: api
    match: { path: /xrpc/ }
    upstream: up
    auth: service_auth
    rate_limits: [{ by: did, rate: 2/m }]
";
    let gw = Gateway::start(config_with(&top, &[("up", up)], routes)).await.unwrap();
    let call = |key: &DidKey, did: &str| {
        let auth = format!("Bearer {}", key.service_jwt(did, AUD, Some("com.example.getThing"), 60));
        let req = get(format!("http://{}/xrpc/com.example.getThing", gw.addrs()[0]), &[("authorization", &auth)]);
        async move { send(&client(), req).await }
    };
    assert_eq!(call(&alice, ALICE).await.0.status, StatusCode::OK);
    assert_eq!(call(&alice, ALICE).await.0.status, StatusCode::OK);
    let (parts, body) = call(&alice, ALICE).await;
    assert_eq!(parts.status, StatusCode::TOO_MANY_REQUESTS);
    assert!(json(&body)["message"].as_str().unwrap().contains("by did"));
    let (parts, _) = call(&bob, BOB).await;
    assert_eq!(parts.status, StatusCode::OK);
    assert_eq!(header(&parts, "ratelimit-remaining"), "1");
}

#[tokio::test]
async fn client_id_limits_count_each_oauth_client_apart() {
    let issuer = DevIssuer::spawn(loopback()).await.unwrap();
    let up = echo_upstream().await;
    let top = format!(
        "public_url: http://gateway.test
outbound: {{ allow_private_addresses: true, allow_http: true }}
issuers:
  - {{ issuer: \"{}\", discovery: true, audiences: [\"did:web:gateway.test\"] }}
",
        issuer.issuer()
    );
    let routes = "  - name: api
    match: { path: /xrpc/ }
    upstream: up
    auth: dpop
    rate_limits: [{ by: client_id, rate: 1/m }, { by: ip, rate: 4/m }]
";
    let gw = Gateway::start(config_with(&top, &[("up", up)], routes)).await.unwrap();
    wait_ready(&gw).await;
    let signer = DpopSigner { key: SigningKey::generate() };
    let jkt = signer.key.thumbprint();
    let htu = "http://gateway.test/xrpc/com.example.getThing";
    let nonce = {
        let (parts, _) = send(&client(), get(format!("http://{}/xrpc/com.example.getThing", gw.addrs()[0]), &[])).await;
        header(&parts, "dpop-nonce").to_owned()
    };
    let call = |client_id: &str| {
        let token = issuer.mint_for_client(client_id, ALICE, &jkt, "did:web:gateway.test");
        let proof = signer.proof("GET", htu, Some(&token), Some(&nonce), atgate::auth::now_ms() / 1000);
        let auth = format!("DPoP {token}");
        let req = get(
            format!("http://{}/xrpc/com.example.getThing", gw.addrs()[0]),
            &[("authorization", &auth), ("dpop", &proof), ("host", "gateway.test")],
        );
        async move { send(&client(), req).await }
    };
    assert_eq!(call("https://app-one.example/client-metadata.json").await.0.status, StatusCode::OK);
    let (parts, _) = call("https://app-one.example/client-metadata.json").await;
    assert_eq!(header(&parts, "ratelimit-policy"), "1;w=60");
    assert_eq!(parts.status, StatusCode::TOO_MANY_REQUESTS);
    assert!(parts.headers.contains_key("dpop-nonce"), "the DPoP path answers with a nonce even when limited");
    assert_eq!(call("https://app-two.example/client-metadata.json").await.0.status, StatusCode::OK);
    // The fifth request from this address is refused before authentication, and is
    // still a DPoP-path answer with a nonce.
    let (parts, body) = call("https://app-three.example/client-metadata.json").await;
    assert_eq!(parts.status, StatusCode::TOO_MANY_REQUESTS);
    assert!(json(&body)["message"].as_str().unwrap().contains("by ip"));
    assert!(parts.headers.contains_key("dpop-nonce"));
}

#[tokio::test]
async fn identity_assertions_verify_against_the_published_jwks() {
    let host = DevIdentity::spawn(loopback()).await.unwrap();
    let alice = DidKey::k256();
    host.publish(ALICE, did_document(ALICE, &alice, None, "https://pds.example.com"));
    let dir = tempfile::tempdir().unwrap();
    let (old, new) = (SigningKey::generate(), SigningKey::generate());
    let keys = dir.path().join("assertion.jwks");
    std::fs::write(&keys, serde_json::json!({"keys": [new.private_jwk(), old.private_jwk()]}).to_string()).unwrap();
    let up = echo_upstream().await;
    let top = format!(
        "outbound: {{ allow_private_addresses: true, allow_http: true }}
identity: {{ plc_url: \"{}\" }}
service_auth: {{ did: did:web:api.gateway.test, service_id: svc }}
assertion: {{ keys_file: \"{}\", ttl: 30s }}
",
        host.plc_url(),
        keys.display()
    );
    let routes = "  - { name: api, match: { path: /xrpc/ }, upstream: backend, auth: service_auth, assertion: true }
  - { name: plain, match: { path: /plain/ }, upstream: backend, auth: none }
";
    let gw = Gateway::start(config_with(&top, &[("backend", up)], routes)).await.unwrap();
    let auth = format!("Bearer {}", alice.service_jwt(ALICE, AUD, Some("com.example.getThing"), 60));
    let forged = "eyJhbGciOiJub25lIn0.eyJzdWIiOiJkaWQ6cGxjOmV2aWwifQ.x";
    let (parts, body) = send(
        &client(),
        get(
            format!("http://{}/xrpc/com.example.getThing", gw.addrs()[0]),
            &[("authorization", &auth), ("x-atgate-assertion", forged)],
        ),
    )
    .await;
    assert_eq!(parts.status, StatusCode::OK);
    let jwt = json(&body)["headers"]["x-atgate-assertion"].as_str().expect("assertion sent").to_owned();
    assert_ne!(jwt, forged);

    // The JWKS from both listeners holds both keys; the first configured key signed.
    let (parts, public) =
        send(&client(), get(format!("http://{}/.well-known/atgate-jwks.json", gw.addrs()[0]), &[])).await;
    assert_eq!(header(&parts, "content-type"), "application/jwk-set+json");
    let (status, admin) = admin_get(&gw, "/jwks.json").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(json(&public), serde_json::from_str::<serde_json::Value>(&admin).unwrap());
    let jwks = json(&public);
    assert_eq!(jwks["keys"].as_array().unwrap().len(), 2);

    let parsed = atgate::jose::jws::parse(&jwt).unwrap();
    let kid = parsed.header.kid.clone().unwrap();
    assert_eq!(kid, new.thumbprint());
    let jwk = jwks["keys"].as_array().unwrap().iter().find(|k| k["kid"] == kid.as_str()).unwrap();
    let key = Jwk::from_value(jwk).unwrap().public_key().unwrap();
    let alg = atgate::jose::Alg::from_name("ES256").unwrap();
    assert!(key.verify(alg, parsed.signing_input.as_bytes(), &parsed.signature, false));
    let c = &parsed.claims;
    assert_eq!(c["iss"], "did:web:api.gateway.test");
    assert_eq!(c["sub"], ALICE);
    assert_eq!(c["aud"], "backend");
    assert_eq!(c["auth"], "service");
    assert_eq!(c["lxm"], "com.example.getThing");
    assert_eq!(c["exp"].as_u64().unwrap() - c["iat"].as_u64().unwrap(), 30);
    assert!(c["jti"].as_str().is_some_and(|j| j.len() >= 16));

    // Any single changed byte breaks it.
    let mut tampered = parsed.signing_input.as_bytes().to_vec();
    let last = tampered.len() - 1;
    tampered[last] ^= 1;
    assert!(!key.verify(alg, &tampered, &parsed.signature, false));

    // A route without assertions never passes a client's copy through.
    let (_, body) =
        send(&client(), get(format!("http://{}/plain/x", gw.addrs()[0]), &[("x-atgate-assertion", forged)])).await;
    assert!(json(&body)["headers"]["x-atgate-assertion"].is_null());
}

fn write_config(path: &std::path::Path, up: std::net::SocketAddr, routes: &[(&str, &str)]) {
    let mut text = format!(
        "listen: 127.0.0.1:0\nadmin_listen: 127.0.0.1:0\nlog: {{ level: warn }}\nreload: {{ interval: 50ms }}\nupstreams:\n  up: {{ url: \"http://{up}\" }}\nroutes:\n"
    );
    for (name, path) in routes {
        text.push_str(&format!("  - {{ name: {name}, match: {{ path: {path} }}, upstream: up, auth: none }}\n"));
    }
    // Written whole and renamed into place, as editors and ConfigMaps do.
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

async fn status_of(url: String) -> StatusCode {
    send(&client(), get(url, &[])).await.0.status
}

async fn wait_for(url: &str, want: StatusCode) {
    eventually(&format!("{url} answering {want}"), || async { (status_of(url.to_owned()).await == want).then_some(()) })
        .await
}

#[tokio::test]
async fn edits_of_the_file_reload_under_load_without_failed_requests() {
    let up = echo_upstream().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("atgate.yaml");
    write_config(&path, up, &[("steady", "/steady/"), ("old", "/old/")]);
    let gw = Gateway::start(Config::load(&path).unwrap()).await.unwrap().watch(path.clone());
    let base = format!("http://{}", gw.addrs()[0]);

    // A load loop on a route that exists throughout.
    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut loops = Vec::new();
    for _ in 0..4 {
        let (ok, failed, stop, url) = (ok.clone(), failed.clone(), stop.clone(), format!("{base}/steady/x"));
        loops.push(tokio::spawn(async move {
            let c = client();
            while !stop.load(Ordering::Relaxed) {
                match c.request(get(url.clone(), &[])).await {
                    Ok(res) if res.status() == StatusCode::OK => ok.fetch_add(1, Ordering::Relaxed),
                    _ => failed.fetch_add(1, Ordering::Relaxed),
                };
            }
        }));
    }

    assert_eq!(status_of(format!("{base}/old/x")).await, StatusCode::OK);
    assert_eq!(status_of(format!("{base}/new/x")).await, StatusCode::NOT_FOUND);
    write_config(&path, up, &[("steady", "/steady/"), ("new", "/new/")]);
    wait_for(&format!("{base}/new/x"), StatusCode::OK).await;
    assert_eq!(status_of(format!("{base}/old/x")).await, StatusCode::NOT_FOUND);

    // A broken edit is refused; the running config stays.
    std::fs::write(&path, "listen: [oops\n").unwrap();
    let metrics = eventually("the broken edit refused", || async {
        let (_, metrics) = admin_get(&gw, "/metrics").await;
        let failures = sample(&metrics, r#"atgate_reloads_total{kind="config",result="failure"}"#);
        (failures == Some(1.0)).then_some(metrics)
    })
    .await;
    assert_eq!(sample(&metrics, "atgate_config_last_reload_successful"), Some(0.0));
    assert_eq!(sample(&metrics, r#"atgate_reloads_total{kind="config",result="success"}"#), Some(1.0));
    assert_eq!(status_of(format!("{base}/new/x")).await, StatusCode::OK);

    stop.store(true, Ordering::Relaxed);
    for l in loops {
        l.await.unwrap();
    }
    let (ok, failed) = (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    assert!(ok > 50, "the load loop barely ran: {ok}");
    assert_eq!(failed, 0, "{failed} requests failed across the reloads ({ok} ok)");
}

#[tokio::test]
async fn a_request_in_flight_finishes_on_the_config_it_started_with() {
    let mut slow = GatedUpstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("atgate.yaml");
    write_config(&path, slow.addr, &[("slow", "/slow/")]);
    let mut config = Config::load(&path).unwrap();
    config.reload.watch = false;
    let gw = Gateway::start(config).await.unwrap();
    let url = format!("http://{}/slow/x", gw.addrs()[0]);
    let in_flight = tokio::spawn(status_of(url.clone()));
    // Routed on the old config: it has reached the upstream, which holds it.
    slow.arrived().await;

    write_config(&path, slow.addr, &[("other", "/other/")]);
    atgate::reload::reload_file(gw.shared(), &path).await.unwrap();
    assert_eq!(status_of(url).await, StatusCode::NOT_FOUND, "the new config is in force");
    assert!(!in_flight.is_finished(), "the upstream still holds the old request");
    slow.open();
    assert_eq!(in_flight.await.unwrap(), StatusCode::OK, "the old request finished on its route");
}

#[tokio::test]
async fn a_reload_keeps_fetched_issuer_keys_and_listeners() {
    let issuer = DevIssuer::spawn(loopback()).await.unwrap();
    let up = echo_upstream().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("atgate.yaml");
    let write = |extra_route: &str, port: u16| {
        let text = format!(
            "listen: 127.0.0.1:{port}
admin_listen: 127.0.0.1:0
log: {{ level: warn }}
public_url: http://gateway.test
outbound: {{ allow_private_addresses: true, allow_http: true }}
issuers:
  - {{ issuer: \"{}\", discovery: true, audiences: [any] }}
upstreams:
  up: {{ url: \"http://{up}\" }}
routes:
  - {{ name: api, match: {{ path: /xrpc/ }}, upstream: up, auth: dpop }}
{extra_route}",
            issuer.issuer()
        );
        std::fs::write(&path, text).unwrap();
    };
    write("", 0);
    let gw = Gateway::start(Config::load(&path).unwrap()).await.unwrap();
    wait_ready(&gw).await;
    let fetches = issuer.jwks_fetches();
    write("  - { name: open, match: { path: /open/ }, upstream: up, auth: none }\n", 1);
    let applied = atgate::reload::reload_file(gw.shared(), &path).await.unwrap();
    assert_eq!(applied.needs_restart, ["listen"]);
    assert_eq!(issuer.jwks_fetches(), fetches, "unchanged issuer keys were fetched again");
    assert!(gw.shared().is_ready());
    assert_eq!(status_of(format!("http://{}/open/x", gw.addrs()[0])).await, StatusCode::OK);
}

#[tokio::test]
async fn a_rotated_nonce_secret_file_is_picked_up_without_dropping_old_nonces() {
    let issuer = DevIssuer::spawn(loopback()).await.unwrap();
    let up = echo_upstream().await;
    let dir = tempfile::tempdir().unwrap();
    let (old, new) = ("11".repeat(32), "22".repeat(32));
    let secret = dir.path().join("nonce-secret");
    std::fs::write(&secret, &old).unwrap();
    let path = dir.path().join("atgate.yaml");
    std::fs::write(
        &path,
        format!(
            "listen: 127.0.0.1:0
admin_listen: 127.0.0.1:0
log: {{ level: warn }}
reload: {{ interval: 50ms }}
public_url: http://gateway.test
outbound: {{ allow_private_addresses: true, allow_http: true }}
dpop: {{ nonce_secret_file: \"{}\" }}
issuers:
  - {{ issuer: \"{}\", discovery: true, audiences: [any] }}
upstreams:
  up: {{ url: \"http://{up}\" }}
routes:
  - {{ name: api, match: {{ path: /xrpc/ }}, upstream: up, auth: dpop }}
",
            secret.display(),
            issuer.issuer()
        ),
    )
    .unwrap();
    let gw = Gateway::start(Config::load(&path).unwrap()).await.unwrap().watch(path.clone());
    wait_ready(&gw).await;
    let url = format!("http://{}/xrpc/com.example.getThing", gw.addrs()[0]);
    let signer = DpopSigner { key: SigningKey::generate() };
    let token = issuer.mint(ALICE, &signer.key.thumbprint(), "atproto", "any", Duration::from_secs(600));
    let htu = "http://gateway.test/xrpc/com.example.getThing";
    let call = |nonce: Option<String>| {
        let proof = signer.proof("GET", htu, Some(&token), nonce.as_deref(), atgate::auth::now_ms() / 1000);
        let auth = format!("DPoP {token}");
        let req = get(url.clone(), &[("authorization", &auth), ("dpop", &proof)]);
        async move {
            let (parts, _) = send(&client(), req).await;
            (parts.status, header(&parts, "dpop-nonce").to_owned())
        }
    };
    let issued_by_old = call(None).await.1;

    // Step two of the rotation: the new secret issues, the old one is still accepted.
    std::fs::write(&secret, format!("{new} {old}")).unwrap();
    let issued_by_new = eventually("the rotated secret picked up", || async {
        let (_, nonce) = call(None).await;
        (nonce != issued_by_old).then_some(nonce)
    })
    .await;
    assert_eq!(call(Some(issued_by_old.clone())).await.0, StatusCode::OK);
    assert_eq!(call(Some(issued_by_new.clone())).await.0, StatusCode::OK);

    // Step three: the old secret is gone, and so are its nonces.
    std::fs::write(&secret, &new).unwrap();
    eventually("nonces of the retired secret refused", || async {
        (call(Some(issued_by_old.clone())).await.0 == StatusCode::UNAUTHORIZED).then_some(())
    })
    .await;
    assert_eq!(call(Some(issued_by_new)).await.0, StatusCode::OK);
}
