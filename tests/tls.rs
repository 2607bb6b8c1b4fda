//! TLS on the listener (HTTP/1.1 and HTTP/2 via ALPN, certificate reload) and to upstreams.

mod common;

use std::sync::Arc;

use atgate::app::Gateway;
use atgate::body::{self, Body};
use bytes::Bytes;
use common::*;
use http::{Request, StatusCode, Version};
use http_body_util::BodyExt;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls_pki_types::{CertificateDer, ServerName};

struct TestCert {
    pem: String,
    key_pem: String,
    der: CertificateDer<'static>,
}

fn make_cert() -> TestCert {
    let rcgen::CertifiedKey { cert, signing_key } =
        rcgen::generate_simple_self_signed(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
    TestCert { pem: cert.pem(), key_pem: signing_key.serialize_pem(), der: cert.der().clone() }
}

fn write_cert(dir: &std::path::Path, cert: &TestCert) {
    std::fs::write(dir.join("cert.pem"), &cert.pem).unwrap();
    std::fs::write(dir.join("key.pem"), &cert.key_pem).unwrap();
}

fn tls_top(dir: &std::path::Path) -> String {
    format!("tls:\n  cert: {}\n  key: {}", dir.join("cert.pem").display(), dir.join("key.pem").display())
}

/// Connects with TLS trusting `root`, offering `alpn`; returns the negotiated protocol,
/// the server's certificate, and the response to `GET /path`.
async fn tls_get(
    addr: std::net::SocketAddr,
    root: &CertificateDer<'static>,
    alpn: &[&[u8]],
    path: &str,
) -> (Option<Vec<u8>>, CertificateDer<'static>, http::StatusCode, Version, Bytes) {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(root.clone()).unwrap();
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = ServerName::IpAddress(std::net::IpAddr::from([127, 0, 0, 1]).into());
    let tls = connector.connect(name, tcp).await.expect("TLS handshake");
    let (_, session) = tls.get_ref();
    let negotiated = session.alpn_protocol().map(|p| p.to_vec());
    let served = session.peer_certificates().unwrap()[0].clone().into_owned();
    let req = Request::get(format!("https://127.0.0.1:{}{path}", addr.port())).body(body::empty()).unwrap();
    let io = TokioIo::new(tls);
    let res = if negotiated.as_deref() == Some(b"h2") {
        let (mut send, conn) =
            hyper::client::conn::http2::handshake::<_, _, Body>(TokioExecutor::new(), io).await.unwrap();
        tokio::spawn(conn);
        send.send_request(req).await.unwrap()
    } else {
        let (mut send, conn) = hyper::client::conn::http1::handshake::<_, Body>(io).await.unwrap();
        tokio::spawn(conn);
        send.send_request(req).await.unwrap()
    };
    let (status, version) = (res.status(), res.version());
    let body = res.into_body().collect().await.unwrap().to_bytes();
    (negotiated, served, status, version, body)
}

#[tokio::test]
async fn tls_listener_serves_h1_and_h2_and_reloads_its_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let first = make_cert();
    write_cert(dir.path(), &first);
    let up = echo_upstream().await;
    let config = config_with(
        &tls_top(dir.path()),
        &[("up", up)],
        "  - { name: all, match: { path: / }, upstream: up, auth: none }\n",
    );
    let gw = Gateway::start(config).await.unwrap();
    let addr = gw.addrs()[0];

    let (alpn, served, status, version, body) = tls_get(addr, &first.der, &[b"h2", b"http/1.1"], "/over-h2").await;
    assert_eq!(alpn.as_deref(), Some(b"h2".as_ref()));
    assert_eq!((status, version), (StatusCode::OK, Version::HTTP_2));
    assert_eq!(served, first.der);
    let seen = json(&body);
    assert_eq!(seen["path"], "/over-h2");
    assert_eq!(seen["headers"]["x-forwarded-proto"], "https");

    let (alpn, _, status, version, _) = tls_get(addr, &first.der, &[b"http/1.1"], "/over-h1").await;
    assert_eq!(alpn.as_deref(), Some(b"http/1.1".as_ref()));
    assert_eq!((status, version), (StatusCode::OK, Version::HTTP_11));

    // A broken replacement is refused and the old certificate keeps serving.
    std::fs::write(dir.path().join("cert.pem"), "not a certificate").unwrap();
    assert!(gw.reload_tls().is_err());
    let (_, served, ..) = tls_get(addr, &first.der, &[b"h2"], "/").await;
    assert_eq!(served, first.der);

    // What SIGHUP does: new connections get the new certificate.
    let second = make_cert();
    write_cert(dir.path(), &second);
    gw.reload_tls().unwrap();
    let (_, served, status, ..) = tls_get(addr, &second.der, &[b"h2"], "/").await;
    assert_eq!(served, second.der);
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn https_upstream_with_a_private_ca() {
    // The upstream is itself an atgate with TLS in front of the echo server.
    let dir = tempfile::tempdir().unwrap();
    let cert = make_cert();
    write_cert(dir.path(), &cert);
    let echo = echo_upstream().await;
    let inner = Gateway::start(config_with(
        &tls_top(dir.path()),
        &[("up", echo)],
        "  - { name: all, match: { path: / }, upstream: up, auth: none }\n",
    ))
    .await
    .unwrap();
    let text = format!(
        "listen: 127.0.0.1:0\nadmin_listen: \"off\"\nupstreams:\n  secure:\n    url: https://127.0.0.1:{}\n    tls:\n      ca_file: {}\n  untrusted:\n    url: https://127.0.0.1:{}\nroutes:\n  - {{ name: ok, match: {{ path: /ok }}, upstream: secure, auth: none }}\n  - {{ name: bad, match: {{ path: /bad }}, upstream: untrusted, auth: none }}\n",
        inner.addrs()[0].port(),
        dir.path().join("cert.pem").display(),
        inner.addrs()[0].port(),
    );
    let outer = Gateway::start(atgate::config::Config::parse(&text, "t").unwrap()).await.unwrap();
    let (res, body) = send(&client(), get(format!("http://{}/ok", outer.addrs()[0]), &[])).await;
    assert_eq!(res.status, StatusCode::OK);
    assert_eq!(json(&body)["path"], "/ok");
    // Web PKI roots do not trust the test CA: the handshake fails, 502.
    let (res, _) = send(&client(), get(format!("http://{}/bad", outer.addrs()[0]), &[])).await;
    assert_eq!(res.status, StatusCode::BAD_GATEWAY);
}

#[tokio::test]
async fn unreadable_tls_files_fail_at_start_with_the_field() {
    let up = echo_upstream().await;
    let config = config_with(
        "tls: { cert: /nonexistent/cert.pem, key: /nonexistent/key.pem }",
        &[("up", up)],
        "  - { name: all, match: { path: / }, upstream: up, auth: none }\n",
    );
    let err = Gateway::start(config).await.err().expect("start must fail").to_string();
    assert!(err.starts_with("test.yaml:4:14: tls.cert: cannot read /nonexistent/cert.pem"), "{err}");
}
