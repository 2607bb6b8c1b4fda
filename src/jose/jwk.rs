//! EC public JWKs (RFC 7517/7518): P-256 and secp256k1, their RFC 7638 thumbprints, and
//! signature verification.

use std::fmt;

use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED, ParsedPublicKey};
use serde::Deserialize;
use serde_json::Value;

use super::{Alg, b64url_decode, sha256_b64url};

/// A JWK as found in a DPoP header or a JWKS.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Jwk {
    /// Key type; atgate uses `EC`.
    pub kty: String,
    /// Curve: `P-256` or `secp256k1`.
    #[serde(default)]
    pub crv: Option<String>,
    /// X coordinate, base64url.
    #[serde(default)]
    pub x: Option<String>,
    /// Y coordinate, base64url.
    #[serde(default)]
    pub y: Option<String>,
    /// Private part: its presence makes the key unusable where a public key is required.
    #[serde(default)]
    pub d: Option<Value>,
    /// Key id (JWKS).
    #[serde(default)]
    pub kid: Option<String>,
    /// `use` (JWKS): when present it must be `sig`.
    #[serde(default, rename = "use")]
    pub use_: Option<String>,
    /// `key_ops` (JWKS): when present it must include `verify`.
    #[serde(default)]
    pub key_ops: Option<Vec<String>>,
    /// `alg` (JWKS), optional.
    #[serde(default)]
    pub alg: Option<String>,
}

/// Why a JWK cannot be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum JwkError {
    /// Not a JSON object of the JWK shape.
    #[error("invalid JWK")]
    Shape,
    /// Contains a private part (`d`).
    #[error("JWK must be a public key")]
    Private,
    /// Not an EC key on P-256 or secp256k1.
    #[error("unsupported JWK key type or curve")]
    Unsupported,
    /// Coordinates that are not a point on the curve.
    #[error("invalid EC public key")]
    BadPoint,
}

/// A parsed, validated public key.
#[derive(Clone)]
pub enum PublicKey {
    /// P-256, parsed once for fast verification.
    P256(ParsedPublicKey),
    /// secp256k1.
    K256(k256::ecdsa::VerifyingKey),
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PublicKey::P256(_) => "PublicKey::P256",
            PublicKey::K256(_) => "PublicKey::K256",
        })
    }
}

impl Jwk {
    /// Parses a JWK from JSON.
    pub fn from_value(value: &Value) -> Result<Jwk, JwkError> {
        if !value.is_object() {
            return Err(JwkError::Shape);
        }
        Jwk::deserialize(value).map_err(|_| JwkError::Shape)
    }

    fn coordinates(&self) -> Result<(&str, &str, &str), JwkError> {
        if self.kty != "EC" {
            return Err(JwkError::Unsupported);
        }
        let crv = self.crv.as_deref().ok_or(JwkError::Shape)?;
        if crv != "P-256" && crv != "secp256k1" {
            return Err(JwkError::Unsupported);
        }
        let (Some(x), Some(y)) = (self.x.as_deref(), self.y.as_deref()) else {
            return Err(JwkError::Shape);
        };
        Ok((crv, x, y))
    }

    /// The public key, refusing private JWKs and points off the curve.
    pub fn public_key(&self) -> Result<PublicKey, JwkError> {
        if self.d.is_some() {
            return Err(JwkError::Private);
        }
        let (crv, x, y) = self.coordinates()?;
        let (Some(x), Some(y)) = (b64url_decode(x), b64url_decode(y)) else {
            return Err(JwkError::BadPoint);
        };
        if x.len() != 32 || y.len() != 32 {
            return Err(JwkError::BadPoint);
        }
        let mut point = [0u8; 65];
        point[0] = 0x04;
        point[1..33].copy_from_slice(&x);
        point[33..].copy_from_slice(&y);
        match crv {
            "P-256" => ParsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, point)
                .map(PublicKey::P256)
                .map_err(|_| JwkError::BadPoint),
            _ => {
                k256::ecdsa::VerifyingKey::from_sec1_bytes(&point).map(PublicKey::K256).map_err(|_| JwkError::BadPoint)
            }
        }
    }

    /// The RFC 7638 SHA-256 thumbprint: `cnf.jkt` of tokens bound to this key.
    pub fn thumbprint(&self) -> Result<String, JwkError> {
        let (crv, x, y) = self.coordinates()?;
        // Members sorted, no whitespace (RFC 7638 §3.2). The values are checked to be
        // base64url, so they need no JSON escaping.
        let b64 = |s: &str| s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !b64(x) || !b64(y) {
            return Err(JwkError::Shape);
        }
        Ok(sha256_b64url(format!(r#"{{"crv":"{crv}","kty":"EC","x":"{x}","y":"{y}"}}"#).as_bytes()))
    }

    /// Whether a JWKS entry is meant for verifying signatures (`use` `sig` or absent,
    /// `key_ops` absent or including `verify`).
    pub fn is_for_verification(&self) -> bool {
        self.use_.as_deref().is_none_or(|u| u == "sig")
            && self.key_ops.as_ref().is_none_or(|ops| ops.iter().any(|o| o == "verify"))
    }
}

/// A public JWK from a SEC1 point (compressed or not) on `P-256` or `secp256k1`.
pub fn from_sec1(crv: &str, point: &[u8]) -> Result<Jwk, JwkError> {
    let uncompressed: Vec<u8> = match crv {
        "P-256" => {
            use p256::elliptic_curve::sec1::ToEncodedPoint;
            let key = p256::PublicKey::from_sec1_bytes(point).map_err(|_| JwkError::BadPoint)?;
            key.to_encoded_point(false).as_bytes().to_vec()
        }
        "secp256k1" => {
            let key = k256::ecdsa::VerifyingKey::from_sec1_bytes(point).map_err(|_| JwkError::BadPoint)?;
            key.to_encoded_point(false).as_bytes().to_vec()
        }
        _ => return Err(JwkError::Unsupported),
    };
    if uncompressed.len() != 65 {
        return Err(JwkError::BadPoint);
    }
    Ok(Jwk {
        kty: "EC".into(),
        crv: Some(crv.into()),
        x: Some(super::b64url(&uncompressed[1..33])),
        y: Some(super::b64url(&uncompressed[33..])),
        d: None,
        kid: None,
        use_: None,
        key_ops: None,
        alg: None,
    })
}

impl PublicKey {
    /// The algorithm this key verifies.
    pub fn alg(&self) -> Alg {
        match self {
            PublicKey::P256(_) => Alg::Es256,
            PublicKey::K256(_) => Alg::Es256k,
        }
    }

    /// Verifies a JWS signature (raw `r||s`). With `allow_high_s`, secp256k1 signatures
    /// with a high S are accepted as the reference implementation does.
    pub fn verify(&self, alg: Alg, message: &[u8], signature: &[u8], allow_high_s: bool) -> bool {
        if alg != self.alg() || signature.len() != 64 {
            return false;
        }
        match self {
            PublicKey::P256(key) => key.verify_sig(message, signature).is_ok(),
            PublicKey::K256(key) => {
                use k256::ecdsa::signature::Verifier;
                let Ok(sig) = k256::ecdsa::Signature::from_slice(signature) else {
                    return false;
                };
                let sig = match sig.normalize_s() {
                    Some(low) if allow_high_s => low,
                    Some(_) => return false,
                    None => sig,
                };
                key.verify(message, &sig).is_ok()
            }
        }
    }
}

impl PublicKey {
    /// The key from SEC1 bytes (compressed or uncompressed) on `P-256` or `secp256k1`,
    /// checked to be on the curve.
    pub fn from_sec1(alg: Alg, point: &[u8]) -> Result<PublicKey, JwkError> {
        let crv = match alg {
            Alg::Es256 => "P-256",
            Alg::Es256k => "secp256k1",
        };
        from_sec1(crv, point)?.public_key()
    }

    /// Verifies a signature the way the reference verifies service-auth JWTs
    /// (`allowMalleableSig`, ATPROTO-AUTH.md §10.3.11): raw `r||s` or DER, high or low S.
    /// With `strict`, only raw low-S signatures pass (the atproto cryptography rules).
    pub fn verify_lenient(&self, alg: Alg, message: &[u8], signature: &[u8], strict: bool) -> bool {
        if alg != self.alg() {
            return false;
        }
        let (raw, high_s) = match self {
            PublicKey::P256(_) => {
                let sig = if signature.len() == 64 {
                    p256::ecdsa::Signature::from_slice(signature)
                } else {
                    p256::ecdsa::Signature::from_der(signature)
                };
                let Ok(sig) = sig else { return false };
                (sig.to_bytes(), sig.normalize_s().is_some())
            }
            PublicKey::K256(_) => {
                let sig = if signature.len() == 64 {
                    k256::ecdsa::Signature::from_slice(signature)
                } else {
                    k256::ecdsa::Signature::from_der(signature)
                };
                let Ok(sig) = sig else { return false };
                (sig.to_bytes(), sig.normalize_s().is_some())
            }
        };
        if strict && (high_s || signature.len() != 64) {
            return false;
        }
        // aws-lc-rs accepts either S for P-256; k256 is told to.
        self.verify(alg, message, &raw, true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jose::jws;

    // ATPROTO-AUTH.md 15.1 and 15.2.
    const DPOP_JWK: &str = r#"{"kty":"EC","crv":"P-256","x":"aTCv7KHNbQ-Nv1LEwNdayKwUcAZlehfU65NJ6YiSNUA","y":"dMcYLqtD3vTo9PUYYIYMa5lqmtbfp9qNiTxGeh_vu8g"}"#;
    const AS_JWK: &str = r#"{"kty":"EC","kid":"as-key-1","key_ops":["verify","encrypt","wrapKey"],"crv":"P-256","x":"LjUrPxAz1rlWPQJnEQBG_Ltiia4zRz-KIgreuLRtjQ4","y":"vdmPrEJowAefPEyGs7QeLbQ45tHkTNSs44XwWHcgNDQ"}"#;
    const TOKEN: &str = "eyJ0eXAiOiJhdCtqd3QiLCJhbGciOiJFUzI1NiIsImtpZCI6ImFzLWtleS0xIn0.eyJqdGkiOiJ0b2stMDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWYiLCJzdWIiOiJkaWQ6cGxjOmV3dmk3bnh6eW91bjZ6aHhyaHM2NG9peiIsImlhdCI6MTc2NzIyNTYwMCwiZXhwIjoxNzY3MjI5MjAwLCJhdWQiOiJkaWQ6d2ViOmdhdGV3YXkuZXhhbXBsZS5jb20iLCJjbmYiOnsiamt0IjoiSjEtaDhZeFNKLUZWc19KVnk4cFVxd2ppRTQ1bVVya3BzRXY1N0poTENBMCJ9LCJzY29wZSI6ImF0cHJvdG8gcmVwbzpjb20uZXhhbXBsZS5ub3RlP2FjdGlvbj1jcmVhdGUgcnBjOmNvbS5leGFtcGxlLmdldFRoaW5nP2F1ZD1kaWQ6d2ViOmdhdGV3YXkuZXhhbXBsZS5jb20lMjNleGFtcGxlX3N2YyIsImNsaWVudF9pZCI6Imh0dHBzOi8vYXBwLmV4YW1wbGUuY29tL29hdXRoLWNsaWVudC1tZXRhZGF0YS5qc29uIiwiaXNzIjoiaHR0cHM6Ly9hdXRoLmV4YW1wbGUuY29tIn0.RVejMYX87eP_KP_g9Hd5k1RwQPIn5_roujl-PsY6rdyvNBS6QLHPCZB7u7d3OHp0nMAxeO7LYt9Tq_8hDPAzUQ";
    // 15.6: secp256k1 service JWTs, low-S and high-S, and the k256 key as a JWK.
    const K256_LOW: &str = "eyJ0eXAiOiJKV1QiLCJhbGciOiJFUzI1NksifQ.eyJpYXQiOjE3NjcyMjU2MDAsImlzcyI6ImRpZDpwbGM6ZXd2aTdueHp5b3VuNnpoeHJoczY0b2l6IiwiYXVkIjoiZGlkOndlYjpnYXRld2F5LmV4YW1wbGUuY29tI2V4YW1wbGVfc3ZjIiwiZXhwIjoxNzY3MjI1NjYwLCJseG0iOiJjb20uZXhhbXBsZS5nZXRUaGluZyIsImp0aSI6IjI1ZGY4NmY0MGMxMDdhMDRjOTQ1OWVkMGM2MDFiZmFkIn0.U9_DrrBqzPT_zP9RSrmkfi1Ng7EH90INXvs9mdf5gM1TuvqIIjCiAkHYtDxpErmlhZoezNLr85VURZ-KCORvfA";
    const K256_HIGH: &str = "eyJ0eXAiOiJKV1QiLCJhbGciOiJFUzI1NksifQ.eyJpYXQiOjE3NjcyMjU2MDAsImlzcyI6ImRpZDpwbGM6ZXd2aTdueHp5b3VuNnpoeHJoczY0b2l6IiwiYXVkIjoiZGlkOndlYjpnYXRld2F5LmV4YW1wbGUuY29tI2V4YW1wbGVfc3ZjIiwiZXhwIjoxNzY3MjI1NjYwLCJseG0iOiJjb20uZXhhbXBsZS5nZXRUaGluZyIsImp0aSI6ImZkYWMwNjFiM2JmMjgyZDc5NTljZDE0NDgyMjNjNWZiIn0.VbHQo0HIwF-4GqzZnxnfDRjsV6yfExAItl0dNYrXdproCWDB9JvTFAmTVOyFYE6Vknrl2kXx4d8nEC2vMULtSA";

    fn jwk(json: &str) -> Jwk {
        Jwk::from_value(&serde_json::from_str(json).unwrap()).unwrap()
    }

    fn k256_key() -> PublicKey {
        let secret = k256::ecdsa::SigningKey::from_slice(&hex(
            "9085d2bef69286a6cbb51623c8fa258629945cd55ca705cc4e66700396894e0c",
        ))
        .unwrap();
        PublicKey::K256(*secret.verifying_key())
    }

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
    }

    #[test]
    fn thumbprint_vector() {
        assert_eq!(jwk(DPOP_JWK).thumbprint().unwrap(), "J1-h8YxSJ-FVs_JVy8pUqwjiE45mUrkpsEv57JhLCA0");
    }

    #[test]
    fn es256_access_token_verifies_with_the_as_key() {
        let key = jwk(AS_JWK);
        assert!(key.is_for_verification());
        let key = key.public_key().unwrap();
        let jws = jws::parse(TOKEN).unwrap();
        assert!(key.verify(Alg::Es256, jws.signing_input.as_bytes(), &jws.signature, false));
        // Another key, another message, another alg: all fail.
        let other = jwk(DPOP_JWK).public_key().unwrap();
        assert!(!other.verify(Alg::Es256, jws.signing_input.as_bytes(), &jws.signature, false));
        assert!(!key.verify(Alg::Es256, b"tampered", &jws.signature, false));
        assert!(!key.verify(Alg::Es256k, jws.signing_input.as_bytes(), &jws.signature, false));
    }

    #[test]
    fn es256k_low_and_high_s() {
        let key = k256_key();
        let low = jws::parse(K256_LOW).unwrap();
        assert!(key.verify(Alg::Es256k, low.signing_input.as_bytes(), &low.signature, false));
        let high = jws::parse(K256_HIGH).unwrap();
        assert!(key.verify(Alg::Es256k, high.signing_input.as_bytes(), &high.signature, true));
        assert!(!key.verify(Alg::Es256k, high.signing_input.as_bytes(), &high.signature, false));
    }

    #[test]
    fn unusable_jwks() {
        let private = r#"{"kty":"EC","crv":"P-256","x":"aTCv7KHNbQ-Nv1LEwNdayKwUcAZlehfU65NJ6YiSNUA","y":"dMcYLqtD3vTo9PUYYIYMa5lqmtbfp9qNiTxGeh_vu8g","d":"88qNmFgNov2h-Adjaln7GjQ8V481NWZhVqiZIuhP2J8"}"#;
        assert_eq!(jwk(private).public_key().unwrap_err(), JwkError::Private);
        let off_curve = r#"{"kty":"EC","crv":"P-256","x":"aTCv7KHNbQ-Nv1LEwNdayKwUcAZlehfU65NJ6YiSNUA","y":"dMcYLqtD3vTo9PUYYIYMa5lqmtbfp9qNiTxGeh_vu8h"}"#;
        assert_eq!(jwk(off_curve).public_key().unwrap_err(), JwkError::BadPoint);
        let oct = r#"{"kty":"oct","k":"c2VjcmV0"}"#;
        assert_eq!(jwk(oct).public_key().unwrap_err(), JwkError::Unsupported);
        let p384 = r#"{"kty":"EC","crv":"P-384","x":"AA","y":"AA"}"#;
        assert_eq!(jwk(p384).public_key().unwrap_err(), JwkError::Unsupported);
        assert_eq!(Jwk::from_value(&serde_json::json!("x")).unwrap_err(), JwkError::Shape);
        assert!(!jwk(r#"{"kty":"EC","use":"enc"}"#).is_for_verification());
        assert!(!jwk(r#"{"kty":"EC","key_ops":["encrypt"]}"#).is_for_verification());
    }
}
