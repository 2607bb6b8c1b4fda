//! What the operational features add per request or per reload: one signed identity
//! assertion, one rate-limit check (among many keys), and building a runtime for a reload.

use std::hint::black_box;
use std::time::Duration;

use atgate::config::{Config, LimitBy, RateLimit};
use atgate::ratelimit::{Key, Limiter};
use criterion::{Criterion, criterion_group, criterion_main};

fn assertion(c: &mut Criterion) {
    let text = "listen: 127.0.0.1:0
service_auth: { did: did:web:gateway.example.com }
upstreams:
  up: { url: \"http://127.0.0.1:1\" }
routes:
  - { name: a, match: { path: / }, upstream: up, auth: service_auth, assertion: true }
";
    let config = Config::parse(text, "bench").unwrap();
    let asserter = atgate::assertion::Asserter::build(&config, None).unwrap().unwrap();
    let principal = atgate::auth::Principal::Service(atgate::auth::service::ServiceToken {
        did: "did:plc:ewvi7nxzyoun6zhxrhs64oiz".into(),
        aud: "did:web:gateway.example.com#atgate".into(),
        lxm: Some("com.example.getThing".into()),
    });
    c.bench_function("ops/assertion_sign", |b| b.iter(|| asserter.sign(black_box(&principal), "up").unwrap()));
}

fn rate_limit(c: &mut Criterion) {
    let limit = RateLimit { by: LimitBy::Did, requests: u32::MAX, period: Duration::from_secs(1), burst: u32::MAX };
    let limiter = Limiter::new(limit);
    // 10,000 active principals.
    let keys: Vec<Key> = (0..10_000).map(|i| Key::Text(format!("did:plc:{i:024}").into())).collect();
    for k in &keys {
        limiter.check(k).unwrap();
    }
    let mut i = 0;
    c.bench_function("ops/rate_limit_check_10k_keys", |b| {
        b.iter(|| {
            i = (i + 1) % keys.len();
            limiter.check(black_box(&keys[i])).unwrap()
        })
    });
    let ip = Limiter::new(RateLimit { by: LimitBy::Ip, ..limit });
    let addr: std::net::IpAddr = "2001:db8:1:2::7".parse().unwrap();
    c.bench_function("ops/rate_limit_check_ipv6", |b| b.iter(|| ip.check(&Key::ip(black_box(addr))).unwrap()));
}

fn reload(c: &mut Criterion) {
    let config = Config::parse(atgate::config::EXAMPLE, "example").unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let _guard = rt.enter();
    let old = atgate::state::Runtime::build(config.clone()).unwrap();
    c.bench_function("ops/reload_build_example_config", |b| {
        b.iter(|| atgate::state::Runtime::build_from(black_box(config.clone()), Some(&old)).unwrap())
    });
}

criterion_group!(benches, assertion, rate_limit, reload);
criterion_main!(benches);
