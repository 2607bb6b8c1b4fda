//! Scope checks: a token with 20 granted scopes against route requirements (the goal is
//! under 2 µs per check), and parsing such a `scope` claim (done once per verified token).

use std::hint::black_box;

use atgate::scope::{Check, Granted, RepoAction};
use criterion::{Criterion, criterion_group, criterion_main};

const SCOPE: &str = "atproto transition:email \
    repo:app.example.post repo:app.example.like?action=create repo?collection=app.example.a&collection=app.example.b \
    repo:app.example.c?action=delete repo:app.example.d repo:app.example.e?action=update \
    rpc:com.example.getThing?aud=did:web:api.example.com%23svc rpc:com.example.getOther?aud=* \
    rpc?lxm=com.example.a&lxm=com.example.b&aud=did:web:api.example.com%23svc \
    rpc:com.example.list?aud=did:web:other.example.com%23svc \
    blob:image/* blob?accept=video/mp4&accept=text/plain blob:application/json \
    account:email account:repo?action=manage identity:handle \
    include:app.example.authFull rpc:com.example.last?aud=did:web:api.example.com%23svc";

fn bench(c: &mut Criterion) {
    assert_eq!(SCOPE.split(' ').count(), 20);
    let granted = Granted::parse(SCOPE);
    let last_rpc = Check::Rpc { lxm: "com.example.last".into(), aud: "did:web:api.example.com#svc".into() };
    let denied = Check::Repo { collection: "app.example.zzz".into(), action: RepoAction::Delete };
    let blob = Check::Blob { mime: "video/mp4".into() };
    assert!(granted.allows(&last_rpc) && granted.allows(&blob) && !granted.allows(&denied));
    c.bench_function("scope/check_allowed_last_of_20", |b| b.iter(|| granted.allows(black_box(&last_rpc))));
    c.bench_function("scope/check_denied_20", |b| b.iter(|| granted.allows(black_box(&denied))));
    c.bench_function("scope/check_blob_20", |b| b.iter(|| granted.allows(black_box(&blob))));
    c.bench_function("scope/parse_claim_20", |b| b.iter(|| Granted::parse(black_box(SCOPE))));
}

criterion_group!(benches, bench);
criterion_main!(benches);
