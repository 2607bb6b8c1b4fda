//! `atgate demo`: the gateway on an embedded config in front of a built-in echo upstream,
//! all on loopback.

use std::convert::Infallible;
use std::net::SocketAddr;

use http::{Request, Response, header};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

use crate::app::{Gateway, StartError, serve_until_signal};
use crate::body::{self, Body};
use crate::config::Config;

/// The demo's embedded config, with `{{LISTEN}}`, `{{ADMIN}}` and `{{ECHO}}` to fill in.
pub const DEMO_CONFIG: &str = include_str!("../config/demo.yaml");

/// Starts an upstream on `addr` that answers every request with a JSON description of
/// it: method, path, query, version, headers, and the body's length.
pub async fn spawn_echo(addr: SocketAddr) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let service = hyper::service::service_fn(echo);
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Ok(local)
}

async fn echo(req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    let (parts, incoming) = req.into_parts();
    let mut length = 0usize;
    let mut incoming = incoming;
    while let Some(frame) = incoming.frame().await {
        match frame {
            Ok(f) => length += f.data_ref().map_or(0, |d| d.len()),
            Err(_) => break,
        }
    }
    let mut headers = serde_json::Map::new();
    for (name, value) in &parts.headers {
        let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
        headers.insert(name.as_str().to_owned(), serde_json::Value::String(value));
    }
    let json = serde_json::json!({
        "method": parts.method.as_str(),
        "path": parts.uri.path(),
        "query": parts.uri.query(),
        "version": format!("{:?}", parts.version),
        "headers": headers,
        "body_bytes": length,
    });
    let mut res = Response::new(body::full(json.to_string()));
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    Ok(res)
}

/// The demo config for the given addresses.
pub fn config(listen: SocketAddr, admin: SocketAddr, echo: SocketAddr) -> Config {
    let text = DEMO_CONFIG
        .replace("{{LISTEN}}", &listen.to_string())
        .replace("{{ADMIN}}", &admin.to_string())
        .replace("{{ECHO}}", &echo.to_string());
    Config::parse(&text, "<demo>").expect("the embedded demo config is valid")
}

/// `addr` if it is free now, else an ephemeral port on the same IP.
fn free_or_ephemeral(addr: SocketAddr) -> SocketAddr {
    match std::net::TcpListener::bind(addr) {
        Ok(_) => addr,
        Err(_) => SocketAddr::new(addr.ip(), 0),
    }
}

/// What `atgate demo --once` observed.
#[derive(Debug)]
pub struct OnceReport {
    /// Status through the gateway.
    pub status: http::StatusCode,
    /// The echo upstream's description of what it received.
    pub echoed: serde_json::Value,
    /// Checks that failed; empty when the demo worked.
    pub failures: Vec<String>,
}

/// Sends one real request through the gateway and checks what the upstream saw.
pub async fn once(gateway: &Gateway) -> OnceReport {
    let addr = gateway.addrs()[0];
    let client =
        hyper_util::client::legacy::Client::builder(TokioExecutor::new()).build_http::<Body>();
    let req = Request::get(format!("http://{addr}/demo/hello?who=world"))
        .header("x-atproto-did", "did:plc:spoofedbytheclient")
        .header("X_Atproto_Did", "did:plc:spoofedbytheclient")
        .header("connection", "keep-alive, x-hop")
        .header("x-hop", "must not pass")
        .body(body::empty())
        .expect("a valid request");
    let mut failures = Vec::new();
    let (status, echoed) = match client.request(req).await {
        Ok(res) => {
            let status = res.status();
            let bytes = res
                .into_body()
                .collect()
                .await
                .map(|c| c.to_bytes())
                .unwrap_or_default();
            (
                status,
                serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null),
            )
        }
        Err(e) => {
            failures.push(format!("request failed: {e}"));
            (http::StatusCode::BAD_GATEWAY, serde_json::Value::Null)
        }
    };
    if status != http::StatusCode::OK {
        failures.push(format!("status {status}, expected 200"));
    }
    if echoed["path"] != "/hello" || echoed["query"] != "who=world" {
        failures.push("the upstream did not receive /hello?who=world".into());
    }
    let seen = &echoed["headers"];
    for name in ["x-atproto-did", "x_atproto_did", "x-hop"] {
        if !seen[name].is_null() {
            failures.push(format!("header {name} reached the upstream"));
        }
    }
    if seen["x-forwarded-for"] != "127.0.0.1" || seen["x-request-id"].is_null() {
        failures.push("x-forwarded-for or x-request-id missing upstream".into());
    }
    OnceReport {
        status,
        echoed,
        failures,
    }
}

/// Runs the demo. With `once`, makes one request, prints it and returns whether it worked.
pub async fn run(once_only: bool) -> Result<bool, StartError> {
    let loopback = |port| SocketAddr::from(([127, 0, 0, 1], port));
    let echo = spawn_echo(loopback(0))
        .await
        .map_err(|source| StartError::Bind {
            addr: loopback(0),
            source,
        })?;
    let (listen, admin) = if once_only {
        (loopback(0), loopback(0))
    } else {
        (
            free_or_ephemeral(loopback(8080)),
            free_or_ephemeral(loopback(9090)),
        )
    };
    let gateway = Gateway::start(config(listen, admin, echo)).await?;
    let addr = gateway.addrs()[0];
    let admin = gateway.admin_addr().unwrap_or(admin);
    if once_only {
        let report = once(&gateway).await;
        println!(
            "GET http://{addr}/demo/hello?who=world -> {}",
            report.status
        );
        println!(
            "{}",
            serde_json::to_string_pretty(&report.echoed).unwrap_or_default()
        );
        for f in &report.failures {
            println!("FAILED: {f}");
        }
        if report.failures.is_empty() {
            println!(
                "demo ok: the request passed through atgate; spoofed identity and hop-by-hop headers were stripped"
            );
        }
        gateway.shutdown();
        gateway.wait().await;
        return Ok(report.failures.is_empty());
    }
    println!(
        "atgate demo: gateway on http://{addr}, echo upstream on http://{echo}, admin on http://{admin}"
    );
    println!();
    println!(
        "  curl -s http://{addr}/demo/hello?who=world              # public route, echoed back"
    );
    println!(
        "  curl -s -H 'x-atproto-did: did:plc:evil' http://{addr}/demo/x   # spoofed header never arrives"
    );
    println!("  curl -s http://{addr}/nowhere                          # 404, JSON body");
    println!("  curl -s http://{admin}/metrics                          # Prometheus metrics");
    println!();
    println!("Ctrl-C stops it.");
    Ok(serve_until_signal(gateway).await)
}
