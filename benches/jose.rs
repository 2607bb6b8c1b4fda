//! Raw signature verification and the helpers around it: the floor of every DPoP request.

use std::hint::black_box;

use atgate::auth::dpop::nonce::{DEFAULT_ROTATION, Nonces};
use atgate::jose::{Alg, Jwk, jws};
use criterion::{Criterion, criterion_group, criterion_main};

const AS_JWK: &str = r#"{"kty":"EC","crv":"P-256","x":"LjUrPxAz1rlWPQJnEQBG_Ltiia4zRz-KIgreuLRtjQ4","y":"vdmPrEJowAefPEyGs7QeLbQ45tHkTNSs44XwWHcgNDQ"}"#;
const TOKEN: &str = "eyJ0eXAiOiJhdCtqd3QiLCJhbGciOiJFUzI1NiIsImtpZCI6ImFzLWtleS0xIn0.eyJqdGkiOiJ0b2stMDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWYiLCJzdWIiOiJkaWQ6cGxjOmV3dmk3bnh6eW91bjZ6aHhyaHM2NG9peiIsImlhdCI6MTc2NzIyNTYwMCwiZXhwIjoxNzY3MjI5MjAwLCJhdWQiOiJkaWQ6d2ViOmdhdGV3YXkuZXhhbXBsZS5jb20iLCJjbmYiOnsiamt0IjoiSjEtaDhZeFNKLUZWc19KVnk4cFVxd2ppRTQ1bVVya3BzRXY1N0poTENBMCJ9LCJzY29wZSI6ImF0cHJvdG8gcmVwbzpjb20uZXhhbXBsZS5ub3RlP2FjdGlvbj1jcmVhdGUgcnBjOmNvbS5leGFtcGxlLmdldFRoaW5nP2F1ZD1kaWQ6d2ViOmdhdGV3YXkuZXhhbXBsZS5jb20lMjNleGFtcGxlX3N2YyIsImNsaWVudF9pZCI6Imh0dHBzOi8vYXBwLmV4YW1wbGUuY29tL29hdXRoLWNsaWVudC1tZXRhZGF0YS5qc29uIiwiaXNzIjoiaHR0cHM6Ly9hdXRoLmV4YW1wbGUuY29tIn0.RVejMYX87eP_KP_g9Hd5k1RwQPIn5_roujl-PsY6rdyvNBS6QLHPCZB7u7d3OHp0nMAxeO7LYt9Tq_8hDPAzUQ";

fn verify(c: &mut Criterion) {
    let jwk = Jwk::from_value(&serde_json::from_str(AS_JWK).unwrap()).unwrap();
    let key = jwk.public_key().unwrap();
    let token = jws::parse(TOKEN).unwrap();
    let mut g = c.benchmark_group("jose");
    g.bench_function("es256_verify", |b| {
        b.iter(|| assert!(key.verify(Alg::Es256, black_box(token.signing_input.as_bytes()), &token.signature, false)))
    });
    g.bench_function("jws_parse", |b| b.iter(|| jws::parse(black_box(TOKEN)).unwrap()));
    g.bench_function("jwk_thumbprint", |b| b.iter(|| black_box(&jwk).thumbprint().unwrap()));
    let nonces = Nonces::new(&[1u8; 32], DEFAULT_ROTATION);
    let nonce = nonces.current(1_767_225_600_000);
    g.bench_function("nonce_check", |b| b.iter(|| assert!(nonces.is_valid(black_box(&nonce), 1_767_225_600_000))));
    g.finish();
}

criterion_group!(benches, verify);
criterion_main!(benches);
