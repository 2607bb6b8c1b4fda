//! The `atgate` binary: check, demo, run with signals.

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use http::StatusCode;

fn atgate() -> Command {
    Command::new(env!("CARGO_BIN_EXE_atgate"))
}

#[test]
fn example_config_passes_check() {
    let out = atgate().args(["check", "--config", "config/atgate.yaml"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "config/atgate.yaml: ok (7 routes, 2 upstreams)\n");
}

#[test]
fn invalid_configs_fail_check_with_exact_errors() {
    let dir = Path::new("tests/fixtures/config/invalid");
    let mut seen = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "yaml") {
            continue;
        }
        let name = path.file_name().unwrap().to_str().unwrap();
        let expected = std::fs::read_to_string(path.with_extension("expected")).unwrap();
        let out = atgate().current_dir(dir).args(["check", "--config", name]).output().unwrap();
        assert_eq!(out.status.code(), Some(1), "{name} should fail check");
        assert_eq!(String::from_utf8_lossy(&out.stderr), expected, "errors for {name}");
        seen += 1;
    }
    assert!(seen >= 10, "only {seen} invalid configs");
}

#[test]
fn demo_once_works() {
    let out = atgate().args(["demo", "--once"]).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("/demo/hello?who=world -> 200 OK"), "{stdout}");
    assert!(stdout.contains("DPoP GET"), "{stdout}");
    assert!(stdout.contains(r#""x-atproto-did": "did:plc:ewvi7nxzyoun6zhxrhs64oiz""#), "{stdout}");
    assert!(stdout.contains("/service/xrpc/com.example.getThing -> 200 OK"), "{stdout}");
    assert!(stdout.contains(r#""x-atproto-auth": "service""#), "{stdout}");
    assert!(stdout.contains("its replay was refused"), "{stdout}");
    assert!(stdout.contains("demo ok"), "{stdout}");
}

#[test]
fn version_flag() {
    let out = atgate().arg("--version").output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), format!("atgate {}\n", env!("CARGO_PKG_VERSION")));
}

/// `atgate run`, a request in flight, SIGTERM: the request completes, the process exits 0,
/// and the JSON access log has the request without its credentials.
#[tokio::test]
async fn run_drains_on_sigterm_and_logs_json_without_secrets() {
    let mut slow = GatedUpstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("atgate.yaml");
    std::fs::write(
        &config,
        format!(
            "listen: 127.0.0.1:0\nadmin_listen: \"off\"\nupstreams:\n  slow: {{ url: \"http://{slow}\" }}\nroutes:\n  - {{ name: all, match: {{ path: / }}, upstream: slow, auth: none }}\n",
            slow = slow.addr
        ),
    )
    .unwrap();
    let mut child = atgate()
        .args(["run", "--config", config.to_str().unwrap()])
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let addr = loop {
        let line = lines.next().expect("gateway exited early").unwrap();
        let v: serde_json::Value = serde_json::from_str(&line).expect("log lines are JSON");
        if v["message"] == "listening" {
            break v["addr"].as_str().unwrap().to_owned();
        }
    };
    let url = format!("http://{addr}/secret-path?token=hidden");
    let req = tokio::spawn(async move {
        send(&client(), get(url, &[("authorization", "Bearer sekrit-token"), ("cookie", "session=sekrit")])).await
    });
    // The request is in flight: the upstream holds it until the gateway is draining.
    slow.arrived().await;
    let kill = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(kill.success());
    let (mut lines, mut rest) = tokio::task::spawn_blocking(move || {
        let mut seen = Vec::new();
        for line in lines.by_ref() {
            let line = line.unwrap();
            let draining = serde_json::from_str::<serde_json::Value>(&line).unwrap()["message"] == "draining";
            seen.push(line);
            if draining {
                return (lines, seen);
            }
        }
        panic!("the gateway exited without draining: {seen:?}");
    })
    .await
    .unwrap();
    assert!(rest.last().unwrap().contains(r#""connections":1"#), "{rest:?}");
    slow.open();
    let (res, body) = req.await.unwrap();
    assert_eq!(res.status, StatusCode::OK);
    assert_eq!(body, "held");
    let status = child.wait().unwrap();
    assert!(status.success(), "exit status {status}");
    rest.extend(lines.by_ref().map_while(Result::ok));
    let access =
        rest.iter().find(|l| l.contains("atgate::access")).unwrap_or_else(|| panic!("no access log line in {rest:?}"));
    let v: serde_json::Value = serde_json::from_str(access).unwrap();
    assert_eq!(v["path"], "/secret-path");
    assert_eq!(v["status"], 200);
    assert_eq!(v["route"], "all");
    let all = rest.join("\n");
    assert!(!all.contains("sekrit") && !all.contains("hidden"), "a secret was logged:\n{all}");
    assert!(all.contains("drained"), "{all}");
}

#[test]
fn keygen_prints_a_private_jwk() {
    let out = atgate().arg("keygen").output().unwrap();
    assert!(out.status.success());
    let jwk: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let key = atgate::jose::sign::SigningKey::from_jwk(&jwk).unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(&key.thumbprint()), "{stderr}");
}

/// `atgate curl` against a gateway with the dev issuer: the nonce retry happens and the
/// DID reaches the upstream.
#[tokio::test]
async fn curl_makes_a_dpop_request_with_the_nonce_retry() {
    use atgate::tools::dev_issuer::DevIssuer;
    let up = echo_upstream().await;
    let issuer = DevIssuer::spawn(loopback()).await.unwrap();
    let top = format!(
        "trusted_proxies: [127.0.0.1]\noutbound: {{ allow_private_addresses: true, allow_http: true }}\nissuers:\n  - {{ issuer: \"{}\", discovery: true, audiences: [did:web:x] }}",
        issuer.issuer()
    );
    let config = config_with(&top, &[("up", up)], "  - { name: api, match: { path: / }, upstream: up, auth: dpop }\n");
    let gw = atgate::app::Gateway::start(config).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let keygen = atgate().arg("keygen").output().unwrap();
    std::fs::write(dir.path().join("key.json"), &keygen.stdout).unwrap();
    let key = atgate::jose::sign::SigningKey::from_jwk(&serde_json::from_slice(&keygen.stdout).unwrap()).unwrap();
    let token = issuer.mint(
        "did:plc:ewvi7nxzyoun6zhxrhs64oiz",
        &key.thumbprint(),
        "atproto",
        "did:web:x",
        Duration::from_secs(60),
    );
    let url = format!("http://{}/xrpc/com.example.getThing", gw.addrs()[0]);
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_atgate"))
        .args(["curl", "-i", "--key", dir.path().join("key.json").to_str().unwrap(), "--token", &token, &url])
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.starts_with("200 OK (attempts: 2)"), "{stdout}");
    assert!(stdout.contains("dpop-nonce: "), "{stdout}");
    assert!(stdout.contains(r#""x-atproto-did":"did:plc:ewvi7nxzyoun6zhxrhs64oiz""#), "{stdout}");
}

#[test]
fn scope_explain_and_resolve() {
    let out = atgate()
        .args(["scope", "explain", "--granted", "atproto repo:app.example.post repo:%E0"])
        .args(["--check", "repo app.example.post create", "--check", "blob video/mp4"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("repo app.example.post create: allowed by repo:app.example.post"), "{stdout}");
    assert!(stdout.contains("blob video/mp4: denied; needs blob:video/mp4"), "{stdout}");
    let out = atgate()
        .args(["scope", "resolve", "app.example.authBasic", "--pinned-dir", "tests/fixtures/permission_sets"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(stdout.contains("repo:app.example.like?action=delete\nrpc:app.example.getFeedSkeleton?aud=*"), "{stdout}");
    let out = atgate().args(["scope", "explain", "--granted", "x", "--check", "nonsense"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
}
