use proptest::prelude::*;

use super::*;
use crate::config::{IdentityConfig, OAuthClientConfig, OutboundConfig};

fn client_with(secret: &str) -> OAuthClient {
    client_at("https://app.example.com", secret)
}

fn client_at(public_url: &str, secret: &str) -> OAuthClient {
    let dir = std::env::temp_dir().join(format!("atgate-cookie-{}", random_id()));
    std::fs::write(&dir, secret).unwrap();
    let mut config = OAuthClientConfig::with_scope("atproto");
    config.cookie_secret = Some(crate::config::SecretRef::File(crate::config::FileRef {
        path: dir.clone(),
        origin: "test".into(),
        place: Default::default(),
        field: "oauth_client.cookie_secret_file".into(),
    }));
    let net = crate::net::Outbound::new(OutboundConfig::default());
    let resolver = crate::identity::Resolver::new(&IdentityConfig::default(), net.clone());
    let url = url::Url::parse(public_url).unwrap();
    let client = OAuthClient::build(&config, &url, resolver, net, None).unwrap();
    let _ = std::fs::remove_file(dir);
    client
}

fn with_cookie(value: &str) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(header::COOKIE, HeaderValue::from_str(&format!("other=1; __Host-atgate_session={value}; x=y")).unwrap());
    h
}

#[test]
fn client_identity_lives_under_public_url() {
    let c = client_with("0123456789abcdef0123456789abcdef");
    assert_eq!(c.client_id, "https://app.example.com/oauth/client-metadata.json");
    assert_eq!(c.redirect_uri, "https://app.example.com/oauth/callback");
    let meta: Value = serde_json::from_slice(&c.metadata).unwrap();
    assert_eq!(meta["client_id"], c.client_id);
    assert_eq!(meta["token_endpoint_auth_method"], "private_key_jwt");
    assert_eq!(meta["dpop_bound_access_tokens"], true);
    assert_eq!(meta["jwks_uri"], "https://app.example.com/oauth/jwks.json");
    let jwks: Value = serde_json::from_slice(&c.keys.jwks).unwrap();
    assert!(jwks["keys"][0].get("d").is_none(), "only public keys are published");
    let cookie = c.set_cookie("atgate_session", Some("v"), "/", Duration::from_secs(60));
    assert_eq!(cookie, "atgate_session=v; Path=/; Max-Age=60; HttpOnly; SameSite=Lax; Secure");
}

#[test]
fn signed_cookies_verify_and_foreign_ones_do_not() {
    let c = client_with("0123456789abcdef0123456789abcdef");
    let value = c.sign("session", "abc");
    assert_eq!(c.session_id(&with_cookie(&value)), Some("abc"));
    let other = client_with("another secret, 32 bytes or more!!");
    assert_eq!(other.session_id(&with_cookie(&value)), None, "signed with another key");
    // A flow cookie is not a session cookie, even with the same key.
    assert_eq!(c.session_id(&with_cookie(&c.sign("flow", "abc"))), None);
    for bad in ["", "abc", "abc.", ".sig", "abc.!!!", &format!("abd.{}", value.split_once('.').unwrap().1)] {
        assert_eq!(c.session_id(&with_cookie(bad)), None, "{bad:?}");
    }
}

proptest! {
    #[test]
    fn any_change_to_a_session_cookie_is_refused(pos in 0usize..200, byte in 0x21u8..0x7f) {
        let c = client_with("0123456789abcdef0123456789abcdef");
        let id = b64url(&[7u8; 32]);
        let value = c.sign("session", &id);
        let untouched = with_cookie(&value);
        prop_assert_eq!(c.session_id(&untouched), Some(id.as_str()), "the untouched cookie is accepted");
        let mut bytes = value.clone().into_bytes();
        let pos = pos % bytes.len();
        prop_assume!(bytes[pos] != byte && byte != b';' && byte != b',');
        bytes[pos] = byte;
        let tampered = String::from_utf8(bytes).unwrap();
        let headers = with_cookie(&tampered);
        let found = c.session_id(&headers);
        // The only acceptable outcome is the untouched id (a base64url padding-bit
        // variant does not decode differently: the decoder refuses non-canonical text).
        prop_assert!(found.is_none(), "tampered cookie {tampered:?} accepted");
    }
}

#[test]
fn return_targets_stay_on_this_site() {
    assert_eq!(safe_return(Some("/app/x?y=1")), "/app/x?y=1");
    for bad in ["//evil.example/", "/\\evil.example", "https://evil.example/", "app", "/a\nb"] {
        assert_eq!(safe_return(Some(bad)), "/", "{bad:?}");
    }
    assert_eq!(safe_return(None), "/");
}

#[test]
fn state_changing_requests_must_come_from_this_origin() {
    let c = client_with("0123456789abcdef0123456789abcdef");
    let mut h = HeaderMap::new();
    assert!(same_origin(&c, &Method::GET, &h).is_ok());
    assert_eq!(same_origin(&c, &Method::POST, &h), Err(FlowError::Csrf), "no Origin, no Referer");
    h.insert(header::REFERER, HeaderValue::from_static("https://app.example.com/page"));
    assert!(same_origin(&c, &Method::POST, &h).is_ok());
    h.insert(header::ORIGIN, HeaderValue::from_static("https://evil.example"));
    assert_eq!(same_origin(&c, &Method::DELETE, &h), Err(FlowError::Csrf), "Origin wins over Referer");
    h.insert(header::ORIGIN, HeaderValue::from_static("https://app.example.com"));
    assert!(same_origin(&c, &Method::PUT, &h).is_ok());
    h.insert(header::ORIGIN, HeaderValue::from_static("null"));
    assert_eq!(same_origin(&c, &Method::POST, &h), Err(FlowError::Csrf));
    // Fetch Metadata overrules a matching Origin.
    h.insert(header::ORIGIN, HeaderValue::from_static("https://app.example.com"));
    for site in ["cross-site", "same-site"] {
        h.insert("sec-fetch-site", HeaderValue::from_static(site));
        assert_eq!(same_origin(&c, &Method::POST, &h), Err(FlowError::Csrf), "{site}");
    }
    h.insert("sec-fetch-site", HeaderValue::from_static("same-origin"));
    assert!(same_origin(&c, &Method::POST, &h).is_ok());
}

#[test]
fn secure_cookies_carry_the_host_prefix_and_path_slash() {
    let c = client_with("0123456789abcdef0123456789abcdef");
    assert_eq!((c.session_cookie_name(), c.flow_cookie()), ("__Host-atgate_session", "__Host-atgate_session_flow"));
    assert_eq!(c.flow_cookie_path(), "/", "__Host- requires Path=/");
    assert_eq!(
        c.own_cookie_names(),
        ["__Host-atgate_session", "__Host-atgate_session_flow", "atgate_session", "atgate_session_flow"]
    );
    // Over http the prefix would make browsers drop the cookie: plain names.
    let plain = client_at("http://127.0.0.1:8080", "0123456789abcdef0123456789abcdef");
    assert_eq!((plain.session_cookie_name(), plain.flow_cookie()), ("atgate_session", "atgate_session_flow"));
    assert_eq!(plain.flow_cookie_path(), "/oauth/callback");
    assert_eq!(plain.own_cookie_names(), c.own_cookie_names(), "stripped under every spelling either way");
    // A session cookie under the bare name is not this client's session.
    let mut h = HeaderMap::new();
    h.insert(header::COOKIE, HeaderValue::from_str(&format!("atgate_session={}", c.sign("session", "abc"))).unwrap());
    assert_eq!(c.session_id(&h), None);
}

#[test]
fn own_cookies_never_reach_the_upstream() {
    let c = client_with("0123456789abcdef0123456789abcdef");
    let mut h = HeaderMap::new();
    h.append(header::COOKIE, HeaderValue::from_static("theme=dark; atgate_session=abc.def"));
    h.append(header::COOKIE, HeaderValue::from_static("atgate_session_flow=x; lang=en"));
    h.append(header::COOKIE, HeaderValue::from_static("__Host-atgate_session=a; __HOST-ATGATE_SESSION_FLOW=b; id=1"));
    h.append(header::COOKIE, HeaderValue::from_static("Atgate_Session=c;__host-atgate_session_flow=d"));
    strip_own_cookies(&c, &mut h);
    assert_eq!(h.get_all(header::COOKIE).iter().collect::<Vec<_>>(), ["theme=dark; lang=en; id=1"]);
    let mut only = with_cookie("abc.def");
    only.insert(header::COOKIE, HeaderValue::from_static("atgate_session=abc.def"));
    strip_own_cookies(&c, &mut only);
    assert!(!only.contains_key(header::COOKIE));
}

#[test]
fn pages_for_browsers_json_for_apis() {
    let mut h = HeaderMap::new();
    h.insert(header::ACCEPT, HeaderValue::from_static("text/html,application/xhtml+xml,*/*;q=0.8"));
    assert!(wants_html(&h));
    h.insert(header::ACCEPT, HeaderValue::from_static("application/json"));
    assert!(!wants_html(&h));
    assert!(!wants_html(&HeaderMap::new()));
}

#[tokio::test]
async fn garbage_in_the_store_is_no_session() {
    let c = client_with("0123456789abcdef0123456789abcdef");
    let store = store::MemorySessionStore::new(1 << 20);
    let id = b64url(&[9u8; 32]);
    let headers = with_cookie(&c.session_cookie(&id));
    let check = |store| authenticate(&c, store, &Method::GET, &headers);
    assert_eq!(check(&store).await, Err(FlowError::SessionExpired), "nothing stored");
    for garbage in [&b"not json"[..], b"{}", b"{\"did\": 7}", b"[]"] {
        store.set(&c.store_key("s", &id), Bytes::copy_from_slice(garbage), Duration::from_secs(60)).await.unwrap();
        assert_eq!(check(&store).await, Err(FlowError::SessionExpired), "{:?}", String::from_utf8_lossy(garbage));
    }
}

#[test]
fn stored_values_open_only_with_their_id_and_key() {
    let c = client_with("0123456789abcdef0123456789abcdef");
    let (id, other) = (b64url(&[1u8; 32]), b64url(&[2u8; 32]));
    let sealed = c.seal("s", &id, b"{\"access_token\":\"secret\"}").unwrap();
    assert!(!sealed.windows(6).any(|w| w == b"secret"), "tokens are not stored in the clear");
    assert_eq!(c.open("s", &id, &sealed).unwrap(), b"{\"access_token\":\"secret\"}");
    assert_eq!(c.open("s", &other, &sealed), None, "another session's id");
    assert_eq!(c.open("p", &id, &sealed), None, "another kind");
    assert_eq!(client_with("another secret, 32 bytes or more!!").open("s", &id, &sealed), None, "another key");
    for i in 0..sealed.len() {
        let mut bad = sealed.to_vec();
        bad[i] ^= 1;
        assert_eq!(c.open("s", &id, &bad), None, "byte {i} changed");
    }
    assert_eq!(c.open("s", &id, &sealed[..10]), None);
    let key = c.store_key("s", &id);
    assert!(key.starts_with("s:") && !key.contains(&id), "key names do not reveal the id: {key}");
}
