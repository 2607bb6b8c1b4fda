//! Service-JWT dispatch and lenient signature checks (raw or DER, high or low S) never
//! panic, and a mangled vector never verifies.
#![no_main]
use atgate::jose::{Alg, PublicKey};

const KEY: &str = "zQ3shokFTS3brHcDQrn82RUDfCZESWL1ZdCEJwekUDPQiYBme";
const P256: &str = "zDnaehX3LgKKTBMJfH3j1PZskwLGbcFmc7DwFDHBxqajRAJof";

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let k256: PublicKey = atgate::identity::multikey::decode_multikey(KEY).unwrap();
    let p256: PublicKey = atgate::identity::multikey::decode_multikey(P256).unwrap();
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = atgate::auth::service::looks_like_service_jwt(text);
        let _ = atgate::auth::service::xrpc_method(text);
        if let Ok(jws) = atgate::jose::jws::parse(text) {
            for strict in [false, true] {
                let _ = k256.verify_lenient(Alg::Es256k, jws.signing_input.as_bytes(), &jws.signature, strict);
                let _ = p256.verify_lenient(Alg::Es256, jws.signing_input.as_bytes(), &jws.signature, strict);
            }
        }
    }
    // Raw bytes as a signature, raw or DER.
    assert!(!k256.verify_lenient(Alg::Es256k, b"fuzz", data, false));
    assert!(!p256.verify_lenient(Alg::Es256, b"fuzz", data, false));
});
