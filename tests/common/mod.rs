//! Test harness: upstreams of every kind and the gateway, each on 127.0.0.1:0.
#![allow(dead_code)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use atgate::app::Gateway;
use atgate::body::{self, Body};
use atgate::config::Config;
use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

pub fn loopback() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

/// Serves `handler` with hyper (HTTP/1.1 + h2c, upgrades on) on an ephemeral port.
pub async fn serve<F, Fut>(handler: F) -> SocketAddr
where
    F: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = Response<Body>> + Send + 'static,
{
    let listener = TcpListener::bind(loopback()).await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let handler = handler.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req| {
                    let fut = handler(req);
                    async move { Ok::<_, Infallible>(fut.await) }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection_with_upgrades(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    addr
}

/// The demo's echo upstream: answers with JSON describing the request.
pub async fn echo_upstream() -> SocketAddr {
    atgate::demo::spawn_echo(loopback()).await.unwrap()
}

/// Waits `delay`, then answers 200 "slow".
pub async fn slow_upstream(delay: Duration) -> SocketAddr {
    serve(move |_req| async move {
        tokio::time::sleep(delay).await;
        Response::new(body::full("slow"))
    })
    .await
}

/// An upstream that holds every request until the test opens it: a request in flight
/// without a guess at how long "in flight" lasts. `arrived()` waits for the next request to
/// reach it; after `open()` every held and later request is answered 200 "held".
pub struct GatedUpstream {
    /// Where it listens.
    pub addr: SocketAddr,
    arrived: tokio::sync::mpsc::UnboundedReceiver<()>,
    open: tokio::sync::watch::Sender<bool>,
}

impl GatedUpstream {
    pub async fn start() -> GatedUpstream {
        let (arrive, arrived) = tokio::sync::mpsc::unbounded_channel();
        let (open, gate) = tokio::sync::watch::channel(false);
        let addr = serve(move |_req| {
            let (arrive, mut gate) = (arrive.clone(), gate.clone());
            async move {
                let _ = arrive.send(());
                let _ = gate.wait_for(|open| *open).await;
                Response::new(body::full("held"))
            }
        })
        .await;
        GatedUpstream { addr, arrived, open }
    }

    /// Waits until a request reaches the upstream.
    pub async fn arrived(&mut self) {
        self.arrived.recv().await.expect("the upstream is running");
    }

    /// Answers every held request, and every later one at once.
    pub fn open(&self) {
        self.open.send_replace(true);
    }
}

/// An address where nothing listens.
pub async fn dead_upstream() -> SocketAddr {
    let l = TcpListener::bind(loopback()).await.unwrap();
    let addr = l.local_addr().unwrap();
    drop(l);
    addr
}

/// Counts the request body's bytes as they stream; `GET /download/N` streams N bytes back.
pub async fn streaming_upstream(received: Arc<AtomicU64>) -> SocketAddr {
    serve(move |req: Request<Incoming>| {
        let received = received.clone();
        async move {
            if let Some(n) = req.uri().path().strip_prefix("/download/") {
                let total: u64 = n.parse().unwrap();
                return Response::new(chunked_body(total));
            }
            let mut body = req.into_body();
            let mut n = 0u64;
            while let Some(frame) = body.frame().await {
                match frame {
                    Ok(f) => n += f.data_ref().map_or(0, |d| d.len() as u64),
                    Err(_) => break,
                }
            }
            received.store(n, Ordering::SeqCst);
            Response::new(body::full(n.to_string()))
        }
    })
    .await
}

/// A body of `total` bytes sent in 64 KiB chunks, generated lazily.
pub fn chunked_body(total: u64) -> Body {
    const CHUNK: usize = 64 << 10;
    let chunk = Bytes::from(vec![b'x'; CHUNK]);
    let stream = futures_util::stream::unfold(0u64, move |sent| {
        let chunk = chunk.clone();
        async move {
            if sent >= total {
                return None;
            }
            let n = (total - sent).min(CHUNK as u64) as usize;
            Some((Ok::<_, Infallible>(Frame::data(chunk.slice(..n))), sent + n as u64))
        }
    });
    body::boxed(StreamBody::new(stream))
}

/// A WebSocket echo upstream (tungstenite on a plain TCP listener).
pub async fn websocket_upstream() -> SocketAddr {
    use futures_util::{SinkExt, StreamExt};
    let listener = TcpListener::bind(loopback()).await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let Ok(mut ws) = tokio_tungstenite::accept_async(stream).await else {
                    return;
                };
                while let Some(Ok(msg)) = ws.next().await {
                    if msg.is_text() || msg.is_binary() {
                        if ws.send(msg).await.is_err() {
                            break;
                        }
                    } else if msg.is_close() {
                        break;
                    }
                }
            });
        }
    });
    addr
}

/// A config with one route per `(name, path, upstream addr)`, on ephemeral ports.
pub fn config_with(extra_top: &str, upstreams: &[(&str, SocketAddr)], routes: &str) -> Config {
    let mut text =
        format!("listen: 127.0.0.1:0\nadmin_listen: 127.0.0.1:0\nlog: {{ level: warn }}\n{extra_top}\nupstreams:\n");
    for (name, addr) in upstreams {
        text.push_str(&format!("  {name}:\n    url: http://{addr}\n    timeout: 2s\n"));
    }
    text.push_str("routes:\n");
    text.push_str(routes);
    Config::parse(&text, "test.yaml").unwrap_or_else(|e| panic!("test config invalid:\n{e}\n---\n{text}"))
}

/// Starts a gateway with a single catch-all public route to `upstream`.
pub async fn gateway_to(upstream: SocketAddr) -> Gateway {
    Gateway::start(config_with(
        "",
        &[("up", upstream)],
        "  - { name: all, match: { path: / }, upstream: up, auth: none }\n",
    ))
    .await
    .unwrap()
}

pub type TestClient = Client<HttpConnector, Body>;

/// An HTTP/1.1 client.
pub fn client() -> TestClient {
    Client::builder(TokioExecutor::new()).build_http()
}

/// An HTTP/2 prior-knowledge (h2c) client.
pub fn h2c_client() -> TestClient {
    Client::builder(TokioExecutor::new()).http2_only(true).build_http()
}

/// Sends a request and collects the body.
pub async fn send(client: &TestClient, req: Request<Body>) -> (http::response::Parts, Bytes) {
    let res = client.request(req).await.expect("request failed");
    let (parts, body) = res.into_parts();
    (parts, body.collect().await.expect("body").to_bytes())
}

/// `GET url` with extra headers.
pub fn get(url: String, headers: &[(&str, &str)]) -> Request<Body> {
    let mut b = Request::get(url);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    b.body(body::empty()).unwrap()
}

/// Parses the echo upstream's JSON.
pub fn json(bytes: &Bytes) -> serde_json::Value {
    serde_json::from_slice(bytes).unwrap_or_else(|_| panic!("not JSON: {}", String::from_utf8_lossy(bytes)))
}

/// Resident set size of this process, in bytes (Linux).
pub fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: u64 = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4096
}

/// A DNS server on loopback answering TXT queries from `records` (see `tools::dev_dns`).
pub async fn dns_server(records: std::collections::HashMap<String, Vec<String>>) -> (SocketAddr, Arc<AtomicU64>) {
    atgate::tools::dev_dns::spawn(loopback(), records).await.unwrap()
}

/// Polls `probe` every 25 ms until it yields a value, for up to 5 s; panics naming `what`.
pub async fn eventually<T, F, Fut>(what: &str, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    for _ in 0..200 {
        if let Some(v) = probe().await {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("timed out waiting: {what}");
}

/// Waits until the gateway reports ready (issuer keys fetched).
pub async fn wait_ready(gw: &Gateway) {
    eventually("gateway ready", || async { gw.shared().is_ready().then_some(()) }).await
}

/// A `redis-server` on a free loopback port, killed on drop.
pub struct Redis {
    child: std::process::Child,
    pub port: u16,
}

impl Redis {
    pub fn start() -> Redis {
        Redis::start_on(std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port())
    }

    /// On a given port (a restart on the port replicas know).
    pub fn start_on(port: u16) -> Redis {
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

    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.stop();
    }
}
