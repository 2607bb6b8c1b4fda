//! The JOSE pieces atproto auth needs and no more: compact JWS parsing, EC public JWKs
//! (P-256, secp256k1), RFC 7638 thumbprints, and ES256 / ES256K verification.
//!
//! P-256 verifies with aws-lc-rs (about 5x faster than the p256 crate here, see
//! DESIGN.md); secp256k1 with k256. Nothing here panics on attacker input.

pub mod jwk;
pub mod jws;
pub mod sign;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

pub use jwk::{Jwk, JwkError, PublicKey};
pub use jws::{Alg, Compact, Header, JwsError};

/// base64url without padding (RFC 7515 §2).
pub fn b64url(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Decodes base64url without padding; padding, `+`, `/` and trailing bits are refused.
pub fn b64url_decode(text: &str) -> Option<Vec<u8>> {
    URL_SAFE_NO_PAD.decode(text).ok()
}

/// base64url(SHA-256(bytes)): the form of `ath` (RFC 9449 §4.2) and JWK thumbprints.
pub fn sha256_b64url(bytes: &[u8]) -> String {
    b64url(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, bytes).as_ref())
}
