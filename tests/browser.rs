//! A real browser signs in: headless Chromium, driven over WebDriver by chromedriver,
//! uses the sign-in page, approves at the dev PDS's consent page, reaches the upstream,
//! signs out, and sees the error pages. Screenshots go to `target/screenshots/`, or to
//! `$ATGATE_SCREENSHOTS` (the ones in docs/screenshots/ were made that way).

mod common;

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use atgate::app::Gateway;
use atgate::body;
use atgate::tools::dev_identity::{DevIdentity, DidKey, did_document};
use atgate::tools::dev_oauth::{ClientIds, Consent, DevOAuth};
use common::*;
use serde_json::{Value, json};

const ALICE: &str = "did:plc:ewvi7nxzyoun6zhxrhs64oiz";

/// chromedriver on a loopback port, killed on drop.
struct Driver {
    child: Child,
    base: String,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Driver {
    fn start() -> Driver {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let mut child = Command::new("chromedriver")
            .args([format!("--port={port}"), "--allowed-ips=127.0.0.1".into()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver is installed (scripts/test installs chromium-driver)");
        // Polls for the event (chromedriver listening), bounded generously: a loaded
        // machine must not fail the test.
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while std::time::Instant::now() < deadline {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Driver { child, base: format!("http://127.0.0.1:{port}") };
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        let _ = child.kill();
        let _ = child.wait();
        panic!("chromedriver did not start");
    }
}

/// One WebDriver session: the handful of commands the test needs.
struct Browser {
    url: String,
    client: TestClient,
}

impl Browser {
    async fn open(driver: &Driver) -> Browser {
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": "/usr/bin/chromium",
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                         "--window-size=900,700", "--no-first-run", "--disable-extensions"]
            }
        }}});
        let client = client();
        let answer = call(&client, "POST", &format!("{}/session", driver.base), Some(caps)).await;
        let id = answer["sessionId"].as_str().unwrap_or_else(|| panic!("no WebDriver session: {answer}"));
        Browser { url: format!("{}/session/{id}", driver.base), client }
    }

    async fn cmd(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        call(&self.client, method, &format!("{}{path}", self.url), body).await
    }

    async fn go(&self, url: &str) {
        self.cmd("POST", "/url", Some(json!({"url": url}))).await;
    }

    async fn current_url(&self) -> String {
        self.cmd("GET", "/url", None).await.as_str().unwrap().to_owned()
    }

    async fn source(&self) -> String {
        self.cmd("GET", "/source", None).await.as_str().unwrap().to_owned()
    }

    async fn element(&self, css: &str) -> String {
        let found = self.cmd("POST", "/element", Some(json!({"using": "css selector", "value": css}))).await;
        found
            .as_object()
            .and_then(|o| o.values().next())
            .and_then(Value::as_str)
            .unwrap_or_else(|| panic!("no element {css}: {found}"))
            .to_owned()
    }

    async fn type_into(&self, css: &str, text: &str) {
        let id = self.element(css).await;
        self.cmd("POST", &format!("/element/{id}/clear"), Some(json!({}))).await;
        self.cmd("POST", &format!("/element/{id}/value"), Some(json!({"text": text}))).await;
    }

    async fn click(&self, css: &str) {
        let id = self.element(css).await;
        self.cmd("POST", &format!("/element/{id}/click"), Some(json!({}))).await;
    }

    async fn cookies(&self) -> Vec<Value> {
        self.cmd("GET", "/cookie", None).await.as_array().cloned().unwrap_or_default()
    }

    /// Saves a PNG of the viewport.
    async fn screenshot(&self, name: &str) {
        let png = self.cmd("GET", "/screenshot", None).await;
        let bytes = data_encoding::BASE64.decode(png.as_str().unwrap().as_bytes()).unwrap();
        assert_eq!(&bytes[1..4], b"PNG");
        let dir = std::env::var_os("ATGATE_SCREENSHOTS")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("screenshots"));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(format!("{name}.png")), bytes).unwrap();
    }

    /// Waits until the page's URL satisfies `ok` (navigation after a click is asynchronous).
    async fn wait_for_url(&self, what: &str, ok: impl Fn(&str) -> bool) -> String {
        // Polls for the event, bounded generously (not a wait for time to pass).
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while std::time::Instant::now() < deadline {
            let url = self.current_url().await;
            if ok(&url) {
                return url;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("browser never reached {what}; at {}", self.current_url().await);
    }

    async fn close(self) {
        self.cmd("DELETE", "", None).await;
    }
}

async fn call(client: &TestClient, method: &str, url: &str, body: Option<Value>) -> Value {
    let req = http::Request::builder()
        .method(method)
        .uri(url)
        .header("content-type", "application/json")
        .body(body.map_or_else(body::empty, |b| body::full(b.to_string())))
        .unwrap();
    let (parts, bytes) = send(client, req).await;
    let answer: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    assert!(parts.status.is_success(), "WebDriver {method} {url}: {} {answer}", parts.status);
    answer["value"].clone()
}

#[tokio::test]
async fn chromium_signs_in_reaches_the_upstream_and_signs_out() {
    let pds = DevOAuth::spawn(loopback(), ClientIds::AllowLocal).await.unwrap();
    pds.add_account("alice.test", ALICE);
    pds.set_consent(Consent::Ask);
    let host = DevIdentity::spawn(loopback()).await.unwrap();
    host.publish(ALICE, did_document(ALICE, &DidKey::k256(), Some("alice.test"), pds.origin()));
    let records = HashMap::from([("_atproto.alice.test".to_owned(), vec![format!("did={ALICE}")])]);
    let (dns, _) = dns_server(records).await;
    let up = echo_upstream().await;
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let top = format!(
        "public_url: http://127.0.0.1:{port}
outbound: {{ allow_private_addresses: true, allow_http: true }}
identity: {{ plc_url: \"{}\", dns_servers: [\"{dns}\"], allow_test_handles: true }}
oauth_client: {{ client_name: Example Dashboard, scope: atproto transition:generic }}
",
        host.plc_url()
    );
    let routes = "  - { name: app, match: { path: /app/ }, upstream: up, auth: oauth_session }\n";
    let mut config = config_with(&top, &[("up", up)], routes);
    config.listen = vec![std::net::SocketAddr::from(([127, 0, 0, 1], port))];
    let gw = Gateway::start(config).await.unwrap();
    let base = format!("http://127.0.0.1:{port}");

    let driver = Driver::start();
    let b = Browser::open(&driver).await;

    // No session: the app sends the browser to the sign-in page.
    b.go(&format!("{base}/app/dashboard")).await;
    let url = b.current_url().await;
    assert!(url.starts_with(&format!("{base}/oauth/login?return_to=")), "{url}");
    assert!(b.source().await.contains("Sign in to Example Dashboard"));
    b.screenshot("sign-in").await;

    // An unknown handle: the form again, with the error announced.
    b.type_into("#handle", "nobody.test").await;
    b.click("button[type=submit]").await;
    b.wait_for_url("the form's answer", |u| u == format!("{base}/oauth/login")).await;
    let page = b.source().await;
    assert!(page.contains("role=\"alert\"") && page.contains("No account was found for nobody.test"), "{page}");
    b.screenshot("sign-in-unknown-handle").await;

    // Sign in: the form, the PDS's consent page, back to where the browser started.
    b.type_into("#handle", "alice.test").await;
    b.click("button[type=submit]").await;
    b.wait_for_url("the consent page", |u| u.starts_with(pds.origin())).await;
    b.screenshot("consent-dev-pds").await;
    b.click("#allow").await;
    b.wait_for_url("the app", |u| u == format!("{base}/app/dashboard")).await;
    let page = b.source().await;
    assert!(page.contains(ALICE) && page.contains("oauth-session") && page.contains("alice.test"), "{page}");
    let cookies = b.cookies().await;
    let session = cookies.iter().find(|c| c["name"] == "atgate_session").expect("a session cookie");
    assert_eq!((session["httpOnly"].as_bool(), session["sameSite"].as_str()), (Some(true), Some("Lax")));

    // Sign out through the form; the app asks for sign-in again.
    b.go(&format!("{base}/oauth/logout")).await;
    assert!(b.source().await.contains("You are signed in as"));
    b.click("button[type=submit]").await;
    b.wait_for_url("the sign-in page", |u| u == format!("{base}/oauth/login")).await;
    assert!(b.cookies().await.iter().all(|c| c["name"] != "atgate_session"));
    assert_eq!(pds.counters().revocations.load(std::sync::atomic::Ordering::SeqCst), 2);
    b.go(&format!("{base}/app/dashboard")).await;
    assert!(b.current_url().await.starts_with(&format!("{base}/oauth/login?")));

    // Declining at the PDS: a clear page, not a stack trace.
    b.type_into("#handle", "alice.test").await;
    b.click("button[type=submit]").await;
    b.wait_for_url("the consent page", |u| u.starts_with(pds.origin())).await;
    b.click("#deny").await;
    b.wait_for_url("the callback", |u| u.starts_with(&format!("{base}/oauth/callback"))).await;
    let page = b.source().await;
    assert!(page.contains("Sign-in was cancelled") && page.contains("Try signing in again"), "{page}");
    b.screenshot("error-denied").await;
    b.close().await;
    gw.shutdown();
}
