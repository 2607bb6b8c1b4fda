//! Access-token verification (ATPROTO-AUTH.md §4): signature by a trusted issuer's key,
//! `typ`, `iss`, `exp`/`nbf`, required claims, `aud`, and `scope`. Binding to the DPoP
//! key (`cnf.jkt`) is checked by the caller against the verified proof.
//!
//! Verified tokens are cached by SHA-256 of the token (the `ath` input, computed anyway)
//! until their `exp`, so a reused token costs no second signature check.

use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_lc_rs::hmac;
use serde_json::{Map, Value};

use super::error::{AuthError, Scheme, TokenError};
use super::issuer::{Issuer, Issuers, KeySet, VerifyKey};
use crate::jose::{Alg, jws};

/// A verified access token: what atgate knows about the request's principal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedToken {
    /// `iss`.
    pub issuer: String,
    /// `sub`: the account DID.
    pub sub: String,
    /// `client_id`, when present.
    pub client_id: Option<String>,
    /// `scope`, space separated.
    pub scope: String,
    /// `scope`, parsed (once, when the token is verified; cached with it).
    pub granted: crate::scope::Granted,
    /// `cnf.jkt`: the thumbprint of the key the token is bound to.
    pub jkt: Option<String>,
    /// `exp`, Unix seconds.
    pub exp: u64,
}

fn token_err(scheme: Scheme, reason: TokenError) -> AuthError {
    AuthError::Token { scheme, reason }
}

fn number(claims: &Map<String, Value>, name: &str) -> Option<f64> {
    claims.get(name).and_then(Value::as_f64)
}

/// Verifies a token's signature and claims at `now` (Unix seconds).
pub async fn verify_token(
    token: &str,
    scheme: Scheme,
    issuers: &Issuers,
    now: u64,
) -> Result<VerifiedToken, AuthError> {
    verify_token_by_key(token, scheme, issuers, now).await.map(|(token, _)| token)
}

/// The key a token's signature verified with: the issuer's key set of that moment and
/// the key's place in it.
#[derive(Debug, Clone)]
pub struct VerifiedBy {
    keys: Arc<KeySet>,
    index: usize,
}

/// [`verify_token`], also saying which key verified the signature (for the cache).
pub async fn verify_token_by_key(
    token: &str,
    scheme: Scheme,
    issuers: &Issuers,
    now: u64,
) -> Result<(VerifiedToken, VerifiedBy), AuthError> {
    let err = |r| token_err(scheme, r);
    let jws = jws::parse(token).map_err(|_| err(TokenError::Malformed))?;
    let iss = jws.claims.get("iss").and_then(Value::as_str).ok_or_else(|| err(TokenError::UnknownIssuer))?;
    let issuer = issuers.get(iss).ok_or_else(|| err(TokenError::UnknownIssuer))?;
    if !issuer.config.algs.iter().any(|a| a == &jws.header.alg) {
        return Err(err(TokenError::Alg));
    }
    let by = check_signature(issuer, &jws, scheme).await?;
    let typ = jws.header.typ.as_deref().map(normalize_typ);
    if typ.as_deref() != Some("at+jwt") {
        return Err(err(TokenError::Typ));
    }
    let c = &jws.claims;
    let skew = issuer.config.clock_skew.as_secs() as f64;
    let now_f = now as f64;
    let exp = number(c, "exp").ok_or_else(|| err(TokenError::Claim(r#""exp" claim must be a number"#)))?;
    if exp + skew <= now_f {
        return Err(err(TokenError::Expired));
    }
    if let Some(nbf) = c.get("nbf") {
        match nbf.as_f64() {
            Some(nbf) if nbf <= now_f + skew => {}
            Some(_) => return Err(err(TokenError::NotYetValid)),
            None => return Err(err(TokenError::Claim(r#""nbf" claim must be a number"#))),
        }
    }
    if number(c, "iat").is_none() {
        return Err(err(TokenError::Claim(r#""iat" claim must be a number"#)));
    }
    // The canonical spelling (identity::did::canonical), as every DID that enters atgate.
    let sub = c.get("sub").and_then(Value::as_str).and_then(|s| crate::identity::canonical(s).ok());
    let sub = sub.ok_or_else(|| err(TokenError::Claim(r#""sub" claim must be a canonical DID"#)))?;
    if c.get("jti").and_then(Value::as_str).is_none_or(str::is_empty) {
        return Err(err(TokenError::Claim(r#""jti" claim missing"#)));
    }
    let client_id = match c.get("client_id") {
        None => None,
        Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
        Some(_) => {
            return Err(err(TokenError::Claim(r#""client_id" claim must be a string"#)));
        }
    };
    let jkt = match c.get("cnf") {
        None => None,
        Some(cnf) => match cnf.get("jkt") {
            Some(Value::String(j)) if !j.is_empty() => Some(j.clone()),
            None => None,
            Some(_) => {
                return Err(err(TokenError::Claim(r#""cnf.jkt" claim must be a string"#)));
            }
        },
    };
    // `audiences` is required by the config; an empty list accepts nothing.
    {
        let ok = match c.get("aud") {
            Some(Value::String(a)) => issuer.config.audiences.contains(a),
            Some(Value::Array(list)) => {
                list.iter().filter_map(Value::as_str).any(|a| issuer.config.audiences.iter().any(|x| x == a))
            }
            _ => false,
        };
        if !ok {
            let got = match c.get("aud") {
                Some(Value::String(a)) => a.clone(),
                Some(Value::Array(list)) => list.iter().filter_map(Value::as_str).collect::<Vec<_>>().join(", "),
                _ => String::new(),
            };
            return Err(err(TokenError::Audience { got, expected: issuer.config.audiences.join(", ") }));
        }
    }
    let scope = match c.get("scope") {
        None => return Err(err(TokenError::NoScope)),
        Some(Value::String(s)) if s.starts_with("ref:") => {
            return Err(err(TokenError::ScopeReference));
        }
        Some(Value::String(s)) => s.clone(),
        Some(_) => return Err(err(TokenError::Claim(r#""scope" claim must be a string"#))),
    };
    if !scope.split(' ').any(|s| s == "atproto") {
        return Err(err(TokenError::Scope(scope)));
    }
    let mut granted = crate::scope::Granted::parse(&scope);
    if issuer.config.expand_include {
        granted.expand_includes(&issuers.sets).await;
    }
    let token = VerifiedToken {
        issuer: issuer.config.issuer.clone(),
        sub: sub.into_owned(),
        client_id,
        granted,
        scope,
        jkt,
        // `as` saturates: a negative `exp` failed above, a huge one is u64::MAX.
        exp: exp as u64,
    };
    Ok((token, by))
}

/// `typ` comparison as jose does it: lowercase, `application/` prefix dropped.
pub fn normalize_typ(typ: &str) -> String {
    let lower = typ.to_ascii_lowercase();
    lower.strip_prefix("application/").map(str::to_owned).unwrap_or(lower)
}

async fn check_signature(issuer: &Issuer, jws: &jws::Compact<'_>, scheme: Scheme) -> Result<VerifiedBy, AuthError> {
    let unavailable =
        || AuthError::KeysUnavailable { issuer: issuer.config.issuer.clone(), cause: issuer.last_error() };
    let alg = jws.header.alg.as_str();
    let kid = jws.header.kid.as_deref();
    let mut refetched = false;
    loop {
        let keys = match issuer.current() {
            Some(keys) => keys,
            // Not fetched yet (or stale): one coalesced, rate-limited fetch, then give up.
            None if !refetched && issuer.refetch_for_unknown_kid().await => {
                refetched = true;
                continue;
            }
            None => return Err(unavailable()),
        };
        let mut matched = false;
        for (index, key) in keys.keys.iter().enumerate() {
            match key {
                VerifyKey::Hmac(k) if alg == "HS256" => {
                    matched = true;
                    if hmac::verify(k, jws.signing_input.as_bytes(), &jws.signature).is_ok() {
                        return Ok(VerifiedBy { keys, index });
                    }
                }
                VerifyKey::Ec { kid: key_kid, key } => {
                    let Some(a) = Alg::from_name(alg) else {
                        continue;
                    };
                    if a != key.alg() || (kid.is_some() && key_kid.as_deref() != kid) {
                        continue;
                    }
                    matched = true;
                    if key.verify(a, jws.signing_input.as_bytes(), &jws.signature, false) {
                        return Ok(VerifiedBy { keys, index });
                    }
                }
                VerifyKey::Hmac(_) => {}
            }
        }
        if matched {
            return Err(token_err(scheme, TokenError::Signature));
        }
        // An unknown kid may be a key the issuer just rotated in.
        if refetched || !issuer.refetch_for_unknown_kid().await {
            return Err(token_err(scheme, TokenError::NoKey));
        }
        refetched = true;
    }
}

/// Verified tokens by SHA-256 of the token, each kept until its `exp` and only while the
/// key that verified it is still one of its issuer's keys.
#[derive(Debug)]
pub struct TokenCache {
    cache: moka::sync::Cache<[u8; 32], Cached>,
    /// Lookups.
    pub stats: crate::metrics::CacheStats,
}

#[derive(Debug, Clone)]
struct Cached {
    token: Arc<VerifiedToken>,
    by: VerifiedBy,
}

struct UntilExp;

impl moka::Expiry<[u8; 32], Cached> for UntilExp {
    fn expire_after_create(&self, _key: &[u8; 32], cached: &Cached, _now: Instant) -> Option<Duration> {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_secs();
        Some(Duration::from_secs(cached.token.exp.saturating_sub(now)))
    }
}

impl TokenCache {
    /// A cache of at most `capacity` tokens.
    pub fn new(capacity: u64) -> TokenCache {
        TokenCache {
            cache: moka::sync::Cache::builder().max_capacity(capacity).expire_after(UntilExp).build(),
            stats: Default::default(),
        }
    }

    /// Tokens held now (approximate).
    pub fn len(&self) -> u64 {
        self.cache.entry_count()
    }

    /// Whether none are held (approximate).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A cached token still valid at `now` whose verifying key `issuers` still hold. A key
    /// that left the issuer's JWKS at a refresh (rotated out, revoked) takes the tokens it
    /// signed with it at that refresh, not at their `exp`.
    pub fn get(&self, hash: &[u8; 32], now: u64, issuers: &Issuers) -> Option<Arc<VerifiedToken>> {
        let found = self.cache.get(hash).filter(|c| c.token.exp > now).and_then(|c| {
            let current = issuers.get(&c.token.issuer)?.current()?;
            if Arc::ptr_eq(&current, &c.by.keys) {
                return Some(c.token);
            }
            let index = current.keys.iter().position(|k| k.same_as(&c.by.keys.keys[c.by.index]))?;
            // Still trusted after the refresh: remember the new set, so the next lookup
            // is a pointer comparison again.
            let token = c.token.clone();
            self.cache.insert(*hash, Cached { token: c.token, by: VerifiedBy { keys: current, index } });
            Some(token)
        });
        self.stats.record(found.is_some());
        found
    }

    /// Remembers a verified token with the key that verified it.
    pub fn insert(&self, hash: [u8; 32], token: Arc<VerifiedToken>, by: VerifiedBy) {
        self.cache.insert(hash, Cached { token, by });
    }
}
