//! Replicas sharing the replay store: two gateways and one real `redis-server` on
//! 127.0.0.1. A service JWT used at one replica is refused at the other; when Redis goes
//! away, `fail_closed` answers 503 and `fail_open_local` keeps serving from memory.

mod common;

use std::time::Duration;

use atgate::app::Gateway;
use atgate::tools::dev_identity::{DevIdentity, DidKey, did_document};
use common::*;
use http::StatusCode;

const ALICE: &str = "did:plc:ewvi7nxzyoun6zhxrhs64oiz";
const AUD: &str = "did:web:api.gateway.test#svc";

/// A `redis-server` on a free loopback port, killed on drop.
struct Redis {
    child: std::process::Child,
    port: u16,
}

impl Redis {
    fn start() -> Redis {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let mut child = std::process::Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("redis-server is installed (scripts/test installs it)");
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Redis { child, port };
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
        panic!("redis-server did not start");
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.stop();
    }
}

async fn gateway(host: &DevIdentity, url_file: &std::path::Path, failure: &str) -> Gateway {
    let up = echo_upstream().await;
    let top = format!(
        "outbound: {{ allow_private_addresses: true, allow_http: true }}
identity: {{ plc_url: \"{}\" }}
service_auth: {{ did: did:web:api.gateway.test, service_id: svc }}
replay: {{ store: redis, redis: {{ url_file: \"{}\" }}, failure: {failure}, timeout: 200ms }}
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
