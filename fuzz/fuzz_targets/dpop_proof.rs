//! DPoP proof verification rejects garbage without panicking.
#![no_main]
use std::sync::LazyLock;
use std::time::Duration;

use atgate::auth::dpop::nonce::Nonces;
use atgate::auth::dpop::verify::{KeyCache, ProofContext, verify_proof};

static NONCES: LazyLock<Nonces> = LazyLock::new(|| Nonces::new(&[1; 32], Duration::from_secs(60)));
static KEYS: LazyLock<KeyCache> = LazyLock::new(|| KeyCache::new(100));
const URL: &str = "https://gw.test/xrpc/a.b.c";

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let ctx = ProofContext { method: "GET", url: URL, ath: Some("x"), now_ms: 1_767_225_600_000 };
        assert!(verify_proof(text, &ctx, &NONCES, &KEYS).is_err());
        let _ = atgate::auth::dpop::verify::check_htu(text, URL);
    }
});
