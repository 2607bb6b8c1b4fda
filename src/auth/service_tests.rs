//! Service-JWT rules (ATPROTO-AUTH.md §10.3) against the §15.6 vectors and a DID
//! document host on loopback.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};

use super::*;
use crate::auth::dpop::replay::MemoryReplayStore;
use crate::config::{IdentityConfig, OutboundConfig, decode_hex};
use crate::net::Outbound;
use crate::tools::dev_identity::{DevIdentity, DidKey, did_document};

const T: u64 = 1_767_225_600;
const DID: &str = "did:plc:ewvi7nxzyoun6zhxrhs64oiz";
const K256_SECRET: &str = "9085d2bef69286a6cbb51623c8fa258629945cd55ca705cc4e66700396894e0c";
const P256_SECRET: &str = "5a9a2d5dc3e8bc1b04ccb6e0e29dd5e0b7b3d4c9d1ea3c36c8b4b76c7e0a1f2d";
const K256_LOW: &str = "eyJ0eXAiOiJKV1QiLCJhbGciOiJFUzI1NksifQ.eyJpYXQiOjE3NjcyMjU2MDAsImlzcyI6ImRpZDpwbGM6ZXd2aTdueHp5b3VuNnpoeHJoczY0b2l6IiwiYXVkIjoiZGlkOndlYjpnYXRld2F5LmV4YW1wbGUuY29tI2V4YW1wbGVfc3ZjIiwiZXhwIjoxNzY3MjI1NjYwLCJseG0iOiJjb20uZXhhbXBsZS5nZXRUaGluZyIsImp0aSI6IjI1ZGY4NmY0MGMxMDdhMDRjOTQ1OWVkMGM2MDFiZmFkIn0.U9_DrrBqzPT_zP9RSrmkfi1Ng7EH90INXvs9mdf5gM1TuvqIIjCiAkHYtDxpErmlhZoezNLr85VURZ-KCORvfA";
const K256_HIGH: &str = "eyJ0eXAiOiJKV1QiLCJhbGciOiJFUzI1NksifQ.eyJpYXQiOjE3NjcyMjU2MDAsImlzcyI6ImRpZDpwbGM6ZXd2aTdueHp5b3VuNnpoeHJoczY0b2l6IiwiYXVkIjoiZGlkOndlYjpnYXRld2F5LmV4YW1wbGUuY29tI2V4YW1wbGVfc3ZjIiwiZXhwIjoxNzY3MjI1NjYwLCJseG0iOiJjb20uZXhhbXBsZS5nZXRUaGluZyIsImp0aSI6ImZkYWMwNjFiM2JmMjgyZDc5NTljZDE0NDgyMjNjNWZiIn0.VbHQo0HIwF-4GqzZnxnfDRjsV6yfExAItl0dNYrXdproCWDB9JvTFAmTVOyFYE6Vknrl2kXx4d8nEC2vMULtSA";
const P256_TOKEN: &str = "eyJ0eXAiOiJKV1QiLCJhbGciOiJFUzI1NiJ9.eyJpYXQiOjE3NjcyMjU2MDAsImlzcyI6ImRpZDpwbGM6ZXd2aTdueHp5b3VuNnpoeHJoczY0b2l6IiwiYXVkIjoiZGlkOndlYjpnYXRld2F5LmV4YW1wbGUuY29tI2V4YW1wbGVfc3ZjIiwiZXhwIjoxNzY3MjI1NjYwLCJseG0iOiJjb20uZXhhbXBsZS5nZXRUaGluZyIsImp0aSI6IjA1M2QyNmFkMDE1YWJhOWM5MTBmMDc4ZWNhNWFiODFjIn0.b7sId7uGm0-bsK5cJdWCMX2X-j25w-VO13Vwj6OekXolvEeWn2LnlCTxFJKLyDC7rCmFi0DjlB3lNJEsgaAkfw";
const LXM: &str = "com.example.getThing";

fn k256_key() -> DidKey {
    DidKey::from_bytes(true, &decode_hex(K256_SECRET).unwrap()).unwrap()
}

fn p256_key() -> DidKey {
    DidKey::from_bytes(false, &decode_hex(P256_SECRET).unwrap()).unwrap()
}

struct Fixture {
    host: DevIdentity,
    verifier: ServiceVerifier,
    replay: MemoryReplayStore,
    policy: PrincipalPolicy,
}

impl Fixture {
    async fn new(key: &DidKey) -> Fixture {
        Fixture::with(key, |_, _| {}).await
    }

    async fn with(key: &DidKey, tweak: impl FnOnce(&mut ServiceAuthConfig, &mut IdentityConfig)) -> Fixture {
        let host = DevIdentity::spawn("127.0.0.1:0".parse().unwrap()).await.unwrap();
        host.publish(DID, did_document(DID, key, Some("alice.test"), "https://pds.example.com"));
        let mut identity =
            IdentityConfig { plc_url: url::Url::parse(&host.plc_url()).unwrap(), ..IdentityConfig::default() };
        let mut config = ServiceAuthConfig {
            did: Some("did:web:gateway.example.com".into()),
            service_id: "example_svc".into(),
            ..ServiceAuthConfig::default()
        };
        tweak(&mut config, &mut identity);
        let net = Outbound::new(OutboundConfig {
            allow_private_addresses: true,
            allow_http: true,
            ..OutboundConfig::default()
        });
        let resolver = Resolver::new(&identity, net);
        Fixture {
            host,
            verifier: ServiceVerifier::new(config, resolver),
            replay: MemoryReplayStore::new(1000),
            policy: PrincipalPolicy::default(),
        }
    }

    async fn check_at(&self, token: &str, lxm: &str, now: u64) -> Result<ServiceToken, AuthError> {
        let expect = Expect { lxm, single_use: true, policy: &self.policy };
        verify(&self.verifier, &self.replay, token, expect, now).await
    }

    async fn check(&self, token: &str) -> Result<ServiceToken, AuthError> {
        self.check_at(token, LXM, T).await
    }
}

fn service_error(r: Result<ServiceToken, AuthError>) -> ServiceError {
    match r {
        Err(AuthError::Service(e)) => e,
        other => panic!("expected a service error, got {other:?}"),
    }
}

/// Signs arbitrary header and claims with a DID key (for malformed-token cases).
fn sign(key: &DidKey, header: &Value, claims: &Value) -> String {
    let input =
        format!("{}.{}", jose::b64url(header.to_string().as_bytes()), jose::b64url(claims.to_string().as_bytes()));
    let DidKey::K256(k) = key else { panic!("k256 only") };
    use k256::ecdsa::signature::Signer;
    let sig: k256::ecdsa::Signature = k.sign(input.as_bytes());
    format!("{input}.{}", jose::b64url(&sig.to_bytes()))
}

fn claims(now: u64) -> Value {
    json!({"iat": now, "iss": DID, "aud": "did:web:gateway.example.com#example_svc", "exp": now + 60, "lxm": LXM, "jti": jose::sign::random_id()})
}

#[tokio::test]
async fn spec_vectors() {
    let f = Fixture::new(&k256_key()).await;
    let ok = f.check(K256_LOW).await.unwrap();
    assert_eq!(ok.did, DID);
    assert_eq!(ok.aud, "did:web:gateway.example.com#example_svc");
    assert_eq!(ok.lxm.as_deref(), Some(LXM));
    // The same token again: replayed.
    assert_eq!(service_error(f.check(K256_LOW).await), ServiceError::Replayed);
    // High-S is accepted as the reference does.
    f.check(K256_HIGH).await.unwrap();
    // Another method.
    let e = service_error(f.check_at(K256_HIGH, "com.example.other", T).await);
    assert_eq!(e, ServiceError::Lxm("com.example.other".into()));
    assert_eq!(e.message(), r#"bad jwt lexicon method ("lxm"). must match: com.example.other"#);
    assert_eq!(e.name(), "BadJwtLexiconMethod");
    // The P-256 token against the k256 key: alg and key disagree.
    let e = service_error(f.check(P256_TOKEN).await);
    assert_eq!((e.name(), e.message().as_str()), ("BadJwtSignature", "could not verify jwt signature"));

    let p = Fixture::new(&p256_key()).await;
    assert_eq!(p.check(P256_TOKEN).await.unwrap().did, DID);
    // The k256 token against the P-256 document.
    assert_eq!(service_error(p.check(K256_LOW).await).name(), "BadJwtSignature");
}

#[tokio::test]
async fn audience_rules() {
    // A service with another id: the token's `#example_svc` is not ours.
    let other = Fixture::with(&k256_key(), |c, _| c.service_id = "other_svc".into()).await;
    let e = service_error(other.check(K256_LOW).await);
    assert_eq!((e.name(), e.message().as_str()), ("BadJwtAudience", "jwt audience does not match service did"));

    // Bare DID audience: accepted by default, refused when turned off.
    let key = k256_key();
    let mut c = claims(T);
    c["aud"] = json!("did:web:gateway.example.com");
    let bare = sign(&key, &json!({"typ": "JWT", "alg": "ES256K"}), &c);
    let f = Fixture::new(&key).await;
    f.check(&bare).await.unwrap();
    let strict = Fixture::with(&key, |c, _| c.accept_bare_did_audience = false).await;
    assert_eq!(service_error(strict.check(&bare).await), ServiceError::Audience);
    // Another service's DID.
    c["aud"] = json!("did:web:other.example.com#example_svc");
    c["jti"] = json!("x1");
    let elsewhere = sign(&key, &json!({"typ": "JWT", "alg": "ES256K"}), &c);
    assert_eq!(service_error(f.check(&elsewhere).await), ServiceError::Audience);
}

#[tokio::test]
async fn time_rules() {
    let f = Fixture::new(&k256_key()).await;
    // exp = T+60: valid at exactly T+60, expired a second later.
    assert_eq!(service_error(f.check_at(K256_LOW, LXM, T + 61).await), ServiceError::Expired);
    assert_eq!(service_error(f.check_at(K256_LOW, LXM, T + 61).await).message(), "jwt expired");
    f.check_at(K256_LOW, LXM, T + 60).await.unwrap();

    let key = k256_key();
    let header = json!({"typ": "JWT", "alg": "ES256K"});
    let mut c = claims(T);
    c.as_object_mut().unwrap().remove("iat");
    assert_eq!(service_error(f.check(&sign(&key, &header, &c)).await), ServiceError::IatMissing);
    let mut c = claims(T + 61);
    c["exp"] = json!(T + 121);
    assert_eq!(service_error(f.check(&sign(&key, &header, &c)).await), ServiceError::IatFuture);
    let mut c = claims(T);
    c["exp"] = json!(T + 3601);
    assert_eq!(service_error(f.check(&sign(&key, &header, &c)).await), ServiceError::Lifetime);
    c["exp"] = json!(T + 3600);
    f.check(&sign(&key, &header, &c)).await.unwrap();
    // Without lxm, 60 s at most (and lxm is required here anyway).
    let mut c = claims(T);
    c.as_object_mut().unwrap().remove("lxm");
    c["exp"] = json!(T + 61);
    assert_eq!(service_error(f.check(&sign(&key, &header, &c)).await), ServiceError::Lifetime);
    c["exp"] = json!(T + 60);
    let e = service_error(f.check(&sign(&key, &header, &c)).await);
    assert_eq!(e.message(), r#"missing jwt lexicon method ("lxm"). must match: com.example.getThing"#);
}

#[tokio::test]
async fn structure_and_type_rules() {
    let key = k256_key();
    let f = Fixture::new(&key).await;
    for bad in ["", "a.b", "a.b.c.d", "!!.!!.!!", "e30.e30.AA", "W10.e30.AA"] {
        assert_eq!(service_error(f.check(bad).await), ServiceError::Malformed, "{bad}");
    }
    for typ in ["at+jwt", "refresh+jwt", "dpop+jwt", "application/at+jwt"] {
        let t = sign(&key, &json!({"typ": typ, "alg": "ES256K"}), &claims(T));
        let e = service_error(f.check(&t).await);
        assert_eq!((e.name(), e.message()), ("BadJwtType", format!("Invalid jwt type \"{typ}\"")));
    }
    let header = json!({"typ": "JWT", "alg": "ES256K"});
    for (name, value) in [("iss", json!(5)), ("aud", json!(null)), ("exp", json!("soon")), ("lxm", json!(1))] {
        let mut c = claims(T);
        c[name] = value;
        assert_eq!(service_error(f.check(&sign(&key, &header, &c)).await), ServiceError::Malformed, "{name}");
    }
    let mut c = claims(T);
    c["iss"] = json!("https://pds.example.com");
    let e = service_error(f.check(&sign(&key, &header, &c)).await);
    assert_eq!((e.name(), e.message().as_str()), ("BadJwtIss", "jwt iss is not a valid did"));
    c["iss"] = json!(format!("{DID}#"));
    assert_eq!(service_error(f.check(&sign(&key, &header, &c)).await), ServiceError::Iss);
    // No jti: nothing to remember, refused while replay protection is on.
    let mut c = claims(T);
    c.as_object_mut().unwrap().remove("jti");
    assert_eq!(service_error(f.check(&sign(&key, &header, &c)).await), ServiceError::JtiMissing);
    let expect = Expect { lxm: LXM, single_use: false, policy: &f.policy };
    verify(&f.verifier, &f.replay, &sign(&key, &header, &c), expect, T).await.unwrap();
}

#[tokio::test]
async fn keys_and_signatures() {
    let key = k256_key();
    let f = Fixture::new(&key).await;
    let header = json!({"typ": "JWT", "alg": "ES256K"});
    // `#atproto_labeler` issuers sign with `#atproto_label`, which this document lacks.
    let mut c = claims(T);
    c["iss"] = json!(format!("{DID}#atproto_labeler"));
    let e = service_error(f.check(&sign(&key, &header, &c)).await);
    assert_eq!((e.name(), e.message().as_str()), ("AuthenticationRequired", "missing or bad key in did doc"));
    // A `kid` naming the allowed `#atproto` works; any other id does not.
    f.check(&sign(&key, &json!({"typ": "JWT", "alg": "ES256K", "kid": "#atproto"}), &claims(T))).await.unwrap();
    let other = sign(&key, &json!({"typ": "JWT", "alg": "ES256K", "kid": "#atproto_label"}), &claims(T));
    assert_eq!(service_error(f.check(&other).await), ServiceError::NoKey);
    // Unknown alg.
    let t = sign(&key, &json!({"typ": "JWT", "alg": "HS256"}), &claims(T));
    assert_eq!(service_error(f.check(&t).await), ServiceError::Alg);

    // DER-encoded signature of the low-S vector: accepted unless strict.
    let (input, sig) = K256_LOW.rsplit_once('.').unwrap();
    let raw = jose::b64url_decode(sig).unwrap();
    let der = k256::ecdsa::Signature::from_slice(&raw).unwrap().to_der();
    let der_token = format!("{input}.{}", jose::b64url(der.as_bytes()));
    f.check(&der_token).await.unwrap();
    let strict = Fixture::with(&key, |c, _| c.strict_low_s = true).await;
    assert_eq!(service_error(strict.check(K256_HIGH).await), ServiceError::Signature);
    assert_eq!(service_error(strict.check(&der_token).await), ServiceError::Signature);
    strict.check(K256_LOW).await.unwrap();

    // Any single changed byte of a valid token is refused.
    for i in 0..K256_LOW.len() {
        let mut bytes = K256_LOW.as_bytes().to_vec();
        bytes[i] = if bytes[i] == b'A' { b'B' } else { b'A' };
        let Ok(t) = String::from_utf8(bytes) else { continue };
        if t == K256_LOW {
            continue;
        }
        let expect = Expect { lxm: LXM, single_use: false, policy: &f.policy };
        assert!(verify(&f.verifier, &f.replay, &t, expect, T).await.is_err(), "byte {i}");
    }
}

#[tokio::test]
async fn key_rotation_and_forced_refresh_limits() {
    let old = DidKey::k256();
    let f = Fixture::new(&old).await;
    let now = crate::auth::now_ms() / 1000;
    f.check_at(&old.service_jwt(DID, "did:web:gateway.example.com#example_svc", Some(LXM), 60), LXM, now)
        .await
        .unwrap();
    assert_eq!(f.host.fetches(), 1);
    // The account rotates its key: the first token with the new key triggers one refetch.
    let new = DidKey::p256();
    f.host.publish(DID, did_document(DID, &new, None, "https://pds.example.com"));
    let token = new.service_jwt(DID, "did:web:gateway.example.com#example_svc", Some(LXM), 60);
    // Even across curves: the ES256 token does not fit the cached k256 key, so the
    // document is refetched once and the new key used.
    f.check_at(&token, LXM, now).await.unwrap();
    assert_eq!(f.host.fetches(), 2);
    // A newer key within the refresh interval is not fetched (rate limit): refused.
    let newer = DidKey::k256();
    f.host.publish(DID, did_document(DID, &newer, None, "https://pds.example.com"));
    let token = newer.service_jwt(DID, "did:web:gateway.example.com#example_svc", Some(LXM), 60);
    assert_eq!(service_error(f.check_at(&token, LXM, now).await), ServiceError::Alg);
    assert_eq!(f.host.fetches(), 2);
    // A flood of forged tokens for the DID: no refetch within the refresh interval.
    let forger = DidKey::p256();
    for _ in 0..50 {
        let forged = forger.service_jwt(DID, "did:web:gateway.example.com#example_svc", Some(LXM), 60);
        assert_eq!(service_error(f.check_at(&forged, LXM, now).await), ServiceError::Signature);
    }
    assert_eq!(f.host.fetches(), 2);
}

#[tokio::test]
async fn resolution_failures() {
    let key = k256_key();
    // Documents are stale at once: every hit starts a background refetch.
    let f = Fixture::with(&key, |_, i| i.fresh = Duration::ZERO).await;
    // Cached, then the directory goes down: the stale document keeps serving.
    f.check(K256_LOW).await.unwrap();
    f.host.set_down(true);
    let fetched = f.host.fetches();
    f.check(K256_HIGH).await.unwrap();
    // The failed background refetch (waited for by its arrival, not by time) keeps it.
    while f.host.fetches() == fetched {
        tokio::task::yield_now().await;
    }
    let t = sign(&key, &json!({"typ": "JWT", "alg": "ES256K"}), &claims(T));
    f.check(&t).await.unwrap();

    // Nothing cached and the directory down: 503, not 401.
    let down = Fixture::new(&key).await;
    down.host.set_down(true);
    assert!(matches!(down.check(K256_LOW).await, Err(AuthError::IdentityUnavailable(_))));
    // Up again, but the failure is remembered for error_ttl (10 s).
    down.host.set_down(false);
    assert!(matches!(down.check(K256_LOW).await, Err(AuthError::IdentityUnavailable(_))));

    // A DID the directory does not know: 401, and negative-cached.
    let gone = Fixture::new(&key).await;
    gone.host.remove(DID);
    let e = service_error(gone.check(K256_LOW).await);
    assert_eq!((e.name(), e.message().as_str()), ("AuthenticationRequired", "could not resolve iss did"));
    let before = gone.host.fetches();
    for _ in 0..5 {
        assert_eq!(service_error(gone.check(K256_LOW).await), ServiceError::Unresolvable);
    }
    assert_eq!(gone.host.fetches(), before);
    // Unsupported methods are not fetched at all.
    let mut c = claims(T);
    c["iss"] = json!("did:key:zQ3shokFTS3brHcDQrn82RUDfCZESWL1ZdCEJwekUDPQiYBme");
    let t = sign(&key, &json!({"typ": "JWT", "alg": "ES256K"}), &c);
    assert_eq!(service_error(gone.check(&t).await), ServiceError::Unresolvable);
    assert_eq!(gone.host.fetches(), before);
}

#[tokio::test]
async fn concurrent_misses_share_one_fetch() {
    let key = DidKey::k256();
    let f = Arc::new(Fixture::new(&key).await);
    let now = crate::auth::now_ms() / 1000;
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let f = f.clone();
        let token = key.service_jwt(DID, "did:web:gateway.example.com#example_svc", Some(LXM), 60);
        tasks.push(tokio::spawn(async move { f.check_at(&token, LXM, now).await.map(|t| t.did) }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap().unwrap(), DID);
    }
    assert_eq!(f.host.fetches(), 1);
}

#[tokio::test]
async fn policy_lists() {
    let key = k256_key();
    let mut f = Fixture::new(&key).await;
    f.policy = PrincipalPolicy { deny_dids: vec![DID.into()], ..Default::default() };
    assert!(matches!(f.check(K256_LOW).await, Err(AuthError::Denied)));
    f.policy = PrincipalPolicy { allow_dids: Some(vec!["did:plc:someoneelse".into()]), ..Default::default() };
    assert!(matches!(f.check(K256_LOW).await, Err(AuthError::Denied)));
    f.policy = PrincipalPolicy { allow_pds: Some(vec!["https://other-pds.example.com".into()]), ..Default::default() };
    assert!(matches!(f.check(K256_LOW).await, Err(AuthError::Denied)));
    f.policy = PrincipalPolicy { allow_pds: Some(vec!["https://pds.example.com".into()]), ..Default::default() };
    f.check(K256_LOW).await.unwrap();
}

/// A fixture whose document host serves its own `did:web` with `id` spelled `doc_id`.
async fn web_fixture(key: &DidKey, doc_id: impl FnOnce(&str) -> String) -> (Fixture, String) {
    let f = Fixture::new(key).await;
    let web = f.host.web_did().to_owned();
    f.host.publish(&web, did_document(&doc_id(&web), key, None, "https://pds.example.com"));
    (f, web)
}

/// `did:web:localhost%3A<port>` spelled with upper-case host and lower-case escape.
fn shouted(web: &str) -> String {
    web.replace("localhost%3A", "LocalHost%3a")
}

#[tokio::test]
async fn did_web_spellings_are_one_identity() {
    let key = DidKey::p256();
    let (mut f, web) = web_fixture(&key, str::to_owned).await;
    let now = crate::auth::now_ms() / 1000;
    let aud = "did:web:gateway.example.com#example_svc";
    let other = shouted(&web);
    assert_ne!(other, web);
    // Another spelling of the issuer is the same identity, reported canonically.
    let token = f.check_at(&key.service_jwt(&other, aud, Some(LXM), 60), LXM, now).await.unwrap();
    assert_eq!(token.did, web);
    // One replay namespace: the same jti under the other spelling is a replay.
    let mut c = json!({"iat": now, "iss": web, "aud": aud, "exp": now + 60, "lxm": LXM, "jti": "same"});
    let header = json!({"typ": "JWT", "alg": "ES256"});
    let sign_p256 = |c: &Value| {
        let input =
            format!("{}.{}", jose::b64url(header.to_string().as_bytes()), jose::b64url(c.to_string().as_bytes()));
        format!("{input}.{}", jose::b64url(&key.sign_bytes(input.as_bytes())))
    };
    f.check_at(&sign_p256(&c), LXM, now).await.unwrap();
    c["iss"] = json!(other);
    assert_eq!(service_error(f.check_at(&sign_p256(&c), LXM, now).await), ServiceError::Replayed);
    // One policy: a deny list naming the canonical DID refuses every spelling.
    f.policy = PrincipalPolicy { deny_dids: vec![web.clone()], ..Default::default() };
    let fresh = key.service_jwt(&other, aud, Some(LXM), 60);
    assert!(matches!(f.check_at(&fresh, LXM, now).await, Err(AuthError::Denied)));
    // did:plc is lower case by definition: an upper-case one is not a DID.
    let mut c = claims(now);
    c["iss"] = json!(DID.replace("ewvi", "EWVI"));
    let upper = sign(&k256_key(), &json!({"typ": "JWT", "alg": "ES256K"}), &c);
    assert_eq!(service_error(f.check_at(&upper, LXM, now).await), ServiceError::Iss);
}

#[tokio::test]
async fn documents_naming_themselves_in_another_spelling_are_refused() {
    // The issuer controls its did:web host, so it can make the document's id match any
    // spelling it signs with; that must not make a second identity past a deny list.
    let key = DidKey::p256();
    let (mut f, web) = web_fixture(&key, shouted).await;
    let now = crate::auth::now_ms() / 1000;
    let aud = "did:web:gateway.example.com#example_svc";
    let token = key.service_jwt(&shouted(&web), aud, Some(LXM), 60);
    assert_eq!(service_error(f.check_at(&token, LXM, now).await), ServiceError::Unresolvable);
    f.policy = PrincipalPolicy { deny_dids: vec![web.clone()], ..Default::default() };
    let token = key.service_jwt(&shouted(&web), aud, Some(LXM), 60);
    assert!(matches!(f.check_at(&token, LXM, now).await, Err(AuthError::Denied)));
}

#[tokio::test]
async fn extreme_times_are_refused_without_panicking() {
    let key = k256_key();
    let f = Fixture::new(&key).await;
    let header = json!({"typ": "JWT", "alg": "ES256K"});
    let token = |iat: Value, exp: Value, nbf: Option<Value>| {
        let mut c = claims(T);
        c["iat"] = iat;
        c["exp"] = exp;
        if let Some(nbf) = nbf {
            c["nbf"] = nbf;
        }
        sign(&key, &header, &c)
    };
    let (max, min, huge) = (json!(i64::MAX), json!(i64::MIN), json!(1e300));
    for (iat, exp, expected) in [
        (json!(T), max.clone(), ServiceError::Lifetime),
        (json!(T), json!(u64::MAX), ServiceError::Lifetime),
        (json!(T), huge.clone(), ServiceError::Lifetime),
        (json!(-1e300), json!(T + 60), ServiceError::Lifetime),
        (min.clone(), json!(T + 60), ServiceError::Lifetime),
        (max.clone(), max.clone(), ServiceError::IatFuture),
        (huge.clone(), huge.clone(), ServiceError::IatFuture),
        (json!(T), json!(-1), ServiceError::Expired),
        (json!(T), min.clone(), ServiceError::Expired),
        (json!(T), json!(-1e300), ServiceError::Expired),
        (json!(T), json!(1e-300), ServiceError::Expired),
    ] {
        let e = service_error(f.check(&token(iat.clone(), exp.clone(), None)).await);
        assert_eq!(e, expected, "iat {iat}, exp {exp}");
    }
    // `nbf` is not a service-auth claim (the reference ignores it): any value passes.
    for nbf in [max, min, huge, json!(-1e300)] {
        f.check(&token(json!(T), json!(T + 60), Some(nbf))).await.unwrap();
    }
    // Limits the configuration stretches to the end of `Duration`: a token living that
    // long cannot be remembered against replay, so it is refused, not a panic.
    let open = Fixture::with(&key, |c, _| {
        c.max_lifetime = Duration::MAX;
        c.iat_skew = Duration::MAX;
    })
    .await;
    for (iat, exp) in [(1e19, 2e19), (1e19, 1e300), (T as f64, 1.8e19)] {
        let t = token(json!(iat), json!(exp), None);
        assert_eq!(service_error(open.check(&t).await), ServiceError::Lifetime, "iat {iat}, exp {exp}");
    }
}

#[test]
fn dispatch_and_paths() {
    assert!(looks_like_service_jwt(K256_LOW));
    // The §15.3 OAuth access token: `typ` at+jwt, `iss` a URL, no `lxm`.
    let oauth = "eyJ0eXAiOiJhdCtqd3QiLCJhbGciOiJFUzI1NiIsImtpZCI6ImFzLWtleS0xIn0.eyJpc3MiOiJodHRwczovL2F1dGguZXhhbXBsZS5jb20ifQ.AA";
    assert!(!looks_like_service_jwt(oauth));
    assert!(!looks_like_service_jwt("garbage"));
    assert_eq!(xrpc_method("/xrpc/com.example.getThing"), Some("com.example.getThing"));
    assert_eq!(xrpc_method("/xrpc/com.example.getThing/x"), None);
    assert_eq!(xrpc_method("/xrpc/"), None);
    assert_eq!(xrpc_method("/other/com.example.getThing"), None);
}
