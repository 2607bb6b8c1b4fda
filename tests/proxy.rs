//! The reverse proxy end to end: real upstreams and clients on 127.0.0.1.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use atgate::app::Gateway;
use atgate::body;
use atgate::config::Config;
use common::*;
use http::{Method, Request, StatusCode, Version};

#[tokio::test]
async fn forwards_and_sets_forwarding_headers() {
    let up = echo_upstream().await;
    let gw = gateway_to(up).await;
    let addr = gw.addrs()[0];
    let (res, body) = send(&client(), get(format!("http://{addr}/a/b?c=d"), &[("x-forwarded-for", "6.6.6.6")])).await;
    assert_eq!(res.status, StatusCode::OK);
    let seen = json(&body);
    assert_eq!(seen["path"], "/a/b");
    assert_eq!(seen["query"], "c=d");
    let h = &seen["headers"];
    // An untrusted client's X-Forwarded-For is replaced, not appended to.
    assert_eq!(h["x-forwarded-for"], "127.0.0.1");
    assert_eq!(h["x-forwarded-proto"], "http");
    assert_eq!(h["x-forwarded-host"], addr.to_string());
    assert_eq!(h["host"], up.to_string());
    let id = res.headers["x-request-id"].to_str().unwrap();
    assert_eq!(h["x-request-id"], id);
    assert_eq!(id.len(), 36);
}

#[tokio::test]
async fn trusted_proxy_forwarding_is_appended() {
    let up = echo_upstream().await;
    let config = config_with(
        "trusted_proxies: [127.0.0.1]\nvia: true",
        &[("up", up)],
        "  - { name: all, match: { path: / }, upstream: up, auth: none }\n",
    );
    let gw = Gateway::start(config).await.unwrap();
    let url = format!("http://{}/x", gw.addrs()[0]);
    let headers = [
        ("x-forwarded-for", "203.0.113.9"),
        ("x-forwarded-proto", "https"),
        ("x-forwarded-host", "gw.example.com"),
        ("x-request-id", "abc-123"),
    ];
    let (res, body) = send(&client(), get(url, &headers)).await;
    let h = &json(&body)["headers"];
    assert_eq!(h["x-forwarded-for"], "203.0.113.9, 127.0.0.1");
    assert_eq!(h["x-forwarded-proto"], "https");
    assert_eq!(h["x-forwarded-host"], "gw.example.com");
    assert_eq!(h["via"], "1.1 atgate");
    assert_eq!(h["x-request-id"], "abc-123");
    assert_eq!(res.headers["x-request-id"], "abc-123");
    assert_eq!(res.headers["via"], "1.1 atgate");
}

#[tokio::test]
async fn spoofed_identity_headers_never_reach_the_upstream() {
    let up = echo_upstream().await;
    let gw = gateway_to(up).await;
    let url = format!("http://{}/x", gw.addrs()[0]);
    let spoofed = [
        ("x-atproto-did", "did:plc:attacker"),
        ("X_Atproto_Did", "did:plc:attacker"),
        ("x-atproto_auth", "oauth"),
        ("X-ATPROTO-SCOPE", "atproto"),
        ("x-atgate-assertion", "forged"),
        ("authorization", "Bearer secret-token"),
        ("dpop", "proof"),
    ];
    let (_, body) = send(&client(), get(url.clone(), &spoofed)).await;
    let h = json(&body)["headers"].as_object().unwrap().clone();
    for name in h.keys() {
        assert!(!name.contains("atproto") && !name.contains("atgate"), "{name} reached the upstream");
    }
    assert!(!h.contains_key("authorization") && !h.contains_key("dpop"));

    // Over HTTP/2 as well.
    let (_, body) = send(&h2c_client(), get(url, &spoofed)).await;
    let h = json(&body)["headers"].as_object().unwrap().clone();
    assert!(h.keys().all(|n| !n.contains("atproto")), "{h:?}");
}

#[tokio::test]
async fn credentials_forwarded_only_when_the_route_says_so() {
    let up = echo_upstream().await;
    let config = config_with(
        "",
        &[("up", up)],
        "  - { name: fwd, match: { path: /fwd/ }, upstream: up, auth: none, forward_credentials: true }\n  - { name: all, match: { path: / }, upstream: up, auth: none }\n",
    );
    let gw = Gateway::start(config).await.unwrap();
    let addr = gw.addrs()[0];
    let creds = [("authorization", "DPoP tok"), ("dpop", "proof")];
    let (_, body) = send(&client(), get(format!("http://{addr}/fwd/x"), &creds)).await;
    let h = &json(&body)["headers"];
    assert_eq!(h["authorization"], "DPoP tok");
    assert_eq!(h["dpop"], "proof");
    let (_, body) = send(&client(), get(format!("http://{addr}/other"), &creds)).await;
    assert!(json(&body)["headers"]["authorization"].is_null());
}

#[tokio::test]
async fn hop_by_hop_headers_never_pass() {
    let up = echo_upstream().await;
    let gw = gateway_to(up).await;
    let req = get(
        format!("http://{}/x", gw.addrs()[0]),
        &[
            ("connection", "keep-alive, x-private"),
            ("x-private", "secret"),
            ("keep-alive", "timeout=5"),
            ("proxy-authorization", "Basic Zm9vOmJhcg=="),
            ("te", "trailers"),
            ("x-normal", "kept"),
        ],
    );
    let (_, body) = send(&client(), req).await;
    let h = &json(&body)["headers"];
    for name in ["x-private", "keep-alive", "proxy-authorization", "te"] {
        assert!(h[name].is_null(), "{name} passed");
    }
    assert_eq!(h["x-normal"], "kept");
}

#[tokio::test]
async fn no_route_is_404_json_and_wrong_method_405() {
    let up = echo_upstream().await;
    let config = config_with(
        "",
        &[("up", up)],
        "  - { name: only, match: { path: /only, methods: [GET] }, upstream: up, auth: none }\n",
    );
    let gw = Gateway::start(config).await.unwrap();
    let addr = gw.addrs()[0];
    let (res, body) = send(&client(), get(format!("http://{addr}/elsewhere"), &[])).await;
    assert_eq!(res.status, StatusCode::NOT_FOUND);
    assert_eq!(res.headers["content-type"], "application/json");
    assert_eq!(json(&body), serde_json::json!({"error": "NotFound", "message": "no route found for request"}));
    let req = Request::delete(format!("http://{addr}/only")).body(body::empty()).unwrap();
    let (res, body) = send(&client(), req).await;
    assert_eq!(res.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(res.headers["allow"], "GET");
    assert_eq!(json(&body)["error"], "MethodNotAllowed");
}

#[tokio::test]
async fn dot_segments_cannot_escape_a_route() {
    let up = echo_upstream().await;
    let config =
        config_with("", &[("up", up)], "  - { name: public, match: { path: /public/ }, upstream: up, auth: none }\n");
    let gw = Gateway::start(config).await.unwrap();
    let addr = gw.addrs()[0];
    // /public/../admin normalizes to /admin, which no route serves.
    let (res, _) = send(&client(), get(format!("http://{addr}/public/../admin"), &[])).await;
    assert_eq!(res.status, StatusCode::NOT_FOUND);
    let (res, body) = send(&client(), get(format!("http://{addr}/public//./a/../b"), &[])).await;
    assert_eq!(res.status, StatusCode::OK);
    assert_eq!(json(&body)["path"], "/public/b");
    let (res, body) = send(&client(), get(format!("http://{addr}/public/a%2F..%2Fadmin"), &[])).await;
    assert_eq!(res.status, StatusCode::BAD_REQUEST);
    assert_eq!(json(&body)["error"], "InvalidRequest");
}

#[tokio::test]
async fn slow_upstream_is_504_and_dead_upstream_502() {
    let slow = slow_upstream(Duration::from_secs(10)).await;
    let dead = dead_upstream().await;
    let config = config_with(
        "",
        &[("slow", slow), ("dead", dead)],
        "  - { name: slow, match: { path: /slow }, upstream: slow, auth: none }\n  - { name: dead, match: { path: /dead }, upstream: dead, auth: none }\n",
    );
    let gw = Gateway::start(config).await.unwrap();
    let addr = gw.addrs()[0];
    let (res, body) = send(&client(), get(format!("http://{addr}/slow"), &[])).await;
    assert_eq!(res.status, StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(json(&body), serde_json::json!({"error": "UpstreamTimeout", "message": "upstream timed out"}));
    let (res, body) = send(&client(), get(format!("http://{addr}/dead"), &[])).await;
    assert_eq!(res.status, StatusCode::BAD_GATEWAY);
    assert_eq!(json(&body), serde_json::json!({"error": "UpstreamFailure", "message": "upstream unreachable"}));
}

#[tokio::test]
async fn request_timeout_bounds_the_whole_request() {
    let slow = slow_upstream(Duration::from_secs(10)).await;
    let config = config_with(
        "limits: { request_timeout: 300ms }",
        &[("slow", slow)],
        "  - { name: slow, match: { path: / }, upstream: slow, auth: none }\n",
    );
    let gw = Gateway::start(config).await.unwrap();
    let (res, body) = send(&client(), get(format!("http://{}/", gw.addrs()[0]), &[])).await;
    assert_eq!(res.status, StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(json(&body)["error"], "RequestTimeout");
}

#[tokio::test]
async fn body_limits_are_413() {
    let received = Arc::new(AtomicU64::new(0));
    let up = streaming_upstream(received.clone()).await;
    let config = config_with(
        "limits: { max_body: 1MiB }",
        &[("up", up)],
        "  - { name: all, match: { path: / }, upstream: up, auth: none }\n",
    );
    let gw = Gateway::start(config).await.unwrap();
    let url = format!("http://{}/upload", gw.addrs()[0]);
    // Declared too large: refused before anything is read.
    let req = Request::post(&url).header("content-length", "2000000").body(body::full(vec![0u8; 2_000_000])).unwrap();
    let (res, body) = send(&client(), req).await;
    assert_eq!(res.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(json(&body)["error"], "PayloadTooLarge");
    // Chunked, and too large only as it streams.
    let req = Request::post(&url).body(chunked_body(3 << 20)).unwrap();
    let (res, _) = send(&client(), req).await;
    assert_eq!(res.status, StatusCode::PAYLOAD_TOO_LARGE);
    // Within the limit: passes whole.
    let req = Request::post(&url).body(chunked_body(1 << 20)).unwrap();
    let (res, body) = send(&client(), req).await;
    assert_eq!(res.status, StatusCode::OK);
    assert_eq!(body, (1u64 << 20).to_string());
}

#[tokio::test]
async fn large_bodies_stream_with_bounded_memory() {
    let received = Arc::new(AtomicU64::new(0));
    let up = streaming_upstream(received.clone()).await;
    // Generous timeouts: the test is about memory, and a loaded machine running a debug
    // build may take a while to move 512 MiB (the upstream answers after the whole upload).
    let config = Config::parse(
        &format!(
            "listen: 127.0.0.1:0\nlog: {{ level: warn }}\nlimits: {{ max_body: 1GiB, request_timeout: 1h }}\n\
             upstreams:\n  up: {{ url: \"http://{up}\", timeout: 1h }}\n\
             routes:\n  - {{ name: all, match: {{ path: / }}, upstream: up, auth: none }}\n"
        ),
        "test.yaml",
    )
    .unwrap();
    let gw = Gateway::start(config).await.unwrap();
    let addr = gw.addrs()[0];
    const SIZE: u64 = 256 << 20;
    let before = rss_bytes();
    // Upload 256 MiB.
    let req = Request::post(format!("http://{addr}/upload")).body(chunked_body(SIZE)).unwrap();
    let (res, body) = send(&client(), req).await;
    assert_eq!(res.status, StatusCode::OK);
    assert_eq!(body, SIZE.to_string());
    assert_eq!(received.load(Ordering::SeqCst), SIZE);
    // Download 256 MiB, counting without keeping it.
    let res = client().request(get(format!("http://{addr}/download/{SIZE}"), &[])).await.unwrap();
    let mut body = res.into_body();
    let mut n = 0u64;
    use http_body_util::BodyExt;
    while let Some(frame) = body.frame().await {
        n += frame.unwrap().data_ref().map_or(0, |d| d.len() as u64);
    }
    assert_eq!(n, SIZE);
    // Client, gateway and upstream share this process: 512 MiB moved through it, and it
    // grew by far less than one body.
    let grown = rss_bytes().saturating_sub(before);
    assert!(grown < 64 << 20, "RSS grew by {} MiB", grown >> 20);
}

#[tokio::test]
async fn websocket_messages_pass_both_ways() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let up = websocket_upstream().await;
    let gw = gateway_to(up).await;
    let url = format!("ws://{}/xrpc/com.atproto.sync.subscribeRepos", gw.addrs()[0]);
    let (mut ws, res) = tokio_tungstenite::connect_async(url).await.expect("upgrade through the gateway");
    assert_eq!(res.status(), StatusCode::SWITCHING_PROTOCOLS);
    for i in 0..10 {
        ws.send(Message::text(format!("hello {i}"))).await.unwrap();
        let back = ws.next().await.unwrap().unwrap();
        assert_eq!(back.into_text().unwrap().as_str(), format!("hello {i}"));
    }
    ws.send(Message::binary(vec![1u8, 2, 3])).await.unwrap();
    assert_eq!(ws.next().await.unwrap().unwrap().into_data().as_ref(), &[1u8, 2, 3]);
    ws.close(None).await.unwrap();
}

#[tokio::test]
async fn http2_prior_knowledge_is_served() {
    let up = echo_upstream().await;
    let gw = gateway_to(up).await;
    let client = h2c_client();
    let mut tasks = Vec::new();
    for i in 0..20 {
        let client = client.clone();
        let url = format!("http://{}/h2/{i}", gw.addrs()[0]);
        tasks.push(tokio::spawn(async move { send(&client, get(url, &[])).await }));
    }
    for (i, t) in tasks.into_iter().enumerate() {
        let (res, body) = t.await.unwrap();
        assert_eq!(res.status, StatusCode::OK);
        assert_eq!(res.version, Version::HTTP_2);
        let seen = json(&body);
        assert_eq!(seen["path"], format!("/h2/{i}"));
        // The upstream leg is HTTP/1.1.
        assert_eq!(seen["version"], "HTTP/1.1");
    }
}

#[tokio::test]
async fn overload_is_503_with_retry_after() {
    let mut held = GatedUpstream::start().await;
    let config = config_with(
        "limits: { max_concurrent_requests: 1 }",
        &[("slow", held.addr)],
        "  - { name: all, match: { path: / }, upstream: slow, auth: none }\n",
    );
    let gw = Gateway::start(config).await.unwrap();
    let url = format!("http://{}/", gw.addrs()[0]);
    let first = tokio::spawn({
        let url = url.clone();
        async move { send(&client(), get(url, &[])).await }
    });
    // The first request holds the one slot until the upstream is opened.
    held.arrived().await;
    let (res, body) = send(&client(), get(url, &[])).await;
    assert_eq!(res.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(res.headers["retry-after"], "1");
    assert_eq!(json(&body)["error"], "Overloaded");
    held.open();
    assert_eq!(first.await.unwrap().0.status, StatusCode::OK);
}

#[tokio::test]
async fn admin_endpoints_and_metrics() {
    let up = echo_upstream().await;
    let gw = gateway_to(up).await;
    let addr = gw.addrs()[0];
    let admin = gw.admin_addr().unwrap();
    send(&client(), get(format!("http://{addr}/x"), &[])).await;
    let (res, body) = send(&client(), get(format!("http://{admin}/healthz"), &[])).await;
    assert_eq!((res.status, body.as_ref()), (StatusCode::OK, br#"{"status":"ok"}"#.as_ref()));
    let (res, _) = send(&client(), get(format!("http://{admin}/readyz"), &[])).await;
    assert_eq!(res.status, StatusCode::OK);
    let (res, body) = send(&client(), get(format!("http://{admin}/metrics"), &[])).await;
    assert_eq!(res.status, StatusCode::OK);
    let text = String::from_utf8(body.to_vec()).unwrap();
    assert!(text.contains(r#"atgate_requests_total{route="all",method="GET",status="2xx",outcome="ok"} 1"#), "{text}");
    assert!(text.contains(r#"atgate_request_duration_seconds_count{route="all"} 1"#), "{text}");
    assert!(text.contains(r#"atgate_upstream_duration_seconds_count{upstream="up"} 1"#), "{text}");
    assert!(text.contains("atgate_requests_in_flight 0"), "{text}");
    assert!(text.contains("atgate_build_info{version="), "{text}");
    let (res, _) = send(&client(), get(format!("http://{admin}/nope"), &[])).await;
    assert_eq!(res.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn graceful_shutdown_drains_in_flight_requests() {
    let mut held = GatedUpstream::start().await;
    let gw = gateway_to(held.addr).await;
    let addr = gw.addrs()[0];
    let in_flight = tokio::spawn(async move { send(&client(), get(format!("http://{addr}/"), &[])).await });
    held.arrived().await;
    gw.shutdown();
    // New connections are refused while the old request is held (the listener closes as
    // the drain starts; polled, since shutdown is a signal to the accept loop).
    eventually("listener closed", || async { tokio::net::TcpStream::connect(addr).await.is_err().then_some(()) }).await;
    held.open();
    let (res, body) = in_flight.await.unwrap();
    assert_eq!(res.status, StatusCode::OK);
    assert_eq!(body, "held");
    assert!(gw.wait().await, "did not drain in time");
}

#[tokio::test]
async fn methods_and_bodies_pass_unchanged() {
    let up = echo_upstream().await;
    let gw = gateway_to(up).await;
    let url = format!("http://{}/things", gw.addrs()[0]);
    for method in [Method::POST, Method::PUT, Method::PATCH, Method::DELETE] {
        let req = Request::builder().method(method.clone()).uri(&url).body(body::full("12345")).unwrap();
        let (res, body) = send(&client(), req).await;
        assert_eq!(res.status, StatusCode::OK);
        let seen = json(&body);
        assert_eq!(seen["method"], method.as_str());
        assert_eq!(seen["body_bytes"], 5);
    }
}

// === Headers atgate sets cannot be removed or faked (issue 15 §3) ===

const AUD: &str = "did:web:gateway.test";
const DID: &str = "did:plc:ewvi7nxzyoun6zhxrhs64oiz";

/// A dev authorization server, a DPoP route `/xrpc/` to the echo upstream behind
/// atgate (trusted_proxies: 127.0.0.1, no public_url) and a proof key.
struct DpopSetup {
    gw: Gateway,
    issuer: atgate::tools::dev_issuer::DevIssuer,
    key: atgate::jose::sign::SigningKey,
}

impl DpopSetup {
    async fn start() -> DpopSetup {
        let issuer = atgate::tools::dev_issuer::DevIssuer::spawn(loopback()).await.unwrap();
        let top = format!(
            "trusted_proxies: [127.0.0.1]\noutbound: {{ allow_private_addresses: true, allow_http: true }}\nissuers:\n  - issuer: {}\n    discovery: true\n    audiences: [{AUD}]\n",
            issuer.issuer()
        );
        let routes = "  - { name: api, match: { path: /xrpc/ }, upstream: up, auth: dpop }\n";
        let gw = Gateway::start(config_with(&top, &[("up", echo_upstream().await)], routes)).await.unwrap();
        DpopSetup { gw, issuer, key: atgate::jose::sign::SigningKey::generate() }
    }

    /// A DPoP GET of `path` (proof for `htu_origin` + `path`, nonce retry included) with
    /// extra headers.
    async fn get(&self, htu_origin: &str, path: &str, headers: &[(&str, &str)]) -> (StatusCode, serde_json::Value) {
        let token = self.issuer.mint(DID, &self.key.thumbprint(), "atproto", AUD, Duration::from_secs(600));
        let signer = atgate::tools::DpopSigner {
            key: atgate::jose::sign::SigningKey::from_jwk(&self.key.private_jwk()).unwrap(),
        };
        let url = format!("http://{}{path}", self.gw.addrs()[0]);
        let htu = format!("{htu_origin}{path}");
        let mut nonce: Option<String> = None;
        for _ in 0..2 {
            let proof = signer.proof("GET", &htu, Some(&token), nonce.as_deref(), atgate::auth::now_ms() / 1000);
            let mut all = vec![("authorization", format!("DPoP {token}")), ("dpop", proof)];
            all.extend(headers.iter().map(|(k, v)| (*k, (*v).to_owned())));
            let all: Vec<(&str, &str)> = all.iter().map(|(k, v)| (*k, v.as_str())).collect();
            let (res, body) = send(&client(), get(url.clone(), &all)).await;
            match atgate::tools::curl::asks_for_nonce(res.status, &res.headers) {
                Some(n) if nonce.is_none() => nonce = Some(n),
                _ => {
                    let seen = if res.status == StatusCode::OK { json(&body) } else { serde_json::Value::Null };
                    return (res.status, seen);
                }
            }
        }
        unreachable!("a second nonce challenge")
    }
}

#[tokio::test]
async fn connection_cannot_remove_injected_identity_headers() {
    let s = DpopSetup::start().await;
    let origin = format!("http://{}", s.gw.addrs()[0]);
    let named = [("connection", "keep-alive, x-atproto-did, X-Atproto-Scope, x-atproto-auth, x-atproto-jkt")];
    let (status, seen) = s.get(&origin, "/xrpc/com.example.get", &named).await;
    assert_eq!(status, StatusCode::OK);
    let h = &seen["headers"];
    assert_eq!(h["x-atproto-did"], DID, "{h}");
    assert_eq!(h["x-atproto-scope"], "atproto", "{h}");
    assert_eq!(h["x-atproto-auth"], "oauth", "{h}");
    assert!(h["x-atproto-jkt"].is_string(), "{h}");
    assert!(h["connection"].is_null() || h["connection"] == "keep-alive", "{h}");
}

#[tokio::test]
async fn forwarded_host_is_the_nearest_trusted_proxys_value() {
    let s = DpopSetup::start().await;
    let gw_host = s.gw.addrs()[0].to_string();
    let path = "/xrpc/com.example.get";
    // The client put its own choice first; the trusted proxy appended the host it served.
    let client_first = format!("evil.example, {gw_host}");
    let (status, seen) = s.get(&format!("http://{gw_host}"), path, &[("x-forwarded-host", &client_first)]).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(seen["headers"]["x-forwarded-host"], gw_host);
    // A proof for the client's choice is not one for this gateway.
    let (status, _) = s.get("http://evil.example", path, &[("x-forwarded-host", &client_first)]).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    // Also when the proxy added a second line instead of appending, and for the scheme.
    let lines = [
        ("x-forwarded-host", "evil.example"),
        ("x-forwarded-host", "gw.example.com"),
        ("x-forwarded-proto", "http, https"),
    ];
    let (status, _) = s.get("https://gw.example.com", path, &lines).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn own_cookies_never_reach_upstreams() {
    let up = echo_upstream().await;
    let top =
        "public_url: https://gw.example.com\noauth_client: { client_name: App, scope: atproto, cookie_name: sess }";
    let routes = "  - { name: all, match: { path: / }, upstream: up, auth: none }\n";
    let gw = Gateway::start(config_with(top, &[("up", up)], routes)).await.unwrap();
    let url = format!("http://{}/page", gw.addrs()[0]);
    let cookie = "a=1; sess=forged.sig; sess_flow=f; __Host-sess=h; __Secure-sess_flow=s; __host-sess=x; b=2; SESS=other; session=kept";
    let (_, body) = send(&client(), get(url.clone(), &[("cookie", cookie)])).await;
    assert_eq!(json(&body)["headers"]["cookie"], "a=1; b=2; SESS=other; session=kept");

    // h2 may split cookies over several `cookie` fields; the HTTP/1.1 upstream gets one.
    let split = [("cookie", "a=1"), ("cookie", "sess=forged.sig"), ("cookie", "b=2; __Host-sess_flow=f")];
    let (_, body) = send(&h2c_client(), get(url.clone(), &split)).await;
    assert_eq!(json(&body)["headers"]["cookie"], "a=1; b=2");

    // Only atgate's cookies: no Cookie header at all.
    let (_, body) = send(&client(), get(url, &[("cookie", "sess=x; sess_flow=y")])).await;
    assert!(json(&body)["headers"]["cookie"].is_null());
}

#[tokio::test]
async fn proxy_trust_headers_pass_only_from_trusted_proxies() {
    let up = echo_upstream().await;
    let trust_headers = [
        ("x-real-ip", "6.6.6.6"),
        ("true-client-ip", "6.6.6.6"),
        ("x-client-ip", "6.6.6.6"),
        ("x-original-url", "/admin"),
        ("x-rewrite-url", "/admin"),
        ("x-forwarded-port", "443"),
        ("x-forwarded-prefix", "/admin"),
        ("forwarded", "for=6.6.6.6"),
        ("x-normal", "kept"),
    ];
    let routes = "  - { name: all, match: { path: / }, upstream: up, auth: none }\n";
    let untrusted = Gateway::start(config_with("", &[("up", up)], routes)).await.unwrap();
    let (_, body) = send(&client(), get(format!("http://{}/x", untrusted.addrs()[0]), &trust_headers)).await;
    let h = &json(&body)["headers"];
    for (name, _) in &trust_headers[..8] {
        assert!(h[*name].is_null(), "{name} passed from an untrusted peer: {h}");
    }
    assert_eq!(h["x-normal"], "kept");

    // From a trusted proxy they pass, but for the URL overrides: atgate routes on the
    // request line, so an upstream honouring `X-Original-URL` would run another handler.
    let trusted = Gateway::start(config_with("trusted_proxies: [127.0.0.1]", &[("up", up)], routes)).await.unwrap();
    let (_, body) = send(&client(), get(format!("http://{}/x", trusted.addrs()[0]), &trust_headers)).await;
    let h = &json(&body)["headers"];
    for (name, value) in &trust_headers {
        match *name {
            "x-original-url" | "x-rewrite-url" => assert!(h[*name].is_null(), "{name} passed: {h}"),
            _ => assert_eq!(h[*name], *value, "{name} from a trusted proxy: {h}"),
        }
    }

    // The list is configurable.
    let custom = "trusted_proxy_headers: [x-custom-client, X-Real-IP]";
    let gw = Gateway::start(config_with(custom, &[("up", up)], routes)).await.unwrap();
    let sent = [("x-custom-client", "1"), ("x-real-ip", "6.6.6.6"), ("x-forwarded-port", "443")];
    let (_, body) = send(&client(), get(format!("http://{}/x", gw.addrs()[0]), &sent)).await;
    let h = &json(&body)["headers"];
    assert!(h["x-custom-client"].is_null() && h["x-real-ip"].is_null(), "{h}");
    assert_eq!(h["x-forwarded-port"], "443");
}

#[tokio::test]
async fn upgrades_only_to_protocols_the_route_allows() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let echo = echo_upstream().await;
    let ws = websocket_upstream().await;
    let routes = "  - { name: ws, match: { path: /ws/ }, upstream: ws, auth: none }
  - { name: nows, match: { path: /nows/ }, upstream: ws, auth: none, upgrades: [] }
  - { name: all, match: { path: / }, upstream: echo, auth: none }
";
    let gw = Gateway::start(config_with("", &[("echo", echo), ("ws", ws)], routes)).await.unwrap();
    let addr = gw.addrs()[0];

    // h2c never reaches an upstream: the request is served as plain HTTP/1.1.
    for upgrade in ["h2c", "H2C", "h2c, foo/1"] {
        let req = get(
            format!("http://{addr}/x"),
            &[
                ("connection", "Upgrade, HTTP2-Settings"),
                ("upgrade", upgrade),
                ("http2-settings", "AAMAAABkAAQAoAAAAAIAAAAA"),
            ],
        );
        let (res, body) = send(&client(), req).await;
        assert_eq!(res.status, StatusCode::OK, "{upgrade}");
        let h = &json(&body)["headers"];
        assert!(h["upgrade"].is_null() && h["http2-settings"].is_null(), "{upgrade}: {h}");
        assert!(h["connection"].is_null() || h["connection"] == "keep-alive", "{upgrade}: {h}");
    }

    // WebSocket is allowed by default.
    let (mut socket, res) =
        tokio_tungstenite::connect_async(format!("ws://{addr}/ws/feed")).await.expect("websocket upgrade");
    assert_eq!(res.status(), StatusCode::SWITCHING_PROTOCOLS);
    socket.send(Message::text("ping")).await.unwrap();
    assert_eq!(socket.next().await.unwrap().unwrap().into_text().unwrap().as_str(), "ping");

    // A route with `upgrades: []` tunnels nothing.
    let refused = tokio_tungstenite::connect_async(format!("ws://{addr}/nows/feed")).await;
    assert!(refused.is_err(), "upgrade on a route without upgrades");
}

#[tokio::test]
async fn a_switch_to_a_protocol_the_route_does_not_allow_is_502() {
    // An upstream that answers every upgrade by switching to h2c.
    let up = serve(|_req| async {
        let mut res = http::Response::new(body::empty());
        *res.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        res.headers_mut().insert("connection", "upgrade".parse().unwrap());
        res.headers_mut().insert("upgrade", "h2c".parse().unwrap());
        res
    })
    .await;
    let gw = gateway_to(up).await;
    let req = get(format!("http://{}/ws", gw.addrs()[0]), &[("connection", "upgrade"), ("upgrade", "websocket")]);
    let (res, _) = send(&client(), req).await;
    assert_eq!(res.status, StatusCode::BAD_GATEWAY);
}

/// A method override turns a `POST` routed to a public route into a handler of another
/// method (Express `method-override`): no such header reaches an upstream, from anyone.
#[tokio::test]
async fn method_overrides_never_reach_the_upstream() {
    let up = echo_upstream().await;
    let routes = "  - { name: all, match: { path: / }, upstream: up, auth: none }\n";
    let overrides =
        [("x-http-method-override", "DELETE"), ("x-http-method", "DELETE"), ("x-method-override", "DELETE")];
    for top in ["", "trusted_proxies: [127.0.0.1]"] {
        let gw = Gateway::start(config_with(top, &[("up", up)], routes)).await.unwrap();
        let req = Request::post(format!("http://{}/items/1", gw.addrs()[0]));
        let req = overrides.iter().fold(req, |r, (k, v)| r.header(*k, *v)).body(body::full("")).unwrap();
        let (res, body) = send(&client(), req).await;
        assert_eq!(res.status, StatusCode::OK);
        let h = &json(&body)["headers"];
        for (name, _) in &overrides {
            assert!(h[*name].is_null(), "{name} reached the upstream ({top:?}): {h}");
        }
    }
}
