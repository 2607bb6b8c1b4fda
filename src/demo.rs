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
use crate::jose::sign::SigningKey;
use crate::tools::DpopSigner;
use crate::tools::curl::CurlRequest;
use crate::tools::dev_identity::{DevIdentity, DidKey, did_document};
use crate::tools::dev_issuer::DevIssuer;
use crate::tools::dev_oauth::{ClientIds, Consent, DevOAuth};
use std::time::Duration;

/// The demo's embedded config, with `{{LISTEN}}`, `{{ADMIN}}`, `{{ECHO}}`, `{{ISSUER}}`
/// and `{{IDENTITY}}` to fill in.
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
    res.headers_mut().insert(header::CONTENT_TYPE, http::HeaderValue::from_static("application/json"));
    Ok(res)
}

/// The DID the demo's tokens are issued for.
pub const DEMO_DID: &str = "did:plc:ewvi7nxzyoun6zhxrhs64oiz";

/// The `aud` of the demo's service JWTs.
pub const DEMO_SERVICE_AUD: &str = "did:web:localhost#demo_svc";

/// The handle of the demo's browser sign-in user.
pub const DEMO_HANDLE: &str = "alice.test";

/// The dev servers the demo config names.
#[derive(Debug, Clone, Copy)]
pub struct DemoServers<'a> {
    /// The echo upstream.
    pub echo: SocketAddr,
    /// The dev issuer (DPoP route).
    pub issuer: &'a str,
    /// The identity host's `host:port`.
    pub identity: &'a str,
    /// The DNS server answering the demo handle.
    pub dns: SocketAddr,
}

/// The demo config for the given addresses.
pub fn config(listen: SocketAddr, admin: SocketAddr, servers: DemoServers<'_>) -> Config {
    let DemoServers { echo, issuer, identity, dns } = servers;
    let text = DEMO_CONFIG
        .replace("{{DNS}}", &dns.to_string())
        .replace("{{LISTEN}}", &listen.to_string())
        .replace("{{ADMIN}}", &admin.to_string())
        .replace("{{ECHO}}", &echo.to_string())
        .replace("{{ISSUER}}", issuer)
        .replace("{{IDENTITY}}", identity);
    Config::parse(&text, "<demo>").expect("the embedded demo config is valid")
}

/// `addr` if it is free now, else a free port on the same IP (`public_url` needs the
/// port before the gateway binds it).
fn free_or_ephemeral(addr: SocketAddr) -> SocketAddr {
    match std::net::TcpListener::bind(addr) {
        Ok(_) if addr.port() != 0 => addr,
        _ => {
            let any = std::net::TcpListener::bind(SocketAddr::new(addr.ip(), 0));
            any.and_then(|l| l.local_addr()).unwrap_or(SocketAddr::new(addr.ip(), 0))
        }
    }
}

/// Signs [`DEMO_HANDLE`] in the way a browser does: the sign-in form, the dev
/// authorization server's approval, the callback; then reaches `/app/` with the cookie.
pub async fn once_session(gateway: &Gateway) -> OnceReport {
    let base = format!("http://{}", gateway.addrs()[0]);
    let client = hyper_util::client::legacy::Client::builder(TokioExecutor::new()).build_http::<Body>();
    let mut failures = Vec::new();
    let mut cookies: Vec<(String, String)> = Vec::new();
    let form = format!("handle={DEMO_HANDLE}&return_to=%2Fapp%2Fwhoami");
    let mut next = Request::post(format!("{base}/auth/login"))
        .header(header::ORIGIN, &base)
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(body::full(form));
    let mut url = url::Url::parse(&format!("{base}/auth/login")).expect("a valid URL");
    let mut last = (http::StatusCode::BAD_GATEWAY, serde_json::Value::Null);
    for _ in 0..6 {
        let Ok(mut req) = next else { break };
        let jar: Vec<String> = cookies.iter().map(|(k, v)| format!("{k}={v}")).collect();
        if let (false, Ok(v)) = (jar.is_empty(), http::HeaderValue::from_str(&jar.join("; "))) {
            req.headers_mut().insert(header::COOKIE, v);
        }
        let res = match client.request(req).await {
            Ok(r) => r,
            Err(e) => {
                failures.push(format!("sign-in request failed: {e}"));
                break;
            }
        };
        for v in res.headers().get_all(header::SET_COOKIE) {
            if let Some((k, v)) = v.to_str().ok().and_then(|t| t.split(';').next()).and_then(|p| p.split_once('=')) {
                cookies.retain(|(name, _)| name != k);
                cookies.push((k.to_owned(), v.to_owned()));
            }
        }
        let location = res.headers().get(header::LOCATION).and_then(|l| l.to_str().ok()).map(str::to_owned);
        let status = res.status();
        let bytes = res.into_body().collect().await.map(|c| c.to_bytes()).unwrap_or_default();
        match location {
            Some(l) if status.is_redirection() => match url.join(&l) {
                Ok(u) => {
                    url = u;
                    next = Request::get(url.as_str()).body(body::empty());
                }
                Err(_) => break,
            },
            _ => {
                last = (status, serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null));
                break;
            }
        }
    }
    let (status, echoed) = last;
    if status != http::StatusCode::OK || echoed["path"] != "/whoami" {
        failures.push(format!("browser sign-in: status {status} at {url}, expected the upstream's /whoami"));
    }
    let seen = &echoed["headers"];
    if seen["x-atproto-did"] != DEMO_DID || seen["x-atproto-auth"] != "oauth-session" {
        failures.push("the signed-in DID did not arrive at the upstream".into());
    }
    OnceReport { status, echoed, failures }
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

/// A DPoP key and a token bound to it, minted by the dev issuer for [`DEMO_DID`].
pub fn demo_credentials(issuer: &DevIssuer) -> (SigningKey, String) {
    let key = SigningKey::generate();
    let token = issuer.mint(
        DEMO_DID,
        &key.thumbprint(),
        "atproto transition:generic",
        "did:web:localhost",
        Duration::from_secs(3600),
    );
    (key, token)
}

/// Makes a real DPoP request through the gateway (nonce retry included) and checks that
/// the DID arrived at the upstream.
pub async fn once_dpop(gateway: &Gateway, issuer: &DevIssuer) -> OnceReport {
    let (key, token) = demo_credentials(issuer);
    let req = CurlRequest {
        method: http::Method::GET,
        url: format!("http://{}/oauth/xrpc/com.example.getThing", gateway.addrs()[0]),
        token,
        signer: DpopSigner { key },
        body: None,
        headers: Vec::new(),
    };
    let mut failures = Vec::new();
    let (status, echoed) = match crate::tools::curl::send(&req).await {
        Ok(res) => {
            if res.attempts != 2 {
                failures.push("the gateway did not ask for a DPoP nonce first".into());
            }
            (res.status, serde_json::from_slice(&res.body).unwrap_or(serde_json::Value::Null))
        }
        Err(e) => {
            failures.push(e.to_string());
            (http::StatusCode::BAD_GATEWAY, serde_json::Value::Null)
        }
    };
    if status != http::StatusCode::OK {
        failures.push(format!("DPoP request: status {status}, expected 200"));
    }
    let seen = &echoed["headers"];
    if seen["x-atproto-did"] != DEMO_DID || seen["x-atproto-auth"] != "oauth" {
        failures.push("the DID did not arrive at the upstream".into());
    }
    if !seen["authorization"].is_null() || !seen["dpop"].is_null() {
        failures.push("credentials reached the upstream".into());
    }
    OnceReport { status, echoed, failures }
}

/// The demo user of the service-auth path: the identity host's own `did:web`, with a
/// fresh secp256k1 key published in its DID document.
pub fn demo_service_user(identity: &DevIdentity) -> (String, DidKey) {
    let did = identity.web_did().to_owned();
    let key = DidKey::k256();
    identity.publish(&did, did_document(&did, &key, None, "http://localhost"));
    (did, key)
}

/// Makes a service-auth request through the gateway, as a PDS proxying for the demo user
/// would, and checks that the user's DID arrived at the upstream.
pub async fn once_service(gateway: &Gateway, identity: &DevIdentity) -> OnceReport {
    let (did, key) = demo_service_user(identity);
    let token = key.service_jwt(&did, DEMO_SERVICE_AUD, Some("com.example.getThing"), 60);
    let client = hyper_util::client::legacy::Client::builder(TokioExecutor::new()).build_http::<Body>();
    let url = format!("http://{}/service/xrpc/com.example.getThing", gateway.addrs()[0]);
    let mut failures = Vec::new();
    let mut status = http::StatusCode::BAD_GATEWAY;
    let mut echoed = serde_json::Value::Null;
    for attempt in 0..2 {
        let req = Request::get(&url)
            .header(header::AUTHORIZATION, format!("Bearer {token}"))
            .body(body::empty())
            .expect("a valid request");
        let (s, body) = match fetch_json(&client, req).await {
            Ok(answer) => answer,
            Err(e) => {
                failures.push(e);
                break;
            }
        };
        if attempt == 0 {
            (status, echoed) = (s, body);
        } else if s != http::StatusCode::UNAUTHORIZED {
            failures.push(format!("replayed service JWT: status {s}, expected 401"));
        }
    }
    if status != http::StatusCode::OK {
        failures.push(format!("service-auth request: status {status}, expected 200"));
    }
    let seen = &echoed["headers"];
    if seen["x-atproto-did"] != did.as_str() || seen["x-atproto-auth"] != "service" {
        failures.push("the service JWT's DID did not arrive at the upstream".into());
    }
    OnceReport { status, echoed, failures }
}

type DemoClient = hyper_util::client::legacy::Client<hyper_util::client::legacy::connect::HttpConnector, Body>;

/// Sends `req`; the status and the body as JSON (`null` when it is not JSON).
async fn fetch_json(client: &DemoClient, req: Request<Body>) -> Result<(http::StatusCode, serde_json::Value), String> {
    let res = client.request(req).await.map_err(|e| format!("request failed: {e}"))?;
    let status = res.status();
    let bytes = res.into_body().collect().await.map(|c| c.to_bytes()).unwrap_or_default();
    Ok((status, serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null)))
}

/// Sends one real request through the gateway and checks what the upstream saw.
pub async fn once(gateway: &Gateway) -> OnceReport {
    let addr = gateway.addrs()[0];
    let client = hyper_util::client::legacy::Client::builder(TokioExecutor::new()).build_http::<Body>();
    let req = Request::get(format!("http://{addr}/demo/hello?who=world"))
        .header("x-atproto-did", "did:plc:spoofedbytheclient")
        .header("X_Atproto_Did", "did:plc:spoofedbytheclient")
        .header("connection", "keep-alive, x-hop")
        .header("x-hop", "must not pass")
        .body(body::empty())
        .expect("a valid request");
    let mut failures = Vec::new();
    let (status, echoed) = fetch_json(&client, req).await.unwrap_or_else(|e| {
        failures.push(e);
        (http::StatusCode::BAD_GATEWAY, serde_json::Value::Null)
    });
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
    OnceReport { status, echoed, failures }
}

/// Runs the demo. With `once`, makes one public and one DPoP request, prints them and
/// returns whether both worked.
pub async fn run(once_only: bool) -> Result<bool, StartError> {
    let loopback = |port| SocketAddr::from(([127, 0, 0, 1], port));
    let bind_error = |source| StartError::Bind { addr: loopback(0), source };
    let echo = spawn_echo(loopback(0)).await.map_err(bind_error)?;
    let issuer = DevIssuer::spawn(loopback(0)).await.map_err(bind_error)?;
    let identity = DevIdentity::spawn(loopback(0)).await.map_err(bind_error)?;
    let identity_addr = identity.plc_url().trim_start_matches("http://").to_owned();
    let pds = DevOAuth::spawn(loopback(0), ClientIds::AllowLocal).await.map_err(bind_error)?;
    pds.add_account(DEMO_HANDLE, DEMO_DID);
    pds.set_consent(if once_only { Consent::Approve } else { Consent::Ask });
    identity.publish(DEMO_DID, did_document(DEMO_DID, &DidKey::k256(), Some(DEMO_HANDLE), pds.origin()));
    let records =
        std::collections::HashMap::from([(format!("_atproto.{DEMO_HANDLE}"), vec![format!("did={DEMO_DID}")])]);
    let (dns, _) = crate::tools::dev_dns::spawn(loopback(0), records).await.map_err(bind_error)?;
    let (listen, admin) = if once_only {
        (free_or_ephemeral(loopback(0)), loopback(0))
    } else {
        (free_or_ephemeral(loopback(8080)), free_or_ephemeral(loopback(9090)))
    };
    let servers = DemoServers { echo, issuer: issuer.issuer(), identity: &identity_addr, dns };
    let gateway = Gateway::start(config(listen, admin, servers)).await?;
    let addr = gateway.addrs()[0];
    let admin = gateway.admin_addr().unwrap_or(admin);
    if once_only {
        let public = once(&gateway).await;
        println!("GET http://{addr}/demo/hello?who=world -> {}", public.status);
        println!("{}", serde_json::to_string_pretty(&public.echoed).unwrap_or_default());
        let dpop = once_dpop(&gateway, &issuer).await;
        println!("DPoP GET http://{addr}/oauth/xrpc/com.example.getThing -> {}", dpop.status);
        println!("{}", serde_json::to_string_pretty(&dpop.echoed).unwrap_or_default());
        let service = once_service(&gateway, &identity).await;
        println!("service-auth GET http://{addr}/service/xrpc/com.example.getThing -> {}", service.status);
        println!("{}", serde_json::to_string_pretty(&service.echoed).unwrap_or_default());
        let session = once_session(&gateway).await;
        println!("browser sign-in as {DEMO_HANDLE}, then GET http://{addr}/app/whoami -> {}", session.status);
        println!("{}", serde_json::to_string_pretty(&session.echoed["headers"]).unwrap_or_default());
        let failures: Vec<&String> =
            public.failures.iter().chain(&dpop.failures).chain(&service.failures).chain(&session.failures).collect();
        for f in &failures {
            println!("FAILED: {f}");
        }
        if failures.is_empty() {
            println!("demo ok: a public request passed with spoofed identity and hop-by-hop headers stripped;");
            println!("a DPoP request passed after the nonce challenge, and {DEMO_DID} arrived at the upstream;");
            println!("a service JWT signed by a did:web key passed once, and its replay was refused;");
            println!("a browser signed in through PAR, PKCE, DPoP and private_key_jwt and reached the upstream");
        }
        gateway.shutdown();
        gateway.wait().await;
        return Ok(failures.is_empty());
    }

    let (key, token) = demo_credentials(&issuer);
    let dir = std::env::temp_dir().join(format!("atgate-demo-{}", std::process::id()));
    let (key_file, token_file) = (dir.join("key.json"), dir.join("token"));
    let written = std::fs::create_dir_all(&dir)
        .and_then(|()| std::fs::write(&key_file, key.private_jwk().to_string()))
        .and_then(|()| std::fs::write(&token_file, &token));
    if let Err(e) = written {
        eprintln!("cannot write the demo key and token to {}: {e}", dir.display());
    }
    println!("atgate demo: gateway on http://{addr}, admin on http://{admin}");
    println!("echo upstream on http://{echo}, dev authorization server {}", issuer.issuer());
    println!();
    println!("  curl -s 'http://{addr}/demo/hello?who=world'                  # public route, echoed back");
    println!("  curl -s -H 'x-atproto-did: did:plc:evil' http://{addr}/demo/x  # spoofed header never arrives");
    println!("  curl -s http://{addr}/nowhere                                  # 404, JSON body");
    println!("  curl -si http://{addr}/oauth/x                                 # 401 with a DPoP challenge");
    println!("  curl -s http://{admin}/metrics                                 # Prometheus metrics");
    println!();
    println!("A DPoP request with a demo key and a token from the dev issuer (the DID arrives upstream):");
    println!(
        "  cargo run --release -- curl -i --key {} --token-file {} http://{addr}/oauth/xrpc/com.example.getThing",
        key_file.display(),
        token_file.display()
    );
    let (did, service_key) = demo_service_user(&identity);
    let service_token = service_key.service_jwt(&did, DEMO_SERVICE_AUD, Some("com.example.getThing"), 3600);
    println!();
    println!("A service-auth request, as {did}'s PDS would send it (a second run is refused as a replay):");
    println!("  curl -s -H 'authorization: Bearer {service_token}' http://{addr}/service/xrpc/com.example.getThing");
    println!();
    println!();
    println!("Browser sign-in (the dev PDS asks for consent), with handle {DEMO_HANDLE}:");
    println!("  open http://{addr}/app/                                        # sign in, reach the echo upstream");
    println!(
        "  open http://{addr}/pds/com.example.getThing                    # the PDS proxy, with the session's token"
    );
    println!("  open http://{addr}/auth/logout                                 # sign out (revokes at the AS)");
    println!();
    println!("Ctrl-C stops it.");
    Ok(serve_until_signal(gateway).await)
}
