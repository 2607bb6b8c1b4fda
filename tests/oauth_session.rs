//! Browser sign-in end to end: atgate as the OAuth client of a strict dev PDS +
//! authorization server (PAR, PKCE, DPoP nonces, private_key_jwt, single-use refresh
//! tokens), a PLC-style DID host, a DNS server for handles, an echo upstream, and a
//! scripted browser with a cookie jar that follows redirects.

mod common;

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::time::Duration;

use atgate::app::Gateway;
use atgate::body;
use atgate::tools::dev_identity::{DevIdentity, DidKey, did_document};
use atgate::tools::dev_oauth::{ClientIds, Consent, DevOAuth};
use common::*;
use http::{Request, StatusCode, header};
use parking_lot::Mutex;
use serde_json::Value;

const ALICE: &str = "did:plc:ewvi7nxzyoun6zhxrhs64oiz";
const BOB: &str = "did:plc:bobbobbobbobbobbobbobbob";
const SECRET: &str = "a cookie secret of at least thirty-two bytes";

struct World {
    pds: DevOAuth,
    host: DevIdentity,
    dns: std::net::SocketAddr,
    up: std::net::SocketAddr,
    dir: tempfile::TempDir,
}

async fn world() -> World {
    let pds = DevOAuth::spawn(loopback(), ClientIds::AllowLocal).await.unwrap();
    pds.add_account("alice.test", ALICE);
    pds.add_account("bob.test", BOB);
    let host = DevIdentity::spawn(loopback()).await.unwrap();
    host.publish(ALICE, did_document(ALICE, &DidKey::k256(), Some("alice.test"), pds.origin()));
    host.publish(BOB, did_document(BOB, &DidKey::k256(), Some("bob.test"), pds.origin()));
    let records = HashMap::from([
        ("_atproto.alice.test".to_owned(), vec![format!("did={ALICE}")]),
        ("_atproto.bob.test".to_owned(), vec![format!("did={BOB}")]),
        ("_atproto.nopds.test".to_owned(), vec!["did=did:plc:nopdsnopdsnopdsnopdsnopd".to_owned()]),
    ]);
    let (dns, _) = dns_server(records).await;
    let up = echo_upstream().await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("cookie"), SECRET).unwrap();
    let key = atgate::jose::sign::SigningKey::generate();
    std::fs::write(dir.path().join("keys.json"), serde_json::json!({"keys": [key.private_jwk()]}).to_string()).unwrap();
    World { pds, host, dns, up, dir }
}

impl World {
    /// A gateway on a port picked first, so that `public_url` names it. `extra` goes at
    /// the end of `oauth_client:` when indented, at the top level when not.
    async fn gateway(&self, extra: &str) -> Gateway {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        self.replica(extra, port).await
    }

    /// A gateway whose `public_url` names `public_port`: replicas behind one address
    /// share it (it is their `client_id`).
    async fn replica(&self, extra: &str, public_port: u16) -> Gateway {
        self.gateway_at(&format!("http://127.0.0.1:{public_port}"), extra, public_port).await
    }

    /// A gateway listening on `port` (when free) whose `public_url` is `public_url`.
    async fn gateway_at(&self, public_url: &str, extra: &str, port: u16) -> Gateway {
        let top = format!(
            "public_url: {public_url}
outbound: {{ allow_private_addresses: true, allow_http: true }}
identity: {{ plc_url: \"{plc}\", dns_servers: [\"{dns}\"], allow_test_handles: true }}
oauth_client:
  client_name: Test App
  scope: atproto transition:generic
  keys_file: {dir}/keys.json
  cookie_secret_file: {dir}/cookie
  refresh_before: 1s
  pds_proxy: /pds
{extra}",
            plc = self.host.plc_url(),
            dns = self.dns,
            dir = self.dir.path().display(),
        );
        let routes = "  - { name: app, match: { path: /app/ }, upstream: up, auth: oauth_session, require: { scopes: [\"transition:generic\"] } }
  - { name: admin, match: { path: /admin/ }, upstream: up, auth: oauth_session, allow_dids: [\"did:plc:nobodynobodynobodynobody\"] }
";
        let mut config = config_with(&top, &[("up", self.up)], routes);
        let listen = if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() { port } else { 0 };
        config.listen = vec![std::net::SocketAddr::from(([127, 0, 0, 1], listen))];
        Gateway::start(config).await.unwrap()
    }
}

/// A scripted browser: a cookie jar (name -> value, path), `Origin` on POSTs, redirects
/// followed across hosts.
struct Browser {
    client: TestClient,
    jar: Mutex<HashMap<String, (String, String)>>,
}

struct Page {
    status: StatusCode,
    headers: http::HeaderMap,
    body: String,
    url: String,
}

impl Browser {
    fn new() -> Browser {
        Browser { client: client(), jar: Mutex::default() }
    }

    fn cookie(&self, name: &str) -> Option<String> {
        self.jar.lock().get(name).map(|(v, _)| v.clone())
    }

    /// The `Cookie` header an API client holding this browser's session would send.
    fn session_cookie(&self) -> String {
        format!("atgate_session={}", self.cookie("atgate_session").expect("signed in"))
    }

    async fn send(&self, method: &str, url: &str, form: Option<&[(&str, &str)]>, accept: &str) -> Page {
        let uri: http::Uri = url.parse().unwrap();
        let mut b = Request::builder().method(method).uri(url).header(header::ACCEPT, accept);
        let cookies: Vec<String> = self
            .jar
            .lock()
            .iter()
            .filter(|(_, (_, path))| uri.path().starts_with(path.as_str()))
            .map(|(k, (v, _))| format!("{k}={v}"))
            .collect();
        if !cookies.is_empty() {
            b = b.header(header::COOKIE, cookies.join("; "));
        }
        let req = match form {
            Some(pairs) => {
                let origin = format!("http://{}", uri.authority().unwrap());
                let text = url::form_urlencoded::Serializer::new(String::new()).extend_pairs(pairs).finish();
                b.header(header::ORIGIN, origin)
                    .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
                    .body(body::full(text))
            }
            None => b.body(body::empty()),
        }
        .unwrap();
        let (parts, bytes) = send(&self.client, req).await;
        for v in parts.headers.get_all(header::SET_COOKIE) {
            let text = v.to_str().unwrap();
            let (pair, attrs) = text.split_once(';').unwrap_or((text, ""));
            let (name, value) = pair.split_once('=').unwrap();
            let path = attrs.split(';').find_map(|a| a.trim().strip_prefix("Path=")).unwrap_or("/").to_owned();
            if attrs.contains("Max-Age=0") {
                self.jar.lock().remove(name);
            } else {
                self.jar.lock().insert(name.to_owned(), (value.to_owned(), path));
            }
        }
        Page {
            status: parts.status,
            headers: parts.headers,
            body: String::from_utf8_lossy(&bytes).into_owned(),
            url: url.to_owned(),
        }
    }

    /// Sends, then follows redirects (as GETs) until a page that is not one.
    async fn go(&self, method: &str, url: &str, form: Option<&[(&str, &str)]>) -> Page {
        let mut page = self.send(method, url, form, "text/html").await;
        for _ in 0..10 {
            if !page.status.is_redirection() {
                return page;
            }
            let location = page.headers[header::LOCATION].to_str().unwrap().to_owned();
            let next = url::Url::parse(&page.url).unwrap().join(&location).unwrap();
            page = self.send("GET", next.as_str(), None, "text/html").await;
        }
        panic!("redirect loop");
    }

    /// Signs in through the sign-in page, starting from `path`.
    async fn sign_in(&self, gw: &Gateway, handle: &str, path: &str) -> Page {
        let base = format!("http://{}", gw.addrs()[0]);
        let page = self.go("GET", &format!("{base}{path}"), None).await;
        assert_eq!(page.status, StatusCode::OK, "{}", page.body);
        assert!(page.body.contains("<form method=\"post\" action=\"/oauth/login\">"), "{}", page.body);
        let return_to = page.url.split("return_to=").nth(1).map(urldecode).unwrap_or_default();
        self.go("POST", &format!("{base}/oauth/login"), Some(&[("handle", handle), ("return_to", &return_to)])).await
    }
}

fn urldecode(s: &str) -> String {
    url::form_urlencoded::parse(format!("x={s}").as_bytes()).next().unwrap().1.into_owned()
}

/// `GET url` as an API client (`Accept: application/json`) sending `cookie` (`name=value`).
async fn api_get(url: String, cookie: &str) -> (StatusCode, bytes::Bytes) {
    let (parts, body) = send(&client(), get(url, &[("cookie", cookie), ("accept", "application/json")])).await;
    (parts.status, body)
}

/// `n` such requests at once; their statuses.
async fn api_gets(n: usize, url: &str, cookie: &str) -> Vec<StatusCode> {
    let calls = (0..n).map(|_| api_get(url.to_owned(), cookie));
    futures_util::future::join_all(calls).await.into_iter().map(|(s, _)| s).collect()
}

/// The admin listener's `/metrics`.
async fn metrics(gw: &Gateway) -> String {
    let url = format!("http://{}/metrics", gw.admin_addr().unwrap());
    String::from_utf8_lossy(&send(&client(), get(url, &[])).await.1).into_owned()
}

fn echo(page: &Page) -> Value {
    serde_json::from_str(&page.body).unwrap_or_else(|_| panic!("not JSON ({}): {}", page.status, page.body))
}

#[tokio::test]
async fn full_sign_in_reaches_the_upstream_with_verified_identity() {
    let w = world().await;
    let gw = w.gateway("").await;
    let base = format!("http://{}", gw.addrs()[0]);

    // The client metadata is what the AS fetched to check the client assertion.
    let meta = json(&send(&client(), get(format!("{base}/oauth/client-metadata.json"), &[])).await.1);
    assert_eq!(meta["client_id"], format!("{base}/oauth/client-metadata.json"));
    assert_eq!(meta["redirect_uris"][0], format!("{base}/oauth/callback"));
    // The reference AS accepts exactly application/json for both documents (the dev AS
    // refuses anything else, so the sign-ins below also fail if this regresses).
    for doc in ["client-metadata.json", "jwks.json"] {
        let (parts, _) = send(&client(), get(format!("{base}/oauth/{doc}"), &[])).await;
        assert_eq!(parts.headers[header::CONTENT_TYPE], "application/json", "{doc}");
    }

    // An API client without a session gets JSON, not a redirect.
    let (parts, bytes) = send(&client(), get(format!("{base}/app/x"), &[("accept", "application/json")])).await;
    assert_eq!(parts.status, StatusCode::UNAUTHORIZED);
    assert_eq!(json(&bytes)["error"], "AuthenticationRequired");

    let b = Browser::new();
    let page = b.sign_in(&gw, "alice.test", "/app/x?y=1").await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    assert_eq!(page.url, format!("{base}/app/x?y=1"), "back where the browser started");
    let h = &echo(&page)["headers"];
    assert_eq!(h["x-atproto-did"], ALICE);
    assert_eq!(h["x-atproto-auth"], "oauth-session");
    assert_eq!(h["x-atproto-handle"], "alice.test");
    assert_eq!(h["x-atproto-scope"], "atproto transition:generic");
    assert!(h["cookie"].is_null(), "the session cookie stays at the gateway: {h}");
    assert_eq!(w.pds.counters().pars.load(Ordering::SeqCst), 1);
    assert_eq!(w.pds.counters().codes.load(Ordering::SeqCst), 1);
    assert!(b.cookie("atgate_session_flow").is_none(), "the flow cookie is cleared");

    // The session serves further requests with no new sign-in, and shows itself.
    for _ in 0..3 {
        assert_eq!(b.go("GET", &format!("{base}/app/y"), None).await.status, StatusCode::OK);
    }
    let session = b.send("GET", &format!("{base}/oauth/session"), None, "application/json").await;
    assert_eq!(echo(&session)["did"], ALICE);
    assert_eq!(w.pds.counters().codes.load(Ordering::SeqCst), 1);

    // A route whose DID list excludes Alice refuses her session.
    assert_eq!(b.send("GET", &format!("{base}/admin/"), None, "application/json").await.status, StatusCode::FORBIDDEN);

    // login_hint only fills in the form: a link cannot send a browser to an AS in one
    // click; the form's same-origin POST signs in.
    let pars = w.pds.counters().pars.load(Ordering::SeqCst);
    let b2 = Browser::new();
    let page =
        b2.send("GET", &format!("{base}/oauth/login?login_hint=bob.test&return_to=/app/z"), None, "text/html").await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    assert!(page.headers.get(header::LOCATION).is_none());
    assert!(page.body.contains(r#"value="bob.test""#) && page.body.contains(r#"value="/app/z""#), "{}", page.body);
    assert_eq!(w.pds.counters().pars.load(Ordering::SeqCst), pars, "no sign-in was started");
    let hint = url::form_urlencoded::byte_serialize(br#""><script>alert(1)</script>"#).collect::<String>();
    let page = b2.send("GET", &format!("{base}/oauth/login?login_hint={hint}"), None, "text/html").await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(!page.body.contains("<script>") && page.body.contains("&quot;&gt;&lt;script&gt;"), "{}", page.body);
    let page =
        b2.go("POST", &format!("{base}/oauth/login"), Some(&[("handle", "bob.test"), ("return_to", "/app/z")])).await;
    assert_eq!(echo(&page)["headers"]["x-atproto-did"], BOB);

    // A sign-in POST a browser marks as cross-site is refused, even with a matching Origin.
    let forged = Request::post(format!("{base}/oauth/login"))
        .header(header::ORIGIN, &base)
        .header("sec-fetch-site", "cross-site")
        .header(header::ACCEPT, "application/json")
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(body::full("handle=bob.test"))
        .unwrap();
    let (parts, bytes) = send(&client(), forged).await;
    assert_eq!((parts.status, json(&bytes)["error"].as_str()), (StatusCode::FORBIDDEN, Some("CsrfFailed")));
    assert_eq!(w.pds.counters().pars.load(Ordering::SeqCst), pars + 1, "only the form's POST reached the AS");
}

/// Sign-in through the form at a gateway whose public origin is `public` (the POST
/// carries that origin); the final page.
async fn sign_in_at(gw: &Gateway, public: &str, handle: &str) -> Page {
    let b = Browser::new();
    let base = format!("http://{}", gw.addrs()[0]);
    let form = format!("handle={handle}&return_to=%2Fapp%2F");
    let req = Request::post(format!("{base}/oauth/login"))
        .header(header::ORIGIN, public)
        .header(header::ACCEPT, "text/html")
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(body::full(form))
        .unwrap();
    let (parts, bytes) = send(&b.client, req).await;
    Page { status: parts.status, headers: parts.headers, body: String::from_utf8_lossy(&bytes).into_owned(), url: base }
}

#[tokio::test]
async fn an_authorization_server_refusing_the_client_id_gets_a_page_that_says_so() {
    let w = world().await;
    // The dev AS as strict as the reference outside dev mode: https on a domain name.
    let strict = DevOAuth::spawn(loopback(), ClientIds::DomainOnly).await.unwrap();
    strict.add_account("alice.test", ALICE);
    w.host.publish(ALICE, did_document(ALICE, &DidKey::k256(), Some("alice.test"), strict.origin()));
    for (public, code) in [("https://127.0.0.1", "invalid_client_metadata"), ("https://app.test", "invalid_client_id")]
    {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let public = format!("{public}:{port}");
        let gw = w.gateway_at(&public, "", port).await;
        let page = sign_in_at(&gw, &public, "alice.test").await;
        assert_eq!(page.status, StatusCode::BAD_GATEWAY, "{public}: {}", page.body);
        assert!(page.body.contains("refused this gateway&#39;s client registration"), "{public}: {}", page.body);
        assert!(!page.body.contains("does not support atproto OAuth"), "{public}: {}", page.body);
        assert!(page.body.contains(&format!("({code})")), "{public}: {}", page.body);
        assert_eq!(strict.counters().pars.load(Ordering::SeqCst), 0);
        assert_eq!(strict.counters().client_fetches.load(Ordering::SeqCst), 0, "refused on the id alone");
        let m = metrics(&gw).await;
        assert!(m.contains("oauth_client_rejected"), "{m}");
        gw.shutdown();
    }
}

#[tokio::test]
async fn the_pds_proxy_calls_the_users_pds_with_the_sessions_dpop_token() {
    let w = world().await;
    let gw = w.gateway("").await;
    let base = format!("http://{}", gw.addrs()[0]);
    let b = Browser::new();
    b.sign_in(&gw, "alice.test", "/app/").await;
    let page =
        b.send("GET", &format!("{base}/pds/com.atproto.repo.listRecords?repo=x"), None, "application/json").await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    let answer = echo(&page);
    assert_eq!(answer["did"], ALICE, "the PDS saw the session's token");
    assert_eq!(answer["method"], "com.atproto.repo.listRecords");
    assert_eq!(answer["query"], "repo=x");

    let post = Request::post(format!("{base}/pds/com.atproto.repo.createRecord"))
        .header(header::COOKIE, b.session_cookie())
        .header(header::ORIGIN, &base)
        .header(header::CONTENT_TYPE, "application/json")
        .body(body::full(r#"{"collection":"com.example.note"}"#))
        .unwrap();
    let (parts, bytes) = send(&client(), post).await;
    assert_eq!(parts.status, StatusCode::OK);
    assert_eq!(json(&bytes)["body"]["collection"], "com.example.note");
    assert!(w.pds.counters().resource_requests.load(Ordering::SeqCst) >= 2);

    // Without a session the proxy sends nothing to the PDS.
    let (parts, _) = send(&client(), get(format!("{base}/pds/com.atproto.repo.listRecords"), &[])).await;
    assert_eq!(parts.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn callbacks_with_a_wrong_state_or_issuer_are_refused() {
    let w = world().await;
    let gw = w.gateway("").await;
    let base = format!("http://{}", gw.addrs()[0]);
    w.pds.set_consent(Consent::Ask);

    // Start a sign-in and stop at the AS's consent page.
    let b = Browser::new();
    let consent = b.sign_in(&gw, "alice.test", "/app/").await;
    assert!(consent.body.contains("Dev PDS: authorize"), "{}", consent.body);
    let request_uri = consent.body.split("name=\"request_uri\" value=\"").nth(1).unwrap().split('"').next().unwrap();
    let answer = b
        .send(
            "POST",
            &format!("{}/oauth/authorize", w.pds.origin()),
            Some(&[("request_uri", request_uri), ("decision", "allow")]),
            "text/html",
        )
        .await;
    let callback = answer.headers[header::LOCATION].to_str().unwrap().to_owned();

    // Another state than the one this browser's flow cookie holds.
    let forged = callback.replace("state=", "state=x");
    let page = b.send("GET", &forged, None, "application/json").await;
    assert_eq!((page.status, echo(&page)["error"].as_str()), (StatusCode::BAD_REQUEST, Some("InvalidState")));
    // Another browser (no flow cookie) cannot complete this browser's sign-in.
    let page = Browser::new().send("GET", &callback, None, "application/json").await;
    assert_eq!(echo(&page)["error"], "InvalidState");
    // The wrong iss is refused, and the state is spent.
    let wrong_iss = callback.replace("iss=", "iss=http%3A%2F%2Fevil.example&was=");
    let page = b.send("GET", &wrong_iss, None, "text/html").await;
    assert_eq!(page.status, StatusCode::BAD_REQUEST);
    assert!(page.body.contains("no longer valid") && page.body.contains("role=\"alert\""), "{}", page.body);
    let page = b.send("GET", &callback, None, "application/json").await;
    assert_eq!(echo(&page)["error"], "InvalidState", "a state is used once");
    assert!(b.cookie("atgate_session").is_none());
    assert_eq!(w.pds.counters().codes.load(Ordering::SeqCst), 0, "no code was exchanged");

    // An AS answering with another issuer (mix-up) is refused the same way.
    w.pds.set_consent(Consent::Approve);
    w.pds.set_iss_override(Some("http://127.0.0.1:1"));
    let page = b.sign_in(&gw, "alice.test", "/app/").await;
    assert_eq!(page.status, StatusCode::BAD_REQUEST, "{}", page.body);
    assert!(b.cookie("atgate_session").is_none());
    w.pds.set_iss_override(None);

    // Denied consent: a clear page, no session.
    w.pds.set_consent(Consent::Deny);
    let page = b.sign_in(&gw, "alice.test", "/app/").await;
    assert_eq!(page.status, StatusCode::FORBIDDEN);
    assert!(page.body.contains("Sign-in was cancelled"), "{}", page.body);
    let _ = base;
}

#[tokio::test]
async fn an_account_mix_up_is_refused_and_its_tokens_revoked() {
    let w = world().await;
    let gw = w.gateway("").await;
    w.pds.set_sub_override(Some(BOB));
    let b = Browser::new();
    let page = b.sign_in(&gw, "alice.test", "/app/").await;
    assert_eq!(page.status, StatusCode::FORBIDDEN, "{}", page.body);
    assert!(page.body.contains("The account did not match"), "{}", page.body);
    assert!(b.cookie("atgate_session").is_none());
    assert_eq!(w.pds.counters().revocations.load(Ordering::SeqCst), 2, "the stray grant's two tokens were revoked");

    // The right account, but its PDS now names another authorization server.
    w.pds.set_sub_override(None);
    let elsewhere = DevOAuth::spawn(loopback(), ClientIds::AllowLocal).await.unwrap();
    w.pds.set_consent(Consent::Ask);
    let consent = b.sign_in(&gw, "alice.test", "/app/").await;
    w.host.publish(ALICE, did_document(ALICE, &DidKey::k256(), Some("alice.test"), elsewhere.origin()));
    let request_uri = consent.body.split("name=\"request_uri\" value=\"").nth(1).unwrap().split('"').next().unwrap();
    let page = b
        .go(
            "POST",
            &format!("{}/oauth/authorize", w.pds.origin()),
            Some(&[("request_uri", request_uri), ("decision", "allow")]),
        )
        .await;
    assert_eq!(page.status, StatusCode::FORBIDDEN, "{}", page.body);
    assert!(b.cookie("atgate_session").is_none());
}

#[tokio::test]
async fn sign_in_errors_are_pages_not_stack_traces() {
    let w = world().await;
    let gw = w.gateway("").await;
    let b = Browser::new();
    let page = b.sign_in(&gw, "nobody.test", "/app/").await;
    assert_eq!(page.status, StatusCode::BAD_REQUEST);
    assert!(page.body.contains("No account was found for nobody.test") && page.body.contains("<form"), "{}", page.body);
    let page = b.sign_in(&gw, "not a handle", "/app/").await;
    assert!(page.body.contains("Enter a handle"), "{}", page.body);
    let page = b.sign_in(&gw, "<script>alert(1)</script>.test", "/app/").await;
    assert!(!page.body.contains("<script>"), "escaped: {}", page.body);

    // An unreachable PDS.
    let dead = dead_upstream().await;
    w.host.publish(ALICE, did_document(ALICE, &DidKey::k256(), Some("alice.test"), &format!("http://{dead}")));
    let page = b.sign_in(&gw, "alice.test", "/app/").await;
    assert_eq!(page.status, StatusCode::BAD_GATEWAY);
    assert!(page.body.contains("PDS could not be reached"), "{}", page.body);
    // A sign-in POST from another site is refused.
    let base = format!("http://{}", gw.addrs()[0]);
    let forged = Request::post(format!("{base}/oauth/login"))
        .header(header::ORIGIN, "http://evil.example")
        .header(header::ACCEPT, "application/json")
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(body::full("handle=alice.test"))
        .unwrap();
    let (parts, bytes) = send(&client(), forged).await;
    assert_eq!((parts.status, json(&bytes)["error"].as_str()), (StatusCode::FORBIDDEN, Some("CsrfFailed")));
}

#[tokio::test]
async fn concurrent_requests_refresh_once_and_logout_revokes() {
    let w = world().await;
    let gw = w.gateway("").await;
    let base = format!("http://{}", gw.addrs()[0]);
    let b = Browser::new();
    let before = due_session(&w, &b, &gw).await;
    let cookie = b.session_cookie();

    // A token within refresh_before: 20 requests at once, one refresh.
    let statuses = api_gets(20, &format!("{base}/app/x"), &cookie).await;
    assert!(statuses.iter().all(|s| *s == StatusCode::OK), "{statuses:?}");
    assert_eq!(w.pds.counters().refreshes.load(Ordering::SeqCst), before + 1);
    assert_eq!(w.pds.counters().refresh_reuses.load(Ordering::SeqCst), 0);
    let m = metrics(&gw).await;
    assert!(m.contains(&format!(r#"atgate_oauth_events_total{{event="refresh"}} {}"#, before + 1)), "{m}");
    assert!(m.contains(r#"atgate_oauth_events_total{event="sign_in"} 1"#));
    // The refreshed token works at the PDS.
    let page = b.send("GET", &format!("{base}/pds/com.example.get"), None, "application/json").await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);

    // CSRF: a state-changing request from another origin is refused; same origin passes.
    let post = |origin: &str| {
        Request::post(format!("{base}/app/x"))
            .header(header::COOKIE, &cookie)
            .header(header::ORIGIN, origin)
            .header(header::ACCEPT, "application/json")
            .body(body::full("{}"))
            .unwrap()
    };
    assert_eq!(send(&client(), post("http://evil.example")).await.0.status, StatusCode::FORBIDDEN);
    assert_eq!(send(&client(), post(&base)).await.0.status, StatusCode::OK);

    // Logout: a GET only shows the form; the POST revokes both tokens and ends the session.
    let confirm = b.send("GET", &format!("{base}/oauth/logout"), None, "text/html").await;
    assert!(confirm.body.contains("alice.test") && confirm.body.contains("method=\"post\""));
    assert_eq!(w.pds.counters().revocations.load(Ordering::SeqCst), 0);
    let page = b.go("POST", &format!("{base}/oauth/logout"), Some(&[])).await;
    assert!(page.body.contains("Sign in to Test App"), "{}", page.body);
    assert!(b.cookie("atgate_session").is_none());
    assert_eq!(w.pds.counters().revocations.load(Ordering::SeqCst), 2);
    assert_eq!(w.pds.refresh_tokens_live(), 0, "the refresh token is gone at the AS");
    assert!(metrics(&gw).await.contains(r#"atgate_oauth_events_total{event="sign_out"} 1"#));
    let (parts, _) =
        send(&client(), get(format!("{base}/app/x"), &[("cookie", &cookie), ("accept", "text/html")])).await;
    assert_eq!(parts.status, StatusCode::SEE_OTHER, "the old cookie is dead");
    assert!(parts.headers[header::LOCATION].to_str().unwrap().starts_with("/oauth/login?return_to="));
}

/// Signs `b` in at `gw` holding an access token already within `refresh_before` (the
/// AS grants 1 s, `refresh_before` is 1 s), then has the AS grant 300 s: the next
/// request refreshes once, whatever the wall clock does. The refreshes so far.
async fn due_session(w: &World, b: &Browser, gw: &Gateway) -> u64 {
    w.pds.set_access_lifetime(1);
    assert_eq!(b.sign_in(gw, "alice.test", "/app/").await.status, StatusCode::OK);
    w.pds.set_access_lifetime(300);
    w.pds.counters().refreshes.load(Ordering::SeqCst)
}

#[tokio::test]
async fn tampered_foreign_and_expired_cookies_are_refused() {
    let w = world().await;
    let gw = w.gateway("  session_ttl: 2s").await;
    let clock = || gw.shared().sessions.clock();
    clock().freeze();
    let base = format!("http://{}", gw.addrs()[0]);
    let b = Browser::new();
    assert_eq!(b.sign_in(&gw, "alice.test", "/app/").await.status, StatusCode::OK);
    let good = b.cookie("atgate_session").unwrap();
    let status = |value: String| {
        let url = format!("{base}/app/x");
        async move { api_get(url, &format!("atgate_session={value}")).await.0 }
    };
    assert_eq!(status(good.clone()).await, StatusCode::OK);
    // Every single-character change.
    for i in 0..good.len() {
        let mut bytes = good.clone().into_bytes();
        bytes[i] = if bytes[i] == b'A' { b'B' } else { b'A' };
        let tampered = String::from_utf8(bytes).unwrap();
        assert_eq!(status(tampered.clone()).await, StatusCode::UNAUTHORIZED, "{tampered}");
    }
    // A session id that exists, signed with another gateway's key.
    let id = good.split('.').next().unwrap();
    let other = atgate::jose::b64url(&[0u8; 32]);
    assert_eq!(status(format!("{id}.{other}")).await, StatusCode::UNAUTHORIZED);
    assert_eq!(status(id.to_owned()).await, StatusCode::UNAUTHORIZED);
    // Idle past session_ttl (the store's clock: no waiting).
    clock().advance(Duration::from_millis(1999));
    assert_eq!(status(good.clone()).await, StatusCode::OK, "idle just under session_ttl");
    clock().advance(Duration::from_millis(2000));
    assert_eq!(status(good).await, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn two_replicas_sharing_redis_serve_one_session_and_refresh_once() {
    let redis = Redis::start();
    let w = world().await;
    std::fs::write(w.dir.path().join("redis"), format!("redis://127.0.0.1:{}/", redis.port)).unwrap();
    let replay = format!("replay: {{ store: redis, redis: {{ url_file: \"{}/redis\" }} }}\n", w.dir.path().display());
    let a = w.gateway(&replay).await;
    let b_gw = w.replica(&replay, a.addrs()[0].port()).await;
    assert_ne!(a.addrs()[0], b_gw.addrs()[0]);
    let browser = Browser::new();
    // The session's token is due for refresh (no waiting on the wall clock for it).
    let before = due_session(&w, &browser, &a).await;
    let cookie = browser.session_cookie();
    let call = |gw: &Gateway| api_get(format!("http://{}/app/x", gw.addrs()[0]), &cookie);

    let calls = (0..10).flat_map(|_| [call(&a), call(&b_gw)]);
    let results = futures_util::future::join_all(calls).await;
    let statuses: Vec<StatusCode> = results.iter().map(|r| r.0).collect();
    assert!(statuses.iter().all(|s| *s == StatusCode::OK), "{statuses:?}");
    assert!(results.iter().all(|r| json(&r.1)["headers"]["x-atproto-did"] == ALICE), "both replicas serve A's session");
    assert_eq!(w.pds.counters().refreshes.load(Ordering::SeqCst), before + 1, "one refresh across both replicas");
    assert_eq!(w.pds.counters().refresh_reuses.load(Ordering::SeqCst), 0);

    // Logout at A ends the session at B.
    let base_a = format!("http://{}", a.addrs()[0]);
    browser.go("POST", &format!("{base_a}/oauth/logout"), Some(&[])).await;
    assert_eq!(call(&b_gw).await.0, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn activity_keeps_a_session_alive_and_the_proxy_reaches_only_xrpc_methods() {
    let w = world().await;
    let gw = w.gateway("  session_ttl: 3s").await;
    let clock = || gw.shared().sessions.clock();
    clock().freeze();
    let base = format!("http://{}", gw.addrs()[0]);
    let b = Browser::new();
    assert_eq!(b.sign_in(&gw, "alice.test", "/app/").await.status, StatusCode::OK);
    // Sliding: a request every half second for twice the idle time keeps it alive.
    for _ in 0..12 {
        clock().advance(Duration::from_millis(500));
        let page = b.send("GET", &format!("{base}/app/x"), None, "application/json").await;
        assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    }
    // A signed-in browser on the sign-in page goes straight back.
    let page = b.send("GET", &format!("{base}/oauth/login?return_to=/app/back"), None, "text/html").await;
    assert_eq!((page.status, page.headers[header::LOCATION].to_str().unwrap()), (StatusCode::SEE_OTHER, "/app/back"));

    // The PDS proxy forwards one NSID and nothing else of the PDS.
    let before = w.pds.counters().resource_requests.load(Ordering::SeqCst);
    for path in ["/pds/../oauth/token", "/pds/com.example.get/extra", "/pds/%2e%2e/x", "/pds/", "/pds/not-an-nsid"] {
        let page = b.send("GET", &format!("{base}{path}"), None, "application/json").await;
        assert_eq!(page.status, StatusCode::NOT_FOUND, "{path}: {}", page.body);
    }
    assert_eq!(w.pds.counters().resource_requests.load(Ordering::SeqCst), before);

    // Idle past session_ttl: over.
    clock().advance(Duration::from_millis(3001));
    let page = b.send("GET", &format!("{base}/app/x"), None, "application/json").await;
    assert_eq!(page.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn sign_ins_are_limited_per_client_address() {
    let w = world().await;
    let gw = w.gateway("  sign_in_rate: 2/m").await;
    let b = Browser::new();
    for _ in 0..2 {
        assert_eq!(b.sign_in(&gw, "nobody.test", "/app/").await.status, StatusCode::BAD_REQUEST);
    }
    let page = b.sign_in(&gw, "alice.test", "/app/").await;
    assert_eq!(page.status, StatusCode::TOO_MANY_REQUESTS, "{}", page.body);
    assert!(page.headers[header::RETRY_AFTER].to_str().unwrap().parse::<u64>().unwrap() > 0);
    assert!(page.body.contains("Too many sign-in attempts"), "{}", page.body);
    assert_eq!(w.pds.counters().pars.load(Ordering::SeqCst), 0, "no PAR request was made");
}

#[tokio::test]
async fn sessions_survive_a_config_reload() {
    let w = world().await;
    let gw = w.gateway("").await;
    let base = format!("http://{}", gw.addrs()[0]);
    let b = Browser::new();
    assert_eq!(b.sign_in(&gw, "alice.test", "/app/").await.status, StatusCode::OK);

    let mut config = (*gw.shared().runtime.load().config).clone();
    config.oauth_client.as_mut().unwrap().client_name = "Renamed App".into();
    atgate::reload::apply(gw.shared(), config).await.unwrap();
    let meta = json(&send(&client(), get(format!("{base}/oauth/client-metadata.json"), &[])).await.1);
    assert_eq!(meta["client_name"], "Renamed App");
    let page = b.send("GET", &format!("{base}/app/x"), None, "application/json").await;
    assert_eq!(page.status, StatusCode::OK, "the session outlived the reload: {}", page.body);
    assert_eq!(echo(&page)["headers"]["x-atproto-did"], ALICE);
}

#[tokio::test]
async fn sliding_expiry_and_refresh_together_over_several_rounds() {
    // Each round's requests both extend the session (ttl 2s: every second, on the
    // store's clock) and need a refresh (the AS grants 1s tokens, within refresh_before);
    // the session must stay alive and no refresh token may be presented twice.
    // (Extending never rewrites the stored session: `SessionStore::touch`.)
    let w = world().await;
    w.pds.set_access_lifetime(1);
    let gw = w.gateway("  session_ttl: 2s").await;
    let clock = || gw.shared().sessions.clock();
    clock().freeze();
    let base = format!("http://{}", gw.addrs()[0]);
    let b = Browser::new();
    assert_eq!(b.sign_in(&gw, "alice.test", "/app/").await.status, StatusCode::OK);
    let cookie = b.session_cookie();
    for round in 1..=3u64 {
        clock().advance(Duration::from_millis(1100));
        let statuses = api_gets(16, &format!("{base}/app/x"), &cookie).await;
        assert!(statuses.iter().all(|s| *s == StatusCode::OK), "round {round}: {statuses:?}");
        assert_eq!(w.pds.counters().refresh_reuses.load(Ordering::SeqCst), 0, "round {round}");
    }
    assert!(w.pds.counters().refreshes.load(Ordering::SeqCst) >= 3);
}
