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

#[test]
fn host_from_header_or_authority() {
    let mut h = http::HeaderMap::new();
    h.insert("host", "API.Example.com:8443".parse().unwrap());
    assert_eq!(request_host(&"/x".parse().unwrap(), &h).as_deref(), Some("api.example.com"));
    assert_eq!(request_host(&"https://h2.example:443/x".parse().unwrap(), &h).as_deref(), Some("h2.example"));
    h.insert("host", "[::1]:80".parse().unwrap());
    assert_eq!(request_host(&"/x".parse().unwrap(), &h).as_deref(), Some("::1"));
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
        let t = table(ROUTES);
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
        let p = pattern::PathPattern::Glob(pattern.clone());
        prop_assert_eq!(p.matches(&text), reference_glob(pattern.as_bytes(), text.as_bytes()));
    }

    /// Route patterns from arbitrary text parse or fail cleanly.
    #[test]
    fn patterns_never_panic(text in "\\PC{0,40}") {
        let _ = pattern::PathPattern::parse(&text);
        let _ = pattern::HostPattern::parse(&text);
    }
}

#[test]
fn arc_routes_are_shared() {
    let t = table(ROUTES);
    let a = t.lookup(None, "/", &Method::GET).unwrap();
    let b = t.lookup(None, "/x", &Method::GET).unwrap();
    assert!(Arc::ptr_eq(a, b));
}
