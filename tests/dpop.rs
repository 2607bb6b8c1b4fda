//! The DPoP path end to end: a dev authorization server, atgate and an echo upstream on
//! 127.0.0.1, and clients signing real proofs.

mod common;

use std::time::Duration;

use atgate::app::Gateway;
use atgate::jose::sign::SigningKey;
use atgate::tools::DpopSigner;
use atgate::tools::curl::{CurlRequest, send as curl};
use atgate::tools::dev_issuer::DevIssuer;
use common::*;
use http::{Method, StatusCode};

const AUD: &str = "did:web:gateway.test";
const DID: &str = "did:plc:ewvi7nxzyoun6zhxrhs64oiz";

struct Setup {
    gw: Gateway,
    issuer: DevIssuer,
    signer: DpopSigner,
}

async fn setup_with(issuer: DevIssuer, extra: &str) -> Setup {
    let up = echo_upstream().await;
    let top = format!(
        "trusted_proxies: [127.0.0.1]\noutbound: {{ allow_private_addresses: true, allow_http: true }}\nissuers:\n  - issuer: {}\n    discovery: true\n    audiences: [{AUD}]\n{extra}",
        issuer.issuer()
    );
    let config = config_with(
        &top,
        &[("up", up)],
        "  - { name: api, match: { path: /xrpc/ }, upstream: up, auth: dpop }\n  - { name: public, match: { path: /public/ }, upstream: up, auth: none }\n",
    );
    let gw = Gateway::start(config).await.unwrap();
    Setup { gw, issuer, signer: DpopSigner { key: SigningKey::generate() } }
}

async fn setup() -> Setup {
    setup_with(DevIssuer::spawn(loopback()).await.unwrap(), "").await
}

impl Setup {
    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.gw.addrs()[0])
    }

    fn token(&self) -> String {
        self.issuer.mint(
            DID,
            &self.signer.key.thumbprint(),
            "atproto transition:generic",
            AUD,
            Duration::from_secs(600),
        )
    }

    async fn curl(&self, token: &str, path: &str) -> atgate::tools::curl::CurlResponse {
        let req = CurlRequest {
            method: Method::GET,
            url: self.url(path),
            token: token.to_owned(),
            signer: DpopSigner { key: SigningKey::from_jwk(&self.signer.key.private_jwk()).unwrap() },
            body: None,
            headers: vec![],
        };
        curl(&req).await.unwrap()
    }
}

#[tokio::test]
async fn nonce_flow_and_identity_headers_end_to_end() {
    let s = setup().await;
    let token = s.token();
    let res = s.curl(&token, "/xrpc/com.example.getThing?limit=5").await;
    assert_eq!(res.status, StatusCode::OK, "{}", String::from_utf8_lossy(&res.body));
    assert_eq!(res.attempts, 2, "the first attempt should have been asked for a nonce");
    assert!(res.headers.contains_key("dpop-nonce"));
    assert!(res.headers["access-control-expose-headers"].to_str().unwrap().contains("DPoP-Nonce"));
    let seen = json(&res.body);
    let h = &seen["headers"];
    assert_eq!(h["x-atproto-did"], DID);
    assert_eq!(h["x-atproto-auth"], "oauth");
    assert_eq!(h["x-atproto-client-id"], "http://localhost/demo-client");
    assert_eq!(h["x-atproto-scope"], "atproto transition:generic");
    assert_eq!(h["x-atproto-jkt"], s.signer.key.thumbprint());
    assert!(h["authorization"].is_null() && h["dpop"].is_null(), "credentials were forwarded");
    assert_eq!(seen["query"], "limit=5");
}

#[tokio::test]
async fn nonce_challenge_and_replay_are_401_with_nonce_headers() {
    let s = setup().await;
    let token = s.token();
    let url = s.url("/xrpc/com.example.getThing");
    // No nonce: the challenge, exactly.
    let proof = s.signer.proof("GET", &url, Some(&token), None, atgate::auth::now_ms() / 1000);
    let auth = format!("DPoP {token}");
    let (res, body) = send(&client(), get(url.clone(), &[("authorization", &auth), ("dpop", &proof)])).await;
    assert_eq!(res.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        res.headers["www-authenticate"],
        r#"DPoP algs="ES256 ES256K", error="use_dpop_nonce", error_description="Authorization server requires nonce in DPoP proof""#
    );
    assert_eq!(res.headers["access-control-expose-headers"], "DPoP-Nonce, WWW-Authenticate");
    assert_eq!(
        json(&body),
        serde_json::json!({"error": "use_dpop_nonce", "message": "Authorization server requires nonce in DPoP proof"})
    );
    let nonce = res.headers["dpop-nonce"].to_str().unwrap().to_owned();
    // With the nonce: accepted once, then replayed.
    let proof = s.signer.proof("GET", &url, Some(&token), Some(&nonce), atgate::auth::now_ms() / 1000);
    let (res, _) = send(&client(), get(url.clone(), &[("authorization", &auth), ("dpop", &proof)])).await;
    assert_eq!(res.status, StatusCode::OK);
    let (res, body) = send(&client(), get(url.clone(), &[("authorization", &auth), ("dpop", &proof)])).await;
    assert_eq!(res.status, StatusCode::UNAUTHORIZED);
    assert_eq!(json(&body)["message"], "DPoP proof replayed");
    assert!(res.headers.contains_key("dpop-nonce"));
    // No credentials at all.
    let (res, body) = send(&client(), get(url, &[])).await;
    assert_eq!(res.status, StatusCode::UNAUTHORIZED);
    assert_eq!(res.headers["www-authenticate"], r#"DPoP algs="ES256 ES256K""#);
    assert_eq!(json(&body)["message"], "Authorization header required");
    // The metric names the reason.
    let admin = s.gw.admin_addr().unwrap();
    let (_, metrics) = send(&client(), get(format!("http://{admin}/metrics"), &[])).await;
    let metrics = String::from_utf8_lossy(&metrics);
    assert!(metrics.contains(r#"outcome="dpop_replayed"} 1"#), "{metrics}");
    assert!(metrics.contains(r#"outcome="dpop_nonce_missing"} 1"#), "{metrics}");
}

#[tokio::test]
async fn rotated_keys_are_picked_up_without_restart() {
    let s = setup().await;
    assert_eq!(s.curl(&s.token(), "/xrpc/a.b.c").await.status, StatusCode::OK);
    let fetches = s.issuer.jwks_fetches();
    s.issuer.rotate();
    let res = s.curl(&s.token(), "/xrpc/a.b.c").await;
    assert_eq!(res.status, StatusCode::OK, "{}", String::from_utf8_lossy(&res.body));
    assert_eq!(s.issuer.jwks_fetches(), fetches + 1, "exactly one refetch for the new kid");
}

#[tokio::test]
async fn forged_kids_cannot_cause_a_fetch_storm() {
    let s = setup().await;
    assert_eq!(s.curl(&s.token(), "/xrpc/a.b.c").await.status, StatusCode::OK);
    let fetches = s.issuer.jwks_fetches();
    let forger = SigningKey::generate();
    for i in 0..20 {
        let token = s.issuer.mint_with(
            &forger,
            &format!("forged-{i}"),
            DID,
            &s.signer.key.thumbprint(),
            "atproto",
            AUD,
            Duration::from_secs(60),
        );
        let res = s.curl(&token, "/xrpc/a.b.c").await;
        assert_eq!(res.status, StatusCode::UNAUTHORIZED);
        assert_eq!(json(&res.body)["message"], "No key matched");
    }
    assert!(s.issuer.jwks_fetches() <= fetches + 1, "{} fetches for 20 forged kids", s.issuer.jwks_fetches() - fetches);
}

#[tokio::test]
async fn stale_keys_serve_while_the_issuer_is_down() {
    let s = setup().await;
    assert_eq!(s.curl(&s.token(), "/xrpc/a.b.c").await.status, StatusCode::OK);
    s.issuer.set_down(true);
    // A new token signed by the known key verifies with the cached keys.
    let res = s.curl(&s.token(), "/xrpc/a.b.c").await;
    assert_eq!(res.status, StatusCode::OK, "{}", String::from_utf8_lossy(&res.body));
}

#[tokio::test]
async fn issuer_down_from_the_start_is_503_and_not_ready() {
    let issuer = DevIssuer::spawn(loopback()).await.unwrap();
    issuer.set_down(true);
    let s = setup_with(issuer, "").await;
    let admin = s.gw.admin_addr().unwrap();
    let (res, _) = send(&client(), get(format!("http://{admin}/readyz"), &[])).await;
    assert_eq!(res.status, StatusCode::SERVICE_UNAVAILABLE);
    let res = s.curl(&s.token(), "/xrpc/a.b.c").await;
    assert_eq!(res.status, StatusCode::SERVICE_UNAVAILABLE, "{}", String::from_utf8_lossy(&res.body));
    // Public routes keep working.
    let (res, _) = send(&client(), get(s.url("/public/x"), &[])).await;
    assert_eq!(res.status, StatusCode::OK);
    // When the issuer comes back, so does the gateway, at its next refresh: run that
    // refresh now rather than wait out the retry back-off on the wall clock.
    s.issuer.set_down(false);
    let runtime = s.gw.shared().runtime.load_full();
    for issuer in runtime.dpop.as_ref().unwrap().issuers.iter() {
        issuer.refresh().await.unwrap();
    }
    let (res, _) = send(&client(), get(format!("http://{admin}/readyz"), &[])).await;
    assert_eq!(res.status, StatusCode::OK, "not ready after the keys were fetched");
    assert_eq!(s.curl(&s.token(), "/xrpc/a.b.c").await.status, StatusCode::OK);
}

#[tokio::test]
async fn wrong_audience_and_unbound_tokens_are_refused() {
    let s = setup().await;
    let other =
        s.issuer.mint(DID, &s.signer.key.thumbprint(), "atproto", "did:web:elsewhere.test", Duration::from_secs(60));
    let res = s.curl(&other, "/xrpc/a.b.c").await;
    assert_eq!(res.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        json(&res.body)["message"],
        "Invalid audience (got: did:web:elsewhere.test, expected one of: did:web:gateway.test)"
    );
    let no_atproto = s.issuer.mint(DID, &s.signer.key.thumbprint(), "transition:generic", AUD, Duration::from_secs(60));
    let res = s.curl(&no_atproto, "/xrpc/a.b.c").await;
    assert_eq!(json(&res.body)["message"], "Invalid scope (got: transition:generic, expected one of: atproto)");
    let bound_elsewhere =
        s.issuer.mint(DID, &SigningKey::generate().thumbprint(), "atproto", AUD, Duration::from_secs(60));
    let res = s.curl(&bound_elsewhere, "/xrpc/a.b.c").await;
    assert_eq!(json(&res.body)["message"], "Invalid DPoP key binding");
    let auth = format!("Bearer {}", s.token());
    let (res, body) = send(&client(), get(s.url("/xrpc/a.b.c"), &[("authorization", &auth)])).await;
    assert_eq!(res.status, StatusCode::UNAUTHORIZED);
    assert_eq!(json(&body)["message"], "Access token is bound to a DPoP proof, but token type is Bearer");
}

#[tokio::test]
async fn public_url_decides_htu() {
    let issuer = DevIssuer::spawn(loopback()).await.unwrap();
    let s = setup_with(issuer, "public_url: https://gateway.test\n").await;
    // Signed for the address the client connected to, not the public URL: refused.
    let res = s.curl(&s.token(), "/xrpc/a.b.c").await;
    assert_eq!(res.status, StatusCode::UNAUTHORIZED);
    assert_eq!(json(&res.body)["message"], r#"DPoP "htu" mismatch"#);
}

#[tokio::test]
async fn identity_header_names_are_configurable() {
    let issuer = DevIssuer::spawn(loopback()).await.unwrap();
    let s = setup_with(issuer, "identity_headers: { did: x-atproto-user-did, auth: x-atgate-auth }\n").await;
    let res = s.curl(&s.token(), "/xrpc/a.b.c").await;
    let h = &json(&res.body)["headers"];
    assert_eq!(h["x-atproto-user-did"], DID);
    assert_eq!(h["x-atgate-auth"], "oauth");
    assert!(h["x-atproto-did"].is_null());
    assert_eq!(h["x-atproto-scope"], "atproto transition:generic");
}

/// Proofs carrying junk tokens leave nothing in the replay store; when real requests
/// fill it, the next one is 503 with a clear error and metric, and no live `jti` is
/// forgotten to make room.
#[tokio::test]
async fn junk_tokens_do_not_fill_the_replay_store_and_a_full_one_refuses() {
    let issuer = DevIssuer::spawn(loopback()).await.unwrap();
    let s = setup_with(issuer, "dpop: { replay_capacity: 2 }\n").await;
    let url = s.url("/xrpc/com.example.getThing");
    let token = s.token();
    let (res, _) = send(&client(), get(url.clone(), &[])).await;
    let nonce = res.headers["dpop-nonce"].to_str().unwrap().to_owned();
    let call = |token: &str, proof: &str| {
        let auth = format!("DPoP {token}");
        let req = get(url.clone(), &[("authorization", &auth), ("dpop", proof)]);
        async move { send(&client(), req).await }
    };
    let proof = |token: &str| s.signer.proof("GET", &url, Some(token), Some(&nonce), atgate::auth::now_ms() / 1000);
    for i in 0..5 {
        let junk = format!("junk.token.{i}");
        let (res, _) = call(&junk, &proof(&junk)).await;
        assert_eq!(res.status, StatusCode::UNAUTHORIZED);
    }
    let first = proof(&token);
    assert_eq!(call(&token, &first).await.0.status, StatusCode::OK);
    assert_eq!(call(&token, &proof(&token)).await.0.status, StatusCode::OK);
    let (res, body) = call(&token, &proof(&token)).await;
    assert_eq!(res.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        json(&body),
        serde_json::json!({"error": "TemporarilyUnavailable", "message": "Replay protection is at capacity; retry later"})
    );
    assert!(res.headers.contains_key("dpop-nonce"));
    let (res, body) = call(&token, &first).await;
    assert_eq!((res.status, json(&body)["message"].as_str()), (StatusCode::UNAUTHORIZED, Some("DPoP proof replayed")));
    let admin = s.gw.admin_addr().unwrap();
    let (_, metrics) = send(&client(), get(format!("http://{admin}/metrics"), &[])).await;
    let metrics = String::from_utf8_lossy(&metrics);
    assert!(metrics.contains(r#"outcome="replay_full"} 1"#), "{metrics}");
    assert!(metrics.contains(r#"atgate_replay_checks_total{result="full"} 1"#), "{metrics}");
    assert!(metrics.lines().any(|l| l == "atgate_replay_local_entries 2"), "{metrics}");
}

/// A token whose key left the issuer's JWKS stops being accepted at the refresh that
/// removed it, although its verification is cached and its `exp` is far.
#[tokio::test]
async fn a_cached_token_dies_with_its_key_at_the_next_refresh() {
    let s = setup().await;
    let old_kid = "dev-key-1";
    let token = s.token();
    assert_eq!(s.curl(&token, "/xrpc/a.b.c").await.status, StatusCode::OK);
    assert_eq!(s.curl(&token, "/xrpc/a.b.c").await.status, StatusCode::OK, "served from the cache");
    s.issuer.rotate();
    s.issuer.retire(old_kid);
    // A token with the new kid makes atgate refetch the JWKS now.
    let fetches = s.issuer.jwks_fetches();
    assert_eq!(s.curl(&s.token(), "/xrpc/a.b.c").await.status, StatusCode::OK);
    assert_eq!(s.issuer.jwks_fetches(), fetches + 1);
    let res = s.curl(&token, "/xrpc/a.b.c").await;
    assert_eq!(res.status, StatusCode::UNAUTHORIZED, "a token of a retired key was accepted");
    assert_eq!(json(&res.body)["message"], "No key matched");
}
