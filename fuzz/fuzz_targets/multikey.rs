//! Multibase and Multikey decoding never panic and only yield on-curve keys.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = atgate::identity::multikey::decode_multibase(text);
        let _ = atgate::identity::multikey::decode_multikey(text);
        for kind in ["Multikey", "EcdsaSecp256r1VerificationKey2019", "EcdsaSecp256k1VerificationKey2019"] {
            let _ = atgate::identity::multikey::decode_method(kind, text);
        }
    }
});
