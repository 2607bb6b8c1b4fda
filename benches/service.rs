//! Service-JWT verification in-process with a warm DID document cache, for both curves:
//! the raw signature check, and the whole `service::verify` (parse, claims, cached
//! document, signature, replay insert). The document host runs on loopback but is only
//! fetched once, before measuring.

use std::hint::black_box;

use atgate::auth::dpop::replay::MemoryReplayStore;
use atgate::auth::service::{self, Expect, ServiceVerifier};
use atgate::config::{IdentityConfig, OutboundConfig, PrincipalPolicy, ServiceAuthConfig};
use atgate::identity::Resolver;
use atgate::net::Outbound;
use atgate::tools::dev_identity::{DevIdentity, DidKey, did_document};
use criterion::{BatchSize, Criterion, criterion_group, criterion_main};

const DID: &str = "did:plc:ewvi7nxzyoun6zhxrhs64oiz";
const AUD: &str = "did:web:gateway.test#svc";
const LXM: &str = "com.example.getThing";

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    for (name, key) in [("es256k", DidKey::k256()), ("es256", DidKey::p256())] {
        let (verifier, _host) = rt.block_on(async {
            let host = DevIdentity::spawn("127.0.0.1:0".parse().unwrap()).await.unwrap();
            host.publish(DID, did_document(DID, &key, None, "https://pds.test"));
            let identity = IdentityConfig { plc_url: url::Url::parse(&host.plc_url()).unwrap(), ..Default::default() };
            let net =
                Outbound::new(OutboundConfig { allow_private_addresses: true, allow_http: true, ..Default::default() });
            let config = ServiceAuthConfig {
                did: Some("did:web:gateway.test".into()),
                service_id: "svc".into(),
                ..Default::default()
            };
            let verifier = ServiceVerifier::new(config, Resolver::new(&identity, net));
            verifier.resolver.resolve(DID).await.unwrap(); // warm the cache
            (verifier, host)
        });
        let replay = MemoryReplayStore::new(10_000_000);
        let policy = PrincipalPolicy::default();
        let now = atgate::auth::now_ms() / 1000;

        let doc = rt.block_on(verifier.resolver.resolve(DID)).unwrap();
        let public = doc.key("atproto").unwrap().clone();
        let token = key.service_jwt(DID, AUD, Some(LXM), 60);
        let jws = atgate::jose::jws::parse(&token).unwrap();
        let alg = public.alg();
        c.bench_function(&format!("service/{name}_signature"), |b| {
            b.iter(|| {
                assert!(public.verify_lenient(alg, black_box(jws.signing_input.as_bytes()), &jws.signature, false))
            })
        });
        c.bench_function(&format!("service/{name}_verify_warm_cache"), |b| {
            b.iter_batched(
                || key.service_jwt(DID, AUD, Some(LXM), 60),
                |token| {
                    let expect = Expect { lxm: LXM, single_use: true, policy: &policy };
                    rt.block_on(service::verify(&verifier, &replay, black_box(&token), expect, now)).unwrap()
                },
                BatchSize::SmallInput,
            )
        });
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
