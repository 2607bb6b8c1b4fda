use std::time::Duration;

use proptest::prelude::*;

use super::*;
use crate::router::pattern::{HostPattern, PathPattern};

const MINIMAL: &str = "
upstreams:
  app:
    url: http://127.0.0.1:3000
routes:
  - name: all
    match: { path: / }
    upstream: app
    auth: none
";

#[test]
fn example_config_parses() {
    let c = Config::parse(EXAMPLE, "config/atgate.yaml").expect("example config is valid");
    assert_eq!(c.listen, vec!["0.0.0.0:8080".parse().unwrap()]);
    assert_eq!(c.admin_listen, Some("127.0.0.1:9090".parse().unwrap()));
    assert_eq!(c.public_url.as_ref().map(|u| u.as_str()), Some("https://gateway.example.com/"));
    assert_eq!(c.trusted_proxies.len(), 2);
    assert_eq!(c.limits.max_body, 10 << 20);
    assert_eq!(c.routes.len(), 7);
    let skeleton = c.routes.iter().find(|r| r.name == "feed-skeleton").unwrap();
    assert_eq!(skeleton.auth, crate::config::AuthMethods { service_auth: true, ..Default::default() });
    assert_eq!(skeleton.lxm, crate::config::Lxm::FromPath);
    assert_eq!(c.service_auth.did.as_deref(), Some("did:web:gateway.example.com"));
    assert_eq!(c.service_auth.service_id, "bsky_fg");
    let feeds = &c.upstreams[1];
    assert_eq!((feeds.name.as_str(), feeds.base_path.as_str()), ("feeds", "/base"));
    assert_eq!(feeds.timeout, Duration::from_secs(10));
    let api = c.routes.iter().find(|r| r.name == "api").unwrap();
    assert_eq!(api.key.host, Some(HostPattern::Exact("api.example.com".into())));
    assert_eq!(api.rewrite, Some(Rewrite::Replace { matched: "/v1/".into(), with: "/api/v1/".into() }));
    let feed = c.routes.iter().find(|r| r.name == "feed-xrpc").unwrap();
    assert_eq!(feed.key.path, PathPattern::Glob("/xrpc/app.bsky.feed.*".into()));
    assert_eq!(feed.key.methods, Some(vec![http::Method::GET]));
}

#[test]
fn defaults() {
    let c = Config::parse(MINIMAL, "m.yaml").unwrap();
    assert_eq!(c.listen, vec!["0.0.0.0:8080".parse().unwrap()]);
    assert_eq!(c.admin_listen, Some("127.0.0.1:9090".parse().unwrap()));
    let d = Limits::default();
    assert_eq!(c.limits.max_body, d.max_body);
    assert_eq!(c.limits.request_timeout, Duration::from_secs(60));
    assert_eq!(c.upstreams[0].timeout, Duration::from_secs(30));
    assert_eq!(c.upstreams[0].base_path, "");
    assert!(c.log.json);
    assert!(!c.via);
    assert!(!c.routes[0].forward_credentials);
}

#[test]
fn listen_one_or_many_and_admin_off() {
    let one = format!("listen: 127.0.0.1:1\nadmin_listen: \"off\"\n{MINIMAL}");
    let c = Config::parse(&one, "x").unwrap();
    assert_eq!(c.listen, vec!["127.0.0.1:1".parse().unwrap()]);
    assert_eq!(c.admin_listen, None);
    let many = format!("listen: [127.0.0.1:1, '[::1]:2']\n{MINIMAL}");
    assert_eq!(Config::parse(&many, "x").unwrap().listen.len(), 2);
}

#[test]
fn every_error_is_reported_at_once() {
    let text = "
limits: { max_body: lots, request_timeout: forever }
upstreams:
  app: { url: 'not a url' }
routes:
  - name: 'bad name'
    match: { path: nope }
    upstream: missing
    auth: none
";
    let errs = Config::parse(text, "t.yaml").unwrap_err().0;
    let fields: Vec<&str> = errs.iter().map(|e| e.field.as_str()).collect();
    assert_eq!(
        fields,
        vec![
            "limits.max_body",
            "limits.request_timeout",
            "upstreams.app.url",
            "routes[0].name",
            "routes[0].match.path",
            "routes[0].upstream"
        ]
    );
    assert!(errs.iter().all(|e| e.place.line > 0 && e.origin == "t.yaml"));
}

#[test]
fn empty_config_is_an_error() {
    let e = Config::parse("  \n", "e.yaml").unwrap_err();
    assert_eq!(e.to_string(), "e.yaml:1:1: config is empty (expected at least listen, upstreams and routes)");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    /// Arbitrary text never panics the loader.
    #[test]
    fn parse_never_panics(text in "\\PC{0,400}") {
        let _ = Config::parse(&text, "fuzz");
    }

    /// Nor do small corruptions of a valid config: each either parses or names a place.
    #[test]
    fn mutated_example_never_panics(pos in 0usize..EXAMPLE.len(), byte in any::<u8>(), cut in any::<bool>()) {
        let mut bytes = EXAMPLE.as_bytes().to_vec();
        if cut { bytes.truncate(pos) } else { bytes[pos] = byte }
        if let Ok(text) = String::from_utf8(bytes)
            && let Err(errs) = Config::parse(&text, "m")
        {
            prop_assert!(!errs.0.is_empty());
        }
    }
}

#[test]
fn clock_skew_may_be_zero_in_any_unit_but_timeouts_may_not() {
    let issuer = |skew: &str| {
        format!(
            "public_url: https://gw.example.org\nissuers:\n  - {{ issuer: https://as.example.org, discovery: true, audiences: [did:web:gw.example.org], clock_skew: {skew} }}\n{MINIMAL}"
        )
    };
    for (skew, want) in [("0s", 0), ("0ms", 0), ("30s", 30)] {
        let c = Config::parse(&issuer(skew), "t").unwrap_or_else(|e| panic!("{skew}: {e}"));
        assert_eq!(c.issuers[0].clock_skew, Duration::from_secs(want));
    }
    let zero_timeout = MINIMAL.replace("url: http://127.0.0.1:3000", "url: http://127.0.0.1:3000\n    timeout: 0ms");
    let e = Config::parse(&zero_timeout, "t").unwrap_err();
    assert!(e.to_string().ends_with("upstreams.app.timeout: must be greater than zero"), "{e}");
}

#[test]
fn otlp_export_needs_the_feature_and_a_collector_url() {
    let text = |otlp: &str| {
        format!(
            "log: {{ otlp: {otlp} }}\nupstreams:\n  a: {{ url: \"http://127.0.0.1:1\" }}\nroutes:\n  - {{ name: r, match: {{ path: / }}, upstream: a, auth: none }}\n"
        )
    };
    let good = Config::parse(&text("{ endpoint: \"http://collector:4318/v1/traces\", sample_ratio: 0.25 }"), "t");
    let bad = Config::parse(&text("{ endpoint: \"collector:4318\", sample_ratio: 2 }"), "t").unwrap_err().to_string();
    if cfg!(feature = "otlp") {
        let otlp = good.unwrap().log.otlp.unwrap();
        assert_eq!((otlp.service_name.as_str(), otlp.sample_ratio), ("atgate", 0.25));
        assert!(bad.contains("log.otlp.endpoint: invalid endpoint"), "{bad}");
        assert!(bad.contains("log.otlp.sample_ratio: must be between 0 and 1"), "{bad}");
    } else {
        let err = good.unwrap_err().to_string();
        assert!(err.contains("log.otlp: this atgate was built without OpenTelemetry export"), "{err}");
    }
}

/// A `client_uri` that reference authorization servers refuse (another origin, or not a
/// parent of the client metadata URL) is a config error, not a failed sign-in later.
#[test]
fn client_uri_must_be_a_parent_of_the_client_id() {
    let with = |client_uri: &str| {
        let text = format!(
            "public_url: https://gw.example.com\noauth_client: {{ path_prefix: /oauth, client_uri: \"{client_uri}\" }}\n{MINIMAL}"
        );
        Config::parse(&text, "t.yaml").map(|c| c.oauth_client.and_then(|o| o.client_uri))
    };
    for ok in ["https://gw.example.com", "https://gw.example.com/", "https://gw.example.com/oauth"] {
        assert!(with(ok).is_ok_and(|u| u.is_some()), "{ok}: {:?}", with(ok).err().map(|e| e.to_string()));
    }
    for bad in [
        "https://other.example.com/",
        "http://gw.example.com/",
        "https://gw.example.com/app/",
        "https://gw.example.com/oauthx",
    ] {
        let err = with(bad).expect_err(bad).to_string();
        assert!(err.contains("oauth_client.client_uri"), "{bad}: {err}");
    }
}
