//! Service auth end to end: a DID document host (PLC-style and did:web) and a DNS server
//! on 127.0.0.1, atgate, an echo upstream, and service JWTs signed by DID keys.

mod common;

use std::collections::HashMap;

use atgate::app::Gateway;
use atgate::tools::dev_identity::{DevIdentity, DidKey, did_document};
use common::*;
use http::StatusCode;

const SERVICE: &str = "did:web:api.gateway.test";
const AUD: &str = "did:web:api.gateway.test#example_svc";
const ALICE: &str = "did:plc:ewvi7nxzyoun6zhxrhs64oiz";
const LXM: &str = "com.example.getThing";

struct Setup {
    gw: Gateway,
    host: DevIdentity,
    alice: DidKey,
    dns_queries: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

async fn setup() -> Setup {
    let host = DevIdentity::spawn(loopback()).await.unwrap();
    let alice = DidKey::k256();
    host.publish(ALICE, did_document(ALICE, &alice, Some("alice.test"), "https://pds.example.com"));
    let records = HashMap::from([
        ("_atproto.alice.test".to_owned(), vec![format!("did={ALICE}")]),
        ("_atproto.mallory.test".to_owned(), vec!["did=did:plc:aaaaaaaaaaaaaaaaaaaaaaaa".to_owned()]),
    ]);
    let (dns, dns_queries) = dns_server(records).await;
    let up = echo_upstream().await;
    let top = format!(
        "public_url: https://api.gateway.test
outbound: {{ allow_private_addresses: true, allow_http: true }}
identity: {{ plc_url: \"{}\", dns_servers: [\"{dns}\"], allow_test_handles: true }}
service_auth: {{ did: {SERVICE}, service_id: example_svc, service_type: ExampleService, serve_did_document: true }}
",
        host.plc_url()
    );
    let routes = "  - { name: xrpc, match: { path: /xrpc/ }, upstream: up, auth: service_auth, inject_handle: true }
  - { name: fixed, match: { path: /feed }, upstream: up, auth: service_auth, lxm: app.bsky.feed.getFeedSkeleton }
  - { name: reuse, match: { path: /reuse/ }, upstream: up, auth: service_auth, lxm: com.example.getThing, allow_token_reuse: true }
  - { name: both, match: { path: /both/ }, upstream: up, auth: [dpop, service_auth], lxm: com.example.getThing }
  - { name: internal, match: { path: /internal/ }, upstream: up, auth: service_auth, lxm: com.example.getThing, allow_dids: [did:plc:bbbbbbbbbbbbbbbbbbbbbbbb] }
";
    let routes = format!(
        "{routes}  - {{ name: deny-web, match: {{ path: /deny-web/ }}, upstream: up, auth: service_auth, lxm: com.example.getThing, deny_dids: [\"{}\"] }}\n",
        host.web_did()
    );
    // The mixed route needs a trusted OAuth issuer.
    let issuer = atgate::tools::dev_issuer::DevIssuer::spawn(loopback()).await.unwrap();
    let top =
        format!("{top}issuers:\n  - {{ issuer: \"{}\", discovery: true, audiences: [{SERVICE}] }}\n", issuer.issuer());
    let config = config_with(&top, &[("up", up)], &routes);
    let gw = Gateway::start(config).await.unwrap();
    Setup { gw, host, alice, dns_queries }
}

impl Setup {
    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.gw.addrs()[0])
    }

    fn token(&self, lxm: &str) -> String {
        self.alice.service_jwt(ALICE, AUD, Some(lxm), 60)
    }

    async fn call(&self, path: &str, token: &str) -> (http::response::Parts, serde_json::Value) {
        let auth = format!("Bearer {token}");
        let req = get(self.url(path), &[("authorization", &auth), ("x-atproto-did", "did:plc:spoofed")]);
        let (parts, body) = send(&client(), req).await;
        (parts, json(&body))
    }
}

fn error_of(body: &serde_json::Value) -> (&str, &str) {
    (body["error"].as_str().unwrap_or(""), body["message"].as_str().unwrap_or(""))
}

#[tokio::test]
async fn valid_service_jwt_reaches_the_upstream_with_identity_headers() {
    let s = setup().await;
    let (parts, body) = s.call("/xrpc/com.example.getThing?limit=5", &s.token(LXM)).await;
    assert_eq!(parts.status, StatusCode::OK, "{body}");
    let h = &body["headers"];
    assert_eq!(h["x-atproto-did"], ALICE);
    assert_eq!(h["x-atproto-auth"], "service");
    assert_eq!(h["x-atproto-lxm"], LXM);
    assert_eq!(h["x-atproto-aud"], AUD);
    // The handle resolves back to the DID over DNS on loopback.
    assert_eq!(h["x-atproto-handle"], "alice.test");
    assert!(s.dns_queries.load(std::sync::atomic::Ordering::SeqCst) >= 1);
    assert!(h["authorization"].is_null(), "credentials are not forwarded");
    // A fixed-lxm route.
    let (parts, _) = s.call("/feed", &s.alice.service_jwt(ALICE, AUD, Some("app.bsky.feed.getFeedSkeleton"), 60)).await;
    assert_eq!(parts.status, StatusCode::OK);
    // The bare service DID is accepted as aud by default (PDSes send it).
    let (parts, _) = s.call("/xrpc/com.example.getThing", &s.alice.service_jwt(ALICE, SERVICE, Some(LXM), 60)).await;
    assert_eq!(parts.status, StatusCode::OK);
}

#[tokio::test]
async fn handle_is_injected_only_when_verified_both_ways() {
    let s = setup().await;
    // Mallory claims a handle whose DNS record points at another DID.
    let mallory = "did:plc:mmmmmmmmmmmmmmmmmmmmmmmm";
    let key = DidKey::p256();
    s.host.publish(mallory, did_document(mallory, &key, Some("mallory.test"), "https://pds.example.com"));
    let (parts, body) = s.call("/xrpc/com.example.getThing", &key.service_jwt(mallory, AUD, Some(LXM), 60)).await;
    assert_eq!(parts.status, StatusCode::OK, "{body}");
    assert_eq!(body["headers"]["x-atproto-did"], mallory);
    assert!(body["headers"]["x-atproto-handle"].is_null());
}

#[tokio::test]
async fn rejections_are_xrpc_errors() {
    let s = setup().await;
    let token = s.token(LXM);
    let (parts, _) = s.call("/xrpc/com.example.getThing", &token).await;
    assert_eq!(parts.status, StatusCode::OK);
    let (parts, body) = s.call("/xrpc/com.example.getThing", &token).await;
    assert_eq!((parts.status, error_of(&body)), (StatusCode::UNAUTHORIZED, ("BadJwt", "jwt has been used before")));
    // A route that allows reuse (clients holding one getServiceAuth token).
    let reusable = s.token(LXM);
    for _ in 0..3 {
        assert_eq!(s.call("/reuse/x", &reusable).await.0.status, StatusCode::OK);
    }

    let (parts, body) = s.call("/xrpc/com.example.getOther", &s.token(LXM)).await;
    assert_eq!(parts.status, StatusCode::UNAUTHORIZED);
    assert_eq!(error_of(&body).0, "BadJwtLexiconMethod");
    assert!(error_of(&body).1.ends_with("must match: com.example.getOther"));

    let other_service = s.alice.service_jwt(ALICE, "did:web:elsewhere.test#example_svc", Some(LXM), 60);
    let (parts, body) = s.call("/xrpc/com.example.getThing", &other_service).await;
    assert_eq!((parts.status, error_of(&body).0), (StatusCode::UNAUTHORIZED, "BadJwtAudience"));

    let forged = DidKey::k256().service_jwt(ALICE, AUD, Some(LXM), 60);
    let (parts, body) = s.call("/xrpc/com.example.getThing", &forged).await;
    assert_eq!(
        (parts.status, error_of(&body)),
        (StatusCode::UNAUTHORIZED, ("BadJwtSignature", "jwt signature does not match jwt issuer"))
    );
    assert_eq!(
        parts.headers["www-authenticate"],
        r#"Bearer error="invalid_token", error_description="jwt signature does not match jwt issuer""#
    );

    let (parts, body) = s.call("/xrpc/com.example.getThing", "not.a.jwt").await;
    assert_eq!((parts.status, error_of(&body)), (StatusCode::UNAUTHORIZED, ("BadJwt", "poorly formatted jwt")));

    let (parts, body) = send(&client(), get(s.url("/xrpc/com.example.getThing"), &[])).await;
    assert_eq!((parts.status, error_of(&json(&body)).0), (StatusCode::UNAUTHORIZED, "AuthMissing"));
    assert_eq!(parts.headers["www-authenticate"], "Bearer");

    let (parts, body) = s.call("/xrpc/", &s.token(LXM)).await;
    assert_eq!((parts.status, error_of(&body).0), (StatusCode::BAD_REQUEST, "InvalidRequest"));

    let (parts, body) = s.call("/internal/x", &s.token(LXM)).await;
    assert_eq!((parts.status, error_of(&body).0), (StatusCode::FORBIDDEN, "Forbidden"));

    // A route taking DPoP too: no credentials get the DPoP challenge, a service JWT passes.
    let (parts, _) = send(&client(), get(s.url("/both/x"), &[])).await;
    assert_eq!(parts.status, StatusCode::UNAUTHORIZED);
    assert!(parts.headers["www-authenticate"].to_str().unwrap().starts_with("DPoP"));
    let (parts, body) = s.call("/both/x", &s.token(LXM)).await;
    assert_eq!(parts.status, StatusCode::OK, "{body}");
}

#[tokio::test]
async fn did_web_issuers_resolve_over_http_on_localhost() {
    let s = setup().await;
    let web = s.host.web_did().to_owned();
    let key = DidKey::p256();
    s.host.publish(&web, did_document(&web, &key, None, "https://pds.example.com"));
    let (parts, body) = s.call("/xrpc/com.example.getThing", &key.service_jwt(&web, AUD, Some(LXM), 60)).await;
    assert_eq!(parts.status, StatusCode::OK, "{body}");
    assert_eq!(body["headers"]["x-atproto-did"], web.as_str());
}

#[tokio::test]
async fn did_web_issuers_have_one_canonical_spelling() {
    let s = setup().await;
    let web = s.host.web_did().to_owned();
    let shouted = web.replace("localhost%3A", "LocalHost%3a");
    let key = DidKey::p256();
    s.host.publish(&web, did_document(&web, &key, None, "https://pds.example.com"));
    // Another spelling of the issuer: the same identity, injected canonically.
    let (parts, body) = s.call("/xrpc/com.example.getThing", &key.service_jwt(&shouted, AUD, Some(LXM), 60)).await;
    assert_eq!(parts.status, StatusCode::OK, "{body}");
    assert_eq!(body["headers"]["x-atproto-did"], web.as_str());
    // A deny list naming the canonical DID refuses it in any spelling.
    for iss in [&web, &shouted] {
        let (parts, body) = s.call("/deny-web/x", &key.service_jwt(iss, AUD, Some(LXM), 60)).await;
        assert_eq!((parts.status, error_of(&body).0), (StatusCode::FORBIDDEN, "Forbidden"), "{iss}");
    }
}

#[tokio::test]
async fn directory_outages_serve_cached_documents_and_503_without() {
    let s = setup().await;
    assert_eq!(s.call("/xrpc/com.example.getThing", &s.token(LXM)).await.0.status, StatusCode::OK);
    s.host.set_down(true);
    // Cached: still served.
    assert_eq!(s.call("/xrpc/com.example.getThing", &s.token(LXM)).await.0.status, StatusCode::OK);
    // Someone never seen: infrastructure failure, 503, not 401.
    let bob = "did:plc:bbbbbbbbbbbbbbbbbbbbbbbb";
    let token = DidKey::k256().service_jwt(bob, AUD, Some(LXM), 60);
    let (parts, body) = s.call("/xrpc/com.example.getThing", &token).await;
    assert_eq!((parts.status, error_of(&body).0), (StatusCode::SERVICE_UNAVAILABLE, "TemporarilyUnavailable"));
    // Not found is a verdict: 401.
    s.host.set_down(false);
    let carol = "did:plc:cccccccccccccccccccccccc";
    let token = DidKey::k256().service_jwt(carol, AUD, Some(LXM), 60);
    let (parts, body) = s.call("/xrpc/com.example.getThing", &token).await;
    assert_eq!(
        (parts.status, error_of(&body)),
        (StatusCode::UNAUTHORIZED, ("AuthenticationRequired", "could not resolve iss did"))
    );
}

#[tokio::test]
async fn key_rotation_is_picked_up_and_forgeries_cannot_force_fetches() {
    let s = setup().await;
    assert_eq!(s.call("/xrpc/com.example.getThing", &s.token(LXM)).await.0.status, StatusCode::OK);
    let fetches = s.host.fetches();
    // Alice's PDS rotates her signing key.
    let rotated = DidKey::k256();
    s.host.publish(ALICE, did_document(ALICE, &rotated, Some("alice.test"), "https://pds.example.com"));
    let (parts, body) = s.call("/xrpc/com.example.getThing", &rotated.service_jwt(ALICE, AUD, Some(LXM), 60)).await;
    assert_eq!(parts.status, StatusCode::OK, "{body}");
    assert_eq!(s.host.fetches(), fetches + 1);
    // 100 forged tokens for Alice within the refresh interval: no further fetch.
    let forger = DidKey::k256();
    let mut tasks = Vec::new();
    for _ in 0..100 {
        let req = get(
            s.url("/xrpc/com.example.getThing"),
            &[("authorization", &format!("Bearer {}", forger.service_jwt(ALICE, AUD, Some(LXM), 60)))],
        );
        tasks.push(tokio::spawn(async move { send(&client(), req).await.0.status }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), StatusCode::UNAUTHORIZED);
    }
    assert_eq!(s.host.fetches(), fetches + 1);
    // Forged tokens for 20 unknown DIDs: one fetch each, then negative-cached.
    for round in 0..3 {
        for i in 0..20u8 {
            let did = format!("did:plc:{}{}", "x".repeat(23), (b'a' + i) as char);
            let _ = s.call("/xrpc/com.example.getThing", &forger.service_jwt(&did, AUD, Some(LXM), 60)).await;
        }
        assert_eq!(s.host.fetches(), fetches + 1 + 20, "round {round}");
    }
}

#[tokio::test]
async fn serves_its_service_did_document() {
    let s = setup().await;
    let (parts, body) = send(&client(), get(s.url("/.well-known/did.json"), &[])).await;
    assert_eq!(parts.status, StatusCode::OK);
    assert_eq!(parts.headers["content-type"], "application/did+ld+json");
    let doc = json(&body);
    assert_eq!(doc["id"], SERVICE);
    assert_eq!(doc["service"][0]["id"], "#example_svc");
    assert_eq!(doc["service"][0]["type"], "ExampleService");
    assert_eq!(doc["service"][0]["serviceEndpoint"], "https://api.gateway.test");
}
