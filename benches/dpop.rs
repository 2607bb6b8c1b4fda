//! The DPoP auth stage in-process: proof verification alone, and the whole stage
//! (`authenticate_dpop`) with a cached token and with a fresh token per request.
//! Compare with `jose/es256_verify`: the goal is cached <= 1.3x and fresh <= 2.3x one
//! P-256 verification, on top of the no-auth request cost.

use std::hint::black_box;
use std::time::Duration;

use atgate::auth::dpop::nonce::Nonces;
use atgate::auth::dpop::replay::MemoryReplayStore;
use atgate::auth::dpop::verify::{KeyCache, ProofContext, verify_proof};
use atgate::auth::issuer::Issuers;
use atgate::auth::token::TokenCache;
use atgate::auth::{authenticate_dpop, now_ms};
use atgate::config::{IssuerConfig, KeySource};
use atgate::jose::Jwk;
use atgate::jose::sign::{SigningKey, random_id};
use atgate::net::Outbound;
use atgate::state::DpopState;
use atgate::tools::DpopSigner;
use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use serde_json::json;

const URL: &str = "https://gateway.test/xrpc/com.example.getThing";

struct Fixture {
    state: DpopState,
    as_key: SigningKey,
    signer: DpopSigner,
    replay: MemoryReplayStore,
    url: String,
}

fn fixture() -> Fixture {
    let as_key = SigningKey::generate();
    let mut public = as_key.public_jwk();
    public["kid"] = json!("k1");
    let config = IssuerConfig {
        issuer: "https://as.test".into(),
        keys: KeySource::PublicKey(Jwk::from_value(&public).unwrap()),
        audiences: vec!["did:web:gateway.test".into()],
        algs: vec!["ES256".into()],
        clock_skew: Duration::ZERO,
        jwks_refresh: Duration::from_secs(300),
        max_stale: Duration::from_secs(3600),
        expand_include: false,
    };
    let state = DpopState {
        nonces: Nonces::new(&[7; 32], Duration::from_secs(60)),
        issuers: Issuers::new(&[config], &Outbound::new(Default::default())).unwrap(),
        tokens: TokenCache::new(1_000_000),
        max_proof_bytes: 8192,
        proof_keys: KeyCache::new(1000),
    };
    Fixture {
        state,
        as_key,
        signer: DpopSigner { key: SigningKey::generate() },
        replay: MemoryReplayStore::new(10_000_000),
        url: atgate::auth::normalize_url(URL).unwrap(),
    }
}

impl Fixture {
    fn token(&self) -> String {
        let now = now_ms() / 1000;
        let claims = json!({"jti": random_id(), "sub": "did:plc:ewvi7nxzyoun6zhxrhs64oiz", "iat": now, "exp": now + 3600,
            "aud": "did:web:gateway.test", "cnf": {"jkt": self.signer.key.thumbprint()}, "scope": "atproto",
            "client_id": "https://app.test/client.json", "iss": "https://as.test"});
        self.as_key.sign_jwt(json!({"typ": "at+jwt", "kid": "k1"}), &claims)
    }

    fn request(&self, token: &str) -> http::request::Parts {
        let now = now_ms();
        let nonce = self.state.nonces.current(now);
        let proof = self.signer.proof("GET", URL, Some(token), Some(&nonce), now / 1000);
        let req = http::Request::get(URL).header("authorization", format!("DPoP {token}")).header("dpop", proof);
        req.body(()).unwrap().into_parts().0
    }
}

fn bench(c: &mut Criterion) {
    let f = fixture();
    let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    let token = f.token();
    let ath = atgate::jose::sha256_b64url(token.as_bytes());
    let mut g = c.benchmark_group("dpop");
    let now = now_ms();
    let sample = f.signer.proof("GET", URL, Some(&token), Some(&f.state.nonces.current(now)), now / 1000);
    g.bench_function("parts/jws_parse_proof", |b| b.iter(|| atgate::jose::jws::parse(black_box(&sample)).unwrap()));
    let parsed = atgate::jose::jws::parse(&sample).unwrap();
    let jwk_value = parsed.header.jwk.clone().unwrap();
    g.bench_function("parts/jwk_from_value", |b| b.iter(|| Jwk::from_value(black_box(&jwk_value)).unwrap()));
    g.bench_function("parts/check_htu", |b| {
        b.iter(|| atgate::auth::dpop::verify::check_htu(black_box(URL), &f.url).unwrap())
    });
    g.bench_function("parts/nonce_check", |b| {
        let n = f.state.nonces.current(now);
        b.iter(|| f.state.nonces.is_valid(black_box(&n), now))
    });
    g.bench_function("parts/replay_insert", |b| {
        let mut i = 0u64;
        b.iter(|| {
            i += 1;
            let k = atgate::auth::dpop::replay::replay_key("DPoP", &["jkt", &i.to_string()]);
            rt.block_on(atgate::auth::dpop::replay::ReplayStore::insert_if_absent(
                &f.replay,
                k,
                Duration::from_secs(198),
            ))
        })
    });
    // One P-256 verification under the same conditions as the stage benches (a fresh
    // signature made in the untimed setup), the unit the goals are stated in.
    let proof_key = Jwk::from_value(&f.signer.key.public_jwk()).unwrap().public_key().unwrap();
    g.bench_function("es256_verify_batched", |b| {
        b.iter_batched(
            || {
                let now = now_ms();
                let proof = f.signer.proof("GET", URL, Some(&token), None, now / 1000);
                let jws = atgate::jose::jws::parse(&proof).unwrap();
                (jws.signing_input.to_owned(), jws.signature)
            },
            |(input, sig)| assert!(proof_key.verify(atgate::jose::Alg::Es256, input.as_bytes(), &sig, false)),
            BatchSize::SmallInput,
        )
    });
    g.bench_function("verify_proof", |b| {
        b.iter_batched(
            || {
                let now = now_ms();
                let nonce = f.state.nonces.current(now);
                (f.signer.proof("GET", URL, Some(&token), Some(&nonce), now / 1000), now)
            },
            |(proof, now)| {
                let ctx = ProofContext { method: "GET", url: &f.url, ath: Some(&ath), now_ms: now };
                black_box(verify_proof(&proof, &ctx, &f.state.nonces, &f.state.proof_keys).unwrap())
            },
            BatchSize::SmallInput,
        )
    });
    g.bench_function("auth_stage_cached_token", |b| {
        b.iter_batched(
            || f.request(&token),
            |parts| {
                rt.block_on(authenticate_dpop(&f.replay, &f.state, &parts, Some(&f.url), now_ms())).unwrap();
            },
            BatchSize::SmallInput,
        )
    });
    g.bench_function("auth_stage_fresh_token", |b| {
        b.iter_batched(
            || f.request(&f.token()),
            |parts| {
                rt.block_on(authenticate_dpop(&f.replay, &f.state, &parts, Some(&f.url), now_ms())).unwrap();
            },
            BatchSize::SmallInput,
        )
    });
    // The same stage through a runtime built from config, as the gateway runs it.
    let dir = std::env::temp_dir().join(format!("atgate-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut public = f.as_key.public_jwk();
    public["kid"] = json!("k1");
    std::fs::write(dir.join("jwks.json"), json!({"keys": [public]}).to_string()).unwrap();
    let text = format!(
        "public_url: https://gateway.test\nissuers:\n  - {{ issuer: \"https://as.test\", jwks_file: {}, audiences: [did:web:gateway.test] }}\nupstreams:\n  up: {{ url: \"http://127.0.0.1:9\" }}\nroutes:\n  - {{ name: x, match: {{ path: /xrpc/ }}, upstream: up, auth: dpop }}\n",
        dir.join("jwks.json").display()
    );
    let runtime = atgate::state::Runtime::build(atgate::config::Config::parse(&text, "bench").unwrap()).unwrap();
    let route = runtime.routes.routes()[0].clone();
    let shared = atgate::state::Shared::new(runtime);
    g.bench_function("auth_stage_runtime_cached_token", |b| {
        b.iter_batched(
            || {
                let dpop = shared.runtime.load();
                let now = now_ms();
                let nonce = dpop.dpop.as_ref().unwrap().nonces.current(now);
                let proof = f.signer.proof("GET", URL, Some(&token), Some(&nonce), now / 1000);
                let req =
                    http::Request::get(URL).header("authorization", format!("DPoP {token}")).header("dpop", proof);
                req.body(()).unwrap().into_parts().0
            },
            |parts| rt.block_on(atgate::auth::authenticate(&shared, &shared.runtime.load(), &route, &parts)).unwrap(),
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
