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
use crate::jose::sign::{KeySet, random_id};

/// Where the public listeners serve the JWKS.
pub const JWKS_PATH: &str = "/.well-known/atgate-jwks.json";

/// The signing side: keys, their JWKS, and the claims that do not change per request.
#[derive(Debug)]
pub struct Asserter {
    /// The keys (the first signs) and their public JWKS.
    pub keys: KeySet,
    issuer: String,
    ttl: Duration,
    /// The header it is sent in.
    pub header: http::HeaderName,
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
        let keys = KeySet::load(
            a.keys.as_ref(),
            previous.map(|p| &p.keys),
            "assertion.keys_env/_file not set: signing identity assertions with a random per-process key; replicas will publish different keys",
        )?;
        Ok(Some(Arc::new(Asserter { keys, issuer, ttl: a.ttl, header: a.header.clone() })))
    }

    /// A fresh assertion for `principal` on its way to `audience` (the upstream's name);
    /// `None` for an anonymous principal.
    pub fn sign(&self, principal: &Principal, audience: &str) -> Option<HeaderValue> {
        let sub = principal.did()?;
        let (kid, key) = self.keys.signer();
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
