//! The canonical request path: routes are chosen on it and the upstream receives it.
//!
//! An auth gateway that matches `/public/../admin` as a public path while the upstream
//! resolves it to `/admin` has no auth at all, and the same holds for every other spelling
//! an upstream router treats as the same handler. So each spelling class is either made
//! canonical here or refused (docs/configuration.md, "How a request is matched"):
//! - `%XX` of a byte a route pattern may contain (RFC 3986 unreserved, sub-delims, `:`,
//!   `@`) is decoded: Go `net/http`, Starlette and Spring route on the decoded path, and
//!   Express decodes `:param`s (`@atproto/xrpc-server` routes `/xrpc/:methodId`-style).
//! - repeated slashes are merged and dot segments removed (RFC 3986 §5.2.4), `%2e` too.
//! - refused: encoded separators (`%2F`, `%5C`, `\`: upstreams disagree on whether they
//!   split segments), `;` (Tomcat and Jetty drop `;params`), control characters and
//!   spaces, malformed escapes, `%25` followed by an escape (an upstream that decodes twice
//!   would see another path), and segments ending in `.` (IIS drops trailing dots, Spring's
//!   suffix match ignores extensions).
//! - under `/xrpc/` the one segment must be an NSID (ATPROTO-AUTH.md, `/xrpc/<nsid>`),
//!   with at most one trailing `/`, which is dropped.
//!
//! Letter case and other trailing slashes are left as sent: matching ignores them
//! ([`super::pattern`]), and the route's pattern decides what is forwarded.

use std::borrow::Cow;

use crate::config::is_nsid;

/// Why a path was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BadPath {
    /// Not an origin-form path (e.g. `*`).
    NotAbsolute,
    /// `%2F`, `%5C` or `\`.
    EncodedSeparator,
    /// `%` not followed by two hex digits.
    BadEscape,
    /// `%25` followed by an escape, e.g. `%2561`.
    DoubleEncoding,
    /// A control character or space, raw or encoded.
    ControlOrSpace,
    /// `;` (or `%3B`): a path parameter.
    PathParameter,
    /// A segment ending in `.` other than `.` and `..`.
    TrailingDot,
    /// `/xrpc` not followed by one NSID segment.
    NotXrpcMethod,
    /// An escaped non-ASCII character that Unicode case folding makes an ASCII letter.
    CaseFoldLookalike,
}

impl BadPath {
    /// The client-facing explanation.
    pub fn message(self) -> &'static str {
        match self {
            BadPath::NotAbsolute => "invalid request path: expected an absolute path",
            BadPath::EncodedSeparator => "invalid request path: encoded slashes and backslashes are not allowed",
            BadPath::BadEscape => "invalid request path: % must start an escape of two hex digits",
            BadPath::DoubleEncoding => "invalid request path: double percent-encoding is not allowed",
            BadPath::ControlOrSpace => "invalid request path: control characters and spaces are not allowed",
            BadPath::PathParameter => "invalid request path: ; path parameters are not allowed",
            BadPath::TrailingDot => "invalid request path: a segment may not end in a dot",
            BadPath::NotXrpcMethod => "invalid xrpc path: expected /xrpc/<nsid>",
            BadPath::CaseFoldLookalike => {
                "invalid request path: characters that case-fold to ASCII letters (U+212A, U+0131, U+017F) are not allowed"
            }
        }
    }
}

/// Makes a request path canonical; borrows when it already is.
pub fn normalize(path: &str) -> Result<Cow<'_, str>, BadPath> {
    if !path.starts_with('/') {
        return Err(BadPath::NotAbsolute);
    }
    let decoded = decode(path)?;
    let resolved = match resolve(&decoded)? {
        Cow::Borrowed(_) => decoded,
        Cow::Owned(s) => Cow::Owned(s),
    };
    xrpc(resolved)
}

/// Bytes a route pattern may name literally; their escapes are decoded.
fn decodes(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-._~!$&'()*+,=:@".contains(&b)
}

fn hex(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

/// The escape at `bytes[i..]` (which starts with `%`).
fn escape_at(bytes: &[u8], i: usize) -> Option<u8> {
    match bytes.get(i + 1..i + 3) {
        Some(&[h, l]) => Some(hex(h)? << 4 | hex(l)?),
        _ => None,
    }
}

/// Checks every byte and escape; decodes escapes of pattern bytes.
fn decode(path: &str) -> Result<Cow<'_, str>, BadPath> {
    let bytes = path.as_bytes();
    let mut needs_decoding = false;
    for (i, &b) in bytes.iter().enumerate() {
        match b {
            b'\\' => return Err(BadPath::EncodedSeparator),
            b';' => return Err(BadPath::PathParameter),
            0..=0x20 | 0x7f => return Err(BadPath::ControlOrSpace),
            b'%' => match escape_at(bytes, i).ok_or(BadPath::BadEscape)? {
                b'/' | b'\\' => return Err(BadPath::EncodedSeparator),
                b';' => return Err(BadPath::PathParameter),
                0..=0x20 | 0x7f => return Err(BadPath::ControlOrSpace),
                b'%' if escape_at(bytes, i + 2).is_some() => return Err(BadPath::DoubleEncoding),
                v if decodes(v) => needs_decoding = true,
                _ => {}
            },
            _ => {}
        }
    }
    if has_case_fold_lookalike(bytes) {
        return Err(BadPath::CaseFoldLookalike);
    }
    if !needs_decoding {
        return Ok(Cow::Borrowed(path));
    }
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match escape_at(bytes, i).filter(|&v| bytes[i] == b'%' && decodes(v)) {
            Some(v) => {
                out.push(v);
                i += 3;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    // Decoding can assemble a double encoding the raw check could not see:
    // `/%256%31dmin` decodes to `/%2561dmin`, which an upstream decoding twice reads as
    // `/admin`. The output's `%` all come from `%25`s kept as sent.
    if (0..out.len()).any(|i| out[i] == b'%' && escape_at(&out, i) == Some(b'%') && escape_at(&out, i + 2).is_some()) {
        return Err(BadPath::DoubleEncoding);
    }
    // Only ASCII escapes were replaced by ASCII bytes: still UTF-8.
    Ok(Cow::Owned(String::from_utf8(out).map_err(|_| BadPath::BadEscape)?))
}

/// Whether the path has an escaped character that Unicode case folding turns into an
/// ASCII letter (K U+212A -> k, ı U+0131 -> i, ſ U+017F -> s): an upstream that decodes
/// and compares case-insensitively with Unicode rules (Java's `equalsIgnoreCase`, Spring's
/// case-insensitive matching) would run the handler of the ASCII spelling, which atgate's
/// ASCII-only matching cannot see.
fn has_case_fold_lookalike(bytes: &[u8]) -> bool {
    const LOOKALIKES: [&[u8]; 3] = [b"%E2%84%AA", b"%C4%B1", b"%C5%BF"];
    let at = |i: usize, l: &[u8]| bytes.get(i..i + l.len()).is_some_and(|b| b.eq_ignore_ascii_case(l));
    (0..bytes.len()).any(|i| bytes[i] == b'%' && LOOKALIKES.iter().any(|l| at(i, l)))
}

/// Merges repeated slashes and removes dot segments; refuses segments ending in `.`.
fn resolve(path: &str) -> Result<Cow<'_, str>, BadPath> {
    let mut changes = false;
    let mut segments = path[1..].split('/').peekable();
    while let Some(seg) = segments.next() {
        match seg {
            "." | ".." => changes = true,
            "" if segments.peek().is_some() => changes = true,
            s if s.ends_with('.') => return Err(BadPath::TrailingDot),
            _ => {}
        }
    }
    if !changes {
        return Ok(Cow::Borrowed(path));
    }
    let mut out: Vec<&str> = Vec::new();
    let segments: Vec<&str> = path[1..].split('/').collect();
    let last = segments.len() - 1;
    let mut trailing_slash = false;
    for (i, seg) in segments.iter().enumerate() {
        let is_last = i == last;
        match *seg {
            "." | "" => trailing_slash = is_last,
            ".." => {
                out.pop();
                trailing_slash = is_last;
            }
            seg => {
                out.push(seg);
                trailing_slash = false;
            }
        }
    }
    let mut normal = String::with_capacity(path.len());
    for seg in &out {
        normal.push('/');
        normal.push_str(seg);
    }
    if trailing_slash || out.is_empty() {
        normal.push('/');
    }
    Ok(Cow::Owned(normal))
}

/// Under `/xrpc` (any case, as Express matches it) exactly one NSID segment, whose
/// trailing `/` is dropped.
fn xrpc(path: Cow<'_, str>) -> Result<Cow<'_, str>, BadPath> {
    let first = path[1..].split('/').next().unwrap_or("");
    if !first.eq_ignore_ascii_case("xrpc") {
        return Ok(path);
    }
    let rest = path.get(6..).unwrap_or("");
    let (nsid, slash) = match rest.strip_suffix('/') {
        Some(n) => (n, true),
        None => (rest, false),
    };
    if !is_nsid(nsid) {
        return Err(BadPath::NotXrpcMethod);
    }
    Ok(match path {
        Cow::Borrowed(p) if slash => Cow::Borrowed(&p[..p.len() - 1]),
        Cow::Owned(mut p) if slash => {
            p.pop();
            Cow::Owned(p)
        }
        p => p,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normal_paths_borrow() {
        for p in
            ["/", "/a", "/a/b/", "/xrpc/com.example.getThing", "/xrpc/com.example.getThing/", "/a.b/c.d", "/a%C3%A9"]
        {
            assert!(matches!(normalize(p), Ok(Cow::Borrowed(_))), "{p}");
        }
    }

    #[test]
    fn dot_segments_and_slashes() {
        let cases = [
            ("//a", "/a"),
            ("/a//b", "/a/b"),
            ("/a/./b", "/a/b"),
            ("/a/../b", "/b"),
            ("/public/../admin/x", "/admin/x"),
            ("/../../etc", "/etc"),
            ("/a/b/..", "/a/"),
            ("/a/.", "/a/"),
            ("/a/%2e%2E/b", "/b"),
            ("/a/.%2e/b", "/b"),
            ("/a//", "/a/"),
            ("/..", "/"),
            ("/.hidden", "/.hidden"),
        ];
        for (input, want) in cases {
            assert_eq!(normalize(input).unwrap(), want, "{input}");
        }
    }

    #[test]
    fn unreserved_escapes_decoded() {
        let cases = [
            ("/xrpc/com.example.getThin%67", "/xrpc/com.example.getThing"),
            ("/%61dmin", "/admin"),
            ("/profile/did%3Aplc%3Axyz", "/profile/did:plc:xyz"),
            ("/a%7e%2D%5f", "/a~-_"),
            ("/a%3fb%C3%A9", "/a%3fb%C3%A9"),
            ("/XRPC/com.example.getThing/", "/XRPC/com.example.getThing"),
            ("/xrpc//com.example.getThing", "/xrpc/com.example.getThing"),
        ];
        for (input, want) in cases {
            assert_eq!(normalize(input).unwrap(), want, "{input}");
        }
    }

    #[test]
    fn refused() {
        let cases = [
            ("/a%2fb", BadPath::EncodedSeparator),
            ("/a%2Fb", BadPath::EncodedSeparator),
            ("/a%5cb", BadPath::EncodedSeparator),
            ("/a\\b", BadPath::EncodedSeparator),
            ("*", BadPath::NotAbsolute),
            ("/a%zz", BadPath::BadEscape),
            ("/a%2", BadPath::BadEscape),
            ("/a%2561", BadPath::DoubleEncoding),
            // Escapes decoded once assemble a double encoding: `%256%31` -> `%2561`.
            ("/%256%31dmin", BadPath::DoubleEncoding),
            ("/a%252%46", BadPath::DoubleEncoding),
            ("/%E2%84%AAey", BadPath::CaseFoldLookalike),
            ("/adm%c4%b1n", BadPath::CaseFoldLookalike),
            ("/%C5%BFecret", BadPath::CaseFoldLookalike),
            ("/a%20b", BadPath::ControlOrSpace),
            ("/a%00", BadPath::ControlOrSpace),
            ("/a%0a", BadPath::ControlOrSpace),
            ("/a%7F", BadPath::ControlOrSpace),
            ("/admin;x", BadPath::PathParameter),
            ("/admin%3bx", BadPath::PathParameter),
            ("/admin.", BadPath::TrailingDot),
            ("/admin%2e/x", BadPath::TrailingDot),
            ("/a/...", BadPath::TrailingDot),
            ("/xrpc", BadPath::NotXrpcMethod),
            ("/xrpc/", BadPath::NotXrpcMethod),
            ("/xrpc/getThing", BadPath::NotXrpcMethod),
            ("/xrpc/com.example.getThing/x", BadPath::NotXrpcMethod),
            ("/Xrpc/com.example.get%2Dthing", BadPath::NotXrpcMethod),
        ];
        for (p, want) in cases {
            assert_eq!(normalize(p), Err(want), "{p}");
        }
        // A literal `%25` that does not form an escape is kept.
        assert_eq!(normalize("/100%25").unwrap(), "/100%25");
    }
}
