//! App-password authentication with a cached session: what every request after the first
//! costs (identity from the caches, HMAC of the password, session lookup). The PDS, the DID
//! document host and the DNS server run on loopback and are asked once, before measuring.

use std::collections::HashMap;
use std::hint::black_box;

use atgate::auth::app_password::Sessions;
use atgate::config::{AppPasswordConfig, IdentityConfig, OutboundConfig};
use atgate::identity::Resolver;
use atgate::net::Outbound;
use atgate::proxy::headers::AppPasswordHeaders;
use atgate::tools::dev_identity::{DevIdentity, DidKey, did_document};
use criterion::{Criterion, criterion_group, criterion_main};
use http_body_util::BodyExt;
use serde_json::json;

const DID: &str = "did:plc:ewvi7nxzyoun6zhxrhs64oiz";
/// The client address the failure cap counts by.
const LOOPBACK: std::net::IpAddr = std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

/// A PDS that opens a 2-hour app-password session for anyone.
async fn pds() -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let service = hyper::service::service_fn(|req: http::Request<hyper::body::Incoming>| async move {
                    let _ = req.into_body().collect().await;
                    let now = atgate::auth::now_ms() / 1000;
                    let b64 = |v: serde_json::Value| atgate::jose::b64url(v.to_string().as_bytes());
                    let access = format!(
                        "{}.{}.sig",
                        b64(json!({"typ": "at+jwt", "alg": "HS256"})),
                        b64(json!({"scope": "com.atproto.appPass", "sub": DID, "exp": now + 7200}))
                    );
                    let body = json!({"did": DID, "handle": "alice.test", "accessJwt": access, "refreshJwt": "r", "active": true});
                    let mut res = http::Response::new(atgate::body::full(body.to_string()));
                    res.headers_mut().insert("content-type", "application/json".parse().unwrap());
                    Ok::<_, std::convert::Infallible>(res)
                });
                let io = hyper_util::rt::TokioIo::new(stream);
                let _ = hyper::server::conn::http1::Builder::new().serve_connection(io, service).await;
            });
        }
    });
    addr
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let (sessions, _host) = rt.block_on(async {
        let pds = pds().await;
        let host = DevIdentity::spawn("127.0.0.1:0".parse().unwrap()).await.unwrap();
        host.publish(DID, did_document(DID, &DidKey::k256(), Some("alice.test"), &format!("http://{pds}")));
        let records = HashMap::from([("_atproto.alice.test".to_owned(), vec![format!("did={DID}")])]);
        let (dns, _) = atgate::tools::dev_dns::spawn("127.0.0.1:0".parse().unwrap(), records).await.unwrap();
        let identity = IdentityConfig {
            plc_url: url::Url::parse(&host.plc_url()).unwrap(),
            dns_servers: vec![dns],
            allow_test_handles: true,
            ..Default::default()
        };
        let net =
            Outbound::new(OutboundConfig { allow_private_addresses: true, allow_http: true, ..Default::default() });
        (Sessions::new(&AppPasswordConfig::default(), Resolver::new(&identity, net)), host)
    });
    let creds =
        AppPasswordHeaders { identifier: Some("alice.test".into()), password: Some("abcd-efgh-ijkl-mn23".into()) };
    assert_eq!(rt.block_on(sessions.authenticate(&creds, LOOPBACK)).unwrap().did, DID); // the one login
    c.bench_function("app_password/cached_session", |b| {
        b.iter(|| rt.block_on(sessions.authenticate(black_box(&creds), LOOPBACK)).unwrap())
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
