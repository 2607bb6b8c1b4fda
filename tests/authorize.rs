//! Route requirements (`require:`) through the gateway: OAuth principals against their
//! token's scopes, with the request deriving what is needed (repo writes from the XRPC
//! call and its JSON body, blob MIME from Content-Type, rpc lxm from the path).

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use atgate::app::Gateway;
use atgate::jose::sign::SigningKey;
use atgate::tools::DpopSigner;
use atgate::tools::curl::{CurlRequest, CurlResponse, send as curl};
use atgate::tools::dev_identity::{DevIdentity, DidKey, did_document};
use atgate::tools::dev_issuer::DevIssuer;
use atgate::tools::dev_repo::RepoProof;
use bytes::Bytes;
use common::*;
use http::{HeaderName, HeaderValue, Method, StatusCode};
use http_body::Body as _;
use serde_json::json;

const AUD: &str = "did:web:gateway.test";
const DID: &str = "did:plc:ewvi7nxzyoun6zhxrhs64oiz";
const SCOPE: &str = "atproto repo:app.example.post blob:image/* \
    rpc:com.example.getThing?aud=did:web:gateway.test%23svc account:email";

struct Setup {
    gw: Gateway,
    issuer: DevIssuer,
    signer: DpopSigner,
}

async fn setup() -> Setup {
    let up = echo_upstream().await;
    let issuer = DevIssuer::spawn(loopback()).await.unwrap();
    let top = format!(
        "trusted_proxies: [127.0.0.1]
outbound: {{ allow_private_addresses: true, allow_http: true }}
service_auth: {{ did: {AUD}, service_id: svc }}
issuers:
  - {{ issuer: \"{}\", discovery: true, audiences: [{AUD}] }}
",
        issuer.issuer()
    );
    let routes = "  - name: repo
    match: { path: /xrpc/com.atproto.repo.* }
    upstream: up
    auth: dpop
    require: { repo: {} }
  - name: blob
    match: { path: /xrpc/com.atproto.repo.uploadBlob }
    upstream: up
    auth: dpop
    require: { blob: { mime: from_content_type } }
  - name: rpc
    match: { path: /xrpc/com.example.* }
    upstream: up
    auth: dpop
    require: { rpc: { lxm: from_path, aud: self } }
  - name: email
    match: { path: /account/email }
    upstream: up
    auth: dpop
    require: { account: { attr: email, action: manage } }
  - name: read-email
    match: { path: /account/read }
    upstream: up
    auth: dpop
    require: { scopes: [\"account:email\", \"repo:app.example.post?action=create\"] }
";
    let gw = Gateway::start(config_with(&top, &[("up", up)], routes)).await.unwrap();
    Setup { gw, issuer, signer: DpopSigner { key: SigningKey::generate() } }
}

impl Setup {
    async fn call(&self, method: Method, path: &str, content_type: &str, body: &[u8]) -> CurlResponse {
        let token = self.issuer.mint(DID, &self.signer.key.thumbprint(), SCOPE, AUD, Duration::from_secs(600));
        let req = CurlRequest {
            method,
            url: format!("http://{}{path}", self.gw.addrs()[0]),
            token,
            signer: DpopSigner { key: SigningKey::from_jwk(&self.signer.key.private_jwk()).unwrap() },
            body: Some(Bytes::copy_from_slice(body)),
            headers: vec![(HeaderName::from_static("content-type"), HeaderValue::from_str(content_type).unwrap())],
        };
        curl(&req).await.unwrap()
    }

    async fn post_json(&self, path: &str, body: serde_json::Value) -> CurlResponse {
        self.call(Method::POST, path, "application/json", body.to_string().as_bytes()).await
    }
}

fn refused(res: &CurlResponse, needed: &str) {
    assert_eq!(res.status, StatusCode::FORBIDDEN, "{}", String::from_utf8_lossy(&res.body));
    let body = json(&res.body);
    assert_eq!(body["error"], "InsufficientScope");
    assert_eq!(body["message"], format!("Missing required scope \"{needed}\""));
    let challenge = res.headers["www-authenticate"].to_str().unwrap();
    assert!(challenge.contains(r#"error="insufficient_scope""#), "{challenge}");
    assert!(challenge.contains(&format!(r#"scope="{needed}""#)), "{challenge}");
}

#[tokio::test]
async fn repo_writes_are_checked_per_collection_and_action() {
    let s = setup().await;
    let record = json!({"repo": DID, "collection": "app.example.post", "record": {"text": "hi"}});
    let res = s.post_json("/xrpc/com.atproto.repo.createRecord", record.clone()).await;
    assert_eq!(res.status, StatusCode::OK, "{}", String::from_utf8_lossy(&res.body));
    // The body was read for the check and forwarded unchanged.
    assert_eq!(json(&res.body)["body_bytes"], record.to_string().len());
    assert_eq!(json(&res.body)["headers"]["x-atproto-did"], DID);

    let like = json!({"repo": DID, "collection": "app.example.like", "record": {}});
    refused(&s.post_json("/xrpc/com.atproto.repo.createRecord", like).await, "repo:app.example.like?action=create");
    let del = json!({"repo": DID, "collection": "app.example.post", "rkey": "x"});
    assert_eq!(s.post_json("/xrpc/com.atproto.repo.deleteRecord", del).await.status, StatusCode::OK);
    let put = json!({"repo": DID, "collection": "app.example.post", "rkey": "x", "record": {}});
    assert_eq!(s.post_json("/xrpc/com.atproto.repo.putRecord", put).await.status, StatusCode::OK);

    // applyWrites: one forbidden write refuses the whole call.
    let writes = json!({"repo": DID, "writes": [
        {"$type": "com.atproto.repo.applyWrites#create", "collection": "app.example.post", "value": {}},
        {"$type": "com.atproto.repo.applyWrites#delete", "collection": "app.example.like", "rkey": "y"},
    ]});
    refused(&s.post_json("/xrpc/com.atproto.repo.applyWrites", writes).await, "repo:app.example.like?action=delete");
    let ok = json!({"repo": DID, "writes": [
        {"$type": "com.atproto.repo.applyWrites#update", "collection": "app.example.post", "rkey": "z", "value": {}},
    ]});
    assert_eq!(s.post_json("/xrpc/com.atproto.repo.applyWrites", ok).await.status, StatusCode::OK);

    // What a write means cannot be told: 400, not a pass.
    let res = s.call(Method::POST, "/xrpc/com.atproto.repo.createRecord", "application/json", b"not json").await;
    assert_eq!((res.status, json(&res.body)["error"].as_str()), (StatusCode::BAD_REQUEST, Some("InvalidRequest")));
    let res = s.post_json("/xrpc/com.atproto.repo.createRecord", json!({"record": {}})).await;
    assert_eq!(res.status, StatusCode::BAD_REQUEST);
    let res = s.post_json("/xrpc/com.atproto.repo.describeRepo", json!({})).await;
    assert_eq!(res.status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn blobs_rpc_and_account_requirements() {
    let s = setup().await;
    let png = s.call(Method::POST, "/xrpc/com.atproto.repo.uploadBlob", "image/PNG; charset=x", b"\x89PNG").await;
    assert_eq!(png.status, StatusCode::OK, "{}", String::from_utf8_lossy(&png.body));
    let mp4 = s.call(Method::POST, "/xrpc/com.atproto.repo.uploadBlob", "video/mp4", b"....").await;
    refused(&mp4, "blob:video/mp4");

    let thing = s.call(Method::GET, "/xrpc/com.example.getThing", "text/plain", b"").await;
    assert_eq!(thing.status, StatusCode::OK, "{}", String::from_utf8_lossy(&thing.body));
    let other = s.call(Method::GET, "/xrpc/com.example.getOther", "text/plain", b"").await;
    refused(&other, "rpc:com.example.getOther?aud=did:web:gateway.test%23svc");

    refused(&s.call(Method::GET, "/account/email", "text/plain", b"").await, "account:email?action=manage");
    // Plain scope strings: account:email is held, repo create on posts is covered by repo:app.example.post.
    assert_eq!(s.call(Method::GET, "/account/read", "text/plain", b"").await.status, StatusCode::OK);
}

/// A gateway whose `/sets/` route requires `app.example.authBasic`; the issuer expands
/// `include:` scopes when `expand` is on; `extra` adds top-level config.
async fn sets_gateway(extra: &str, expand: bool) -> Setup {
    let up = echo_upstream().await;
    let issuer = DevIssuer::spawn(loopback()).await.unwrap();
    let top = format!(
        "trusted_proxies: [127.0.0.1]
outbound: {{ allow_private_addresses: true, allow_http: true }}
{extra}
issuers:
  - {{ issuer: \"{}\", discovery: true, audiences: [{AUD}], expand_include: {expand} }}
",
        issuer.issuer()
    );
    let routes = "  - name: sets
    match: { path: /sets/ }
    upstream: up
    auth: dpop
    require: { include: \"app.example.authBasic?aud=did:web:gateway.test%23svc\" }
";
    let gw = Gateway::start(config_with(&top, &[("up", up)], routes)).await.unwrap();
    Setup { gw, issuer, signer: DpopSigner { key: SigningKey::generate() } }
}

/// The same with the pinned fixture sets.
async fn setup_sets(expand: bool) -> Setup {
    let pinned = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/permission_sets");
    sets_gateway(&format!("permission_sets: {{ pinned_dir: \"{pinned}\" }}"), expand).await
}

impl Setup {
    async fn get_with_scope(&self, path: &str, scope: &str) -> CurlResponse {
        let token = self.issuer.mint(DID, &self.signer.key.thumbprint(), scope, AUD, Duration::from_secs(600));
        let req = CurlRequest {
            method: Method::GET,
            url: format!("http://{}{path}", self.gw.addrs()[0]),
            token,
            signer: DpopSigner { key: SigningKey::from_jwk(&self.signer.key.private_jwk()).unwrap() },
            body: None,
            headers: Vec::new(),
        };
        curl(&req).await.unwrap()
    }
}

#[tokio::test]
async fn permission_set_requirements_and_expansion() {
    let s = setup_sets(true).await;
    // The expanded set covers the requirement.
    let res = s.get_with_scope("/sets/x", "atproto include:app.example.authBasic?aud=did:web:gateway.test%23svc").await;
    assert_eq!(res.status, StatusCode::OK, "{}", String::from_utf8_lossy(&res.body));
    // Granular scopes that cover every permission of the set work too.
    let granular = "atproto repo:app.example.post repo:app.example.like?action=delete \
        rpc:app.example.getFeed?aud=did:web:gateway.test%23svc rpc:app.example.getFeedSkeleton?aud=*";
    assert_eq!(s.get_with_scope("/sets/x", granular).await.status, StatusCode::OK);
    // One permission short: 403 naming it.
    refused(&s.get_with_scope("/sets/x", "atproto repo:app.example.post").await, "repo:app.example.like?action=delete");
    // Expanded for another audience: the rpc permission does not cover ours.
    let other = "atproto include:app.example.authBasic?aud=did:web:other.test%23svc";
    refused(&s.get_with_scope("/sets/x", other).await, "rpc:app.example.getFeed?aud=did:web:gateway.test%23svc");

    // An issuer that does not expand: an unexpanded include grants nothing.
    let plain = setup_sets(false).await;
    let res =
        plain.get_with_scope("/sets/x", "atproto include:app.example.authBasic?aud=did:web:gateway.test%23svc").await;
    refused(&res, "repo:app.example.post");
}

/// A lexicon authority on loopback: DNS `_lexicon.example.app`, a DID document naming a
/// PDS, and the PDS answering `sync.getRecord` with `car()` (swappable per test).
struct Authority {
    gw: Setup,
    car: Arc<parking_lot::Mutex<Vec<u8>>>,
    pds_calls: Arc<AtomicU64>,
}

const AUTHORITY: &str = "did:plc:lexiconauthority23456abc";

fn lexicon(id: &str) -> serde_json::Value {
    let mut doc: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/permission_sets/app.example.authBasic.json"
        ))
        .unwrap(),
    )
    .unwrap();
    doc["$type"] = json!("com.atproto.lexicon.schema");
    doc["id"] = json!(id);
    doc
}

async fn authority() -> (Authority, DidKey) {
    let key = DidKey::k256();
    let car = Arc::new(parking_lot::Mutex::new(Vec::new()));
    let pds_calls = Arc::new(AtomicU64::new(0));
    let (served, calls) = (car.clone(), pds_calls.clone());
    let pds = serve(move |req: http::Request<hyper::body::Incoming>| {
        let (served, calls) = (served.clone(), calls.clone());
        async move {
            calls.fetch_add(1, Ordering::SeqCst);
            let q = req.uri().query().unwrap_or("");
            let ok = req.uri().path() == "/xrpc/com.atproto.sync.getRecord"
                && q.contains("collection=com.atproto.lexicon.schema")
                && q.contains("rkey=app.example.authBasic");
            let body = served.lock().clone();
            let mut res = http::Response::new(atgate::body::full(if ok { body } else { Vec::new() }));
            if !ok || res.body().size_hint().exact() == Some(0) {
                *res.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
            }
            res.headers_mut().insert("content-type", HeaderValue::from_static("application/vnd.ipld.car"));
            res
        }
    })
    .await;
    let host = DevIdentity::spawn(loopback()).await.unwrap();
    host.publish(AUTHORITY, did_document(AUTHORITY, &key, None, &format!("http://{pds}")));
    let records = HashMap::from([("_lexicon.example.app".to_owned(), vec![format!("did={AUTHORITY}")])]);
    let (dns, _) = dns_server(records).await;
    let identity = format!("identity: {{ plc_url: \"{}\", dns_servers: [\"{dns}\"] }}", host.plc_url());
    let gw = sets_gateway(&identity, true).await;
    (Authority { gw, car, pds_calls }, key)
}

const GRANULAR: &str = "atproto repo:app.example.post repo:app.example.like?action=delete \
    rpc:app.example.getFeed?aud=did:web:gateway.test%23svc rpc:app.example.getFeedSkeleton?aud=*";

#[tokio::test]
async fn permission_sets_resolve_over_dns_did_and_a_verified_repo() {
    let (a, key) = authority().await;
    let records =
        vec![("com.atproto.lexicon.schema/app.example.authBasic".to_owned(), lexicon("app.example.authBasic"))];
    *a.car.lock() = RepoProof { did: AUTHORITY, key: &key, records }.car();
    let res = a.gw.get_with_scope("/sets/x", GRANULAR).await;
    assert_eq!(res.status, StatusCode::OK, "{}", String::from_utf8_lossy(&res.body));
    // The issuer's unexpanded include is expanded with the resolved set.
    let res =
        a.gw.get_with_scope("/sets/x", "atproto include:app.example.authBasic?aud=did:web:gateway.test%23svc").await;
    assert_eq!(res.status, StatusCode::OK, "{}", String::from_utf8_lossy(&res.body));
    refused(
        &a.gw.get_with_scope("/sets/x", "atproto repo:app.example.post").await,
        "repo:app.example.like?action=delete",
    );
    // Cached: the PDS going down changes nothing, and it was asked once.
    *a.car.lock() = Vec::new();
    assert_eq!(a.gw.get_with_scope("/sets/x", GRANULAR).await.status, StatusCode::OK);
    assert_eq!(a.pds_calls.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn tampered_or_missing_sets_fail_closed() {
    let unavailable = |res: &CurlResponse| {
        assert_eq!(res.status, StatusCode::SERVICE_UNAVAILABLE, "{}", String::from_utf8_lossy(&res.body));
        assert_eq!(json(&res.body)["error"], "TemporarilyUnavailable");
    };
    let good = |id: &str| vec![("com.atproto.lexicon.schema/app.example.authBasic".to_owned(), lexicon(id))];
    // Signed by another key.
    let (a, _) = authority().await;
    *a.car.lock() = RepoProof { did: AUTHORITY, key: &DidKey::k256(), records: good("app.example.authBasic") }.car();
    unavailable(&a.gw.get_with_scope("/sets/x", GRANULAR).await);
    // A record whose id is another set.
    let (a, key) = authority().await;
    *a.car.lock() = RepoProof { did: AUTHORITY, key: &key, records: good("app.example.other") }.car();
    unavailable(&a.gw.get_with_scope("/sets/x", GRANULAR).await);
    // A commit for another DID.
    let (a, key) = authority().await;
    *a.car.lock() =
        RepoProof { did: "did:plc:aaaaaaaaaaaaaaaaaaaaaaaa", key: &key, records: good("app.example.authBasic") }.car();
    unavailable(&a.gw.get_with_scope("/sets/x", GRANULAR).await);
    // Nothing published at all: the PDS fails; never an open route.
    let (a, _) = authority().await;
    unavailable(&a.gw.get_with_scope("/sets/x", GRANULAR).await);
}
