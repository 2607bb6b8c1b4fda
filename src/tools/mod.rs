//! Tools for operators and tests: key generation, a DPoP-aware client (`atgate curl`),
//! and a development authorization server (used by `atgate demo` and the tests).

pub mod curl;
pub mod dev_identity;
pub mod dev_issuer;

use crate::jose::sign::{SigningKey, random_id};
use serde_json::json;

/// Signs DPoP proofs with one key.
#[derive(Debug)]
pub struct DpopSigner {
    /// The proof key.
    pub key: SigningKey,
}

impl DpopSigner {
    /// A proof for `method url`, bound to `token` (its `ath`) and carrying `nonce`.
    pub fn proof(&self, method: &str, url: &str, token: Option<&str>, nonce: Option<&str>, iat: u64) -> String {
        let htu = url.split(['?', '#']).next().unwrap_or(url);
        let mut claims = json!({"jti": random_id(), "htm": method, "htu": htu, "iat": iat});
        if let Some(n) = nonce {
            claims["nonce"] = json!(n);
        }
        if let Some(t) = token {
            claims["ath"] = json!(crate::jose::sha256_b64url(t.as_bytes()));
        }
        self.key.sign_jwt(json!({"typ": "dpop+jwt", "jwk": self.key.public_jwk()}), &claims)
    }
}
