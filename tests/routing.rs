//! Route selection against a real upstream router (issue 15, sections 1 and 2).
//!
//! tests/fixtures/express/server.js is an Express app registered the way
//! `@atproto/xrpc-server` registers methods. For every spelling class and every pair of a
//! protected and a public route below, the test sends the spelling to Express directly
//! (which handler it runs there) and through atgate without credentials: the handler
//! behind a protected route must never run without the identity header.

mod common;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use atgate::app::Gateway;
use atgate::config::Config;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The Express app, stopped when dropped.
struct Express {
    child: Child,
    addr: SocketAddr,
}

impl Drop for Express {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/express")
}

fn have(cmd: &str) -> bool {
    Command::new(cmd).arg("--version").stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok_and(|s| s.success())
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("Uid:")).map(|l| l.split_whitespace().nth(1) == Some("0")))
        .unwrap_or(false)
}

/// Starts the Express app; `None` (the test skips, loudly) only without node and without
/// root, where scripts/test could not have installed it. As root (CI) a missing node fails.
fn start_express() -> Option<Express> {
    if !have("node") || !have("npm") {
        assert!(!is_root(), "node/npm missing: scripts/test installs Debian's nodejs and npm");
        eprintln!("\n\n*** SKIPPED tests/routing.rs: node and npm are not installed (install nodejs and npm) ***\n\n");
        return None;
    }
    let dir = fixture();
    if !dir.join("node_modules/express/package.json").exists() {
        let ok = Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund", "--silent"])
            .current_dir(&dir)
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "npm ci in {} failed", dir.display());
    }
    let mut child = Command::new("node")
        .arg("server.js")
        .current_dir(&dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("node starts");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout")).read_line(&mut line).expect("port line");
    let port: u16 = line.trim().parse().unwrap_or_else(|_| panic!("express printed {line:?}, not a port"));
    Some(Express { child, addr: SocketAddr::from(([127, 0, 0, 1], port)) })
}

/// One raw HTTP/1.1 exchange, so that every spelling reaches the server byte for byte.
struct Answer {
    status: u16,
    handler: Option<String>,
    identity: Option<String>,
    host: Option<String>,
    body: String,
}

async fn send_raw(addr: SocketAddr, method: &str, target: &str, host: &str) -> Answer {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    let request =
        format!("{method} {target} HTTP/1.1\r\nHost: {host}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut raw = Vec::new();
    let _ = stream.read_to_end(&mut raw).await;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let header = |name: &str| {
        head.lines().skip(1).find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim().eq_ignore_ascii_case(name).then(|| v.trim().to_owned())
        })
    };
    Answer {
        status,
        handler: header("x-handler"),
        identity: header("x-identity"),
        host: header("x-host"),
        body: body.to_owned(),
    }
}

/// Handlers behind protected routes in [`routes`]; everything else is public.
const PROTECTED_HANDLERS: [&str; 7] = [
    "com.example.getThing",
    "app.bsky.feed.getFeedSkeleton",
    "com.example.note.createNote",
    "com.example.note.getNote",
    "admin",
    "private",
    "admin-host",
];

/// The shipped config/atgate.yaml's public shape (`/`, `/xrpc/`, `/xrpc/app.bsky.*`) with
/// protected exact, glob, prefix and host routes inside it.
fn config(express: SocketAddr, issuer: SocketAddr) -> Config {
    let text = format!(
        "listen: 127.0.0.1:0
admin_listen: 127.0.0.1:0
log: {{ level: warn }}
public_url: https://gateway.test
outbound: {{ allow_private_addresses: true, allow_http: true }}
issuers:
  - {{ issuer: \"http://{issuer}\", discovery: true, audiences: [did:web:gateway.test] }}
upstreams:
  app: {{ url: \"http://{express}\", timeout: 5s }}
  vhosts: {{ url: \"http://{express}\", timeout: 5s, preserve_host: true }}
routes:
  - {{ name: everything-else, match: {{ path: / }}, upstream: app, auth: none }}
  - {{ name: xrpc, match: {{ path: /xrpc/ }}, upstream: app, auth: none }}
  - {{ name: bsky, match: {{ path: '/xrpc/app.bsky.*', methods: [GET] }}, upstream: app, auth: none }}
  - {{ name: health, match: {{ path: /health, methods: [GET] }}, upstream: app, auth: none }}
  - {{ name: skeleton, match: {{ path: /xrpc/app.bsky.feed.getFeedSkeleton, methods: [GET] }}, upstream: app, auth: dpop }}
  - {{ name: thing, match: {{ path: /xrpc/com.example.getThing, methods: [GET] }}, upstream: app, auth: dpop }}
  - {{ name: notes, match: {{ path: '/xrpc/com.example.note.*' }}, upstream: app, auth: dpop }}
  - {{ name: admin, match: {{ path: /admin/panel, methods: [GET] }}, upstream: app, auth: dpop }}
  - {{ name: private, match: {{ path: /private/ }}, upstream: app, auth: dpop }}
  - {{ name: admin-host, match: {{ host: admin.example.com, path: / }}, upstream: vhosts, auth: dpop }}
  - {{ name: public-host, match: {{ host: public.example.com, path: / }}, upstream: vhosts, auth: none }}
"
    );
    Config::parse(&text, "routing.yaml").unwrap_or_else(|e| panic!("{e}"))
}

/// Protected paths with the method their handler takes.
const PROTECTED: [(&str, &str); 6] = [
    ("GET", "/xrpc/com.example.getThing"),
    ("GET", "/xrpc/app.bsky.feed.getFeedSkeleton"),
    ("POST", "/xrpc/com.example.note.createNote"),
    ("GET", "/xrpc/com.example.note.getNote"),
    ("GET", "/admin/panel"),
    ("GET", "/private/files"),
];

fn flip_case(s: &str, every: usize) -> String {
    s.chars().enumerate().map(|(i, c)| if i % every == 0 { c.to_ascii_uppercase() } else { c }).collect()
}

/// `%XX` (or `%xx`) of the last letter.
fn encode_last_letter(path: &str, lower: bool) -> String {
    let i = path.rfind(|c: char| c.is_ascii_alphabetic()).expect("a letter");
    let hex = if lower { format!("%{:02x}", path.as_bytes()[i]) } else { format!("%{:02X}", path.as_bytes()[i]) };
    format!("{}{hex}{}", &path[..i], &path[i + 1..])
}

/// Every spelling class of issue 15 §1, as `(class, method, target)`.
fn spellings(method: &str, path: &str) -> Vec<(&'static str, String, String)> {
    let (dir, last) = path.rsplit_once('/').expect("a slash");
    let m = |s: &str| s.to_owned();
    let i = path.rfind(|c: char| c.is_ascii_alphabetic()).expect("a letter");
    vec![
        ("canonical", m(method), m(path)),
        ("trailing slash", m(method), format!("{path}/")),
        ("upper case", m(method), path.to_ascii_uppercase()),
        ("mixed case", m(method), flip_case(path, 2)),
        ("%XX unreserved", m(method), encode_last_letter(path, false)),
        ("%xx unreserved + slash", m(method), format!("{}/", encode_last_letter(path, true))),
        ("double encoding", m(method), format!("{}%25{:02X}{}", &path[..i], path.as_bytes()[i], &path[i + 1..])),
        ("; parameter", m(method), format!("{path};x")),
        ("; in segment", m(method), format!("{dir};x/{last}")),
        ("encoded space", m(method), format!("{path}%20")),
        ("encoded control", m(method), format!("{path}%00")),
        ("encoded tab", m(method), format!("{path}%09")),
        ("trailing dot", m(method), format!("{path}.")),
        ("encoded trailing dot", m(method), format!("{path}%2e")),
        ("dot segments", m(method), format!("/x/..{dir}/./{last}")),
        ("double slash", m(method), format!("/{path}")),
        ("encoded slash", m(method), format!("{dir}%2F{last}")),
        ("backslash", m(method), format!("{dir}\\{last}")),
        ("HEAD", m(if method == "GET" { "HEAD" } else { method }), m(path)),
        ("lower-case method", method.to_ascii_lowercase(), m(path)),
        (
            "upper case + HEAD",
            m(if method == "GET" { "HEAD" } else { method }),
            format!("{}/", path.to_ascii_uppercase()),
        ),
    ]
}

/// A response from a protected handler without the identity header.
fn escaped(a: &Answer) -> bool {
    a.handler.as_deref().is_some_and(|h| PROTECTED_HANDLERS.contains(&h)) && a.identity.as_deref() != Some("present")
}

#[tokio::test]
async fn no_spelling_reaches_a_protected_handler_without_identity() {
    let Some(express) = start_express() else { return };
    let issuer = common::dead_upstream().await;
    let gw = Gateway::start(config(express.addr, issuer)).await.unwrap();
    let gw_addr = gw.addrs()[0];

    let mut escapes = Vec::new();
    let mut direct_hits = std::collections::BTreeSet::new();
    for (method, path) in PROTECTED {
        for (class, method, target) in spellings(method, path) {
            let direct = send_raw(express.addr, &method, &target, "localhost").await;
            if escaped(&direct) {
                direct_hits.insert(class);
            }
            let via = send_raw(gw_addr, &method, &target, "localhost").await;
            if escaped(&via) {
                escapes.push(format!(
                    "{class}: {method} {target} -> {} ran {:?} without identity (Express direct: {:?})",
                    via.status, via.handler, direct.handler
                ));
            }
            // Refused by atgate: its own XRPC error (no body for HEAD), never the upstream's.
            let atgate_refusal =
                [400, 401, 404, 405].contains(&via.status) && (method == "HEAD" || via.body.contains("\"error\""));
            if via.handler.is_none() && !atgate_refusal {
                escapes.push(format!("{class}: {method} {target} -> {} from upstream: {}", via.status, via.body));
            }
        }
    }
    assert!(escapes.is_empty(), "protected routes escaped:\n{}", escapes.join("\n"));
    // The fixture is a real Express: these spellings run the protected handler when sent to
    // it directly (the test would prove nothing otherwise).
    for class in ["canonical", "trailing slash", "upper case", "mixed case", "HEAD", "upper case + HEAD"] {
        assert!(direct_hits.contains(class), "Express did not run a protected handler for {class}: {direct_hits:?}");
    }

    // Public routes still reach their handlers, in every accepted spelling.
    for target in
        ["/xrpc/app.bsky.feed.getTimeline", "/XRPC/app.bsky.feed.getTimeline/", "/xrpc/app.bsky.feed.getTimelin%65"]
    {
        let a = send_raw(gw_addr, "GET", target, "localhost").await;
        assert_eq!((a.status, a.handler.as_deref()), (200, Some("app.bsky.feed.getTimeline")), "{target}");
    }
    let a = send_raw(gw_addr, "HEAD", "/health/", "localhost").await;
    assert_eq!((a.status, a.handler.as_deref()), (200, Some("health")));
    let a = send_raw(gw_addr, "GET", "/xrpc/not-an-nsid", "localhost").await;
    assert_eq!(a.status, 400);
    assert!(a.body.contains("InvalidRequest"), "{}", a.body);
}

/// Issue 15 §2: a request is routed and forwarded on one canonical host.
#[tokio::test]
async fn one_host_for_routing_and_forwarding() {
    let Some(express) = start_express() else { return };
    let issuer = common::dead_upstream().await;
    let gw = Gateway::start(config(express.addr, issuer)).await.unwrap();
    let gw_addr = gw.addrs()[0];

    // The protected vhost, in every spelling of its name: the protected route.
    for host in ["admin.example.com", "admin.example.com.", "ADMIN.Example.COM.", "admin.example.com.:8080"] {
        let a = send_raw(gw_addr, "GET", "/", host).await;
        assert_eq!((a.status, a.handler), (401, None), "Host: {host}");
    }
    // Routed as the public vhost: the upstream receives exactly that host.
    let a = send_raw(gw_addr, "GET", "/", "Public.Example.com.").await;
    assert_eq!((a.status, a.handler.as_deref()), (200, Some("public-host")), "{}", a.body);
    assert_eq!(a.host.as_deref(), Some("public.example.com"));
    // An absolute-form target naming the public host with a Host naming the protected one.
    let a = send_raw(gw_addr, "GET", "http://public.example.com/", "admin.example.com").await;
    assert_eq!(a.status, 400, "{}", a.body);
    assert!(a.body.contains("InvalidRequest"), "{}", a.body);
    let a = send_raw(gw_addr, "GET", "http://public.example.com./", "PUBLIC.example.com").await;
    assert_eq!((a.status, a.handler.as_deref()), (200, Some("public-host")), "{}", a.body);
    // No host at all (an empty `Host`) would skip every host route: refused.
    let a = send_raw(gw_addr, "GET", "/", "").await;
    assert_eq!((a.status, a.handler), (400, None), "{}", a.body);
}
