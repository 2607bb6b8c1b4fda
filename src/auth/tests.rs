//! The DPoP path against the vectors of ATPROTO-AUTH.md §15 and every rule of §3-5.

use std::time::Duration;

use http::Request;
use proptest::prelude::*;
use serde_json::{Value, json};

use super::dpop::nonce::Nonces;
use super::dpop::replay::MemoryReplayStore;
use super::issuer::Issuers;
use super::token::TokenCache;
use super::*;
use crate::config::{IssuerConfig, KeySource};
use crate::jose::Jwk;
use crate::jose::sign::SigningKey;
use crate::net::Outbound;

const T_MS: u64 = 1_767_225_600_000;
const TOKEN: &str = "eyJ0eXAiOiJhdCtqd3QiLCJhbGciOiJFUzI1NiIsImtpZCI6ImFzLWtleS0xIn0.eyJqdGkiOiJ0b2stMDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWYiLCJzdWIiOiJkaWQ6cGxjOmV3dmk3bnh6eW91bjZ6aHhyaHM2NG9peiIsImlhdCI6MTc2NzIyNTYwMCwiZXhwIjoxNzY3MjI5MjAwLCJhdWQiOiJkaWQ6d2ViOmdhdGV3YXkuZXhhbXBsZS5jb20iLCJjbmYiOnsiamt0IjoiSjEtaDhZeFNKLUZWc19KVnk4cFVxd2ppRTQ1bVVya3BzRXY1N0poTENBMCJ9LCJzY29wZSI6ImF0cHJvdG8gcmVwbzpjb20uZXhhbXBsZS5ub3RlP2FjdGlvbj1jcmVhdGUgcnBjOmNvbS5leGFtcGxlLmdldFRoaW5nP2F1ZD1kaWQ6d2ViOmdhdGV3YXkuZXhhbXBsZS5jb20lMjNleGFtcGxlX3N2YyIsImNsaWVudF9pZCI6Imh0dHBzOi8vYXBwLmV4YW1wbGUuY29tL29hdXRoLWNsaWVudC1tZXRhZGF0YS5qc29uIiwiaXNzIjoiaHR0cHM6Ly9hdXRoLmV4YW1wbGUuY29tIn0.RVejMYX87eP_KP_g9Hd5k1RwQPIn5_roujl-PsY6rdyvNBS6QLHPCZB7u7d3OHp0nMAxeO7LYt9Tq_8hDPAzUQ";
const PROOF: &str = "eyJhbGciOiJFUzI1NiIsInR5cCI6ImRwb3Arand0IiwiandrIjp7Imt0eSI6IkVDIiwieCI6ImFUQ3Y3S0hOYlEtTnYxTEV3TmRheUt3VWNBWmxlaGZVNjVOSjZZaVNOVUEiLCJ5IjoiZE1jWUxxdEQzdlRvOVBVWVlJWU1hNWxxbXRiZnA5cU5pVHhHZWhfdnU4ZyIsImNydiI6IlAtMjU2In19.eyJqdGkiOiJwcm9vZi1qdGktMDAwMSIsImh0bSI6IkdFVCIsImh0dSI6Imh0dHBzOi8vZ2F0ZXdheS5leGFtcGxlLmNvbS94cnBjL2NvbS5leGFtcGxlLmdldFRoaW5nIiwiaWF0IjoxNzY3MjI1NjAwLCJub25jZSI6IlhkOVhSdGI0NlV1NHpOYjkwemppYm5pNGRRN1dfU2pkUmRoZlVrRG9UUzQiLCJhdGgiOiJwTzlqcEJkeU1kSlVpYXBEZGx1Uk92OE5kNnZuQzNWT2FPT0hROW5QNGN3In0.UfftKTP1R6rGnl9gQePBHdNzYghdc9SQw6PjgGsZ_F6nF9HhBAx65Vz1D_XHrbF60fHR3nnVw2rci3JcNH7GAQ";
const ATH: &str = "pO9jpBdyMdJUiapDdluROv8Nd6vnC3VOaOOHQ9nP4cw";
const NONCE: &str = "Xd9XRtb46Uu4zNb90zjibni4dQ7W_SjdRdhfUkDoTS4";
const URL: &str = "https://gateway.example.com/xrpc/com.example.getThing?limit=5";

fn dpop_key() -> SigningKey {
    SigningKey::from_jwk(&json!({"kty":"EC","crv":"P-256","x":"aTCv7KHNbQ-Nv1LEwNdayKwUcAZlehfU65NJ6YiSNUA","y":"dMcYLqtD3vTo9PUYYIYMa5lqmtbfp9qNiTxGeh_vu8g","d":"88qNmFgNov2h-Adjaln7GjQ8V481NWZhVqiZIuhP2J8"})).unwrap()
}

fn state(audience: &str) -> DpopState {
    let jwk = Jwk::from_value(&json!({"kty":"EC","kid":"as-key-1","crv":"P-256","x":"LjUrPxAz1rlWPQJnEQBG_Ltiia4zRz-KIgreuLRtjQ4","y":"vdmPrEJowAefPEyGs7QeLbQ45tHkTNSs44XwWHcgNDQ"})).unwrap();
    let config = IssuerConfig {
        issuer: "https://auth.example.com".into(),
        keys: KeySource::PublicKey(jwk),
        audiences: vec![audience.into()],
        algs: vec!["ES256".into(), "ES256K".into()],
        clock_skew: Duration::ZERO,
        jwks_refresh: Duration::from_secs(300),
        max_stale: Duration::from_secs(86_400),
        expand_include: false,
    };
    let net = Outbound::new(Default::default());
    let secret: [u8; 32] = std::array::from_fn(|i| i as u8);
    DpopState {
        nonces: Nonces::new(&secret, Duration::from_secs(60)),
        issuers: Issuers::new(&[config], &net).unwrap(),
        tokens: TokenCache::new(100),
        max_proof_bytes: 8192,
        proof_keys: super::dpop::verify::KeyCache::new(100),
    }
}

struct Case {
    method: &'static str,
    authorization: Vec<String>,
    proofs: Vec<String>,
}

impl Case {
    fn new(proof: String) -> Case {
        Case { method: "GET", authorization: vec![format!("DPoP {TOKEN}")], proofs: vec![proof] }
    }
}

async fn run_with(
    case: &Case,
    dpop: &DpopState,
    replay: &MemoryReplayStore,
    now_ms: u64,
) -> Result<Principal, AuthError> {
    let mut b = Request::builder().method(case.method).uri(URL);
    for a in &case.authorization {
        b = b.header("authorization", a);
    }
    for p in &case.proofs {
        b = b.header("dpop", p);
    }
    let (parts, ()) = b.body(()).unwrap().into_parts();
    let url = super::normalize_url(URL).unwrap();
    authenticate_dpop(replay, dpop, &parts, Some(&url), now_ms).await
}

async fn run(case: Case) -> Result<Principal, AuthError> {
    run_with(&case, &state("did:web:gateway.example.com"), &MemoryReplayStore::new(100), T_MS).await
}

/// The 15.5 proof's claims with a fresh jti.
fn claims() -> Value {
    json!({"jti": crate::jose::sign::random_id(), "htm": "GET", "htu": "https://gateway.example.com/xrpc/com.example.getThing", "iat": 1_767_225_600u64, "nonce": NONCE, "ath": ATH})
}

fn header() -> Value {
    json!({"typ": "dpop+jwt", "jwk": dpop_key().public_jwk()})
}

fn proof(edit: impl FnOnce(&mut Value, &mut Value)) -> String {
    let (mut h, mut c) = (header(), claims());
    edit(&mut h, &mut c);
    dpop_key().sign_jwt(h, &c)
}

fn proof_error(r: Result<Principal, AuthError>) -> ProofError {
    match r {
        Err(AuthError::Proof(p)) => p,
        other => panic!("expected a proof error, got {other:?}"),
    }
}

fn token_error(r: Result<Principal, AuthError>) -> TokenError {
    match r {
        Err(AuthError::Token { reason, .. }) => reason,
        other => panic!("expected a token error, got {other:?}"),
    }
}

#[tokio::test]
async fn spec_vector_is_accepted_once() {
    let dpop = state("did:web:gateway.example.com");
    let replay = MemoryReplayStore::new(100);
    let case = Case::new(PROOF.into());
    let principal = run_with(&case, &dpop, &replay, T_MS).await.unwrap();
    let Principal::OAuth { token, jkt } = &principal else { panic!() };
    assert_eq!(token.sub, "did:plc:ewvi7nxzyoun6zhxrhs64oiz");
    assert_eq!(token.client_id.as_deref(), Some("https://app.example.com/oauth-client-metadata.json"));
    assert_eq!(jkt, "J1-h8YxSJ-FVs_JVy8pUqwjiE45mUrkpsEv57JhLCA0");
    let mut headers = http::HeaderMap::new();
    principal.write_headers(&Default::default(), &mut headers);
    assert_eq!(headers.keys().next().unwrap(), "x-atproto-did");
    assert_eq!(headers["x-atproto-did"], "did:plc:ewvi7nxzyoun6zhxrhs64oiz");
    assert_eq!(headers["x-atproto-auth"], "oauth");
    assert!(headers["x-atproto-scope"].to_str().unwrap().starts_with("atproto repo:"));
    assert_eq!(proof_error(run_with(&case, &dpop, &replay, T_MS).await), ProofError::Replayed);
}

#[tokio::test]
async fn nonce_rules() {
    let r = run(Case::new(proof(|_, c| drop(c.as_object_mut().unwrap().remove("nonce"))))).await;
    assert!(matches!(r, Err(AuthError::UseNonce { mismatch: false })), "{r:?}");
    let r = run(Case::new(proof(|_, c| c["nonce"] = json!("xyz")))).await;
    assert!(matches!(r, Err(AuthError::UseNonce { mismatch: true })), "{r:?}");
    assert_eq!(proof_error(run(Case::new(proof(|_, c| c["nonce"] = json!(5)))).await), ProofError::NonceType);
}

#[tokio::test]
async fn htu_and_htm_rules() {
    let htu = |u: &'static str| proof(move |_, c| c["htu"] = json!(u));
    assert_eq!(
        proof_error(run(Case::new(htu("https://gateway.example.com/xrpc/com.example.getThing/"))).await),
        ProofError::HtuMismatch
    );
    run(Case::new(htu("https://gateway.example.com/xrpc/com.example.getThing?x=1#f"))).await.unwrap();
    run(Case::new(htu("HTTPS://Gateway.Example.COM:443/xrpc/com.example.getThing"))).await.unwrap();
    run(Case::new(htu("https://gateway.example.com/xrpc/./com.example.getThing"))).await.unwrap();
    assert_eq!(
        proof_error(run(Case::new(htu("http://gateway.example.com/xrpc/com.example.getThing"))).await),
        ProofError::HtuMismatch
    );
    assert_eq!(
        proof_error(run(Case::new(htu("https://gateway.example.com:8443/xrpc/com.example.getThing"))).await),
        ProofError::HtuMismatch
    );
    assert_eq!(proof_error(run(Case::new(htu("not a url"))).await), ProofError::HtuInvalid);
    assert_eq!(
        proof_error(run(Case::new(htu("https://u:p@gateway.example.com/xrpc/com.example.getThing"))).await),
        ProofError::HtuCredentials
    );
    assert_eq!(
        proof_error(run(Case::new(htu("ftp://gateway.example.com/xrpc/com.example.getThing"))).await),
        ProofError::HtuScheme
    );
    assert_eq!(proof_error(run(Case::new(proof(|_, c| c["htu"] = json!(1)))).await), ProofError::HtuType);
    assert_eq!(proof_error(run(Case::new(proof(|_, c| c["htm"] = json!("get")))).await), ProofError::HtmMismatch);
    let mut post = Case::new(proof(|_, _| {}));
    post.method = "POST";
    assert_eq!(proof_error(run(post).await), ProofError::HtmMismatch);
}

#[tokio::test]
async fn ath_rules() {
    assert_eq!(proof_error(run(Case::new(proof(|_, c| c["ath"] = json!("AAAA")))).await), ProofError::AthMismatch);
    let r = run(Case::new(proof(|_, c| drop(c.as_object_mut().unwrap().remove("ath"))))).await;
    assert_eq!(proof_error(r), ProofError::AthMismatch);
}

#[tokio::test]
async fn iat_window_is_minus_190_plus_180() {
    let at = |iat: i64| proof(move |_, c| c["iat"] = json!(1_767_225_600i64 + iat));
    run(Case::new(at(-190))).await.unwrap();
    assert_eq!(proof_error(run(Case::new(at(-191))).await), ProofError::IatPast);
    run(Case::new(at(180))).await.unwrap();
    assert_eq!(proof_error(run(Case::new(at(181))).await), ProofError::IatFuture);
    assert_eq!(proof_error(run(Case::new(proof(|_, c| c["iat"] = json!("now")))).await), ProofError::IatType);
    assert_eq!(proof_error(run(Case::new(proof(|_, c| c["exp"] = json!(1_767_225_600 - 180)))).await), ProofError::Exp);
    assert_eq!(proof_error(run(Case::new(proof(|_, c| c["nbf"] = json!(1_767_225_600 + 181)))).await), ProofError::Nbf);
}

#[tokio::test]
async fn header_rules() {
    for typ in ["DPOP+JWT", "application/dpop+jwt"] {
        run(Case::new(proof(|h, _| h["typ"] = json!(typ)))).await.unwrap();
    }
    assert_eq!(proof_error(run(Case::new(proof(|h, _| h["typ"] = json!("JWT")))).await), ProofError::Typ);
    let private = dpop_key().private_jwk();
    assert_eq!(proof_error(run(Case::new(proof(|h, _| h["jwk"] = private))).await), ProofError::JwkPrivate);
    assert_eq!(proof_error(run(Case::new(proof(|h, _| h["jwk"] = json!("x")))).await), ProofError::JwkInvalid);
    let other = SigningKey::generate().public_jwk();
    assert_eq!(proof_error(run(Case::new(proof(|h, _| h["jwk"] = other))).await), ProofError::Signature);
    assert_eq!(proof_error(run(Case::new(proof(|h, _| h["crit"] = json!(["x"])))).await), ProofError::Crit);
    assert_eq!(
        proof_error(run(Case::new(proof(|_, c| drop(c.as_object_mut().unwrap().remove("jti"))))).await),
        ProofError::JtiMissing
    );
    assert_eq!(proof_error(run(Case::new(proof(|_, c| c["jti"] = json!(7)))).await), ProofError::JtiMissing);
    assert_eq!(proof_error(run(Case::new("a.b".into())).await), ProofError::Malformed);
}

#[tokio::test]
async fn dpop_header_rules() {
    let mut none = Case::new(String::new());
    none.proofs.clear();
    assert_eq!(proof_error(run(none).await), ProofError::Required);
    assert_eq!(proof_error(run(Case::new(String::new())).await), ProofError::Empty);
    let mut two = Case::new(PROOF.into());
    two.proofs.push(PROOF.into());
    assert_eq!(proof_error(run(two).await), ProofError::Multiple);
    assert_eq!(proof_error(run(Case::new("a".repeat(9000))).await), ProofError::TooLarge);
}

#[tokio::test]
async fn authorization_header_rules() {
    let with = |auth: Vec<String>| Case { method: "GET", authorization: auth, proofs: vec![PROOF.into()] };
    assert!(matches!(run(with(vec![])).await, Err(AuthError::Missing)));
    assert!(matches!(run(with(vec![format!("DPoP  {TOKEN}")])).await, Err(AuthError::BadHeader)));
    assert!(matches!(run(with(vec![format!("Basic {TOKEN}")])).await, Err(AuthError::BadHeader)));
    assert!(matches!(
        run(with(vec![format!("DPoP {TOKEN}"), format!("DPoP {TOKEN}")])).await,
        Err(AuthError::BadHeader)
    ));
    run(with(vec![format!("dpop {TOKEN}")])).await.unwrap();
    assert_eq!(token_error(run(with(vec![format!("Bearer {TOKEN}")])).await), TokenError::BoundAsBearer);
}

#[tokio::test]
async fn token_rules() {
    let other_key = SigningKey::generate();
    let mut case = Case::new(other_key.sign_jwt(header_for(&other_key), &claims()));
    case.authorization = vec![format!("DPoP {TOKEN}")];
    assert_eq!(token_error(run(case).await), TokenError::Binding);

    let dpop = state("did:web:other.example.com");
    let r = run_with(&Case::new(PROOF.into()), &dpop, &MemoryReplayStore::new(10), T_MS).await;
    let reason = token_error(r);
    assert_eq!(
        reason.message(),
        "Invalid audience (got: did:web:gateway.example.com, expected one of: did:web:other.example.com)"
    );

    // An hour later the token has expired (a fresh proof, a current nonce).
    let dpop = state("did:web:gateway.example.com");
    let later = T_MS + 3_600_000;
    let nonce = dpop.nonces.current(later);
    let p = proof(|_, c| {
        c["iat"] = json!(later / 1000);
        c["nonce"] = json!(nonce);
    });
    let r = run_with(&Case::new(p), &dpop, &MemoryReplayStore::new(10), later).await;
    assert_eq!(token_error(r).message(), r#""exp" claim timestamp check failed"#);

    let mut garbage = Case::new(proof(|_, _| {}));
    garbage.authorization = vec!["DPoP not.a.token".into()];
    assert_eq!(proof_error(run(garbage).await), ProofError::AthMismatch);
}

fn header_for(key: &SigningKey) -> Value {
    json!({"typ": "dpop+jwt", "jwk": key.public_jwk()})
}

/// Tokens from an issuer atgate does not trust, and tokens without the required claims.
#[tokio::test]
async fn foreign_and_incomplete_tokens() {
    let as_key = SigningKey::generate();
    let dpop_key = dpop_key();
    let base = json!({"iss": "https://auth.example.com", "sub": "did:plc:ewvi7nxzyoun6zhxrhs64oiz", "aud": "did:web:gateway.example.com",
        "iat": 1_767_225_600u64, "exp": 1_767_229_200u64, "jti": "tok-1", "scope": "atproto", "cnf": {"jkt": dpop_key.thumbprint()}});
    let cases: Vec<(Value, Value, TokenError)> = vec![
        (json!({"typ": "at+jwt", "kid": "as-key-1"}), json!({}), TokenError::Signature),
        (json!({"typ": "at+jwt"}), json!({"iss": "https://evil.example.com"}), TokenError::UnknownIssuer),
        (json!({"typ": "at+jwt", "kid": "unknown"}), json!({}), TokenError::NoKey),
    ];
    for (header, changes, want) in cases {
        let mut claims = base.clone();
        for (k, v) in changes.as_object().unwrap() {
            claims[k] = v.clone();
        }
        let token = as_key.sign_jwt(header, &claims);
        let ath = crate::jose::sha256_b64url(token.as_bytes());
        let p = proof(|_, c| c["ath"] = json!(ath));
        let mut case = Case::new(p);
        case.authorization = vec![format!("DPoP {token}")];
        assert_eq!(token_error(run(case).await), want);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    /// Any single-byte change to the valid proof or token is rejected.
    #[test]
    fn one_byte_changes_are_rejected(in_token in any::<bool>(), pos in 0usize..2000, byte in any::<u8>()) {
        let (mut token, mut proof) = (TOKEN.as_bytes().to_vec(), PROOF.as_bytes().to_vec());
        let target = if in_token { &mut token } else { &mut proof };
        let pos = pos % target.len();
        prop_assume!(target[pos] != byte);
        target[pos] = byte;
        let (Ok(token), Ok(proof)) = (String::from_utf8(token), String::from_utf8(proof)) else { return Ok(()) };
        let case = Case { method: "GET", authorization: vec![format!("DPoP {token}")], proofs: vec![proof] };
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        // Header values must be visible ASCII to be sent at all.
        if case.authorization[0].bytes().chain(case.proofs[0].bytes()).any(|b| !(0x20..0x7f).contains(&b)) {
            return Ok(());
        }
        let result = rt.block_on(run(case));
        prop_assert!(result.is_err(), "a modified request was accepted");
    }
}

/// Tokens signed with an HS256 shared secret (PDS style) and with an ES256K key
/// (entryway style) verify against issuers configured that way.
#[tokio::test]
async fn hs256_and_es256k_issuers() {
    use crate::config::{FileRef, SecretRef};
    let dir = tempfile::tempdir().unwrap();
    let secret = b"0123456789abcdef0123456789abcdef-pds-secret";
    std::fs::write(dir.path().join("secret"), secret).unwrap();
    let file =
        FileRef { path: dir.path().join("secret"), origin: "t".into(), place: Default::default(), field: "f".into() };
    let k256 = k256::ecdsa::SigningKey::from_slice(&[0x42; 32]).unwrap();
    let point = k256.verifying_key().to_encoded_point(true);
    let k256_jwk = crate::jose::jwk::from_sec1("secp256k1", point.as_bytes()).unwrap();
    let issuer = |name: &str, keys: KeySource, algs: &[&str]| IssuerConfig {
        issuer: name.into(),
        keys,
        audiences: vec!["did:web:gateway.example.com".into()],
        algs: algs.iter().map(|a| a.to_string()).collect(),
        clock_skew: Duration::ZERO,
        jwks_refresh: Duration::from_secs(300),
        max_stale: Duration::from_secs(3600),
        expand_include: false,
    };
    let configs = [
        issuer("https://pds.test", KeySource::Hs256(SecretRef::File(file)), &["HS256"]),
        issuer("https://entryway.test", KeySource::PublicKey(k256_jwk), &["ES256K"]),
    ];
    let issuers = Issuers::new(&configs, &Outbound::new(Default::default())).unwrap();
    let now = 1_767_225_600u64;
    let claims = |iss: &str| json!({"iss": iss, "sub": "did:plc:ewvi7nxzyoun6zhxrhs64oiz", "aud": "did:web:gateway.example.com", "iat": now, "exp": now + 60, "jti": "j", "scope": "atproto", "cnf": {"jkt": "x"}});
    let b64 = |v: &Value| crate::jose::b64url(v.to_string().as_bytes());
    // HS256.
    let input = format!("{}.{}", b64(&json!({"typ": "at+jwt", "alg": "HS256"})), b64(&claims("https://pds.test")));
    let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, secret);
    let tag = aws_lc_rs::hmac::sign(&key, input.as_bytes());
    let token = format!("{input}.{}", crate::jose::b64url(tag.as_ref()));
    let t = token::verify_token(&token, Scheme::Dpop, &issuers, now).await.unwrap();
    assert_eq!(t.issuer, "https://pds.test");
    let forged = format!("{input}.{}", crate::jose::b64url(&[0u8; 32]));
    let r = token::verify_token(&forged, Scheme::Dpop, &issuers, now).await;
    assert!(matches!(r, Err(AuthError::Token { reason: TokenError::Signature, .. })), "{r:?}");
    // ES256K.
    use k256::ecdsa::signature::Signer;
    let input =
        format!("{}.{}", b64(&json!({"typ": "at+jwt", "alg": "ES256K"})), b64(&claims("https://entryway.test")));
    let sig: k256::ecdsa::Signature = k256.sign(input.as_bytes());
    let token = format!("{input}.{}", crate::jose::b64url(&sig.to_bytes()));
    let t = token::verify_token(&token, Scheme::Dpop, &issuers, now).await.unwrap();
    assert_eq!(t.issuer, "https://entryway.test");
    // An ES256K token presented to the HS256 issuer: alg not allowed.
    let wrong = token.replace(&b64(&claims("https://entryway.test")), &b64(&claims("https://pds.test")));
    let r = token::verify_token(&wrong, Scheme::Dpop, &issuers, now).await;
    assert!(matches!(r, Err(AuthError::Token { reason: TokenError::Alg, .. })), "{r:?}");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    /// The JWS, JWK and proof parsers never panic, whatever arrives.
    #[test]
    fn parsers_never_panic(text in "\\PC{0,300}", dots in "[A-Za-z0-9_.-]{0,200}") {
        let _ = crate::jose::jws::parse(&text);
        let _ = crate::jose::jws::parse(&dots);
        if let Ok(v) = serde_json::from_str::<Value>(&text)
            && let Ok(jwk) = Jwk::from_value(&v)
        {
            let _ = jwk.public_key();
            let _ = jwk.thumbprint();
        }
        let dpop = state("did:web:gateway.example.com");
        let url = super::normalize_url(URL).unwrap();
        let ctx = super::dpop::verify::ProofContext { method: "GET", url: &url, ath: Some(ATH), now_ms: T_MS };
        prop_assert!(super::dpop::verify::verify_proof(&dots, &ctx, &dpop.nonces, &dpop.proof_keys).is_err());
        let _ = super::dpop::verify::check_htu(&text, &url);
    }

    /// The external URL built without parsing is the one parsing would give.
    #[test]
    fn external_url_shortcut_is_normalized(
        segments in prop::collection::vec(prop::sample::select(vec![
            "xrpc", "a.b.c", ".", "..", "%2e", "%2E.", "a%20b", "", "~u", "x:y@z", "a\\b", "!$&'()*+,;=", "é",
        ]), 0..6),
    ) {
        let path = format!("/{}", segments.join("/"));
        let public = url::Url::parse("https://Gateway.Example.com:443/base").unwrap();
        let mut parts = Request::get("/").body(()).unwrap().into_parts().0;
        let Ok(uri) = path.parse::<http::Uri>() else { return Ok(()) };
        parts.uri = uri;
        let built = external_url(Some(&public), &parts);
        let parsed = super::normalize_url(&format!("https://gateway.example.com{}", parts.uri.path()));
        prop_assert_eq!(built, parsed);
    }
}

#[test]
fn external_url_never_trusts_an_untrusted_host() {
    use crate::proxy::forwarded::ClientInfo;
    let parts = |trusted: bool| {
        let mut p = Request::get("/xrpc/a.b.c?x=1").header("host", "evil.example").body(()).unwrap().into_parts().0;
        p.extensions.insert(ClientInfo {
            ip: "127.0.0.1".parse().unwrap(),
            proto: "https",
            host: Some("evil.example".into()),
            peer_trusted: trusted,
        });
        p
    };
    assert_eq!(external_url(None, &parts(false)), None);
    assert_eq!(external_url(None, &parts(true)).unwrap().as_str(), "https://evil.example/xrpc/a.b.c");
    let public = url::Url::parse("https://gateway.example.com").unwrap();
    assert_eq!(external_url(Some(&public), &parts(false)).unwrap().as_str(), "https://gateway.example.com/xrpc/a.b.c");
}

/// An OAuth token's `sub` enters as its canonical DID (identity::did::canonical): the
/// identity headers, policy lists and rate limits see one spelling; an upper-case
/// `did:plc` is no DID.
#[tokio::test]
async fn oauth_sub_is_canonical() {
    use crate::config::{FileRef, SecretRef};
    let dir = tempfile::tempdir().unwrap();
    let secret = b"0123456789abcdef0123456789abcdef-pds-secret";
    std::fs::write(dir.path().join("secret"), secret).unwrap();
    let file =
        FileRef { path: dir.path().join("secret"), origin: "t".into(), place: Default::default(), field: "f".into() };
    let config = IssuerConfig {
        issuer: "https://pds.test".into(),
        keys: KeySource::Hs256(SecretRef::File(file)),
        audiences: vec!["did:web:pds.test".into()],
        algs: vec!["HS256".into()],
        clock_skew: Duration::ZERO,
        jwks_refresh: Duration::from_secs(300),
        max_stale: Duration::from_secs(3600),
        expand_include: false,
    };
    let issuers = Issuers::new(&[config], &Outbound::new(Default::default())).unwrap();
    let now = 1_767_225_600u64;
    let token_for = |sub: &str| {
        let claims = json!({"iss": "https://pds.test", "sub": sub, "iat": now, "exp": now + 60, "jti": "j", "scope": "atproto", "aud": "did:web:pds.test"});
        let b64 = |v: &Value| crate::jose::b64url(v.to_string().as_bytes());
        let input = format!("{}.{}", b64(&json!({"typ": "at+jwt", "alg": "HS256"})), b64(&claims));
        let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, secret);
        format!("{input}.{}", crate::jose::b64url(aws_lc_rs::hmac::sign(&key, input.as_bytes()).as_ref()))
    };
    let t = token::verify_token(&token_for("did:web:EXAMPLE.com"), Scheme::Dpop, &issuers, now).await.unwrap();
    assert_eq!(t.sub, "did:web:example.com");
    let upper = token_for("did:plc:EWVI7NXZYOUN6ZHXRHS64OIZ");
    let r = token::verify_token(&upper, Scheme::Dpop, &issuers, now).await;
    assert!(matches!(r, Err(AuthError::Token { reason: TokenError::Claim(_), .. })), "{r:?}");
}

/// A proof whose token does not verify leaves no trace in the replay store: junk tokens
/// cannot fill it or push out the `jti`s of real requests.
#[tokio::test]
async fn only_verified_requests_record_their_jti() {
    let dpop = state("did:web:gateway.example.com");
    let replay = MemoryReplayStore::new(2);
    let real = Case::new(PROOF.into());
    run_with(&real, &dpop, &replay, T_MS).await.unwrap();
    let junk_tokens = ["not.a.token", "eyJ0eXAiOiJhdCtqd3QifQ.e30.AAAA", TOKEN.trim_end_matches('Q')];
    for junk in junk_tokens {
        let ath = crate::jose::sha256_b64url(junk.as_bytes());
        let mut case = Case::new(proof(|_, c| c["ath"] = json!(ath)));
        case.authorization = vec![format!("DPoP {junk}")];
        assert!(matches!(run_with(&case, &dpop, &replay, T_MS).await, Err(AuthError::Token { .. })));
    }
    // Bound to another key: the token verifies, the binding does not.
    let other_key = SigningKey::generate();
    let unbound = Case::new(other_key.sign_jwt(header_for(&other_key), &claims()));
    assert_eq!(token_error(run_with(&unbound, &dpop, &replay, T_MS).await), TokenError::Binding);
    assert_eq!(replay.len(), 1, "a request that failed authentication recorded its jti");
    assert_eq!(proof_error(run_with(&real, &dpop, &replay, T_MS).await), ProofError::Replayed);
}

/// At capacity the store refuses (503) instead of forgetting a live `jti`.
#[tokio::test]
async fn a_full_replay_store_is_503_not_forgetful() {
    let dpop = state("did:web:gateway.example.com");
    let replay = MemoryReplayStore::new(1);
    let real = Case::new(PROOF.into());
    run_with(&real, &dpop, &replay, T_MS).await.unwrap();
    let r = run_with(&Case::new(proof(|_, _| {})), &dpop, &replay, T_MS).await;
    let Err(e) = r else { panic!("accepted with a full store") };
    assert!(matches!(e, AuthError::ReplayFull), "{e:?}");
    use crate::respond::Reject;
    assert_eq!(
        (e.status(), e.error_name(), e.reason()),
        (http::StatusCode::SERVICE_UNAVAILABLE, "TemporarilyUnavailable", "replay_full")
    );
    assert_eq!(proof_error(run_with(&real, &dpop, &replay, T_MS).await), ProofError::Replayed);
}

/// Time values no clock will reach, or below zero: each proof or token is refused or
/// accepted by the rules, and nothing panics (ISSUE 15 §5).
const EXTREMES: [f64; 10] =
    [i64::MAX as f64, u64::MAX as f64, 1e300, f64::MAX, -1.0, i64::MIN as f64, -1e300, 0.0, 0.5, 1_767_225_600.999];

#[tokio::test]
async fn extreme_proof_times_never_panic() {
    for v in EXTREMES {
        for claim in ["iat", "exp", "nbf"] {
            let p = proof(|_, c| c[claim] = json!(v));
            let r = run(Case::new(p)).await;
            let in_window = (1_767_225_600.0 - 190.0..=1_767_225_600.0 + 180.0).contains(&v);
            match claim {
                "iat" if in_window => assert!(r.is_ok(), "iat {v}: {r:?}"),
                "iat" => assert!(matches!(proof_error(r), ProofError::IatPast | ProofError::IatFuture), "iat {v}"),
                "exp" if v > 1_767_225_600.0 - 180.0 => assert!(r.is_ok(), "exp {v}: {r:?}"),
                "exp" => assert_eq!(proof_error(r), ProofError::Exp, "exp {v}"),
                _ if v <= 1_767_225_600.0 + 180.0 => assert!(r.is_ok(), "nbf {v}: {r:?}"),
                _ => assert_eq!(proof_error(r), ProofError::Nbf, "nbf {v}"),
            }
        }
    }
}

/// A DpopState trusting tokens signed by `as_key`.
fn state_signed_by(as_key: &SigningKey) -> DpopState {
    let mut dpop = state("did:web:gateway.example.com");
    let config = IssuerConfig {
        issuer: "https://auth.example.com".into(),
        keys: KeySource::PublicKey(Jwk::from_value(&as_key.public_jwk()).unwrap()),
        audiences: vec!["did:web:gateway.example.com".into()],
        algs: vec!["ES256".into()],
        clock_skew: Duration::from_secs(60),
        jwks_refresh: Duration::from_secs(300),
        max_stale: Duration::from_secs(86_400),
        expand_include: false,
    };
    dpop.issuers = Issuers::new(&[config], &Outbound::new(Default::default())).unwrap();
    dpop
}

#[tokio::test]
async fn extreme_token_times_never_panic() {
    let as_key = SigningKey::generate();
    let dpop = state_signed_by(&as_key);
    let now = 1_767_225_600f64;
    for v in EXTREMES {
        for claim in ["exp", "nbf", "iat"] {
            let mut claims = json!({"iss": "https://auth.example.com", "sub": "did:plc:ewvi7nxzyoun6zhxrhs64oiz",
                "aud": "did:web:gateway.example.com", "iat": now, "exp": now + 3600.0, "jti": "tok",
                "scope": "atproto", "cnf": {"jkt": dpop_key().thumbprint()}});
            claims[claim] = json!(v);
            let token = as_key.sign_jwt(json!({"typ": "at+jwt"}), &claims);
            let ath = crate::jose::sha256_b64url(token.as_bytes());
            // Twice: verified, then from the cache (which keeps it until `exp`).
            for _ in 0..2 {
                let mut case = Case::new(proof(|_, c| c["ath"] = json!(ath)));
                case.authorization = vec![format!("DPoP {token}")];
                let r = run_with(&case, &dpop, &MemoryReplayStore::new(10), T_MS).await;
                let valid = match claim {
                    "exp" => v + 60.0 > now,
                    "nbf" => v <= now + 60.0,
                    _ => true,
                };
                match r {
                    Ok(_) => assert!(valid, "{claim} {v} accepted"),
                    Err(AuthError::Token { reason: TokenError::Expired | TokenError::NotYetValid, .. }) => {
                        assert!(!valid, "{claim} {v} refused")
                    }
                    Err(e) => panic!("{claim} {v}: {e:?}"),
                }
            }
        }
    }
}
