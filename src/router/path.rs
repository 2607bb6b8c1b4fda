//! Request path normalization, done before matching so that a route's pattern and the
//! upstream see the same path.
//!
//! An auth gateway that matches `/public/../admin` as a public path while the upstream
//! resolves it to `/admin` has no auth at all. So atgate merges repeated slashes and
//! removes dot segments (RFC 3986 §5.2.4, also for `%2e` spellings) and forwards the
//! normalized path; encoded slashes and backslashes (`%2F`, `%5C`, `\`) are refused,
//! since upstreams disagree on whether they separate segments.

use std::borrow::Cow;

/// Why a path was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BadPath {
    /// Not an origin-form path (e.g. `*`).
    NotAbsolute,
    /// `%2F`, `%5C` or `\`.
    EncodedSeparator,
}

/// Normalizes a request path; borrows when it is already normal.
pub fn normalize(path: &str) -> Result<Cow<'_, str>, BadPath> {
    if !path.starts_with('/') {
        return Err(BadPath::NotAbsolute);
    }
    let bytes = path.as_bytes();
    let mut suspicious = false;
    for (i, &b) in bytes.iter().enumerate() {
        match b {
            b'\\' => return Err(BadPath::EncodedSeparator),
            b'%' => {
                let hex = bytes.get(i + 1..i + 3).map(|h| h.to_ascii_uppercase());
                match hex.as_deref() {
                    Some(b"2F") | Some(b"5C") => return Err(BadPath::EncodedSeparator),
                    Some(b"2E") => suspicious = true,
                    _ => {}
                }
            }
            b'/' if matches!(bytes.get(i + 1), Some(b'/') | Some(b'.')) => suspicious = true,
            _ => {}
        }
    }
    if !suspicious {
        return Ok(Cow::Borrowed(path));
    }
    let mut out: Vec<&str> = Vec::new();
    let segments: Vec<&str> = path[1..].split('/').collect();
    let last = segments.len() - 1;
    let mut trailing_slash = false;
    for (i, seg) in segments.iter().enumerate() {
        let is_last = i == last;
        match dot_kind(seg) {
            Some(1) => trailing_slash = is_last,
            Some(_) => {
                out.pop();
                trailing_slash = is_last;
            }
            None if seg.is_empty() => trailing_slash = is_last,
            None => {
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

/// `Some(1)` for `.`, `Some(2)` for `..`, in any `%2e` spelling.
fn dot_kind(seg: &str) -> Option<u8> {
    let s = seg.as_bytes();
    let mut dots = 0u8;
    let mut i = 0;
    while i < s.len() {
        if s[i] == b'.' {
            i += 1;
        } else if s.len() >= i + 3 && s[i] == b'%' && s[i + 1] == b'2' && s[i + 2].eq_ignore_ascii_case(&b'e') {
            i += 3;
        } else {
            return None;
        }
        dots += 1;
        if dots > 2 {
            return None;
        }
    }
    (dots > 0).then_some(dots)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normal_paths_borrow() {
        for p in ["/", "/a", "/a/b/", "/xrpc/com.example.getThing", "/a.b/c.d", "/a%20b"] {
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
            ("/a/...", "/a/..."),
            ("/a//", "/a/"),
            ("/..", "/"),
            ("/.hidden", "/.hidden"),
        ];
        for (input, want) in cases {
            assert_eq!(normalize(input).unwrap(), want, "{input}");
        }
    }

    #[test]
    fn encoded_separators_refused() {
        for p in ["/a%2fb", "/a%2Fb", "/a%5cb", "/a\\b"] {
            assert_eq!(normalize(p), Err(BadPath::EncodedSeparator), "{p}");
        }
        assert_eq!(normalize("*"), Err(BadPath::NotAbsolute));
    }
}
