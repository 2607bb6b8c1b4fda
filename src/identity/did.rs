//! DID syntax (ATPROTO-AUTH.md §11.1), the one canonical spelling of a DID, and where each
//! supported method's document lives.

use std::borrow::Cow;

use url::Url;

/// Whether `s` is a syntactically valid DID: `did:[a-z]+:[a-zA-Z0-9._:%-]*[a-zA-Z0-9._-]`,
/// at most 2048 characters.
pub fn is_did(s: &str) -> bool {
    let mut parts = s.splitn(3, ':');
    let (Some("did"), Some(method), Some(id)) = (parts.next(), parts.next(), parts.next()) else {
        return false;
    };
    s.len() <= 2048
        && !method.is_empty()
        && method.bytes().all(|b| b.is_ascii_lowercase())
        && !id.is_empty()
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || b"._:%-".contains(&b))
        && !id.ends_with(':')
        && !id.ends_with('%')
}

/// A DID of a method atgate resolves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Method {
    /// `did:plc:` + 24 characters of base32 (`[a-z2-7]`).
    Plc,
    /// `did:web:<host>`: host only; a port only for `localhost`.
    Web {
        /// The host, with `:port` for `localhost`.
        authority: String,
        /// Whether the document is fetched over plain `http` (only `localhost`).
        insecure: bool,
    },
}

/// Why a DID cannot be resolved by its shape alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DidError {
    /// Not DID syntax.
    #[error("not a valid DID")]
    Syntax,
    /// A method other than `plc` and `web`, or a form of them atproto does not allow.
    #[error("unsupported DID method")]
    Unsupported,
    /// A spelling that is not the canonical one: a `did:plc` with upper-case letters, or a
    /// non-canonical DID where only the canonical form is accepted.
    #[error("not a canonical DID")]
    NotCanonical,
}

/// The one spelling of `did` that policy lists, replay keys, rate limits and identity
/// headers use, so that one identity is never two.
///
/// - `did:web`: the host is case-insensitive (it is resolved as a DNS name), so it is
///   lower-cased, with percent-escapes in upper case (RFC 3986 §6.2.2.1: `%3A`); `:`-path
///   segments are left as they are.
/// - `did:plc`: the identifier is lower-case base32 by definition (did-method-plc), so an
///   upper-case letter is refused rather than folded: folding would accept a spelling no
///   PLC directory serves.
/// - Other methods: as they are (DID Core: method-specific ids are case-sensitive).
///
/// Borrowed when `did` is canonical already.
pub fn canonical(did: &str) -> Result<Cow<'_, str>, DidError> {
    if !is_did(did) {
        return Err(DidError::Syntax);
    }
    if let Some(id) = did.strip_prefix("did:plc:") {
        return if id.bytes().any(|b| b.is_ascii_uppercase()) { Err(DidError::NotCanonical) } else { Ok(did.into()) };
    }
    let Some(id) = did.strip_prefix("did:web:") else {
        return Ok(did.into());
    };
    let host_len = id.find(':').unwrap_or(id.len());
    let mut escape = 0; // hex digits left of a `%XX` escape
    let host: String = id[..host_len]
        .chars()
        .map(|c| match c {
            '%' => {
                escape = 2;
                c
            }
            c if escape > 0 => {
                escape -= 1;
                c.to_ascii_uppercase()
            }
            c => c.to_ascii_lowercase(),
        })
        .collect();
    if host == id[..host_len] {
        return Ok(did.into());
    }
    Ok(format!("did:web:{host}{}", &id[host_len..]).into())
}

/// Whether `did` is spelled canonically (see [`canonical`]).
pub fn is_canonical(did: &str) -> bool {
    matches!(canonical(did), Ok(Cow::Borrowed(_)))
}

/// Classifies a DID.
pub fn method(did: &str) -> Result<Method, DidError> {
    if !is_did(did) {
        return Err(DidError::Syntax);
    }
    if let Some(id) = did.strip_prefix("did:plc:") {
        let base32 = id.len() == 24 && id.bytes().all(|b| matches!(b, b'a'..=b'z' | b'2'..=b'7'));
        return if base32 { Ok(Method::Plc) } else { Err(DidError::Unsupported) };
    }
    let Some(id) = did.strip_prefix("did:web:") else {
        return Err(DidError::Unsupported);
    };
    // No path segments (`:`), and a percent-encoded port only on localhost.
    if id.contains(':') {
        return Err(DidError::Unsupported);
    }
    let lower = id.to_ascii_lowercase();
    if let Some(port) = lower.strip_prefix("localhost%3a") {
        let valid = !port.is_empty() && port.len() <= 5 && port.bytes().all(|b| b.is_ascii_digit());
        return match port.parse::<u16>() {
            Ok(p) if valid && p > 0 => Ok(Method::Web { authority: format!("localhost:{p}"), insecure: true }),
            _ => Err(DidError::Unsupported),
        };
    }
    if id.contains('%') {
        return Err(DidError::Unsupported);
    }
    if lower == "localhost" {
        return Ok(Method::Web { authority: lower, insecure: true });
    }
    // A host name: labels of letters, digits and hyphens (DID syntax already allows `_`).
    let labels_ok = lower.split('.').all(|l| {
        !l.is_empty()
            && l.len() <= 63
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    });
    if !labels_ok || lower.len() > 253 {
        return Err(DidError::Unsupported);
    }
    Ok(Method::Web { authority: lower, insecure: false })
}

/// The URL of a DID's document: `<plc_url>/<did>` or `did:web`'s `/.well-known/did.json`.
pub fn document_url(did: &str, plc_url: &Url) -> Result<Url, DidError> {
    match method(did)? {
        Method::Plc => {
            let base = plc_url.as_str().trim_end_matches('/');
            // The id is base32 only, so the DID needs no escaping beyond `:`.
            Url::parse(&format!("{base}/{}", did.replace(':', "%3A"))).map_err(|_| DidError::Unsupported)
        }
        Method::Web { authority, insecure } => {
            let scheme = if insecure { "http" } else { "https" };
            Url::parse(&format!("{scheme}://{authority}/.well-known/did.json")).map_err(|_| DidError::Unsupported)
        }
    }
}

/// Splits a service-auth `iss` into the DID and its optional fragment (`did#frag`,
/// one `#`, fragment not empty).
pub fn split_fragment(iss: &str) -> Option<(&str, Option<&str>)> {
    match iss.split_once('#') {
        None => is_did(iss).then_some((iss, None)),
        Some((did, frag)) if is_did(did) && !frag.is_empty() && !frag.contains('#') => Some((did, Some(frag))),
        Some(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn syntax() {
        for ok in
            ["did:plc:ewvi7nxzyoun6zhxrhs64oiz", "did:web:example.com", "did:web:localhost%3A2583", "did:x:a.b_c-d"]
        {
            assert!(is_did(ok), "{ok}");
        }
        for bad in
            ["", "did", "did:", "did:plc:", "did:PLC:abc", "did:plc:abc:", "did:plc:abc%", "did:web:a b", "DID:web:a"]
        {
            assert!(!is_did(bad), "{bad}");
        }
        assert!(!is_did(&format!("did:web:{}", "a".repeat(2050))));
    }

    #[test]
    fn methods_and_urls() {
        let plc = Url::parse("https://plc.directory").unwrap();
        assert_eq!(
            document_url("did:plc:ewvi7nxzyoun6zhxrhs64oiz", &plc).unwrap().as_str(),
            "https://plc.directory/did%3Aplc%3Aewvi7nxzyoun6zhxrhs64oiz"
        );
        assert_eq!(
            document_url("did:web:Example.COM", &plc).unwrap().as_str(),
            "https://example.com/.well-known/did.json"
        );
        assert_eq!(
            document_url("did:web:localhost%3A2583", &plc).unwrap().as_str(),
            "http://localhost:2583/.well-known/did.json"
        );
        assert_eq!(method("did:plc:short"), Err(DidError::Unsupported));
        assert_eq!(method("did:plc:ewvi7nxzyoun6zhxrhs64oi1"), Err(DidError::Unsupported));
        assert_eq!(method("did:key:zQ3shokFTS3brHcDQrn82RUDfCZESWL1ZdCEJwekUDPQiYBme"), Err(DidError::Unsupported));
        assert_eq!(method("did:web:example.com:user:alice"), Err(DidError::Unsupported));
        assert_eq!(method("did:web:example.com%3A8443"), Err(DidError::Unsupported));
        assert_eq!(method("did:web:localhost%3A0"), Err(DidError::Unsupported));
        assert_eq!(method("did:web:localhost%3A99999"), Err(DidError::Unsupported));
        assert_eq!(method("did:web:-bad.example"), Err(DidError::Unsupported));
        assert_eq!(method("did:web:under_score.example"), Err(DidError::Unsupported));
    }

    #[test]
    fn canonical_spellings() {
        let port = "did:web:localhost%3A2583";
        for (input, expected) in [
            ("did:web:example.com", "did:web:example.com"),
            ("did:web:EXAMPLE.com", "did:web:example.com"),
            ("did:web:Example.COM", "did:web:example.com"),
            ("did:web:LocalHost%3a2583", port),
            ("did:web:localhost%3A2583", port),
            ("did:web:Example.com:User:Alice", "did:web:example.com:User:Alice"),
            ("did:plc:ewvi7nxzyoun6zhxrhs64oiz", "did:plc:ewvi7nxzyoun6zhxrhs64oiz"),
            (
                "did:key:zQ3shokFTS3brHcDQrn82RUDfCZESWL1ZdCEJwekUDPQiYBme",
                "did:key:zQ3shokFTS3brHcDQrn82RUDfCZESWL1ZdCEJwekUDPQiYBme",
            ),
        ] {
            assert_eq!(canonical(input).as_deref(), Ok(expected), "{input}");
            assert_eq!(is_canonical(input), input == expected, "{input}");
            // Canonicalizing twice changes nothing.
            assert_eq!(canonical(expected).as_deref(), Ok(expected));
        }
        assert_eq!(canonical("did:plc:EWVI7NXZYOUN6ZHXRHS64OIZ"), Err(DidError::NotCanonical));
        assert_eq!(canonical("did:plc:ewvi7nxzyoun6zhxrhs64oiZ"), Err(DidError::NotCanonical));
        assert_eq!(canonical("DID:web:example.com"), Err(DidError::Syntax));
        assert_eq!(canonical("did:web:"), Err(DidError::Syntax));
    }

    #[test]
    fn fragments() {
        assert_eq!(split_fragment("did:plc:abc"), Some(("did:plc:abc", None)));
        assert_eq!(split_fragment("did:plc:abc#atproto_labeler"), Some(("did:plc:abc", Some("atproto_labeler"))));
        assert_eq!(split_fragment("did:plc:abc#"), None);
        assert_eq!(split_fragment("did:plc:abc#a#b"), None);
        assert_eq!(split_fragment("https://x#y"), None);
    }
}
