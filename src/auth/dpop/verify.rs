//! DPoP proof verification (RFC 9449 §4.3 as the atproto reference does it,
//! ATPROTO-AUTH.md §3.2-3.5). Everything but the replay check, which is async and the
//! caller's, after every other check has passed.

use serde_json::Value;

use super::nonce::Nonces;
use super::replay::replay_key;
use crate::auth::error::{AuthError, ProofError};
use crate::auth::token::normalize_typ;
use crate::jose::{Alg, Jwk, JwkError, PublicKey, jws};

/// `DPOP_NONCE_MAX_AGE`: clock tolerance for `iat`, in seconds.
pub const CLOCK_TOLERANCE: i64 = 180;
/// Maximum proof age beyond the tolerance, in seconds.
pub const MAX_AGE: i64 = 10;
/// How long a `jti` is remembered: ceil(180 s × 1.1), covering the whole `iat` window.
pub const REPLAY_TTL: std::time::Duration = std::time::Duration::from_millis(198_000);

/// What the proof is checked against.
#[derive(Debug, Clone, Copy)]
pub struct ProofContext<'a> {
    /// The request method.
    pub method: &'a str,
    /// The request URL as the client addressed it: external origin and path, normalized
    /// (WHATWG serialization, no query), as [`crate::auth::external_url`] gives it.
    pub url: &'a str,
    /// `ath` the proof must carry: base64url(SHA-256(access token)).
    pub ath: Option<&'a str>,
    /// Now, Unix milliseconds.
    pub now_ms: u64,
}

/// A proof that passed every check but replay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedProof {
    /// RFC 7638 thumbprint of the proof key.
    pub jkt: String,
    /// The replay-store key for `(jkt, jti)`.
    pub replay_key: [u8; 32],
}

fn fail(e: ProofError) -> AuthError {
    AuthError::Proof(e)
}

fn jwk_error(e: JwkError) -> ProofError {
    match e {
        JwkError::Private => ProofError::JwkPrivate,
        JwkError::Unsupported => ProofError::Alg,
        JwkError::Shape | JwkError::BadPoint => ProofError::JwkInvalid,
    }
}

/// Parsed proof keys by thumbprint. Clients keep one DPoP key per session, so most proofs
/// reuse a key whose point was already decoded and validated.
#[derive(Debug)]
pub struct KeyCache {
    keys: moka::sync::Cache<String, std::sync::Arc<PublicKey>>,
    /// Lookups.
    pub stats: crate::metrics::CacheStats,
}

impl KeyCache {
    /// Holds at most `capacity` keys, each for up to ten minutes.
    pub fn new(capacity: u64) -> KeyCache {
        let keys = moka::sync::Cache::builder()
            .max_capacity(capacity)
            .time_to_live(std::time::Duration::from_secs(600))
            .build();
        KeyCache { keys, stats: Default::default() }
    }

    /// Keys held now (approximate).
    pub fn len(&self) -> u64 {
        self.keys.entry_count()
    }

    /// Whether none are held (approximate).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn get(&self, jkt: &str) -> Option<std::sync::Arc<PublicKey>> {
        let found = self.keys.get(jkt);
        self.stats.record(found.is_some());
        found
    }

    fn insert(&self, jkt: String, key: std::sync::Arc<PublicKey>) {
        self.keys.insert(jkt, key);
    }
}

/// Verifies a proof, in the reference's order of checks.
pub fn verify_proof(
    proof: &str,
    ctx: &ProofContext<'_>,
    nonces: &Nonces,
    keys: &KeyCache,
) -> Result<VerifiedProof, AuthError> {
    // §3.2: the JWS.
    let jws = jws::parse(proof).map_err(|_| fail(ProofError::Malformed))?;
    if jws.header.typ.as_deref().map(normalize_typ).as_deref() != Some("dpop+jwt") {
        return Err(fail(ProofError::Typ));
    }
    let jwk_value = jws.header.jwk.as_ref().ok_or(fail(ProofError::JwkInvalid))?;
    let jwk = Jwk::from_value(jwk_value).map_err(|_| fail(ProofError::JwkInvalid))?;
    if jwk.d.is_some() {
        return Err(fail(ProofError::JwkPrivate));
    }
    let jkt = jwk.thumbprint().map_err(|e| fail(jwk_error(e)))?;
    let key = match keys.get(&jkt) {
        Some(key) => key,
        None => {
            let key = std::sync::Arc::new(jwk.public_key().map_err(|e| fail(jwk_error(e)))?);
            keys.insert(jkt.clone(), key.clone());
            key
        }
    };
    let alg = Alg::from_name(&jws.header.alg).filter(|a| *a == key.alg()).ok_or(fail(ProofError::Alg))?;
    if jws.header.crit.is_some() {
        return Err(fail(ProofError::Crit));
    }
    if !key.verify(alg, jws.signing_input.as_bytes(), &jws.signature, false) {
        return Err(fail(ProofError::Signature));
    }

    // §3.3: time. `now` is whole seconds, as the reference floors it.
    let c = &jws.claims;
    let now = (ctx.now_ms / 1000) as f64;
    let tolerance = CLOCK_TOLERANCE as f64;
    let iat = c.get("iat").and_then(Value::as_f64).ok_or(fail(ProofError::IatType))?;
    if now - iat - tolerance > MAX_AGE as f64 {
        return Err(fail(ProofError::IatPast));
    }
    if now - iat < -tolerance {
        return Err(fail(ProofError::IatFuture));
    }
    if let Some(exp) = c.get("exp") {
        match exp.as_f64() {
            Some(exp) if exp > now - tolerance => {}
            _ => return Err(fail(ProofError::Exp)),
        }
    }
    if let Some(nbf) = c.get("nbf") {
        match nbf.as_f64() {
            Some(nbf) if nbf <= now + tolerance => {}
            _ => return Err(fail(ProofError::Nbf)),
        }
    }

    // §3.4: claims, in order.
    let nonce = match c.get("nonce") {
        None => None,
        Some(Value::String(n)) => Some(n.as_str()),
        Some(_) => return Err(fail(ProofError::NonceType)),
    };
    let jti = c.get("jti").and_then(Value::as_str).filter(|j| !j.is_empty()).ok_or(fail(ProofError::JtiMissing))?;
    if c.get("htm").and_then(Value::as_str) != Some(ctx.method) {
        return Err(fail(ProofError::HtmMismatch));
    }
    let htu = c.get("htu").and_then(Value::as_str).ok_or(fail(ProofError::HtuType))?;
    check_htu(htu, ctx.url).map_err(fail)?;
    match nonce {
        None => return Err(AuthError::UseNonce { mismatch: false }),
        Some(n) if !nonces.is_valid(n, ctx.now_ms) => {
            return Err(AuthError::UseNonce { mismatch: true });
        }
        Some(_) => {}
    }
    let ath = c.get("ath").and_then(Value::as_str);
    if ath != ctx.ath {
        return Err(fail(ProofError::AthMismatch));
    }
    let replay_key = replay_key("DPoP", &[&jkt, jti]);
    Ok(VerifiedProof { jkt, replay_key })
}

/// §3.5: `origin + pathname` of the claim equals that of the request URL (WHATWG URL
/// semantics: scheme and host lowercased, default port dropped, dot segments resolved;
/// query and fragment ignored on both sides). `request` is normalized already (see
/// [`ProofContext::url`]).
pub fn check_htu(htu: &str, request: &str) -> Result<(), ProofError> {
    // Clients sign the URL they sent, which is mostly the normalized one: a claim that is
    // `request` itself, maybe with a query or fragment, parses to the same origin and path.
    if let Some(rest) = htu.strip_prefix(request)
        && (rest.is_empty() || rest.starts_with(['?', '#']))
        && (request.starts_with("https://") || request.starts_with("http://"))
    {
        return Ok(());
    }
    check_htu_parsed(htu, request)
}

/// [`check_htu`] by parsing both sides.
fn check_htu_parsed(htu: &str, request: &str) -> Result<(), ProofError> {
    let claim = url::Url::parse(htu).map_err(|_| ProofError::HtuInvalid)?;
    if !claim.username().is_empty() || claim.password().is_some() {
        return Err(ProofError::HtuCredentials);
    }
    if !matches!(claim.scheme(), "http" | "https") {
        return Err(ProofError::HtuScheme);
    }
    let request = url::Url::parse(request).map_err(|_| ProofError::HtuMismatch)?;
    let same = claim.origin() == request.origin() && claim.path() == request.path();
    if same { Ok(()) } else { Err(ProofError::HtuMismatch) }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    proptest! {
        /// The comparison before parsing never decides otherwise than parsing would.
        #[test]
        fn htu_shortcut_agrees_with_parsing(
            request in prop::sample::select(vec![
                "https://gw.test/xrpc/a.b.c", "http://127.0.0.1:8080/x/", "https://[::1]/p", "https://gw.test/",
            ]),
            suffix in "[?#/a-zA-Z0-9.%\\\\\t :@]{0,12}",
        ) {
            let htu = format!("{request}{suffix}");
            prop_assert_eq!(super::check_htu(&htu, request), super::check_htu_parsed(&htu, request));
        }
    }
}
