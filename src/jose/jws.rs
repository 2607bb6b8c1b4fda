//! Compact JWS (RFC 7515 §7.1): three base64url segments, a JSON object header and a JSON
//! object payload. Parsing checks shape only; the caller picks the key and verifies.

use serde::Deserialize;
use serde_json::{Map, Value};

use super::b64url_decode;

/// Signature algorithms atgate verifies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Alg {
    /// ECDSA P-256 with SHA-256.
    Es256,
    /// ECDSA secp256k1 with SHA-256.
    Es256k,
}

impl Alg {
    /// From the header's `alg`; `None` for anything atgate does not verify.
    pub fn from_name(name: &str) -> Option<Alg> {
        match name {
            "ES256" => Some(Alg::Es256),
            "ES256K" => Some(Alg::Es256k),
            _ => None,
        }
    }

    /// The JOSE name.
    pub fn name(self) -> &'static str {
        match self {
            Alg::Es256 => "ES256",
            Alg::Es256k => "ES256K",
        }
    }
}

/// The protected header fields atgate reads; others are kept out of the way.
#[derive(Debug, Clone, Deserialize)]
pub struct Header {
    /// `alg`, required.
    pub alg: String,
    /// `typ`, if any.
    #[serde(default)]
    pub typ: Option<String>,
    /// `kid`, if any.
    #[serde(default)]
    pub kid: Option<String>,
    /// `jwk` (DPoP proofs), kept raw so that its shape can be checked.
    #[serde(default)]
    pub jwk: Option<Value>,
    /// `crit`: any entry makes the token unacceptable (atgate understands no extensions).
    #[serde(default)]
    pub crit: Option<Value>,
}

/// A parsed, unverified compact JWS.
#[derive(Debug, Clone)]
pub struct Compact<'a> {
    /// The protected header.
    pub header: Header,
    /// The payload's claims.
    pub claims: Map<String, Value>,
    /// `b64(header).b64(payload)`, what the signature covers.
    pub signing_input: &'a str,
    /// The raw signature bytes.
    pub signature: Vec<u8>,
}

/// Why a JWS could not be parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum JwsError {
    /// Not three non-empty dot-separated segments.
    #[error("malformed JWS: expected three segments")]
    Segments,
    /// A segment is not base64url.
    #[error("malformed JWS: invalid base64url")]
    Base64,
    /// The header is not a JSON object with a string `alg`.
    #[error("malformed JWS: invalid header")]
    Header,
    /// The payload is not a JSON object.
    #[error("malformed JWS: payload is not a JSON object")]
    Payload,
}

/// Parses a compact JWS without verifying it.
pub fn parse(token: &str) -> Result<Compact<'_>, JwsError> {
    let mut parts = token.split('.');
    let (Some(h), Some(p), Some(s), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
        return Err(JwsError::Segments);
    };
    if h.is_empty() || p.is_empty() || s.is_empty() {
        return Err(JwsError::Segments);
    }
    let header_bytes = b64url_decode(h).ok_or(JwsError::Base64)?;
    let payload_bytes = b64url_decode(p).ok_or(JwsError::Base64)?;
    let signature = b64url_decode(s).ok_or(JwsError::Base64)?;
    let header: Header = serde_json::from_slice(&header_bytes).map_err(|_| JwsError::Header)?;
    let claims: Map<String, Value> = serde_json::from_slice(&payload_bytes).map_err(|_| JwsError::Payload)?;
    Ok(Compact { header, claims, signing_input: &token[..h.len() + 1 + p.len()], signature })
}

#[cfg(test)]
mod tests {
    use super::*;

    // ATPROTO-AUTH.md 15.3.
    const TOKEN: &str = "eyJ0eXAiOiJhdCtqd3QiLCJhbGciOiJFUzI1NiIsImtpZCI6ImFzLWtleS0xIn0.eyJqdGkiOiJ0b2stMDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWYiLCJzdWIiOiJkaWQ6cGxjOmV3dmk3bnh6eW91bjZ6aHhyaHM2NG9peiIsImlhdCI6MTc2NzIyNTYwMCwiZXhwIjoxNzY3MjI5MjAwLCJhdWQiOiJkaWQ6d2ViOmdhdGV3YXkuZXhhbXBsZS5jb20iLCJjbmYiOnsiamt0IjoiSjEtaDhZeFNKLUZWc19KVnk4cFVxd2ppRTQ1bVVya3BzRXY1N0poTENBMCJ9LCJzY29wZSI6ImF0cHJvdG8gcmVwbzpjb20uZXhhbXBsZS5ub3RlP2FjdGlvbj1jcmVhdGUgcnBjOmNvbS5leGFtcGxlLmdldFRoaW5nP2F1ZD1kaWQ6d2ViOmdhdGV3YXkuZXhhbXBsZS5jb20lMjNleGFtcGxlX3N2YyIsImNsaWVudF9pZCI6Imh0dHBzOi8vYXBwLmV4YW1wbGUuY29tL29hdXRoLWNsaWVudC1tZXRhZGF0YS5qc29uIiwiaXNzIjoiaHR0cHM6Ly9hdXRoLmV4YW1wbGUuY29tIn0.RVejMYX87eP_KP_g9Hd5k1RwQPIn5_roujl-PsY6rdyvNBS6QLHPCZB7u7d3OHp0nMAxeO7LYt9Tq_8hDPAzUQ";

    #[test]
    fn parses_the_spec_access_token() {
        let jws = parse(TOKEN).unwrap();
        assert_eq!(jws.header.alg, "ES256");
        assert_eq!(jws.header.typ.as_deref(), Some("at+jwt"));
        assert_eq!(jws.header.kid.as_deref(), Some("as-key-1"));
        assert_eq!(jws.claims["sub"], "did:plc:ewvi7nxzyoun6zhxrhs64oiz");
        assert_eq!(jws.signature.len(), 64);
        assert_eq!(jws.signing_input, &TOKEN[..TOKEN.rfind('.').unwrap()]);
    }

    #[test]
    fn malformed_tokens() {
        assert_eq!(parse("a.b").unwrap_err(), JwsError::Segments);
        assert_eq!(parse("a.b.c.d").unwrap_err(), JwsError::Segments);
        assert_eq!(parse("..").unwrap_err(), JwsError::Segments);
        assert_eq!(parse("a!.b.c").unwrap_err(), JwsError::Base64);
        // Padding is refused.
        assert_eq!(parse("e30=.e30.AA").unwrap_err(), JwsError::Base64);
        // Header `[]`, payload `{}`.
        assert_eq!(parse("W10.e30.AA").unwrap_err(), JwsError::Header);
        // Header {"alg":"ES256"}, payload `[]`.
        assert_eq!(parse("eyJhbGciOiJFUzI1NiJ9.W10.AA").unwrap_err(), JwsError::Payload);
    }
}
