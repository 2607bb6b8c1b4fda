//! Criterion benches of the bare proxy path: route matching, path normalization, and a
//! full request over loopback straight to an upstream vs. through atgate.

use std::convert::Infallible;
use std::net::SocketAddr;

use atgate::app::Gateway;
use atgate::body::{self, Body};
use atgate::config::{Config, EXAMPLE};
use atgate::router::path::normalize;
use atgate::state::Runtime;
use criterion::{Criterion, criterion_group, criterion_main};
use http::{Method, Request, Response};
use http_body_util::BodyExt;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::hint::black_box;

fn route_matching(c: &mut Criterion) {
    let runtime = Runtime::build(Config::parse(EXAMPLE, "example").unwrap()).unwrap();
    let table = &runtime.routes;
    let mut g = c.benchmark_group("router");
    g.bench_function("lookup_glob", |b| {
        b.iter(|| table.lookup(None, black_box("/xrpc/app.bsky.feed.getTimeline"), &Method::GET).unwrap())
    });
    g.bench_function("lookup_fallthrough", |b| {
        b.iter(|| table.lookup(Some("other.example"), black_box("/some/deep/path"), &Method::POST).unwrap())
    });
    g.bench_function("normalize_clean", |b| b.iter(|| normalize(black_box("/xrpc/com.example.getThing")).unwrap()));
    g.bench_function("normalize_dots", |b| b.iter(|| normalize(black_box("/a//b/./c/../d")).unwrap()));
    g.finish();
}

async fn upstream() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let _ = stream.set_nodelay(true);
            tokio::spawn(async move {
                let svc =
                    hyper::service::service_fn(|_req| async { Ok::<_, Infallible>(Response::new(body::full("ok"))) });
                let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), svc).await;
            });
        }
    });
    addr
}

fn round_trip(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let (direct, gateway) = rt.block_on(async {
        let up = upstream().await;
        let text = format!(
            "listen: 127.0.0.1:0\nadmin_listen: \"off\"\nlog: {{ level: \"off\" }}\nupstreams:\n  up: {{ url: \"http://{up}\" }}\nroutes:\n  - {{ name: all, match: {{ path: / }}, upstream: up, auth: none }}\n"
        );
        let gw = Gateway::start(Config::parse(&text, "bench").unwrap()).await.unwrap();
        let addr = gw.addrs()[0];
        std::mem::forget(gw);
        (up, addr)
    });
    let client: Client<_, Body> = Client::builder(TokioExecutor::new()).build_http();
    let mut g = c.benchmark_group("round_trip");
    for (name, addr) in [("direct", direct), ("through_atgate", gateway)] {
        let url: http::Uri = format!("http://{addr}/xrpc/com.example.getThing").parse().unwrap();
        g.bench_function(name, |b| {
            b.to_async(&rt).iter(|| async {
                let req = Request::get(url.clone()).body(body::empty()).unwrap();
                let res = client.request(req).await.unwrap();
                black_box(res.into_body().collect().await.unwrap());
            })
        });
    }
    g.finish();
}

criterion_group!(benches, route_matching, round_trip);
criterion_main!(benches);
