//! What the operational features add per request or per reload: one signed identity
//! assertion, one rate-limit check (among many keys), building a runtime for a reload,
//! and checking a browser session (cookie signature, store read, principal).

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

fn session(c: &mut Criterion) {
    use atgate::oauth::store::MemorySessionStore;
    let text = "listen: 127.0.0.1:0
public_url: https://dash.example.com
oauth_client: { scope: atproto transition:generic }
upstreams:
  up: { url: \"http://127.0.0.1:1\" }
routes:
  - { name: a, match: { path: / }, upstream: up, auth: oauth_session }
";
    let rt = tokio::runtime::Runtime::new().unwrap();
    let _guard = rt.enter();
    let runtime = atgate::state::Runtime::build(Config::parse(text, "bench").unwrap()).unwrap();
    let client = runtime.oauth.clone().unwrap();
    let now = atgate::auth::now_ms() / 1000;
    let session = atgate::oauth::Session {
        did: "did:plc:ewvi7nxzyoun6zhxrhs64oiz".into(),
        handle: Some("alice.example.com".into()),
        pds: "https://pds.example.com/".into(),
        server: atgate::oauth::AuthServer {
            issuer: "https://pds.example.com".into(),
            authorization_endpoint: "https://pds.example.com/oauth/authorize".into(),
            par_endpoint: "https://pds.example.com/oauth/par".into(),
            token_endpoint: "https://pds.example.com/oauth/token".into(),
            revocation_endpoint: Some("https://pds.example.com/oauth/revoke".into()),
        },
        access_token: "x".repeat(700),
        refresh_token: Some("r".repeat(60)),
        expires_at: now + 3600,
        scope: "atproto transition:generic".into(),
        dpop_key: atgate::jose::sign::SigningKey::generate().private_jwk(),
        created_at: now,
    };
    let id = atgate::jose::b64url(&[7u8; 32]);
    let store = MemorySessionStore::new(1 << 20);
    rt.block_on(atgate::oauth::save(&client, &store, &id, &session)).unwrap();
    let mut headers = http::HeaderMap::new();
    let cookie = format!("theme=dark; atgate_session={}", client.session_cookie(&id));
    headers.insert(http::header::COOKIE, cookie.parse().unwrap());
    c.bench_function("ops/session_cookie_verify", |b| b.iter(|| client.session_id(black_box(&headers)).unwrap()));
    c.bench_function("ops/session_check_memory_store", |b| {
        b.to_async(&rt).iter(|| async {
            atgate::oauth::authenticate(&client, &store, &http::Method::GET, black_box(&headers)).await.unwrap()
        })
    });
    // With ATGATE_BENCH_REDIS=redis://127.0.0.1:6379/ the same against a Redis store.
    if let Ok(url) = std::env::var("ATGATE_BENCH_REDIS") {
        let conn = rt.block_on(redis::aio::ConnectionManager::new(redis::Client::open(url.as_str()).unwrap())).unwrap();
        let redis = atgate::oauth::store::RedisSessionStore::new(conn, "atgate:bench:", Duration::from_secs(1));
        rt.block_on(atgate::oauth::save(&client, &redis, &id, &session)).unwrap();
        c.bench_function("ops/session_check_redis_store", |b| {
            b.to_async(&rt).iter(|| async {
                atgate::oauth::authenticate(&client, &redis, &http::Method::GET, black_box(&headers)).await.unwrap()
            })
        });
    }
}

criterion_group!(benches, assertion, rate_limit, reload, session);
criterion_main!(benches);
