//! Host and path patterns of `routes[].match`, their order of specificity, and overlap.
//!
//! Path patterns come in three kinds, most specific first:
//! - exact: `/xrpc/com.example.getThing`
//! - glob: `/xrpc/com.example.*`, where `*` matches any run of characters except `/`
//! - prefix: anything ending in `/`, e.g. `/api/` (and `/`, which matches every path)
//!
//! Within a kind, more literal characters win. Two routes of the same host pattern whose
//! paths have equal rank and can match one same path (and share a method) are ambiguous:
//! the config is rejected rather than letting file order decide.

use std::cmp::Ordering;

/// A `match.host` value: exact (`api.example.com`) or a leading wildcard (`*.example.com`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostPattern {
    /// Matches this host only (lowercase, no port).
    Exact(String),
    /// `*.example.com`: matches any host ending in `.example.com` (stored with the dot).
    Suffix(String),
}

impl HostPattern {
    /// Parses a host pattern; hosts are compared lowercased and without a port.
    pub fn parse(text: &str) -> Result<HostPattern, String> {
        let lower = text.to_ascii_lowercase();
        let (wild, name) = match lower.strip_prefix("*.") {
            Some(rest) => (true, rest),
            None => (false, lower.as_str()),
        };
        let valid_label = |l: &str| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        };
        if name.is_empty() || name.len() > 253 || !name.split('.').all(valid_label) {
            return Err(format!(
                "invalid host pattern {text:?} (expected a host name like api.example.com or *.example.com, without port)"
            ));
        }
        Ok(if wild { HostPattern::Suffix(format!(".{name}")) } else { HostPattern::Exact(name.to_owned()) })
    }

    /// Whether `host` (already lowercased, port removed) matches.
    pub fn matches(&self, host: &str) -> bool {
        match self {
            HostPattern::Exact(h) => h == host,
            HostPattern::Suffix(s) => host.len() > s.len() && host.ends_with(s.as_str()),
        }
    }

    /// Higher is more specific: exact hosts, then longer wildcard suffixes.
    fn rank(&self) -> (u8, usize) {
        match self {
            HostPattern::Exact(h) => (2, h.len()),
            HostPattern::Suffix(s) => (1, s.len()),
        }
    }
}

/// A `match.path` value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathPattern {
    /// The path must equal this.
    Exact(String),
    /// `*` matches any run of characters other than `/`.
    Glob(String),
    /// The path must start with this (which ends in `/`).
    Prefix(String),
}

impl PathPattern {
    /// Parses a path pattern.
    pub fn parse(text: &str) -> Result<PathPattern, String> {
        if !text.starts_with('/') {
            return Err(format!("invalid path {text:?} (must start with /)"));
        }
        if let Some(b) = text.bytes().find(|b| !is_path_byte(*b) && *b != b'*') {
            return Err(format!("invalid path {text:?} (character {:?} is not allowed in a path pattern)", b as char));
        }
        if text.contains("**") {
            return Err(format!("invalid path {text:?} (** is not supported; * matches within one segment)"));
        }
        if text.split('/').any(|seg| seg == "." || seg == "..") || text.contains("//") {
            return Err(format!("invalid path {text:?} (no empty, . or .. segments)"));
        }
        Ok(if text.contains('*') {
            PathPattern::Glob(text.to_owned())
        } else if text.ends_with('/') {
            PathPattern::Prefix(text.to_owned())
        } else {
            PathPattern::Exact(text.to_owned())
        })
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        match self {
            PathPattern::Exact(s) | PathPattern::Glob(s) | PathPattern::Prefix(s) => s,
        }
    }

    /// The literal text every matching path starts with.
    pub fn literal_prefix(&self) -> &str {
        match self {
            PathPattern::Exact(s) | PathPattern::Prefix(s) => s,
            PathPattern::Glob(s) => &s[..s.find('*').unwrap_or(s.len())],
        }
    }

    /// Whether a (normalized) request path matches.
    pub fn matches(&self, path: &str) -> bool {
        match self {
            PathPattern::Exact(p) => p == path,
            PathPattern::Prefix(p) => path.starts_with(p.as_str()),
            PathPattern::Glob(g) => glob_match(g.as_bytes(), path.as_bytes()),
        }
    }

    /// Higher is more specific: exact, then glob, then prefix; then more literal bytes.
    fn rank(&self) -> (u8, usize) {
        match self {
            PathPattern::Exact(p) => (3, p.len()),
            PathPattern::Glob(g) => (2, g.len() - g.matches('*').count()),
            PathPattern::Prefix(p) => (1, p.len()),
        }
    }

    /// Whether some path matches both patterns (only asked of patterns of equal rank).
    fn intersects(&self, other: &PathPattern) -> bool {
        match (self, other) {
            (PathPattern::Exact(a), b) | (b, PathPattern::Exact(a)) => b.matches(a),
            (PathPattern::Prefix(a), PathPattern::Prefix(b)) => a.starts_with(b.as_str()) || b.starts_with(a.as_str()),
            (PathPattern::Glob(a), PathPattern::Glob(b)) => globs_intersect(a.as_bytes(), b.as_bytes()),
            // A glob and a prefix never have equal rank; compare conservatively anyway.
            (PathPattern::Glob(g), PathPattern::Prefix(p)) | (PathPattern::Prefix(p), PathPattern::Glob(g)) => {
                let lit = &g[..g.find('*').unwrap_or(g.len())];
                lit.starts_with(p.as_str()) || p.starts_with(lit)
            }
        }
    }
}

/// Bytes allowed in a path pattern: RFC 3986 pchar and `/`, without `%` escapes.
fn is_path_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"/-._~!$&'()+,;=:@".contains(&b)
}

/// `*` matches any run of bytes other than `/`.
fn glob_match(pattern: &[u8], text: &[u8]) -> bool {
    // Iterative matcher with one backtrack point per star; O(n*m) worst case.
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        if p < pattern.len() && pattern[p] == b'*' {
            star = Some((p, t));
            p += 1;
        } else if p < pattern.len() && pattern[p] == text[t] {
            p += 1;
            t += 1;
        } else if let Some((sp, st)) = star {
            // Let the last star swallow one more byte, unless that byte is a `/`.
            if text[st] == b'/' {
                return false;
            }
            p = sp + 1;
            t = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|&b| b == b'*')
}

/// Whether two globs (with `*` = `[^/]*`) match a common string.
fn globs_intersect(a: &[u8], b: &[u8]) -> bool {
    // memo[i][j]: can a[i..] and b[j..] match one same string? Patterns are short.
    let mut memo = vec![vec![None; b.len() + 1]; a.len() + 1];
    fn go(a: &[u8], b: &[u8], i: usize, j: usize, memo: &mut Vec<Vec<Option<bool>>>) -> bool {
        if let Some(r) = memo[i][j] {
            return r;
        }
        let r = match (a.get(i), b.get(j)) {
            (None, None) => true,
            (Some(b'*'), _) if go(a, b, i + 1, j, memo) => true,
            (_, Some(b'*')) if go(a, b, i, j + 1, memo) => true,
            (Some(b'*'), Some(&c)) if c != b'*' => c != b'/' && go(a, b, i, j + 1, memo),
            (Some(&c), Some(b'*')) if c != b'*' => c != b'/' && go(a, b, i + 1, j, memo),
            (Some(b'*'), Some(b'*')) => false, // both skips were tried above
            (Some(x), Some(y)) => x == y && go(a, b, i + 1, j + 1, memo),
            _ => false,
        };
        memo[i][j] = Some(r);
        r
    }
    go(a, b, 0, 0, &mut memo)
}

/// The match key of one route, ordered by specificity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MatchKey {
    /// `None` matches any host.
    pub host: Option<HostPattern>,
    /// The path pattern.
    pub path: PathPattern,
    /// `None` matches any method.
    pub methods: Option<Vec<http::Method>>,
}

impl MatchKey {
    /// Orders keys most specific first.
    pub fn specificity_cmp(&self, other: &MatchKey) -> Ordering {
        let host_rank = |k: &MatchKey| k.host.as_ref().map_or((0, 0), HostPattern::rank);
        host_rank(other)
            .cmp(&host_rank(self))
            .then_with(|| other.path.rank().cmp(&self.path.rank()))
            // Method-restricted routes before catch-all ones of the same path.
            .then_with(|| other.methods.is_some().cmp(&self.methods.is_some()))
    }

    /// Whether the two keys could both match one request with no rule to pick one.
    pub fn is_ambiguous_with(&self, other: &MatchKey) -> bool {
        let methods_overlap = match (&self.methods, &other.methods) {
            (Some(a), Some(b)) => a.iter().any(|m| b.contains(m)),
            (None, None) => true,
            // One lists methods, the other does not: the listed one is more specific.
            _ => false,
        };
        self.host == other.host
            && self.path.rank() == other.path.rank()
            && methods_overlap
            && self.path.intersects(&other.path)
    }

    /// Whether a request matches, method aside.
    pub fn matches_target(&self, host: Option<&str>, path: &str) -> bool {
        let host_ok = match (&self.host, host) {
            (None, _) => true,
            (Some(p), Some(h)) => p.matches(h),
            (Some(_), None) => false,
        };
        host_ok && self.path.matches(path)
    }

    /// Whether the method is allowed.
    pub fn allows(&self, method: &http::Method) -> bool {
        self.methods.as_ref().is_none_or(|ms| ms.contains(method))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> PathPattern {
        PathPattern::parse(s).unwrap()
    }

    #[test]
    fn kinds() {
        assert_eq!(p("/a/b"), PathPattern::Exact("/a/b".into()));
        assert_eq!(p("/a/"), PathPattern::Prefix("/a/".into()));
        assert_eq!(p("/"), PathPattern::Prefix("/".into()));
        assert_eq!(p("/xrpc/com.example.*"), PathPattern::Glob("/xrpc/com.example.*".into()));
        for bad in ["a", "", "/a//b", "/a/../b", "/a/**", "/a b", "/%2F"] {
            assert!(PathPattern::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn glob_matching() {
        let g = p("/xrpc/com.example.*");
        assert!(g.matches("/xrpc/com.example.getThing"));
        assert!(g.matches("/xrpc/com.example."));
        assert!(!g.matches("/xrpc/com.example.a/b"));
        assert!(!g.matches("/xrpc/com.other.getThing"));
        let g = p("/a/*/c");
        assert!(g.matches("/a/b/c"));
        assert!(!g.matches("/a/b/x/c"));
        assert!(p("/*.json").matches("/x.json"));
    }

    #[test]
    fn prefix_and_exact() {
        assert!(p("/api/").matches("/api/x/y"));
        assert!(!p("/api/").matches("/api"));
        assert!(!p("/api/").matches("/apix/"));
        assert!(p("/api").matches("/api"));
        assert!(!p("/api").matches("/api/"));
    }

    #[test]
    fn glob_intersection() {
        assert!(globs_intersect(b"/a/*", b"/*/b"));
        assert!(globs_intersect(b"/x.*", b"/*.json"));
        assert!(!globs_intersect(b"/a/*", b"/b/*"));
        assert!(!globs_intersect(b"/a*/c", b"/ab/*/c"));
        assert!(globs_intersect(b"/*", b"/*"));
    }

    #[test]
    fn hosts() {
        let h = HostPattern::parse("*.Example.com").unwrap();
        assert!(h.matches("api.example.com"));
        assert!(!h.matches("example.com"));
        assert!(!h.matches("evilexample.com"));
        assert!(HostPattern::parse("a:80").is_err());
        assert!(HostPattern::parse("*").is_err());
    }
}
