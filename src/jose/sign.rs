//! ES256 signing: the identity assertions atgate sends upstream, and the tools that make
//! tokens and proofs (`atgate keygen`, `atgate curl`, the demo's dev issuer, tests and
//! the load generator).

use aws_lc_rs::encoding::AsBigEndian;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
use serde_json::{Value, json};

use std::sync::Arc;

use super::{Jwk, b64url, b64url_decode};
use crate::config::{ConfigError, SecretRef};

/// A P-256 private key.
pub struct SigningKey {
    pair: EcdsaKeyPair,
    rng: SystemRandom,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SigningKey(P-256)")
    }
}

/// Why a private JWK could not be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("not a P-256 private JWK (kty EC, crv P-256, x, y, d)")]
pub struct BadPrivateKey;

impl SigningKey {
    /// A fresh random key.
    pub fn generate() -> SigningKey {
        let pair = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).expect("the system RNG works");
        SigningKey { pair, rng: SystemRandom::new() }
    }

    /// From a private JWK (`kty` EC, `crv` P-256, `x`, `y`, `d`).
    pub fn from_jwk(jwk: &Value) -> Result<SigningKey, BadPrivateKey> {
        let field = |name: &str| jwk.get(name).and_then(Value::as_str).and_then(b64url_decode).ok_or(BadPrivateKey);
        if jwk.get("kty").and_then(Value::as_str) != Some("EC")
            || jwk.get("crv").and_then(Value::as_str) != Some("P-256")
        {
            return Err(BadPrivateKey);
        }
        let (x, y, d) = (field("x")?, field("y")?, field("d")?);
        let mut public = vec![0x04];
        public.extend_from_slice(&x);
        public.extend_from_slice(&y);
        let pair = EcdsaKeyPair::from_private_key_and_public_key(&ECDSA_P256_SHA256_FIXED_SIGNING, &d, &public)
            .map_err(|_| BadPrivateKey)?;
        Ok(SigningKey { pair, rng: SystemRandom::new() })
    }

    /// The public JWK (`kty`, `crv`, `x`, `y`).
    pub fn public_jwk(&self) -> Value {
        let point = self.pair.public_key().as_ref();
        json!({"kty": "EC", "crv": "P-256", "x": b64url(&point[1..33]), "y": b64url(&point[33..65])})
    }

    /// The private JWK (public members plus `d`).
    pub fn private_jwk(&self) -> Value {
        let mut jwk = self.public_jwk();
        let d = self.pair.private_key().as_be_bytes().expect("P-256 keys export");
        jwk["d"] = Value::String(b64url(d.as_ref()));
        jwk
    }

    /// The RFC 7638 thumbprint of the public key.
    pub fn thumbprint(&self) -> String {
        Jwk::from_value(&self.public_jwk()).and_then(|j| j.thumbprint()).expect("own key has a thumbprint")
    }

    /// Signs `header` (with `alg` set to ES256) and `claims` as a compact JWS.
    pub fn sign_jwt(&self, mut header: Value, claims: &Value) -> String {
        header["alg"] = Value::String("ES256".into());
        let input = format!("{}.{}", b64url(header.to_string().as_bytes()), b64url(claims.to_string().as_bytes()));
        let sig = self.pair.sign(&self.rng, input.as_bytes()).expect("ECDSA signing does not fail");
        format!("{input}.{}", b64url(sig.as_ref()))
    }
}

/// ES256 signing keys and their public JWKS: the first key signs, all are published, so a
/// new key is published before it signs by listing it second, then first.
#[derive(Debug, Clone)]
pub struct KeySet {
    /// `(kid, key)`, never empty.
    keys: Vec<(String, Arc<SigningKey>)>,
    /// The public JWKS (`kid`, `alg` ES256, `use` sig), ready to serve.
    pub jwks: bytes::Bytes,
    /// Whether the key was generated at start rather than configured.
    pub generated: bool,
}

impl KeySet {
    /// From private JWKs: a JWKS (`{"keys": [...]}`) or a single JWK. `kid` defaults to
    /// the RFC 7638 thumbprint.
    pub fn parse(text: &[u8]) -> Result<KeySet, String> {
        Ok(KeySet::new(parse_keys(text)?, false))
    }

    /// The keys `secret` names; without one, the generated key of `previous` (so that a
    /// reload keeps the published JWKS), else a new one, logging `missing` as a warning.
    pub fn load(secret: Option<&SecretRef>, previous: Option<&KeySet>, missing: &str) -> Result<KeySet, ConfigError> {
        match secret {
            Some(secret) => KeySet::parse(&secret.read()?).map_err(|e| secret.origin().error(e)),
            None => match previous.filter(|p| p.generated) {
                Some(p) => Ok(p.clone()),
                None => {
                    tracing::warn!("{missing}");
                    let key = SigningKey::generate();
                    Ok(KeySet::new(vec![(key.thumbprint(), Arc::new(key))], true))
                }
            },
        }
    }

    fn new(keys: Vec<(String, Arc<SigningKey>)>, generated: bool) -> KeySet {
        let jwks = json!({
            "keys": keys.iter().map(|(kid, k)| {
                let mut jwk = k.public_jwk();
                jwk["kid"] = Value::String(kid.clone());
                jwk["alg"] = Value::String("ES256".into());
                jwk["use"] = Value::String("sig".into());
                jwk
            }).collect::<Vec<_>>()
        });
        KeySet { keys, jwks: jwks.to_string().into(), generated }
    }

    /// The key that signs, with its `kid`.
    pub fn signer(&self) -> (&str, &SigningKey) {
        let (kid, key) = &self.keys[0];
        (kid, key)
    }
}

/// Private P-256 JWKs: a JWKS (`{"keys": [...]}`) or a single JWK; never an empty list.
fn parse_keys(text: &[u8]) -> Result<Vec<(String, Arc<SigningKey>)>, String> {
    let json: Value = serde_json::from_slice(text).map_err(|e| format!("the keys are not JSON: {e}"))?;
    let list = match json.get("keys") {
        Some(Value::Array(list)) => list.clone(),
        Some(_) => return Err("\"keys\" must be an array".into()),
        None => vec![json],
    };
    if list.is_empty() {
        return Err("the JWKS has no keys".into());
    }
    list.iter()
        .enumerate()
        .map(|(i, jwk)| {
            let key = SigningKey::from_jwk(jwk).map_err(|e| format!("key {i}: {e}"))?;
            let kid = jwk.get("kid").and_then(Value::as_str).map_or_else(|| key.thumbprint(), str::to_owned);
            Ok((kid, Arc::new(key)))
        })
        .collect()
}

/// 32 random bytes: secrets, session ids, PKCE verifiers.
pub fn random_secret() -> [u8; 32] {
    let mut bytes = [0u8; 32];
    aws_lc_rs::rand::fill(&mut bytes).expect("the system RNG works");
    bytes
}

/// A random base64url id of 16 bytes (for `jti`s).
pub fn random_id() -> String {
    let mut bytes = [0u8; 16];
    aws_lc_rs::rand::fill(&mut bytes).expect("the system RNG works");
    b64url(&bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jose::{Alg, jws};

    #[test]
    fn spec_key_round_trips_and_signs() {
        let d = json!({"kty":"EC","crv":"P-256","x":"aTCv7KHNbQ-Nv1LEwNdayKwUcAZlehfU65NJ6YiSNUA","y":"dMcYLqtD3vTo9PUYYIYMa5lqmtbfp9qNiTxGeh_vu8g","d":"88qNmFgNov2h-Adjaln7GjQ8V481NWZhVqiZIuhP2J8"});
        let key = SigningKey::from_jwk(&d).unwrap();
        assert_eq!(key.thumbprint(), "J1-h8YxSJ-FVs_JVy8pUqwjiE45mUrkpsEv57JhLCA0");
        assert_eq!(key.private_jwk(), d);
        let token = key.sign_jwt(json!({"typ": "JWT"}), &json!({"a": 1}));
        let parsed = jws::parse(&token).unwrap();
        let public = Jwk::from_value(&key.public_jwk()).unwrap().public_key().unwrap();
        assert!(public.verify(Alg::Es256, parsed.signing_input.as_bytes(), &parsed.signature, false));
        assert!(SigningKey::from_jwk(&json!({"kty":"EC","crv":"P-256"})).is_err());
    }

    #[test]
    fn a_jwks_publishes_every_key_and_the_first_signs() {
        let (a, b) = (SigningKey::generate(), SigningKey::generate());
        let mut first = a.private_jwk();
        first["kid"] = "new".into();
        let text = json!({"keys": [first, b.private_jwk()]}).to_string();
        let set = KeySet::parse(text.as_bytes()).unwrap();
        assert_eq!(set.signer().0, "new");
        let jwks: Value = serde_json::from_slice(&set.jwks).unwrap();
        assert_eq!(jwks["keys"][1]["kid"], b.thumbprint());
        assert!(jwks["keys"].as_array().unwrap().iter().all(|k| k.get("d").is_none()), "public keys only");
    }

    #[test]
    fn bad_key_files_say_what_is_wrong() {
        assert!(parse_keys(b"nope").unwrap_err().contains("not JSON"));
        assert!(parse_keys(br#"{"keys": []}"#).unwrap_err().contains("no keys"));
        let public = SigningKey::generate().public_jwk().to_string();
        assert!(parse_keys(public.as_bytes()).unwrap_err().contains("key 0: not a P-256 private JWK"));
    }

    #[test]
    fn generated_keys_differ() {
        assert_ne!(SigningKey::generate().thumbprint(), SigningKey::generate().thumbprint());
        assert_ne!(random_id(), random_id());
    }
}
