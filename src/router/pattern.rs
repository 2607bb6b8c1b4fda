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
//!
//! Matching is on the canonical path ([`super::path`]) and ignores what Express (the
//! router of `@atproto/xrpc-server`) ignores: ASCII letter case and one trailing `/`
//! (a prefix `/api/` also matches `/api`, as `app.use('/api')` does). So no spelling of a
//! path reaches an upstream handler through a broader route than the one naming it; and
//! the path forwarded is spelled as the pattern is ([`PathPattern::forwarded`]), so a
//! case-sensitive upstream sees the handler the route names, or none.

use std::borrow::Cow;
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
        if let Some(why) = never_matches(text) {
            return Err(format!("path {text:?} never matches: {why}"));
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

    /// Whether a canonical request path matches, ignoring ASCII case and a trailing `/`.
    pub fn matches(&self, path: &str) -> bool {
        match self {
            PathPattern::Exact(p) => p.eq_ignore_ascii_case(trim_slash(path)),
            PathPattern::Prefix(p) => starts_with_fold(path, p) || p[..p.len() - 1].eq_ignore_ascii_case(path),
            PathPattern::Glob(g) => glob_match(g.as_bytes(), trim_slash(path).as_bytes(), fold_eq),
        }
    }

    /// The path to forward once this pattern has matched `path`: the pattern's own
    /// spelling where it is literal (an exact pattern is forwarded as written; a prefix
    /// matched without its `/` gets it), the request's elsewhere. Borrows when the
    /// request already spells it so.
    pub fn forwarded<'a>(&'a self, path: &'a str) -> Cow<'a, str> {
        match self {
            PathPattern::Exact(p) => Cow::Borrowed(p),
            PathPattern::Prefix(p) if path.starts_with(p.as_str()) => Cow::Borrowed(path),
            PathPattern::Prefix(p) => match path.get(p.len()..) {
                Some(rest) => Cow::Owned(format!("{p}{rest}")),
                None => Cow::Borrowed(p),
            },
            PathPattern::Glob(g) => {
                let key = trim_slash(path);
                if glob_match(g.as_bytes(), key.as_bytes(), |a, b| a == b) {
                    return Cow::Borrowed(key);
                }
                // Only ASCII letters differ in case; both sides are valid UTF-8.
                let spelled = glob_respell(g.as_bytes(), key.as_bytes());
                Cow::Owned(spelled.and_then(|b| String::from_utf8(b).ok()).unwrap_or_else(|| key.to_owned()))
            }
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
            (PathPattern::Prefix(a), PathPattern::Prefix(b)) => starts_with_fold(a, b) || starts_with_fold(b, a),
            (PathPattern::Glob(a), PathPattern::Glob(b)) => {
                globs_intersect(a.to_ascii_lowercase().as_bytes(), b.to_ascii_lowercase().as_bytes())
            }
            // A glob and a prefix never have equal rank; compare conservatively anyway.
            (PathPattern::Glob(g), PathPattern::Prefix(p)) | (PathPattern::Prefix(p), PathPattern::Glob(g)) => {
                let lit = &g[..g.find('*').unwrap_or(g.len())];
                starts_with_fold(lit, p) || starts_with_fold(p, lit)
            }
        }
    }
}

/// Why no canonical request path ([`super::path`]) could match the pattern, if so.
fn never_matches(text: &str) -> Option<String> {
    if text.contains(';') {
        return Some("requests with ; path parameters are refused".into());
    }
    if text.split('/').any(|seg| seg.ends_with('.')) {
        return Some("requests with a segment ending in . are refused".into());
    }
    if text.len() > 1 && text.ends_with('/') && text.contains('*') {
        let trimmed = &text[..text.len() - 1];
        return Some(format!("a trailing / is ignored when matching a glob (write {trimmed:?})"));
    }
    let mut segments = text[1..].split('/');
    if !segments.next().is_some_and(|s| s.eq_ignore_ascii_case("xrpc")) {
        return None;
    }
    // ATPROTO-AUTH.md: XRPC paths are /xrpc/<nsid>; the router refuses anything else.
    let segs: Vec<&str> = segments.collect();
    match segs.as_slice() {
        [""] => None,
        [nsid] if nsid.contains('*') || crate::config::is_nsid(nsid) => None,
        [nsid, ""] if crate::config::is_nsid(nsid) => {
            Some(format!("under /xrpc/ a trailing / is ignored (write \"/xrpc/{nsid}\")"))
        }
        [] => Some("a request for /xrpc is refused (write /xrpc/ for every XRPC method)".into()),
        _ => {
            Some("under /xrpc/ a path is one NSID, like /xrpc/com.example.getThing; other requests are refused".into())
        }
    }
}

/// Bytes allowed in a path pattern: RFC 3986 pchar and `/`, without `%` escapes.
fn is_path_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"/-._~!$&'()+,;=:@".contains(&b)
}

/// The path without one trailing `/` (`/` itself stays).
fn trim_slash(path: &str) -> &str {
    match path.strip_suffix('/') {
        Some(p) if !p.is_empty() => p,
        _ => path,
    }
}

fn fold_eq(a: u8, b: u8) -> bool {
    a.eq_ignore_ascii_case(&b)
}

/// Whether `text` starts with `prefix`, ignoring ASCII case.
fn starts_with_fold(text: &str, prefix: &str) -> bool {
    text.as_bytes().get(..prefix.len()).is_some_and(|t| t.eq_ignore_ascii_case(prefix.as_bytes()))
}

/// `*` matches any run of bytes other than `/`; literal bytes compare with `eq`.
fn glob_match(pattern: &[u8], text: &[u8], eq: impl Fn(u8, u8) -> bool) -> bool {
    // Iterative matcher with one backtrack point per star; O(n*m) worst case.
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        if p < pattern.len() && pattern[p] == b'*' {
            star = Some((p, t));
            p += 1;
        } else if p < pattern.len() && eq(pattern[p], text[t]) {
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

/// `text` (which matches `pattern` ignoring case) with the pattern's literal bytes in the
/// pattern's case. A table of which suffixes match, then one walk through it.
fn glob_respell(pattern: &[u8], text: &[u8]) -> Option<Vec<u8>> {
    let (n, m) = (pattern.len(), text.len());
    // ok[i * (m + 1) + j]: pattern[i..] matches text[j..].
    let mut ok = vec![false; (n + 1) * (m + 1)];
    let at = |i: usize, j: usize| i * (m + 1) + j;
    ok[at(n, m)] = true;
    for i in (0..n).rev() {
        for j in (0..=m).rev() {
            ok[at(i, j)] = if pattern[i] == b'*' {
                ok[at(i + 1, j)] || (j < m && text[j] != b'/' && ok[at(i, j + 1)])
            } else {
                j < m && fold_eq(pattern[i], text[j]) && ok[at(i + 1, j + 1)]
            };
        }
    }
    if !ok[at(0, 0)] {
        return None;
    }
    let (mut i, mut j, mut out) = (0, 0, Vec::with_capacity(m));
    while i < n || j < m {
        if i < n && pattern[i] == b'*' {
            if ok[at(i + 1, j)] {
                i += 1;
            } else {
                out.push(text[j]);
                j += 1;
            }
        } else {
            out.push(pattern[i]);
            i += 1;
            j += 1;
        }
    }
    Some(out)
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

    /// Whether the method is allowed. HEAD is allowed where GET is: Express (and most
    /// frameworks) run a GET handler for HEAD, so HEAD must be decided as GET would be.
    pub fn allows(&self, method: &http::Method) -> bool {
        self.methods
            .as_ref()
            .is_none_or(|ms| ms.contains(method) || (method == http::Method::HEAD && ms.contains(&http::Method::GET)))
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
        assert!(p("/xrpc/").matches("/xrpc/com.example.getThing"));
        assert!(p("/xrpc/*").matches("/xrpc/com.example.getThing"));
    }

    /// Patterns no canonical path can match are config errors, each saying why.
    #[test]
    fn never_matching_patterns_refused() {
        let cases = [
            ("/admin;jsessionid", "; path parameters"),
            ("/admin./", "ending in ."),
            ("/a/*/", "write \"/a/*\""),
            ("/xrpc", "/xrpc is refused"),
            ("/XRPC/health", "one NSID"),
            ("/xrpc/com.example.getThing/", "write \"/xrpc/com.example.getThing\""),
            ("/xrpc/com.example.*/x", "one NSID"),
        ];
        for (text, why) in cases {
            let err = PathPattern::parse(text).unwrap_err();
            assert!(err.contains("never matches") && err.contains(why), "{text}: {err}");
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
        assert!(!p("/api/").matches("/apix/"));
        assert!(!p("/api/").matches("/apix"));
        assert!(p("/api").matches("/api"));
        assert!(!p("/api").matches("/api/x"));
        assert!(!p("/api").matches("/apix"));
    }

    /// Express ignores a trailing slash (non-strict routing, and `app.use('/api')` takes
    /// `/api`): so do the patterns.
    #[test]
    fn trailing_slash_ignored() {
        assert!(p("/api/").matches("/api"));
        assert!(p("/api").matches("/api/"));
        assert!(p("/xrpc/app.bsky.*").matches("/xrpc/app.bsky.x/"));
        assert!(!p("/xrpc/app.bsky.*").matches("/xrpc/app.bsky.x/y"));
        assert!(!p("/api").matches("/api//"));
    }

    /// Express matches case-insensitively by default: so do the patterns.
    #[test]
    fn ascii_case_ignored() {
        assert!(p("/xrpc/com.example.getThing").matches("/XRPC/COM.EXAMPLE.GETTHING"));
        assert!(p("/xrpc/com.example.*").matches("/Xrpc/Com.Example.GetThing"));
        assert!(p("/Admin/").matches("/aDMIN/x"));
        assert!(!p("/xrpc/com.example.getThing").matches("/xrpc/com.example.getThings"));
    }

    #[test]
    fn forwarded_as_the_pattern_spells_it() {
        let f = |pat: &str, path: &str| p(pat).forwarded(path).into_owned();
        assert_eq!(f("/xrpc/com.example.getThing", "/XRPC/com.example.GETTHING"), "/xrpc/com.example.getThing");
        assert_eq!(f("/api", "/api/"), "/api");
        assert_eq!(f("/api/", "/API"), "/api/");
        assert_eq!(f("/api/", "/API/X/y"), "/api/X/y");
        assert_eq!(f("/xrpc/com.example.*", "/XRPC/COM.example.GetThing"), "/xrpc/com.example.GetThing");
        assert_eq!(f("/a/*b*/c", "/A/xBBxb/C/"), "/a/xbBxb/c");
        assert_eq!(f("/*.json", "/X.JSON"), "/X.json");
        assert!(matches!(p("/api/").forwarded("/api/x"), Cow::Borrowed(_)));
        assert!(matches!(p("/a/*").forwarded("/a/b"), Cow::Borrowed(_)));
    }

    #[test]
    fn head_is_decided_as_get() {
        let key = |ms: Vec<http::Method>| MatchKey { host: None, path: p("/a"), methods: Some(ms) };
        assert!(key(vec![http::Method::GET]).allows(&http::Method::HEAD));
        assert!(key(vec![http::Method::HEAD]).allows(&http::Method::HEAD));
        assert!(!key(vec![http::Method::HEAD]).allows(&http::Method::GET));
        assert!(!key(vec![http::Method::POST]).allows(&http::Method::HEAD));
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
