//! Listeners: accept, optional TLS handshake, HTTP/1.1 + HTTP/2 (ALPN or h2c prior
//! knowledge) on one port via hyper-util's auto builder, with upgrades, and graceful
//! draining of every connection on shutdown.

pub mod admin;
pub mod tls;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::Request;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;
use tower::Service as _;

use crate::body;
use crate::config::Limits;
use crate::proxy::forwarded::ConnInfo;
use crate::stack::HttpService;

/// The HTTP connection builder for the public listeners.
pub fn http_builder(limits: &Limits) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // hyper needs at least 8 KiB of read buffer for HTTP/1.
    let header_bytes = limits.max_header_bytes.clamp(8192, u32::MAX as u64);
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .max_buf_size(header_bytes as usize);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(header_bytes as u32)
        .keep_alive_interval(Some(Duration::from_secs(30)))
        .keep_alive_timeout(Duration::from_secs(20));
    builder
}

/// One public listener.
pub struct Listener {
    /// The bound socket.
    pub tcp: TcpListener,
    /// TLS, when configured.
    pub tls: Option<TlsAcceptor>,
}

/// Accepts connections until `stop` turns true; each connection is watched by `graceful`.
pub async fn accept_loop(
    listener: Listener,
    service: HttpService,
    builder: auto::Builder<TokioExecutor>,
    graceful: Arc<GracefulShutdown>,
    mut stop: watch::Receiver<bool>,
    handshake_timeout: Duration,
) {
    let local = listener.tcp.local_addr().ok();
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.tcp.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = stopped(&mut stop) => break,
        };
        let _ = stream.set_nodelay(true);
        let info = ConnInfo { peer, local: local.unwrap_or(peer), tls: listener.tls.is_some() };
        let watcher = graceful.watcher();
        let service = service.clone();
        let builder = builder.clone();
        let tls = listener.tls.clone();
        tokio::spawn(async move {
            let service = Connection { service, info };
            match tls {
                None => serve(stream, builder, service, watcher).await,
                Some(acceptor) => match tokio::time::timeout(handshake_timeout, acceptor.accept(stream)).await {
                    Ok(Ok(tls)) => serve(tls, builder, service, watcher).await,
                    Ok(Err(e)) => {
                        tracing::debug!(peer = %peer, error = %e, "TLS handshake failed")
                    }
                    Err(_) => tracing::debug!(peer = %peer, "TLS handshake timed out"),
                },
            }
        });
    }
}

/// The pipeline as a hyper service for one connection: tags each request with the
/// connection's `ConnInfo` and boxes its body.
#[derive(Clone)]
struct Connection {
    service: HttpService,
    info: ConnInfo,
}

impl hyper::service::Service<Request<Incoming>> for Connection {
    type Response = http::Response<body::Body>;
    type Error = std::convert::Infallible;
    type Future = body::HttpFuture;

    fn call(&self, mut req: Request<Incoming>) -> Self::Future {
        req.extensions_mut().insert(self.info);
        // BoxCloneService is always ready: every stage's poll_ready is Ready.
        self.service.clone().call(req.map(body::boxed))
    }
}

async fn serve<IO, S>(
    io: IO,
    builder: auto::Builder<TokioExecutor>,
    service: S,
    watcher: hyper_util::server::graceful::Watcher,
) where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    S: hyper::service::Service<Request<Incoming>, Response = http::Response<body::Body>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), service).into_owned();
    if let Err(e) = watcher.watch(conn).await {
        tracing::debug!(error = %e, "connection ended with error");
    }
}

/// Resolves once `stop` turns true (or its sender is gone).
pub(crate) async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// Binds a TCP listener (with `SO_REUSEADDR`, as servers do).
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() { tokio::net::TcpSocket::new_v4()? } else { tokio::net::TcpSocket::new_v6()? };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(1024)
}
