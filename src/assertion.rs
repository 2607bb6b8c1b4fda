//! The signed identity assertion: a short-lived ES256 JWT that lets an upstream prove the
//! identity headers came through atgate, even across a network it does not trust.
//!
//! Routes with `assertion: true` get `x-atgate-assertion: <jwt>` next to the plain
//! identity headers. Header `{"alg":"ES256","typ":"atgate-assertion+jwt","kid":...}`;
//! claims `iss` (atgate's service DID or URL), `sub` (the principal's DID), `aud` (the
//! upstream's name), `auth`, `scope` or `lxm` when there is one, `client_id`, `jti`,
//! `iat`, `exp`. The public keys are served as a JWKS at
//! `/.well-known/atgate-jwks.json` on the public listeners and `/jwks.json` on the admin
//! listener; every key of `assertion.keys_file` is published and the first one signs, so
//! a new key is published before it signs by listing it second, then first.

use std::sync::Arc;
use std::time::Duration;

use http::HeaderValue;
use serde_json::{Value, json};

use crate::auth::Principal;
use crate::config::{Config, ConfigError};
use crate::jose::sign::{SigningKey, random_id};

/// Where the public listeners serve the JWKS.
pub const JWKS_PATH: &str = "/.well-known/atgate-jwks.json";

/// The signing side: keys, their JWKS, and the claims that do not change per request.
#[derive(Debug)]
pub struct Asserter {
    /// `(kid, key)`; the first signs.
    keys: Vec<(String, Arc<SigningKey>)>,
    /// The public JWKS, ready to serve.
    pub jwks: bytes::Bytes,
    issuer: String,
    ttl: Duration,
    /// The header it is sent in.
    pub header: http::HeaderName,
    /// Whether the key was generated at start (not configured).
    ephemeral: bool,
}

impl Asserter {
    /// The asserter of `config`, when a route asks for assertions or keys are configured.
    /// A generated key is carried over from `previous`, so reloads keep the published JWKS.
    pub fn build(config: &Config, previous: Option<&Arc<Asserter>>) -> Result<Option<Arc<Asserter>>, ConfigError> {
        let a = &config.assertion;
        if a.keys.is_none() && !config.routes.iter().any(|r| r.assertion) {
            return Ok(None);
        }
        let issuer = a
            .issuer
            .clone()
            .or_else(|| config.service_auth.did.clone())
            .or_else(|| config.public_url.as_ref().map(|u| u.origin().ascii_serialization()))
            .unwrap_or_else(|| "atgate".to_owned());
        let (keys, ephemeral) = match &a.keys {
            Some(secret) => {
                let text = secret.read()?;
                let keys = parse_keys(&text).map_err(|e| secret.origin().error(e))?;
                (keys, false)
            }
            None => {
                if let Some(p) = previous.filter(|p| p.ephemeral) {
                    (p.keys.clone(), true)
                } else {
                    tracing::warn!(
                        "assertion.keys_env/_file not set: signing identity assertions with a random per-process key; replicas will publish different keys"
                    );
                    let key = SigningKey::generate();
                    (vec![(key.thumbprint(), Arc::new(key))], true)
                }
            }
        };
        let jwks = json!({
            "keys": keys.iter().map(|(kid, k)| {
                let mut jwk = k.public_jwk();
                jwk["kid"] = Value::String(kid.clone());
                jwk["alg"] = Value::String("ES256".into());
                jwk["use"] = Value::String("sig".into());
                jwk
            }).collect::<Vec<_>>()
        });
        Ok(Some(Arc::new(Asserter {
            keys,
            jwks: jwks.to_string().into(),
            issuer,
            ttl: a.ttl,
            header: a.header.clone(),
            ephemeral,
        })))
    }

    /// A fresh assertion for `principal` on its way to `audience` (the upstream's name);
    /// `None` for an anonymous principal.
    pub fn sign(&self, principal: &Principal, audience: &str) -> Option<HeaderValue> {
        let sub = principal.did()?;
        let (kid, key) = self.keys.first()?;
        let now = crate::auth::now_ms() / 1000;
        let mut claims = json!({
            "iss": self.issuer,
            "sub": sub,
            "aud": audience,
            "auth": principal.kind(),
            "jti": random_id(),
            "iat": now,
            "exp": now + self.ttl.as_secs(),
        });
        match principal {
            Principal::OAuth { token, .. } => {
                claims["scope"] = Value::String(token.scope.clone());
                if let Some(client) = &token.client_id {
                    claims["client_id"] = Value::String(client.clone());
                }
            }
            Principal::Service(token) => {
                if let Some(lxm) = &token.lxm {
                    claims["lxm"] = Value::String(lxm.clone());
                }
            }
            Principal::Session(session) => {
                claims["scope"] = Value::String(session.scope.clone());
            }
            Principal::AppPassword(_) | Principal::Anonymous => {}
        }
        let jwt = key.sign_jwt(json!({"typ": "atgate-assertion+jwt", "kid": kid}), &claims);
        HeaderValue::from_str(&jwt).ok()
    }
}

/// Private P-256 JWKs: a JWKS (`{"keys": [...]}`) or a single JWK. `kid` defaults to the
/// RFC 7638 thumbprint.
pub fn parse_keys(text: &[u8]) -> Result<Vec<(String, Arc<SigningKey>)>, String> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_jwks_publishes_every_key_and_the_first_signs() {
        let (a, b) = (SigningKey::generate(), SigningKey::generate());
        let mut first = a.private_jwk();
        first["kid"] = "new".into();
        let text = json!({"keys": [first, b.private_jwk()]}).to_string();
        let keys = parse_keys(text.as_bytes()).unwrap();
        assert_eq!(keys[0].0, "new");
        assert_eq!(keys[1].0, b.thumbprint());
    }

    #[test]
    fn bad_key_files_say_what_is_wrong() {
        assert!(parse_keys(b"nope").unwrap_err().contains("not JSON"));
        assert!(parse_keys(br#"{"keys": []}"#).unwrap_err().contains("no keys"));
        let public = SigningKey::generate().public_jwk().to_string();
        assert!(parse_keys(public.as_bytes()).unwrap_err().contains("key 0: not a P-256 private JWK"));
    }
}
