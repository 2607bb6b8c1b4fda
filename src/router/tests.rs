use std::sync::Arc;

use http::Method;
use proptest::prelude::*;

use super::*;
use crate::config::Config;
use crate::state::Runtime;

fn table(yaml_routes: &str) -> RouteTable {
    let text = format!("upstreams:\n  app:\n    url: http://127.0.0.1:9\nroutes:\n{yaml_routes}");
    let config = Config::parse(&text, "t").unwrap_or_else(|e| panic!("{e}"));
    Runtime::build(config).unwrap().routes
}

fn name(t: &RouteTable, host: Option<&str>, path: &str, method: Method) -> Result<String, RouteError> {
    t.lookup(host, path, &method).map(|r| r.name.0.to_string())
}

const ROUTES: &str = "
  - { name: catch-all, match: { path: / }, upstream: app, auth: none }
  - { name: api, match: { path: /api/ }, upstream: app, auth: none }
  - { name: api-v1, match: { path: /api/v1/ }, upstream: app, auth: none }
  - { name: exact, match: { path: /api/v1/special }, upstream: app, auth: none }
  - { name: feed, match: { path: '/xrpc/app.bsky.feed.*', methods: [GET] }, upstream: app, auth: none }
  - { name: xrpc, match: { path: /xrpc/ }, upstream: app, auth: none }
  - { name: post-only, match: { path: /submit, methods: [POST] }, upstream: app, auth: none }
  - { name: host, match: { host: api.example.com, path: / }, upstream: app, auth: none }
  - { name: wild, match: { host: '*.example.com', path: / }, upstream: app, auth: none }
";

#[test]
fn most_specific_wins() {
    let t = table(ROUTES);
    assert_eq!(name(&t, None, "/", Method::GET).unwrap(), "catch-all");
    assert_eq!(name(&t, None, "/api/x", Method::GET).unwrap(), "api");
    assert_eq!(name(&t, None, "/api/v1/x", Method::GET).unwrap(), "api-v1");
    assert_eq!(name(&t, None, "/api/v1/special", Method::GET).unwrap(), "exact");
    assert_eq!(name(&t, None, "/xrpc/app.bsky.feed.getTimeline", Method::GET).unwrap(), "feed");
    // The glob takes GET only; POST falls through to the less specific prefix route.
    assert_eq!(name(&t, None, "/xrpc/app.bsky.feed.getTimeline", Method::POST).unwrap(), "xrpc");
    assert_eq!(name(&t, Some("api.example.com"), "/xrpc/x", Method::GET).unwrap(), "host");
    assert_eq!(name(&t, Some("a.example.com"), "/", Method::GET).unwrap(), "wild");
    assert_eq!(name(&t, Some("other.org"), "/", Method::GET).unwrap(), "catch-all");
}

#[test]
fn not_found_and_method_not_allowed() {
    let t = table("  - { name: a, match: { path: /a, methods: [GET, HEAD] }, upstream: app, auth: none }\n");
    assert_eq!(name(&t, None, "/b", Method::GET), Err(RouteError::NotFound));
    assert_eq!(
        name(&t, None, "/a", Method::DELETE),
        Err(RouteError::MethodNotAllowed { allow: vec![Method::GET, Method::HEAD] })
    );
}

#[test]
fn rewrites() {
    let t = table(
        "  - { name: s, match: { path: /static/ }, upstream: app, auth: none, strip_prefix: /static }
  - { name: r, match: { path: /v1/ }, upstream: app, auth: none, rewrite: /api/v1/ }
  - { name: e, match: { path: /old }, upstream: app, auth: none, rewrite: /new }
",
    );
    let route = |p: &str| t.lookup(None, p, &Method::GET).unwrap().clone();
    assert_eq!(route("/static/a.css").upstream_path("/static/a.css"), "/a.css");
    assert_eq!(route("/v1/x").upstream_path("/v1/x"), "/api/v1/x");
    assert_eq!(route("/old").upstream_path("/old"), "/new");
}

fn host(uri: &str, headers: &[&str]) -> Result<Option<(String, Option<u16>)>, RouteError> {
    let mut h = http::HeaderMap::new();
    for v in headers {
        h.append("host", v.parse().unwrap());
    }
    request_host(&uri.parse().unwrap(), &h).map(|o| o.map(|h| (h.name, h.port)))
}

#[test]
fn host_from_header_or_authority() {
    let name = |uri: &str, headers: &[&str]| host(uri, headers).unwrap().map(|h| h.0);
    assert_eq!(name("/x", &["API.Example.com:8443"]).as_deref(), Some("api.example.com"));
    assert_eq!(name("https://h2.example:443/x", &[]).as_deref(), Some("h2.example"));
    assert_eq!(name("/x", &["[::1]:80"]).as_deref(), Some("::1"));
    assert_eq!(name("/x", &[]), None);
    assert_eq!(name("/x", &[""]), None);
    assert_eq!(host("/x", &["a.example:81"]).unwrap(), Some(("a.example".into(), Some(81))));
}

/// One host for routing and forwarding: a trailing dot is the same host (RFC 1034 §3.1),
/// and a `Host` that names another host than the target is refused (RFC 9113 §8.3.1).
#[test]
fn host_is_canonical_and_single() {
    let host_name = |uri: &str, headers: &[&str]| host(uri, headers).unwrap().map(|h| h.0);
    assert_eq!(host_name("/x", &["Admin.Example.COM."]).as_deref(), Some("admin.example.com"));
    assert_eq!(host_name("http://admin.example.com./x", &["ADMIN.example.com"]).as_deref(), Some("admin.example.com"));
    assert_eq!(host_name("http://a.example:80/x", &["a.example"]).as_deref(), Some("a.example"));
    let refused = [
        ("http://public.example.com/x", vec!["admin.example.com"], BadHost::Disagrees),
        ("http://a.example:80/x", vec!["a.example:8080"], BadHost::Disagrees),
        ("/x", vec!["a.example", "b.example"], BadHost::Repeated),
        ("/x", vec!["a.example.."], BadHost::Malformed),
        ("/x", vec!["a..example"], BadHost::Malformed),
        ("/x", vec!["a.example:x"], BadHost::Malformed),
        ("/x", vec!["a/b"], BadHost::Malformed),
        ("/x", vec!["[::1"], BadHost::Malformed),
    ];
    for (uri, headers, why) in refused {
        assert_eq!(host(uri, &headers), Err(RouteError::BadHost(why)), "{uri} {headers:?}");
    }
    // The name routing sees for `API.example.com.` is the host route's.
    let t = table(ROUTES);
    let seen = host_name("/", &["API.example.com."]).unwrap();
    assert_eq!(name(&t, Some(&seen), "/", Method::GET).unwrap(), "host");
}

/// A slow, obviously-correct glob matcher to check the fast one against.
fn reference_glob(p: &[u8], t: &[u8]) -> bool {
    match p.split_first() {
        None => t.is_empty(),
        Some((b'*', rest)) => {
            (0..=t.len()).take_while(|&i| i == 0 || t[i - 1] != b'/').any(|i| reference_glob(rest, &t[i..]))
        }
        Some((&c, rest)) => t.first() == Some(&c) && reference_glob(rest, &t[1..]),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 3000, ..ProptestConfig::default() })]

    /// The router never panics, whatever the host, path and method.
    #[test]
    fn lookup_never_panics(host in proptest::option::of("\\PC{0,40}"), path in "\\PC{0,80}", m in "[A-Z]{1,8}") {
        let t = &*ROUTES_TABLE;
        let method = Method::from_bytes(m.as_bytes()).unwrap();
        if let Ok(p) = path::normalize(&path) {
            let _ = t.lookup(host.as_deref(), &p, &method);
        }
    }

    /// Normalizing is idempotent and yields no dot segments or empty segments.
    #[test]
    fn normalize_is_idempotent(path in "/[a-z./%2eE]{0,30}") {
        if let Ok(once) = path::normalize(&path) {
            let twice = path::normalize(&once).unwrap();
            prop_assert_eq!(once.as_ref(), twice.as_ref());
            prop_assert!(!once.contains("//"));
            prop_assert!(once.split('/').all(|s| s != "." && s != ".."));
        }
    }

    /// The fast glob matcher agrees with the reference one.
    #[test]
    fn glob_matches_reference(pattern in "/[ab*/]{0,8}", text in "/[ab/]{0,10}") {
        // A glob ignores one trailing slash of the path (never of `/` itself).
        let p = pattern::PathPattern::Glob(pattern.clone());
        let key = match text.strip_suffix('/') { Some(k) if !k.is_empty() => k, _ => text.as_str() };
        prop_assert_eq!(p.matches(&text), reference_glob(pattern.as_bytes(), key.as_bytes()));
    }

    /// Route patterns from arbitrary text parse or fail cleanly.
    #[test]
    fn patterns_never_panic(text in "\\PC{0,40}") {
        let _ = pattern::PathPattern::parse(&text);
        let _ = pattern::HostPattern::parse(&text);
    }
}

/// The shipped config's shape (`/`, `/xrpc/`, `/xrpc/app.bsky.*` public) with protected
/// exact, glob and prefix routes inside the public ones.
const GUARDED: &str = "
  - { name: everything-else, match: { path: / }, upstream: app, auth: none }
  - { name: xrpc, match: { path: /xrpc/ }, upstream: app, auth: none }
  - { name: bsky, match: { path: '/xrpc/app.bsky.*', methods: [GET] }, upstream: app, auth: none }
  - { name: health, match: { path: /health, methods: [GET, HEAD] }, upstream: app, auth: none }
  - { name: skeleton, match: { path: /xrpc/app.bsky.feed.getFeedSkeleton, methods: [GET] }, upstream: app, auth: none }
  - { name: thing, match: { path: /xrpc/com.example.getThing, methods: [GET] }, upstream: app, auth: none }
  - { name: notes, match: { path: '/xrpc/com.example.note.*' }, upstream: app, auth: none }
  - { name: admin, match: { path: /admin/panel }, upstream: app, auth: none }
  - { name: private, match: { path: /private/ }, upstream: app, auth: none }
";

static GUARDED_TABLE: std::sync::LazyLock<RouteTable> = std::sync::LazyLock::new(|| table(GUARDED));
static ROUTES_TABLE: std::sync::LazyLock<RouteTable> = std::sync::LazyLock::new(|| table(ROUTES));

/// Protected paths and the route that names each one's handler.
const PROTECTED: [(&str, &str); 6] = [
    ("/xrpc/app.bsky.feed.getFeedSkeleton", "skeleton"),
    ("/xrpc/com.example.getThing", "thing"),
    ("/xrpc/com.example.note.createNote", "notes"),
    ("/admin/panel", "admin"),
    ("/private/", "private"),
    ("/private/files/a.txt", "private"),
];

/// One spelling of `path`: per byte, `ops` picks as-is, a case flip, `%XX`/`%xx`, a doubled
/// `/`, a `/./`, a `/x/../`, a `;x`; then maybe a trailing `/`.
fn spell(path: &str, ops: &[u8], trailing: bool) -> String {
    let mut out = String::new();
    for (i, c) in path.chars().enumerate() {
        let op = ops.get(i % ops.len().max(1)).copied().unwrap_or(0);
        let unreserved = c.is_ascii_alphanumeric() || "-._~".contains(c);
        match (op, c) {
            (1, c) if c.is_ascii_uppercase() => out.push(c.to_ascii_lowercase()),
            (1, c) => out.push(c.to_ascii_uppercase()),
            (2, c) if unreserved => out.push_str(&format!("%{:02X}", c as u8)),
            (3, c) if unreserved => out.push_str(&format!("%{:02x}", c as u8)),
            (4, '/') => out.push_str("//"),
            (5, '/') => out.push_str("/./"),
            (6, '/') => out.push_str("/x/../"),
            (7, '/') if i > 0 => out.push_str(";x/"),
            (_, c) => out.push(c),
        }
    }
    if trailing {
        out.push('/');
    }
    out
}

/// The route a request would take, or `None` when it is refused (400/404/405).
fn routed(t: &RouteTable, path: &str, method: &Method) -> Option<String> {
    let p = path::normalize(path).ok()?;
    t.lookup(None, &p, method).ok().map(|r| r.name.0.to_string())
}

#[test]
fn protected_paths_take_their_route() {
    let t = table(GUARDED);
    for (path, route) in PROTECTED {
        assert_eq!(routed(&t, path, &Method::GET).as_deref(), Some(route), "{path}");
        assert_eq!(routed(&t, path, &Method::HEAD).as_deref(), Some(route), "HEAD {path}");
    }
    // Each class on its own, against the shipped shape (these all fell to a public route).
    let cases = [
        ("/xrpc/app.bsky.feed.getFeedSkeleton/", "skeleton"),
        ("/XRPC/APP.BSKY.FEED.GETFEEDSKELETON", "skeleton"),
        ("/xrpc/app.bsky.feed.getFeedSkeleto%6E", "skeleton"),
        ("/xrpc/com.example.getThin%67/", "thing"),
        ("/Admin/Panel/", "admin"),
        ("/private", "private"),
        ("/PRIVATE/x", "private"),
    ];
    for (path, route) in cases {
        assert_eq!(routed(&t, path, &Method::GET).as_deref(), Some(route), "{path}");
    }
    for refused in ["/admin/panel;x", "/admin/panel.", "/xrpc/com.example.getThing;x", "/admin%2561/panel"] {
        assert_eq!(routed(&t, refused, &Method::GET), None, "{refused}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 4000, ..ProptestConfig::default() })]

    /// No spelling of a protected path escapes its route: every spelling is routed as the
    /// canonical path is (for the same method; HEAD as GET), or refused.
    #[test]
    fn no_spelling_escapes_a_protected_route(
        which in 0..PROTECTED.len(),
        ops in proptest::collection::vec(0u8..10, 1..12),
        trailing: bool,
        m in 0..3usize,
    ) {
        let t = &*GUARDED_TABLE;
        let (path, _) = PROTECTED[which];
        let method = [Method::GET, Method::HEAD, Method::POST][m].clone();
        let as_get = if method == Method::HEAD { Method::GET } else { method.clone() };
        let spelled = spell(path, &ops, trailing);
        if let Ok(p) = path::normalize(&spelled) {
            let want = routed(t, path, &as_get);
            let got = t.lookup(None, &p, &method).ok();
            let name = got.map(|r| r.name.0.to_string());
            prop_assert!(name.is_none() || name == want, "{} {} -> {:?}, want {:?}", method, spelled, name, want);
            if let Some(route) = got {
                // What is forwarded is the same path, spelled as the route spells it.
                let fwd = route.normal_path(&p).0;
                let trim = |s: &str| s.trim_end_matches('/').to_ascii_lowercase();
                prop_assert_eq!(trim(&fwd), trim(path));
                prop_assert!(route.key.path.matches(&fwd));
                prop_assert!(fwd.starts_with(route.key.path.literal_prefix()), "{} for {}", fwd, spelled);
            }
        }
    }
}

#[test]
fn arc_routes_are_shared() {
    let t = table(ROUTES);
    let a = t.lookup(None, "/", &Method::GET).unwrap();
    let b = t.lookup(None, "/x", &Method::GET).unwrap();
    assert!(Arc::ptr_eq(a, b));
}
